"""SQLite backend: one file, an append-only revision log, watchers notified in process.

The model is k3s's kine. Every write appends one row to `log`; the row's `revision` (the primary key)
is the global revision and becomes `resourceVersion`. A row carries the key, the value (for a
deletion: the value that was deleted, so DELETED events and `delete()` can return it), the key's
`create_revision`, the revision of the row it supersedes (`prev_revision`, 0 for the first create)
and a `deleted` flag. Reading "key K as of revision R" is "the newest row of K with revision <= R".

Writes: one writer thread owns the only writing connection. Concurrent writes queue up and the
thread commits everything queued in one transaction (group commit), so N concurrent creates cost one
fsync, not N. Revisions are assigned by that thread, so they are strictly sequential and gap-free.

Durability: WAL mode with `synchronous=FULL` by default: a write is acknowledged only after its
commit is fsynced, so it survives SIGKILL of the process and also power loss. `synchronous=NORMAL`
(`sqlite:///path.db?synchronous=normal`) still survives SIGKILL (the OS holds the written WAL
pages) but may lose the last commits on power loss. Group commit makes FULL cheap enough to be the
default.

Reads run on a small thread pool with their own connections; in WAL mode each statement sees a
consistent snapshot, and the revision bound in every query gives snapshot reads at any kept revision.

Watch: after a batch commits, the writer thread hands its events to the event loop, which appends
them to each matching watcher's bounded queue (no polling). A watcher that falls `watch_queue_size`
events behind is cut off with WatchLagging. A watch from an old revision first replays rows from the
log up to the revision last published, then continues with live events, skipping any it already
replayed, so there is no gap and no duplicate.

Compaction at revision C deletes every row that was superseded by a row at revision <= C, and
tombstones at revision <= C: reads at revision >= C still see the same state. A background task
compacts to keep the larger of a time window (default 5 minutes) and a revision window (default
10,000 revisions).

Only one process may use a store file at a time (an advisory lock on `<file>.lock` enforces it):
the revision counter and the watchers live in this process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pinnace.store.base import (
    Compacted,
    Event,
    FutureRevision,
    KeyExists,
    KeyNotFound,
    KeyValue,
    ListResult,
    RevisionMismatch,
    StoreError,
    StoreUnavailable,
    WatchLagging,
    check_key,
    prefix_end,
)
from pinnace.store.compaction import (
    DEFAULT_KEEP_REVISIONS,
    DEFAULT_KEEP_SECONDS,
    CompactionWindow,
    compact_periodically,
)
from pinnace.store.wakeup import Wakeup

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_revision ON log (key, revision);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# The newest row of each key under a prefix as of a revision; deleted keys are filtered by callers.
LATEST_ROWS = """
SELECT l.key, l.value, l.create_revision, l.revision, l.deleted FROM log AS l
JOIN (SELECT MAX(revision) AS r FROM log WHERE key >= ? AND key < ? AND key > ? AND revision <= ?
      GROUP BY key) AS m
