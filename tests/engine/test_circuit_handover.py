"""A long outage: the batches waiting for the circuit's probe must not wait forever when the
probing batch is given up (issue 28: an import never resumed after a 240 s outage)."""

from __future__ import annotations

import anyio
import pytest
from wire_check import free_port

from koala_async import KoalaClient, RetryPolicy
from koala_async.testing import FakeCollector

pytestmark = pytest.mark.anyio


async def test_sending_resumes_after_an_outage_that_outlasts_every_probe_batch() -> None:
    port = free_port()  # nothing listens there yet
    fake = FakeCollector()
    retry = RetryPolicy(max_attempts=2, backoff=0.05, max_backoff=0.1)
    async with KoalaClient(
        "pk_test", base_url=f"http://127.0.0.1:{port}", retry=retry, flush_interval=0.01
    ) as koala:
        for i in range(40):
            await koala.track("E", email=f"p{i}@acme.com")
        # Long enough for probe batches to use up their two attempts and be dropped.
        with anyio.move_on_after(1.5):
            while koala.stats().dropped["retries_exhausted"] < 3:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        assert koala.stats().dropped["retries_exhausted"] >= 3
        async with fake.serve(port=port):
            await koala.flush(timeout=10)
            stats = koala.stats()
    assert stats.pending == 0, "every batch was sent or given up"
    assert len(fake.events) == stats.delivered > 0
