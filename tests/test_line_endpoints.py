"""LINE's per-endpoint rate limits, named once (protocol/line_endpoints.py), seen from the sandbox:
it counts each operation of messaging-api.yml against the same bucket the rate limiter paces it
in, and enforces LINE's figure per endpoint over real HTTP. The table itself is tested in-process
(tests/unit/test_endpoint_table.py)."""
from __future__ import annotations

import re

import requests

from frontdesk.protocol.line_endpoints import LIMITS, endpoint_name
from frontdesk.sandbox.app import API_ROUTES
from tests.sandbox_harness import AUTH, running_sandbox
from tests.test_sandbox_coverage import SAMPLE_PATH_VALUES, line_operations


def sample_path(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PATH_VALUES[m.group(1)], template)


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