ON l.revision = m.r
"""

MAX_BATCH = 512  # writes per group commit; bounds the latency a single transaction can add
COMPACT_CHUNK = 2000  # revisions per compaction transaction, so writes interleave with compaction


@dataclass(slots=True)
class _Write:
    op: str  # "create" | "update" | "delete"
    key: str
    value: bytes | None
    expected: int | None
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Job:
    """Any other work for the writer thread (compaction); `fn(conn)` runs inside a transaction."""

    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


@dataclass(eq=False, slots=True)
class _Watcher:
    prefix: str
    limit: int
    events: collections.deque[Event] = field(default_factory=collections.deque)
    wakeup: Wakeup = field(default_factory=Wakeup)
    lagging: bool = False
    closed: bool = False


class SqliteStore:
    """The embedded store. `await start()` before use, `await close()` after."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        watch_queue_size: int = 1024,
        compact_interval: float = 60.0,
        compact_keep_seconds: float = DEFAULT_KEEP_SECONDS,
        compact_keep_revisions: int = DEFAULT_KEEP_REVISIONS,
        read_threads: int = 2,
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise StoreError(f"synchronous={synchronous!r} is not supported; use FULL or NORMAL")
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.watch_queue_size = watch_queue_size
        self.compact_interval = compact_interval
        self.compaction_window = CompactionWindow(compact_keep_seconds, compact_keep_revisions)
        self._read_threads = read_threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[_Write | _Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._lock_file: int | None = None
        self._next_revision = 0  # owned by the writer thread: the last revision it assigned
        self._published = 0  # owned by the loop: the last revision whose events reached watchers
        self._compacted = 0
        self._watchers: dict[str, set[_Watcher]] = {}
        self._compactor: asyncio.Task[None] | None = None
        self._writer_error: StoreError | None = None
        self.commits = 0  # transactions committed: with group commit, fewer than writes
        self._closed = True

    async def __aenter__(self) -> SqliteStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- lifecycle ---

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._open)
        self._closed = False
        self._readers = ThreadPoolExecutor(self._read_threads, thread_name_prefix="store-read")
        started = threading.Event()
        self._writer = threading.Thread(
            target=self._writer_main, args=(started,), name="store-writer", daemon=True
        )
        self._writer.start()
        await asyncio.to_thread(started.wait)
        if self._writer_error is not None:
            await self.close()
            raise self._writer_error
        if self.compact_interval > 0:
            self._compactor = asyncio.create_task(
                compact_periodically(self, self.compaction_window, self.compact_interval),
                name="store-compactor",
            )

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StoreUnavailable(
                f"cannot open the store at {self.path}: {e.strerror}; check the path and its permissions"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreUnavailable(
                f"the store at {self.path} is in use by another process; stop it or use another data dir"
            ) from None
        self._lock_file = fd
        try:
            conn = self._connect()
            try:
                conn.executescript(SCHEMA)
                row = conn.execute("SELECT COALESCE(MAX(revision), 0) FROM log").fetchone()
                meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
            finally:
                conn.close()
        except StoreError:
            self._unlock()
            raise
        except sqlite3.Error as e:
            self._unlock()
            raise self._unavailable(e) from None
        self._next_revision = row[0]
        self._published = self._next_revision
        self._compacted = meta.get("compacted", 0)

    def _unavailable(self, e: sqlite3.Error) -> StoreUnavailable:
        if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
            return StoreUnavailable(
                f"the store file {self.path} is corrupt or not a SQLite database ({e}); restore it from a "
                "backup, or move it away to start with an empty store"
            )
        return StoreUnavailable(
            f"cannot use the store file {self.path} ({e}); check that it exists, is readable and writable, "
            "and that the disk is not full"
        )

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.Error as e:
            raise self._unavailable(e) from None
        return conn

    def _close_readers(self) -> None:
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    def _unlock(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)  # closing the descriptor releases the flock
            self._lock_file = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
        self._queue.put(None)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.join)
        if self._readers is not None:
            await asyncio.to_thread(self._readers.shutdown, True)  # waits for reads in flight
        await asyncio.to_thread(self._close_readers)
        for group in self._watchers.values():
            for w in group:
                w.closed = True
                w.wakeup.set()
        self._watchers.clear()
        self._unlock()

    # --- writes ---

    async def create(self, key: str, value: bytes) -> int:
        check_key(key)
        return await self._write("create", key, value, None)

    async def update(self, key: str, value: bytes, expected_revision: int | None) -> int:
        check_key(key)
        return await self._write("update", key, value, expected_revision)

    async def delete(self, key: str, expected_revision: int | None = None) -> KeyValue:
        check_key(key)
        return await self._write("delete", key, None, expected_revision)

    async def _write(self, op: str, key: str, value: bytes | None, expected: int | None) -> Any:
        self._check_open()
        if op != "delete" and not isinstance(value, bytes):
            raise TypeError(f"store values are bytes, not {type(value).__name__} (key {key!r})")
        future = asyncio.get_running_loop().create_future()
        self._queue.put(_Write(op, key, value, expected, future))
        return await future

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"the store at {self.path} is closed")

    def _writer_main(self, started: threading.Event) -> None:
        try:
            conn = self._connect()
        except StoreError as e:
            self._writer_error = e
            return
        finally:
            started.set()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self._queue.put(None)  # stop after this batch
                        break
                    batch.append(item)
                self._commit_batch(conn, batch)
        finally:
            conn.close()
            # Anything still queued (close() raced a write) must fail, never hang.
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    self._resolve(
                        [(item.future, StoreUnavailable(f"the store at {self.path} is closed"))], []
                    )

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Write | _Job]) -> None:
        results: list[tuple[asyncio.Future[Any], Any]] = []
        events: list[Event] = []
        start_revision = self._next_revision
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                if isinstance(item, _Job):
                    results.append((item.future, item.fn(conn)))
                    continue
                try:
                    result, event = self._apply(conn, item)
                except StoreError as e:
                    results.append((item.future, e))
                    continue
                results.append((item.future, result))
                events.append(event)
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as e:  # the writer thread must survive and answer every caller
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._next_revision = start_revision
            if isinstance(e, sqlite3.Error):
                error: StoreError = self._unavailable(e)
                log.error("store commit failed: %s", error)
            else:
                error = StoreError(f"internal store error, nothing was written: {e!r}")
                log.exception("store commit failed")
            results = [(item.future, error) for item in batch]
            events = []
        self._resolve(results, events)

    def _apply(self, conn: sqlite3.Connection, w: _Write) -> tuple[Any, Event]:
        row = conn.execute(
            "SELECT revision, value, create_revision, deleted FROM log WHERE key = ? "
            "ORDER BY revision DESC LIMIT 1",
            (w.key,),
        ).fetchone()
        live = row is not None and not row[3]
        revision = self._next_revision + 1
        if w.op == "create":
            if live:
                raise KeyExists(w.key)
            conn.execute(
                "INSERT INTO log VALUES (?, ?, ?, ?, ?, 0)",
                (revision, w.key, w.value, revision, row[0] if row else 0),
            )
            self._next_revision = revision
            return revision, Event("ADDED", w.key, revision, w.value, None, revision)
        if not live:
            raise KeyNotFound(w.key)
        current = KeyValue(w.key, row[1], row[2], row[0])
        if w.expected is not None and w.expected != row[0]:
            raise RevisionMismatch(w.key, w.expected, current)
        if w.op == "update":
            conn.execute(
                "INSERT INTO log VALUES (?, ?, ?, ?, ?, 0)", (revision, w.key, w.value, row[2], row[0])
            )
            self._next_revision = revision
            return revision, Event("MODIFIED", w.key, revision, w.value, row[1], row[2])
        conn.execute("INSERT INTO log VALUES (?, ?, ?, ?, ?, 1)", (revision, w.key, row[1], row[2], row[0]))
        self._next_revision = revision
        deleted = KeyValue(w.key, row[1], row[2], revision)
        return deleted, Event("DELETED", w.key, revision, None, row[1], row[2])

    def _resolve(self, results: list[tuple[asyncio.Future[Any], Any]], events: list[Event]) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._finish, results, events)

    def _finish(self, results: list[tuple[asyncio.Future[Any], Any]], events: list[Event]) -> None:
        # Publish before acknowledging: a watch started right after a write returns must see it,
        # either live or in its replay (which reads up to the published revision).
        if events:
            self._publish(events)
            self._published = events[-1].revision
        for future, result in results:
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _publish(self, events: list[Event]) -> None:
        for prefix, group in list(self._watchers.items()):
            matching = [e for e in events if e.key.startswith(prefix)] if prefix else events
            if not matching:
                continue
            for w in list(group):
                if len(w.events) + len(matching) > w.limit:
                    w.lagging = True
                    group.discard(w)
                else:
                    w.events.extend(matching)
                w.wakeup.set()
            if not group:
                self._watchers.pop(prefix, None)

    async def _run_job(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        self._check_open()
        future = asyncio.get_running_loop().create_future()
        self._queue.put(_Job(fn, future))
        return await future

    # --- reads ---

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._check_open()
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._call_read, fn, args)

    def _call_read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        try:
            return fn(conn, *args)
        except sqlite3.Error as e:
            raise self._unavailable(e) from None

    def _read_revision(self, revision: int | None) -> int:
        current = self._published
        if revision is None or revision == 0:
            return current
        if revision > current:
            raise FutureRevision(revision, current)
        if revision < self._compacted:
            raise Compacted(revision, self._compacted)
        return revision

    async def current_revision(self) -> int:
        return self._published

    async def compacted_revision(self) -> int:
        return self._compacted

    async def get(self, key: str, revision: int | None = None) -> KeyValue | None:
        check_key(key)
        at = self._read_revision(revision)
        row = await self._read(_get_row, key, at)
        if row is None or row[3]:
            return None
        return KeyValue(key, row[0], row[1], row[2])

    async def list(
        self,
        prefix: str,
        *,
        revision: int | None = None,
        limit: int = 0,
        start_after: str | None = None,
    ) -> ListResult:
        at = self._read_revision(revision)
        rows, remaining = await self._read(_list_rows, prefix, at, limit, start_after)
        items = [KeyValue(r[0], r[1], r[2], r[3]) for r in rows]
        # Compaction may have removed rows of `at` while we read: refuse rather than return a hole.
        if at < self._compacted:
            raise Compacted(at, self._compacted)
        return ListResult(items, at, remaining > 0, remaining)

    async def count(self, prefix: str) -> int:
        return await self._read(_count_rows, prefix, self._published)

    # --- watch ---

    async def watch(self, prefix: str, after_revision: int) -> AsyncIterator[Event]:
        self._check_open()
        if after_revision < self._compacted:
            raise Compacted(after_revision, self._compacted)
        w = _Watcher(prefix, self.watch_queue_size)
        self._watchers.setdefault(prefix, set()).add(w)
        try:
            # Everything up to `replay_to` is in the log; everything after arrives in w.events.
            replay_to = self._published
            last = after_revision
            while last < replay_to:
                chunk = await self._read(_replay_rows, prefix, last, replay_to, 1000)
                if last < self._compacted:
                    raise Compacted(last, self._compacted)
                for row in chunk:
                    event = _row_event(row)
                    last = event.revision
                    yield event
                if len(chunk) < 1000:
                    break
            last = max(last, replay_to)
            while True:
                while w.events:
                    event = w.events.popleft()
                    if event.revision > last:
                        last = event.revision
                        yield event
                if w.lagging:
                    raise WatchLagging(
                        f"watch on {prefix!r} fell more than {w.limit} events behind at revision {last} and "
                        "was cut off; re-list and watch again from the list's revision"
                    )
                if w.closed:
                    return
                await w.wakeup.wait()
        finally:
            group = self._watchers.get(prefix)
            if group is not None:
                group.discard(w)
                if not group:
                    del self._watchers[prefix]

    def watcher_count(self) -> int:
        return sum(len(g) for g in self._watchers.values())

    # --- compaction ---

    async def compact(self, revision: int) -> None:
        current = self._published
        if revision > current:
            raise FutureRevision(revision, current)
        start = self._compacted
        if revision <= start:
            return
        # Readers check `_compacted` after reading, so raise it before any row goes away.
        self._compacted = revision

        def mark(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('compacted', ?)", (revision,))

        await self._run_job(mark)
        for low in range(start, revision, COMPACT_CHUNK):
            high = min(low + COMPACT_CHUNK, revision)
            await self._run_job(lambda conn, lo=low, hi=high: _compact_range(conn, lo, hi, current))


def _get_row(conn: sqlite3.Connection, key: str, at: int) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT value, create_revision, revision, deleted FROM log WHERE key = ? AND revision <= ? "
        "ORDER BY revision DESC LIMIT 1",
        (key, at),
    ).fetchone()


