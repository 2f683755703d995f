"""Test helpers: a fake Koala collector to plug into KoalaClient, in memory or on a port.

::

    from koala_async import KoalaClient
    from koala_async.testing import FakeCollector

    async def test_signup_is_tracked():
        fake = FakeCollector()
        async with fake.serve() as base_url:  # or: fake.transport(), with no sockets
            async with KoalaClient("pk_test", base_url=base_url) as koala:
                await koala.track("Signed Up", email="ada@acme.com")
        assert [e.event for e in fake.events] == ["Signed Up"]
        assert fake.violations == []
"""

from ._collector import Entry, FakeCollector, Received, Reply, Totals

__all__ = ["Entry", "FakeCollector", "Received", "Reply", "Totals"]
