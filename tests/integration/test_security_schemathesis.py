"""The API server fuzzed from its own OpenAPI: schemathesis generates requests for every operation of
the core v1 and apps/v1 documents the server serves, valid ones and ones that break the schema.

What a client must always get: an answer within `TIMEOUT` seconds (no hang), never a 5xx, and for
every 4xx a `Status` body with `kind`, `code` (the HTTP status), `reason` and `message`.

The CI budget is bounded: a few examples per operation (`PINNACE_SCHEMATHESIS_EXAMPLES`, default 3,
valid and schema-breaking mixed), a fixed derandomized seed so a failure replays, no hypothesis deadline and
no example database. A longer campaign is the same test with more examples per operation:

    PINNACE_SCHEMATHESIS_EXAMPLES=200 pytest --timeout 0 tests/integration/test_security_schemathesis.py

Watches are kept short (`timeoutSeconds=1`) so that a generated `watch=true` is a real watch that
ends, not a stream the test would have to wait out. What a run found stays pinned in
`test_regressions_found_by_fuzzing` in `test_security_fuzz.py`.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

EXAMPLES = int(os.environ.get("PINNACE_SCHEMATHESIS_EXAMPLES", "3"))
TIMEOUT = 10  # seconds: any request slower than this counts as a hang
DOCUMENTS = ("api/v1", "apis/apps/v1")
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


# schemathesis draws some values with the `random` module inside its strategies; hypothesis seeds that
# module per example, so runs stay reproducible and its deprecation notice is only noise here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning")


def load_schema(session: requests.Session, base: str, group_version: str) -> Any:
    response = session.get(f"{base}/openapi/v3/{group_version}", timeout=TIMEOUT)
    response.raise_for_status()
    schema = schemathesis.openapi.from_dict(response.json())
    schema.config.update(base_url=base)
    return schema


def check(response: Any, what: str) -> None:
    code = response.status_code
    assert code < 500, f"{what} -> {code}: {response.text[:500]}"
    if 400 <= code < 500 and response.request.method != "HEAD":  # HEAD answers carry no body
        try:
            status = response.json()
        except ValueError:
            pytest.fail(f"{what} -> {code} without a JSON Status: {response.text[:300]!r}")
        assert isinstance(status, dict) and status.get("kind") == "Status", f"{what} -> {code}: {status}"
        assert status.get("code") == code, f"{what} -> {code}: {status}"
        assert isinstance(status.get("reason"), str) and isinstance(status.get("message"), str), f"{what}: {status}"


def fuzz(operation: Any, session: requests.Session, tried: Counter[str], codes: Counter[int]) -> None:
    """`EXAMPLES` generated requests for one operation, valid and schema-breaking alike."""
    # Valid requests in `default`, so they reach validation and the store instead of a 404 for a
    # namespace that does not exist; the schema-breaking ones keep their generated namespaces.
    fixed = {"namespace": "default"} if "{namespace}" in operation.path else None
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed),
                         operation.as_strategy(GenerationMode.NEGATIVE))

    @SETTINGS
    @given(case=strategy)
    def run(case: Any) -> None:
        query = case.query if isinstance(case.query, dict) else {}
        if "/watch/" in case.formatted_path or "watch" in query:
            # a watch lasts `timeoutSeconds` by design; one second keeps it a watch that ends by itself
            case.query = {**query, "timeoutSeconds": 1}
        # schemathesis' transport sets `verify` itself, so the cluster CA and token go in per call
        try:
            response = case.call(session=session, timeout=TIMEOUT, verify=session.verify,
                                 headers={"Authorization": session.headers["Authorization"]})
        except requests.exceptions.Timeout:
            pytest.fail(f"no answer in {TIMEOUT}s to {case.as_curl_command()}")
        tried[operation.label] += 1
        codes[response.status_code] += 1
        check(response, f"{case.method} {case.formatted_path} query={case.query!r}")

    run()


def test_schemathesis_core_and_apps(api_server) -> None:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override the cluster CA
    session.verify = str(api_server.ca_path)
    session.headers["Authorization"] = f"Bearer {api_server.admin_token}"
    tried: Counter[str] = Counter()
    codes: Counter[int] = Counter()
    try:
        for group_version in DOCUMENTS:
            schema = load_schema(session, api_server.url, group_version)
            for result in schema.get_all_operations():
                operation = result.ok()
                fuzz(operation, session, tried, codes)
    finally:
        session.close()
    print(f"schemathesis: {sum(tried.values())} requests over {len(tried)} operations; codes {dict(codes)}")