def _bounds(prefix: str, start_after: str | None) -> tuple[str, str, str]:
    """(low, high, after) for `key >= low AND key < high AND key > after`: the keys under `prefix`."""
    return prefix, prefix_end(prefix), start_after or ""


def _list_rows(
    conn: sqlite3.Connection, prefix: str, at: int, limit: int, start_after: str | None
) -> tuple[list[tuple[Any, ...]], int]:
    low, high, after = _bounds(prefix, start_after)
    sql = f"{LATEST_ROWS} WHERE l.deleted = 0 ORDER BY l.key"
    if limit <= 0:
        return conn.execute(sql, (low, high, after, at)).fetchall(), 0
    rows = conn.execute(f"{sql} LIMIT ?", (low, high, after, at, limit)).fetchall()
    remaining = _count(conn, low, high, rows[-1][0], at) if len(rows) == limit else 0
    return rows, remaining


def _count(conn: sqlite3.Connection, low: str, high: str, after: str, at: int) -> int:
    sql = f"SELECT COUNT(*) FROM ({LATEST_ROWS} WHERE l.deleted = 0)"
    return conn.execute(sql, (low, high, after, at)).fetchone()[0]


def _count_rows(conn: sqlite3.Connection, prefix: str, at: int) -> int:
    low, high, after = _bounds(prefix, None)
    return _count(conn, low, high, after, at)


