"""LINE's per-endpoint rate limits, named once (protocol/line_endpoints.py): every operation of
messaging-api.yml maps to a bucket, the rate limiter's scheduler has one per row at LINE's figure,
and the sandbox counts each operation against the same bucket the rate limiter paces it in."""
from __future__ import annotations

import re

import pytest

from frontdesk.protocol import config
from frontdesk.protocol.line_endpoints import LIMITS, endpoint_name
from frontdesk.ratelimiter.buckets import Scheduler
from frontdesk.ratelimiter.line_api import build_request
from frontdesk.sandbox.app import API_ROUTES
from tests.test_sandbox_coverage import SAMPLE_PATH_VALUES, line_operations
from tests.sandbox_harness import AUTH, running_sandbox

import requests


def sample_path(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PATH_VALUES[m.group(1)], template)


@pytest.mark.parametrize("method, path, name", [
    ("POST", "/v2/bot/message/reply", "reply"),
    ("POST", "/v2/bot/message/multicast", "multicast"),
    ("POST", "/v2/bot/message/narrowcast", "narrowcast"),
    ("GET", "/v2/bot/profile/U1", "profile"),
    ("GET", "/v2/bot/message/123/content", "content"),
    ("POST", "/v2/bot/richmenu", "richmenu_create"),
    ("DELETE", "/v2/bot/richmenu/richmenu-1", "richmenu_delete"),
    ("GET", "/v2/bot/richmenu/richmenu-1", "default"),
    ("DELETE", "/v2/bot/richmenu/alias/a", "richmenu_alias_delete"),
    ("POST", "/v2/bot/richmenu/batch", "richmenu_batch"),
    ("POST", "/v2/bot/channel/webhook/test", "webhook_test"),
    ("GET", "/v2/bot/message/quota", "default"),
])
def test_each_request_counts_against_lines_row_for_it(method, path, name):
    assert endpoint_name(method, path) == name


def test_the_rate_limiter_has_a_bucket_per_row_at_lines_figure_unless_set():
    settings = config.load({"rate_limits": "push=1000/s"}, environ={})
    scheduler = Scheduler(settings.rate_limits)
    for name, (count, period) in LIMITS.items():
        expected = 1000.0 if name == "push" else count / period
        assert scheduler.queue_for(name).bucket.rate == pytest.approx(expected)
    assert scheduler.queue_for("richmenu_batch").bucket.rate == pytest.approx(3 / 3600)


def test_a_handlers_call_is_paced_in_its_endpoints_bucket():
    call = build_request("call", {"method": "POST", "path": "/v2/bot/richmenu/batch", "body": {}}, None)
    assert call.endpoint == "richmenu_batch"
    assert build_request("profile", {"userId": "U1"}, None).endpoint == "profile"


def test_the_sandbox_counts_every_operation_in_the_rate_limiters_bucket():
    for method, template, operation in line_operations():
        path = sample_path(template)
        expected = endpoint_name(method, path)
        # the route that serves it: literal segments win over {fields}, as in falcon's router
        matches = sorted((t.count("{"), t) for t in API_ROUTES
                         if re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(t)), path))
        assert matches, operation
        sandbox_name = API_ROUTES[matches[0][1]].endpoint_for(method)
        assert sandbox_name == expected or (sandbox_name not in LIMITS and expected == "default"), operation


def test_the_sandbox_enforces_lines_figure_per_endpoint(tmp_path):
    with running_sandbox(tmp_path) as sandbox:
        batch = [requests.post(sandbox.url + "/v2/bot/richmenu/batch", json={}, headers=AUTH, timeout=5).status_code
                 for _ in range(4)]
        assert batch == [400, 400, 400, 429]   # 3 an hour: refused or not, each call counts
        assert requests.get(sandbox.url + "/v2/bot/richmenu/list", headers=AUTH, timeout=5).status_code == 200
