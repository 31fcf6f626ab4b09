"""``/openapi.json`` matches the routes both ways, and schemathesis, driven by it, never gets a
5xx from the real daemon (bounded: a few hundred generated requests)."""
from __future__ import annotations

import re
from collections import Counter

import pytest
import schemathesis
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, settings

from memproxyd.api.openapi import document
from memproxyd.app import create_app
from memproxyd.config import Config, ServerConfig
from tests.conftest import Daemon, write_config

SAMPLES = {"id": "resp_abc123", "name": "alpha", "target": "gemini-2.5-flash:generateContent"}


async def test_every_documented_operation_is_a_route_and_every_route_is_documented(tmp_path):
    app = create_app(Config(server=ServerConfig(state_dir=str(tmp_path))))
    reached = set()
    for path, operations in document()["paths"].items():
        concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], path)
        for method in operations:
            match = await app.router.resolve(make_mocked_request(method.upper(), concrete,
                                                                 app=app))
            assert match.http_exception is None, f"{method} {path} is no route"
            reached.add(match.route)
    routes = {r for r in app.router.routes() if r.method != "HEAD"}
    missing = sorted(f"{r.method} {r.resource.canonical}" for r in routes - reached)
    assert not missing, f"routes not in /openapi.json: {missing}"


async def test_openapi_json_is_served_without_auth(aiohttp_client, tmp_path):
    app = create_app(Config(server=ServerConfig(state_dir=str(tmp_path))))
    client = await aiohttp_client(app)
    async with client.get("/openapi.json") as resp:
        assert resp.status == 200
        assert (await resp.json())["openapi"] == "3.1.0"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, openai_fake):
    config = write_config(tmp_path_factory.mktemp("openapi"), openai_fake.url,
                          memory='backend = "sqlite"')
    with Daemon(config) as daemon:
        yield daemon


schema = schemathesis.openapi.from_dict(document()).exclude(
    path_regex="^/admin/(projects|reload)")   # would open listeners or re-read the config
CASES: list[int] = []


@schema.parametrize()
@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case, gateway):
    response = case.call(base_url=gateway.url, timeout=10)
    CASES.append(response.status_code)
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:300])


def test_schemathesis_ran_a_bounded_number_of_cases():
    print(f"\nschemathesis cases: {len(CASES)}, statuses: {sorted(Counter(CASES).items())}")
    assert 50 <= len(CASES) <= 5000
