"""A caller's deadline bounds every dependency call its request makes (gateway.core.deadlines): the
Triton client against a server that accepts and never answers, a Milvus call that hangs."""

from __future__ import annotations

import asyncio
import re
import socket
import time

import pytest

from gateway.backends.milvus.connection import Calls
from gateway.backends.triton import TritonInference
from gateway.core.deadlines import within
from gateway.core.errors import ErrorKind, ServiceError
from gateway.runtime.blip_decode import GenerationSettings

pytestmark = pytest.mark.integration


def timed_out(coroutine_factory, seconds: float) -> tuple[ServiceError, float]:
    """The error and how long the caller waited for it (a hung call's worker thread may run on)."""
    async def main():
        start = time.monotonic()
        with within(seconds), pytest.raises(ServiceError) as error:
            await coroutine_factory()
        return error.value, time.monotonic() - start

    return asyncio.run(main())


def budget_in(message: str) -> float:
    """The seconds a dependency call was given, from "... did not answer ... within 0.487s"."""
    return float(re.search(r"within ([0-9.e-]+)s", message).group(1))


def test_a_triton_call_gets_the_callers_deadline_not_its_own_timeout(model_repository):
    with socket.socket() as hung:  # a "Triton" that accepts connections and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        url = f"127.0.0.1:{hung.getsockname()[1]}"

        async def call():
            inference = TritonInference(url, model_repository, False, GenerationSettings(), timeout_s=30, retries=0)
            try:
                return await inference.embed_texts(["a query"])
            finally:
                await inference.close()

        error, elapsed = timed_out(call, 0.5)
    # the call was given the caller's 0.5 s, not its own 30 s (the budget it got is in the message)
    assert error.kind is ErrorKind.TIMEOUT and budget_in(error.message) <= 0.5, (error, elapsed)


def test_a_milvus_call_gets_the_callers_deadline_and_none_starts_after_it():
    calls = Calls(timeout_s=30)  # what every MilvusStore operation goes through
    error, elapsed = timed_out(lambda: calls("search", time.sleep, 3), 0.3)
    assert error.kind is ErrorKind.TIMEOUT and budget_in(error.message) <= 0.3, (error, elapsed)
    error, elapsed = timed_out(lambda: calls("search", time.sleep, 3), 0)
    assert error.kind is ErrorKind.TIMEOUT and "deadline passed" in error.message, (error, elapsed)  # no call made
