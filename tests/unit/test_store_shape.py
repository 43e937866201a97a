"""Both backends have the same shape (docs/store.md, "Where things are"): each concern of the
contract in a module of the same name, implementing the same section of store/base.py in full."""
from __future__ import annotations

import importlib
import inspect

import pytest

from frontdesk.store import base
from frontdesk.store.composed import ComposedStore

CONCERNS = [("queue", "Queue", base.Queue), ("retention", "Retention", base.Retention),
            ("journal", "Journal", base.Journal), ("budget", "Budget", base.Budget),
            ("users", "Users", base.Users), ("observation", "Observation", base.Observation)]


@pytest.mark.parametrize("backend, prefix", [("sqlite", "SQLite"), ("mongo", "Mongo")])
@pytest.mark.parametrize("module, name, section", CONCERNS)
def test_each_concern_is_one_module_per_backend_implementing_its_contract_section(backend, prefix, module, name,
                                                                                   section):
    concern = getattr(importlib.import_module(f"frontdesk.store.{backend}_{module}"), prefix + name)
    assert issubclass(concern, section) and not inspect.isabstract(concern)


@pytest.mark.parametrize("backend, facade", [("sqlite", "SQLiteStore"), ("mongo", "MongoStore")])
def test_each_facade_is_a_complete_composed_store(backend, facade):
    store = getattr(importlib.import_module(f"frontdesk.store.{backend}"), facade)
    assert issubclass(store, ComposedStore) and not inspect.isabstract(store)


def test_a_mongo_store_is_built_without_a_server_and_opens_nothing():
    from frontdesk.store.mongo import MongoStore

    store = MongoStore("mongodb://app:pw@127.0.0.1:1/fd?replicaSet=rs0")
    assert store.shown_url == "mongodb://app:***@127.0.0.1:1/fd?replicaSet=rs0"
    store.close()   # nothing was opened: nothing to wait for
