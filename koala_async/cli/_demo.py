"""``koala-async demo``: an in-process collector, sample traffic, and a summary that checks it."""

from __future__ import annotations

import argparse
import random
import uuid
from collections import Counter
from typing import Any

from .. import KoalaClient
from ..testing import FakeCollector

__all__ = ["add_parser"]

DEMO_KEY = "pk_demo"


def add_parser(commands: Any) -> argparse.ArgumentParser:
    demo: argparse.ArgumentParser = commands.add_parser(
        "demo", help="send sample traffic to an in-process collector"
    )
    demo.add_argument("--people", type=int, default=50, help="visitors to simulate (default 50)")
    demo.set_defaults(run=_demo)
    return demo


async def _demo(args: argparse.Namespace) -> int:
    fake = FakeCollector()
    sent: Counter[str] = Counter()
    rng = random.Random(7)
    pages = ["/", "/pricing", "/docs", "/blog/intent-data", "/signup"]
    async with fake.serve() as base_url:
        print(f"collector on {base_url}; sending traffic from {args.people} visitors…")
        async with KoalaClient(DEMO_KEY, base_url=base_url, user_agent="koala-async-demo") as koala:
            for n in range(args.people):
                ko_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                for path in rng.sample(pages, rng.randint(1, 4)):
                    await koala.page(
                        profile_id=ko_id, name=path, properties={"url": f"https://acme.dev{path}"}
                    )
                    sent["page_views"] += 1
                if n % 3 == 0:
                    email = f"visitor{n}@company{n % 7}.com"
                    await koala.identify(profile_id=ko_id, email=email, traits={"role": "eng"})
                    await koala.track(
                        "Signed Up", profile_id=ko_id, email=email, properties={"plan": "free"}
                    )
                    sent["identifies"] += 1
                    sent["events"] += 1
            for c in range(7):
                for group in ("development-team", "marketing-team"):
                    await koala.account_identify(
                        domain=f"company{c}.com",
                        group_id=group,
                        traits={"plan": "pro", "seats": 5 + c},
                    )
                    sent["account identifies"] += 1
                await koala.account_track("Workspace Created", domain=f"company{c}.com")
                sent["account events"] += 1
    got = Counter(
        {
            "page_views": len(fake.page_views),
            "identifies": len(fake.identifies),
            "events": len(fake.events),
            "account identifies": sum(e.type == "identify" for e in fake.accounts),
            "account events": sum(e.type == "track" for e in fake.accounts),
        }
    )
    print(
        f"the collector received {len(fake.requests)} requests for {len(fake.by_person())} people:"
    )
    for kind, count in sent.items():
        mark = "ok" if got[kind] == count else f"MISMATCH (sent {count})"
        print(f"  {kind:<20} {got[kind]:>5}  {mark}")
    print(f"  spec violations      {len(fake.violations):>5}")
    stats = koala.stats()
    print(
        f"the client: accepted {stats.accepted}, delivered {stats.delivered}, "
        f"dropped {stats.dropped_total}, in {stats.requests} requests ({stats.retries} retries)"
    )
    return 0 if got == sent and not fake.violations else 1
