"""Store benchmark: both backends against their bare clients, on this machine, in one run.

Prints one JSON line:
{"sqlite": {create_per_s, update_per_s, concurrent_create_per_s, watch_p99_ms, raw_per_s, ratio_to_raw},
 "etcd": {same keys}}

- create_per_s / update_per_s: one client, one request at a time (update is compare-and-swap).
- concurrent_create_per_s: CONCURRENCY clients creating at once.
- watch_p99_ms: 100 watchers on one prefix while creates arrive at 1,000/s; the time from a write
  being acknowledged to each watcher receiving its event (an event that arrives before the write's
  acknowledgement counts as 0).
- raw_per_s: SQLite: bare `sqlite3` inserts into the same kind of log table, one row per commit, WAL and
  the same `synchronous` setting as the store. etcd: bare `aetcd` puts against the same etcd member at
  the same concurrency as concurrent_create_per_s.
- ratio_to_raw = concurrent_create_per_s / raw_per_s.

On stderr, for context: bare `aetcd` create transactions (compare create_revision == 0, then put: the
request the store must send for a create) at the same concurrency, and the store's ratio to them.

Needs the etcd binary (apt-get install etcd-server); takes under a minute.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aetcd
from aetcd import rpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fixtures

from tests.fixtures.etcd import etcd_cluster_running

from pinnace.store.etcd import EtcdStore
from pinnace.store.sqlite import SqliteStore

PHASE_SECONDS = 1.5
ROUND_SECONDS = 1.0
ROUNDS = 3
CONCURRENCY = 64
WATCHERS = 100
WATCH_RATE = 1000
WATCH_SECONDS = 3.0
VALUE = b'{"kind":"Pod","apiVersion":"v1","metadata":{"name":"x","namespace":"default"},"spec":{}}' * 8


async def timed(
    make: Callable[[int], Awaitable[object]], seconds: float = PHASE_SECONDS, concurrency: int = 1
) -> float:
    """Calls `await make(i)` with `concurrency` callers for `seconds`; returns completed calls per second."""
    done = 0
    counter = iter(range(10**9))
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await make(next(counter))
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def watch_p99(store: SqliteStore | EtcdStore, prefix: str) -> float:
    start = await store.current_revision()
    acked: dict[int, float] = {}
    received: list[list[tuple[int, float]]] = [[] for _ in range(WATCHERS)]
    total = int(WATCH_RATE * WATCH_SECONDS)

    async def watcher(n: int) -> None:
        out = received[n]
        async for event in store.watch(prefix, start):
            out.append((event.revision, time.perf_counter()))
            if len(out) == total:
                return

    watchers = [asyncio.create_task(watcher(n)) for n in range(WATCHERS)]
    await asyncio.sleep(0.5)  # let every watch get established

    async def write(i: int) -> None:
        revision = await store.create(f"{prefix}{i}", VALUE)
        acked[revision] = time.perf_counter()

    t0 = time.perf_counter()
    writes = []
    for i in range(total):
        delay = t0 + i / WATCH_RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        writes.append(asyncio.create_task(write(i)))
    await asyncio.gather(*writes)
    await asyncio.wait_for(asyncio.gather(*watchers), 30)
    latencies = sorted(max(0.0, t - acked[rev]) for out in received for rev, t in out)
    return latencies[int(len(latencies) * 0.99)] * 1000


async def bench_store(
    store: SqliteStore | EtcdStore, raw: Callable[[], Awaitable[float]]
) -> dict[str, float]:
    result: dict[str, float] = {}
    result["create_per_s"] = await timed(lambda i: store.create(f"/bench/create/{i}", VALUE))
    await store.create("/bench/update", VALUE)
    revision = [await store.current_revision()]

    async def update(i: int) -> None:
        revision[0] = await store.update("/bench/update", VALUE, revision[0])

    result["update_per_s"] = await timed(update)
    # The machine is shared and noisy: alternate short rounds of the store and of the bare client,
    # and keep the best of each, so that both see the same conditions.
    concurrent: list[float] = []
    bare: list[float] = []
    for round_ in range(ROUNDS):
        concurrent.append(
            await timed(
                lambda i, r=round_: store.create(f"/bench/concurrent/{r}/{i}", VALUE),
                ROUND_SECONDS,
                concurrency=CONCURRENCY,
            )
        )
        bare.append(await raw())
    result["concurrent_create_per_s"] = max(concurrent)
    result["watch_p99_ms"] = await watch_p99(store, "/bench/watch/")
    result["raw_per_s"] = max(bare)
    result["ratio_to_raw"] = result["concurrent_create_per_s"] / result["raw_per_s"]
    return {k: round(v, 2) for k, v in result.items()}


def raw_sqlite(path: Path, synchronous: str) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(
        "CREATE TABLE log (revision INTEGER PRIMARY KEY, key TEXT NOT NULL, value BLOB NOT NULL, "
        "create_revision INTEGER NOT NULL, prev_revision INTEGER NOT NULL, deleted INTEGER NOT NULL)"
    )
    conn.execute("CREATE INDEX log_key_revision ON log (key, revision)")
    done = 0
    start = time.perf_counter()
    end = start + ROUND_SECONDS
    while time.perf_counter() < end:
        done += 1
        conn.execute("BEGIN")
        conn.execute("INSERT INTO log VALUES (?, ?, ?, ?, 0, 0)", (done, f"/raw/{done}", VALUE, done))
        conn.execute("COMMIT")
    conn.close()
    return done / (time.perf_counter() - start)


async def main() -> None:
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="pinnace-bench-") as tmp:
        store = SqliteStore(Path(tmp) / "state.db", compact_interval=0)
        rounds = iter(range(ROUNDS))

        async def raw_sqlite_round() -> float:
            path = Path(tmp) / f"raw-{next(rounds)}.db"
            return await asyncio.to_thread(raw_sqlite, path, store.synchronous)

        async with store:
            out["sqlite"] = await bench_store(store, raw_sqlite_round)

        with etcd_cluster_running(Path(tmp) / "etcd", members=1) as cluster:
            host, port = cluster.endpoints[0].rsplit(":", 1)
            async with aetcd.Client(host, int(port)) as client:
                etcd_rounds = iter(range(ROUNDS))
                txn_rates: list[float] = []

                # For context (stderr, not part of the result line): a create must be a compare-and-put
                # transaction, which etcd itself serves slower than a plain put; measured in the same rounds.
                def create_txn(i: int, r: int) -> Awaitable[object]:
                    key = f"/raw-txn/{r}/{i}".encode()
                    absent = rpc.Compare(key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL)
                    put = rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=VALUE))
                    return client.kvstub.Txn(rpc.TxnRequest(compare=[absent], success=[put]))

                async def raw_etcd_round() -> float:
                    r = next(etcd_rounds)
                    txn_rates.append(
                        await timed(lambda i: create_txn(i, r), ROUND_SECONDS, concurrency=CONCURRENCY)
                    )
                    return await timed(
                        lambda i: client.put(f"/raw/{r}/{i}".encode(), VALUE),
                        ROUND_SECONDS,
                        concurrency=CONCURRENCY,
                    )

                async with EtcdStore(cluster.endpoints, prefix="/pinnace", compact_interval=0) as etcd_store:
                    out["etcd"] = await bench_store(etcd_store, raw_etcd_round)
                txn = max(txn_rates)
    print(json.dumps(out))
    context = {
        "raw_create_txn_per_s": round(txn, 2),
        "concurrent_create_to_raw_create_txn": round(out["etcd"]["concurrent_create_per_s"] / txn, 2),
    }
    print(json.dumps({"etcd_context": context}), file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
