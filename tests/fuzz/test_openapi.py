"""Schemathesis over the served OpenAPI document: no 5xx, and every response as documented.

Each operation gets ``REFLEXBLUE_FUZZ_EXAMPLES`` generated requests (default 10) per pass. Without
a token there are two passes, valid and invalid data. With the seeded user's token there are
three, all in the seeded administration, because a random administration code only gets 403:
valid data addressing the seeded record, valid data with random record ids, and invalid data.
The seed is fixed (``REFLEXBLUE_FUZZ_SEED``, default 20240301), so a CI run is repeatable; set
another seed to explore other inputs. A test collects every failing operation before it fails,
so one run reports all of them.

The operations run through schemathesis' Python API (``APIOperation.as_strategy``) and not its
pytest plugin, because the plugin's fixture-based loader fails on pytest 9.2 (schemathesis
4.32.5 sets ``Node._nodeid``, which pytest 9.2 no longer has).
"""

from __future__ import annotations

import os
from collections.abc import Callable
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

from .conftest import ADMINISTRATION

if TYPE_CHECKING:
    from .conftest import FuzzServer

EXAMPLES = int(os.environ.get("REFLEXBLUE_FUZZ_EXAMPLES", "10"))
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


def _describe(case: schemathesis.Case, response: requests.Response | None, error: BaseException) -> str:
    failures = error.exceptions if isinstance(error, FailureGroup) else (error,)
    lines = []
    if response is not None:
        lines.append(f"  response: {response.status_code} {response.headers.get('content-type')} "
                     f"{response.text[:300]!r}")
    for failure in failures:
        if isinstance(failure, Failure):
            lines.append(f"  {failure.title}: {failure.message.strip()}")
        else:
            lines.append(f"  {type(failure).__name__}: {failure}")
    lines.append(f"  reproduce: {case.as_curl_command()}")
    return "\n".join(lines)


#: (generation mode, fixed path parameters) of each pass; the path parameters are filled in per operation.
Pass = tuple[GenerationMode, dict[str, str]]


def fuzz_operation(
    operation: schemathesis.APIOperation, base_url: str, headers: dict[str, str], passes: list[Pass]
) -> list[str]:
    """Send generated requests to ``operation``; return a description of each failed check."""
    failures: list[str] = []
    for mode, fixed in passes:
        names = {parameter.name for parameter in operation.path_parameters}
        path_parameters = {name: value for name, value in fixed.items() if name in names}
        label = f"{operation.label} ({mode.value} data, fixed {path_parameters})"

        # Failures are collected instead of raised, so Hypothesis neither shrinks nor stops early,
        # which keeps the run time bounded by EXAMPLES.
        @seed(SEED)
        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        def send(case: schemathesis.Case) -> None:
            if len(failures) >= MAX_FAILURES_PER_OPERATION:
                return
            response = None
            try:
                response = case.call(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT)
                case.validate_response(response, checks=CHECKS, headers=headers)
            except (Failure, FailureGroup, requests.RequestException) as error:
                failures.append(f"{label}:\n{_describe(case, response, error)}")  # noqa: B023 - runs before the loop moves on

        try:
            send()
        except Unsatisfiable:
            # An operation without parameters or body (GET /healthz) has no invalid data to send.
            assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no valid request could be generated"
    return failures


def fuzz_all(
    schema: schemathesis.BaseSchema, base_url: str, headers: dict[str, str], passes: Callable[[str], list[Pass]]
) -> tuple[int, list[str]]:
    """Fuzz every operation of ``schema`` with ``passes(path)``; return the number of operations and the failures."""
    count = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the served OpenAPI document has an invalid operation: {result.err()}"
        operation = result.ok()
        count += 1
        failures.extend(fuzz_operation(operation, base_url, headers, passes(operation.path)))
    return count, failures


def _resource_of(path: str) -> str | None:
    """Return the resource of ``/api/{version}/administrations/{code}/{resource}...``, or None."""
    parts = path.strip("/").split("/")
    return parts[4] if len(parts) >= 5 and parts[2] == "administrations" else None


def test_api_without_token(api_schema: schemathesis.BaseSchema, fuzz_server: FuzzServer) -> None:
    count, failures = fuzz_all(api_schema, fuzz_server.base_url, {},
                               lambda path: [(GenerationMode.POSITIVE, {}), (GenerationMode.NEGATIVE, {})])

    assert count > 100
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)


def test_api_with_token(api_schema: schemathesis.BaseSchema, fuzz_server: FuzzServer) -> None:
    def passes(path: str) -> list[Pass]:
        administration = {"code": ADMINISTRATION}
        record_id = fuzz_server.record_ids.get(_resource_of(path) or "")
        seeded_record = {**administration, "record_id": record_id} if record_id else administration
        return [
            (GenerationMode.POSITIVE, seeded_record),
            (GenerationMode.POSITIVE, administration),
            (GenerationMode.NEGATIVE, administration),
        ]

    count, failures = fuzz_all(api_schema, fuzz_server.base_url,
                               {"Authorization": f"Bearer {fuzz_server.token}"}, passes)

    assert count > 100
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
