"""How fast a bulk cancel goes through many watches, a batch at a time, against its anchor.

    python bench/bulk.py [--watches 20000] [--batch 500]

Registers ``--watches`` pending watches in a private Redis, half of them labelled ``run=a``,
then cancels that half with :func:`taskwarden.service.bulk.apply` (what ``POST
/v1/watches:cancel`` and ``taskwarden cancel --label`` run), ``--batch`` at a time following the
cursor, and prints the milliseconds per batch and watches cancelled per second. The anchor is
the same cancels issued one ``store.cancel`` per id, the ids known beforehand (the least work a
caller holding the list could do), on a second copy of the same watches.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from taskwarden.models import Registration, watch_id
from taskwarden.redis_server import RedisServer
from taskwarden.service import Selection, bulk
from taskwarden.store import Store

NOW = 1_700_000_000.0


def populate(store: Store, n: int, run: str) -> list[str]:
    """``n`` watches, every other one labelled ``run=<run>``; the labelled ones' ids."""
    ids = []
    for i in range(n):
        labels = {"run": run} if i % 2 == 0 else {"run": "other"}
        remote = f"{run}-{i:06d}"
        reg = Registration.model_validate(
            {"provider": "geobox", "remote_id": remote, "labels": labels}
        )
        store.register(reg, NOW + i)
        if i % 2 == 0:
            ids.append(watch_id("geobox", remote))
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watches", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp), persist=False) as server:
        store = Store.from_url(server.url)
        populate(store, args.watches, "a")
        anchor_ids = populate(store, args.watches, "b")

        started = time.perf_counter()
        batches, cancelled, cursor = 0, 0, None
        while True:
            done = bulk.apply(store, "cancel", Selection(labels={"run": "a"}), now=NOW + 10**6,
                              limit=args.batch, cursor=cursor)  # fmt: skip
            batches += 1
            cancelled += done.changed
            cursor = done.next_cursor
            if cursor is None:
                break
        took = time.perf_counter() - started

        started = time.perf_counter()
        for wid in anchor_ids:
            store.cancel(wid, NOW + 10**6)
        anchor = time.perf_counter() - started
        store.close()
    print(f"bulk cancel: {cancelled} watches in {batches} batches of {args.batch}: "
          f"{took * 1000 / batches:.1f} ms a batch, {cancelled / took:,.0f} watches/s")  # fmt: skip
    print(f"anchor, one store.cancel per known id: {len(anchor_ids) / anchor:,.0f} watches/s")
    print(f"ratio bulk / anchor: {anchor / took:.2f} (1.0: the listing costs nothing)")


if __name__ == "__main__":
    main()
