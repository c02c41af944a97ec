"""SQLite backend specifics: durability under SIGKILL, clear errors, group commit, compaction."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pinnace.store import Compacted, StoreUnavailable
from pinnace.store.compaction import CompactionWindow
from pinnace.store.sqlite import SqliteStore

WRITER = """
import asyncio, sys
from pinnace.store.sqlite import SqliteStore

async def main():
    store = SqliteStore(sys.argv[1], synchronous=sys.argv[2])
    await store.start()
    print("ready", flush=True)

    async def writer(w):
        i = 0
        while True:
            key = f"/k/{w}/{i}"
            revision = await store.create(key, f"{w}-{i}".encode())
            print(key, revision, flush=True)  # only after the write was acknowledged
            i += 1

    await asyncio.gather(*(writer(w) for w in range(8)))

asyncio.run(main())
"""


def write_until_killed(db: Path, synchronous: str) -> dict[str, int]:
    """Runs WRITER in a child process, SIGKILLs it mid-writes; returns what it acknowledged."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), synchronous], stdout=subprocess.PIPE, text=True
    )
    acknowledged: dict[str, int] = {}
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 5
        while len(acknowledged) < 2000 and time.monotonic() < deadline:
            key, revision = child.stdout.readline().split()
            acknowledged[key] = int(revision)
        child.send_signal(signal.SIGKILL)
        for line in child.stdout:  # whatever was acknowledged before the kill
            parts = line.split()
            if len(parts) == 2:
                acknowledged[parts[0]] = int(parts[1])
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return acknowledged


@pytest.mark.parametrize("synchronous", ["full", "normal"])
async def test_sigkill_loses_no_acknowledged_write(tmp_path: Path, synchronous: str) -> None:
    db = tmp_path / "state.db"
    acknowledged = await asyncio.to_thread(write_until_killed, db, synchronous)
    assert len(acknowledged) > 100

    async with SqliteStore(db) as store:
        assert await store.current_revision() >= max(acknowledged.values())
        for key, revision in acknowledged.items():
            kv = await store.get(key)
            assert kv is not None, f"acknowledged write {key} at revision {revision} was lost"
            assert kv.mod_revision == revision
            w, i = key.split("/")[2:]
            assert kv.value == f"{w}-{i}".encode()
        # The revision counter goes on from where the killed process stopped.
        assert await store.create("/after", b"x") == await store.current_revision()


async def test_a_corrupt_file_names_the_problem(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    db.write_bytes(b"this is not a database" * 500)
    with pytest.raises(StoreUnavailable, match=r"corrupt or not a SQLite database.*restore it from a backup"):
        await SqliteStore(db).start()


async def test_an_unusable_path_names_the_problem(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreUnavailable, match=r"cannot open the store at .*check the path"):
        await SqliteStore(tmp_path / "file" / "state.db").start()


async def test_a_second_process_cannot_open_the_same_file(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "state.db"):
        with pytest.raises(StoreUnavailable, match="in use by another process"):
            await SqliteStore(tmp_path / "state.db").start()


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "state.db") as store:
        before = store.commits
        revisions = await asyncio.gather(*(store.create(f"/c/{i}", b"v") for i in range(200)))
        assert (
            sorted(revisions) == list(range(revisions[0], revisions[0] + 200)) or len(set(revisions)) == 200
        )
        assert store.commits - before < 100  # group commit: many writes per transaction


async def test_a_closed_store_refuses_requests_and_ends_watches(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    await store.start()
    rev = await store.create("/a", b"1")
    watch = store.watch("/", rev)
    waiter = asyncio.ensure_future(anext(watch, None))
    await asyncio.sleep(0.05)
    await store.close()
    assert await asyncio.wait_for(waiter, 5) is None
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.create("/b", b"2")


async def test_background_compaction_keeps_a_window(tmp_path: Path) -> None:
    store = SqliteStore(
        tmp_path / "state.db", compact_interval=0.05, compact_keep_seconds=0, compact_keep_revisions=10
    )
    async with store:
        first = await store.create("/k", b"0")
        for i in range(1, 50):
            await store.update("/k", str(i).encode(), None)
        await asyncio.sleep(0.3)
        current = await store.current_revision()
        assert await store.compacted_revision() == current - 10
        with pytest.raises(Compacted):
            await store.get("/k", revision=first)
        assert (await store.get("/k", revision=current - 10)).value == b"39"
        assert (await store.get("/k")).value == b"49"
    # Superseded rows are gone from the file; the compacted revision survives a restart.
    async with SqliteStore(tmp_path / "state.db", compact_interval=0) as store:
        assert await store.compacted_revision() == current - 10
        rows = await store._read(lambda conn: conn.execute("SELECT COUNT(*) FROM log").fetchone()[0])
        assert rows <= 11


def test_the_default_window_keeps_five_minutes_or_ten_thousand_revisions(tmp_path: Path) -> None:
    window = SqliteStore(tmp_path / "state.db").compaction_window
    assert (window.keep_seconds, window.keep_revisions) == (300, 10_000)
    now = 1000.0
    for t, revision in [(now - 600, 30_000), (now - 300, 35_000), (now - 10, 49_000)]:
        window.observe(t, revision)
    assert window.target(now, 50_000) == 35_000  # the 5-minute window keeps more than 10,000 revisions
    window = CompactionWindow()
    for t, revision in [(now - 600, 1_000), (now - 300, 45_000)]:
        window.observe(t, revision)
    assert window.target(now, 50_000) == 40_000  # 10,000 revisions keep more than 5 minutes
    assert CompactionWindow().target(now, 50_000) == 0  # no sample is 5 minutes old yet: keep all


async def test_compaction_removes_deleted_keys_and_keeps_live_ones(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "state.db", compact_interval=0) as store:
        for i in range(20):
            await store.create(f"/d/{i}", b"v")
        for i in range(10):
            await store.delete(f"/d/{i}")
        await store.create("/last", b"x")
        await store.compact(await store.current_revision())
        assert [kv.key for kv in (await store.list("/d/")).items] == [f"/d/{i}" for i in range(10, 20)]
        rows = await store._read(lambda conn: conn.execute("SELECT COUNT(*) FROM log").fetchone()[0])
        assert rows == 11


def test_no_stray_file_descriptors_after_close(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))

    async def cycle() -> None:
        async with SqliteStore(tmp_path / "state.db") as store:
            await store.create("/x", b"1")
            await store.get("/x")

    asyncio.run(cycle())
    assert len(os.listdir("/proc/self/fd")) <= before