def _replay_rows(
    conn: sqlite3.Connection, prefix: str, after: int, upto: int, limit: int
) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT l.revision, l.key, l.value, l.create_revision, l.deleted, p.value FROM log AS l "
        "LEFT JOIN log AS p ON p.revision = l.prev_revision "
        "WHERE l.revision > ? AND l.revision <= ? AND l.key >= ? AND l.key < ? "
        "ORDER BY l.revision LIMIT ?",
        (after, upto, prefix, prefix_end(prefix), limit),
    ).fetchall()


def _row_event(row: tuple[Any, ...]) -> Event:
    revision, key, value, create_revision, deleted, prev_value = row
    if deleted:
        return Event("DELETED", key, revision, None, value, create_revision)
    if create_revision == revision:
        return Event("ADDED", key, revision, value, None, create_revision)
    return Event("MODIFIED", key, revision, value, prev_value, create_revision)


def _compact_range(conn: sqlite3.Connection, low: int, high: int, keep_from: int) -> None:
    # Every superseded row is named by exactly one successor's prev_revision, so deleting the rows
    # named by successors in (low, high] removes exactly what those successors superseded.
    conn.execute(
        "DELETE FROM log WHERE revision IN "
        "(SELECT prev_revision FROM log WHERE revision > ? AND revision <= ? AND prev_revision > 0)",
        (low, high),
    )
    # Tombstones are not needed to read at or after `high`; the newest row stays so that the
    # current revision survives a restart.
    conn.execute(
        "DELETE FROM log WHERE revision > ? AND revision <= ? AND deleted = 1 AND revision < ?",
        (low, high, keep_from),
    )
