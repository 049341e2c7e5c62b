"""Schemathesis over the served OpenAPI document: no 5xx, and every response as documented.

Each operation gets ``REFLEXBLUE_FUZZ_EXAMPLES`` generated requests (default 6) with valid data
and as many with invalid data, once without a token and once with the seeded user's token. The
seed is fixed (``REFLEXBLUE_FUZZ_SEED``, default 20240301), so a CI run is repeatable; set
another seed to explore other inputs. A test collects every failing operation before it fails,
so one run reports all of them.

The operations run through schemathesis' Python API (``APIOperation.as_strategy``) and not its
pytest plugin, because the plugin's fixture-based loader fails on pytest 9.2 (schemathesis
4.32.5 sets ``Node._nodeid``, which pytest 9.2 no longer has).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok

if TYPE_CHECKING:
    from .conftest import FuzzServer

EXAMPLES = int(os.environ.get("REFLEXBLUE_FUZZ_EXAMPLES", "6"))
SEED = int(os.environ.get("REFLEXBLUE_FUZZ_SEED", "20240301"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: Seconds one request may take before it counts as a failure of its operation.
REQUEST_TIMEOUT = 10.0
#: Failures listed per operation; more of the same operation add nothing to the report.
MAX_FAILURES_PER_OPERATION = 3


@pytest.fixture(scope="session")
def api_schema(fuzz_server: FuzzServer) -> schemathesis.BaseSchema:
    """The OpenAPI document as the running server serves it at /schema/openapi.json."""
    config = SchemathesisConfig.from_dict({"seed": SEED, "base-url": fuzz_server.base_url})
    return schemathesis.openapi.from_url(f"{fuzz_server.base_url}/schema/openapi.json", config=config)


def _describe(case: schemathesis.Case, error: BaseException) -> str:
    failures = error.exceptions if isinstance(error, FailureGroup) else (error,)
    lines = []
    for failure in failures:
        if isinstance(failure, Failure):
            lines.append(f"  {failure.title}: {failure.message.strip()}")
        else:
            lines.append(f"  {type(failure).__name__}: {failure}")
    lines.append(f"  reproduce: {case.as_curl_command()}")
    return "\n".join(lines)


def fuzz_operation(operation: schemathesis.APIOperation, base_url: str, headers: dict[str, str]) -> list[str]:
    """Send generated requests to ``operation``; return a description of each failed check."""
    failures: list[str] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        # Failures are collected instead of raised, so Hypothesis neither shrinks nor stops early,
        # which keeps the run time bounded by EXAMPLES.
        @seed(SEED)
        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def send(case: schemathesis.Case) -> None:
            if len(failures) >= MAX_FAILURES_PER_OPERATION:
                return
            try:
                case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=REQUEST_TIMEOUT)
            except (Failure, FailureGroup, requests.RequestException) as error:
                failures.append(f"{operation.label} ({mode.value} data):\n{_describe(case, error)}")

        try:
            send()
        except Unsatisfiable:
            # An operation without parameters or body (GET /healthz) has no invalid data to send.
            assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no valid request could be generated"
    return failures


def fuzz_all(schema: schemathesis.BaseSchema, base_url: str, headers: dict[str, str]) -> tuple[int, list[str]]:
    """Fuzz every operation of ``schema``; return the number of operations and the failures."""
    count = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the served OpenAPI document has an invalid operation: {result.err()}"
        count += 1
        failures.extend(fuzz_operation(result.ok(), base_url, headers))
    return count, failures


def test_api_without_token(api_schema: schemathesis.BaseSchema, fuzz_server: FuzzServer) -> None:
    count, failures = fuzz_all(api_schema, fuzz_server.base_url, {})

    assert count > 100
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)


def test_api_with_token(api_schema: schemathesis.BaseSchema, fuzz_server: FuzzServer) -> None:
    count, failures = fuzz_all(api_schema, fuzz_server.base_url, {"Authorization": f"Bearer {fuzz_server.token}"})

    assert count > 100
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
