"""SingleFlight: one blocking call at a time, shared by the callers that arrive while it runs."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from reflexblue.api.availability import SingleFlight


class CountingCall:
    """A blocking call that counts how often it ran and takes ``seconds``."""

    def __init__(self, seconds: float, error: Exception | None = None) -> None:
        self.seconds = seconds
        self.error = error
        self.calls = 0
        self.finished = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        time.sleep(self.seconds)
        self.finished.set()
        if self.error is not None:
            raise self.error


def test_single_flight_shares_running_call() -> None:
    call = CountingCall(0.2)
    flight = SingleFlight(call)

    async def run_five() -> None:
        await asyncio.gather(*(flight.run() for _ in range(5)))

    asyncio.run(run_five())

    assert call.calls == 1


def test_single_flight_shares_error() -> None:
    call = CountingCall(0.1, RuntimeError("database down"))
    flight = SingleFlight(call)

    async def run_three() -> list[BaseException | None]:
        return await asyncio.gather(*(flight.run() for _ in range(3)), return_exceptions=True)

    outcomes = asyncio.run(run_three())

    assert call.calls == 1
    assert [str(outcome) for outcome in outcomes] == ["database down"] * 3


def test_single_flight_starts_again_after_finish() -> None:
    call = CountingCall(0.01)
    flight = SingleFlight(call)

    async def run_twice() -> None:
        await flight.run()
        await flight.run()

    asyncio.run(run_twice())

    assert call.calls == 2


def test_single_flight_timeout_leaves_call_running() -> None:
    call = CountingCall(0.3)
    flight = SingleFlight(call)

    async def wait_briefly_then_join() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(flight.run(), 0.05)
        assert not call.finished.is_set()
        await flight.run()  # joins the same call instead of starting a second one

    asyncio.run(wait_briefly_then_join())

    assert call.finished.is_set()
    assert call.calls == 1
