"""``collection.state_file``: the incremental page state in SQLite, so that a restart costs
about one steady round instead of reading every tag's history again.

One file, three tables: ``meta`` (what the file is, and its format version), ``tags`` (per tag:
listing order, page size, totals, status table) and ``segments`` (per run of messages: its
statuses, STOP flags and dates, one byte, one byte and eight bytes a message). Nothing else:
no phone number (the exporter never keeps one), no API key, no URL. Each round's changes are
written in one transaction (SQLite's journal makes it all or nothing), only the segments that
changed.

Outcomes, as docs/failure-modes.md says: at start-up a file that is not a SQLite
database, not ours, of another format version, or that cannot be written is one line on
stderr and exit 2 (:func:`check`); at run time a failing write is logged once and the state is
kept in memory only from then on (:meth:`StateStore.save`); never a crash, never wrong counts
(a state read back is checked page by page like any other, see ``state.py``).

One exporter per file: the store holds an exclusive lock (:class:`Claim`) for as long as it is
open, so that a second exporter started on the same file stops at start-up (exit 2, one line)
instead of writing over the first one's state.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import threading
from array import array
from collections.abc import Iterable, Mapping
from pathlib import Path

from .model import DATES, ORDERS, Segment, TagState

log = logging.getLogger(__name__)

FORMAT = "smsp-exporter-state"
VERSION = 1  # dates as native-endian uint32 (array "I")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tags (tag TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    tag TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    codes BLOB NOT NULL, stops BLOB NOT NULL, dates BLOB NOT NULL,
    read_at REAL NOT NULL, ref INTEGER NOT NULL, unknown_seen REAL, live INTEGER NOT NULL,
    PRIMARY KEY (tag, lo)
);
"""


class StateFileError(Exception):
    """The state file cannot be used; the message is one line naming the file."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"collection.state_file: {path}: {problem}")


# -- the lock: one exporter (process) per state file ------------------------------------------
#
# An exclusive ``flock`` on a sidecar file, ``PATH.lock`` beside the state file, not on the
# database file itself: SQLite locks the database with POSIX ``fcntl`` record locks, which a
# process loses all at once when it closes *any* descriptor of that file, and which on NFS are
# what Linux emulates ``flock`` with (so the two would merge and undo each other). The sidecar
# is never opened by SQLite, so neither lock can release the other. The lock file is never
# removed (removing it would let two exporters lock two different files of the same name); it
# holds the process id of the holder, for the error message. The OS releases the lock when the
# process ends, however it ends (SIGKILL, a crash): there is no stale lock to clean up.
#
# flock conflicts between two open descriptions of the file even in one process, and a reload
# opens the file again while the previous exporter still holds it: so the lock is taken once
# per process and file, and shared (counted) by every store and check of that process.


class Claim:
    """This process's hold on a state file's lock; :meth:`release` once (again: no-op)."""

    def __init__(self, key: str) -> None:
        self._key: str | None = key

    def release(self) -> None:
        with _held_lock:
            key, self._key = self._key, None
            if key is None:
                return
            fd, count = _held[key]
            if count > 1:
                _held[key] = (fd, count - 1)
                return
            del _held[key]
            os.close(fd)  # the lock goes with the last descriptor of its open description


_held: dict[str, tuple[int, int]] = {}  # lock file (real path) -> (its descriptor, claims)
_held_lock = threading.Lock()


def lock_path(path: str) -> str:
    """The lock file of the state file ``path`` (beside the file, symbolic links resolved)."""
    return os.path.realpath(path) + ".lock"


def claim(path: str) -> Claim:
    """Take the lock of the state file ``path`` for this process (shared within the process);
    raise :class:`StateFileError` if another process holds it."""
    key = lock_path(path)
    with _held_lock:
        if key in _held:
            fd, count = _held[key]
            _held[key] = (fd, count + 1)
            return Claim(key)
        try:
            fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            problem = f"cannot open its lock file {key} ({err.strerror})"
            raise StateFileError(path, problem) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _holder(fd)
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                problem = f"in use by another smsp-exporter ({holder}lock file {key})"
                raise StateFileError(path, problem) from None
            raise StateFileError(path, f"cannot lock {key} ({err.strerror})") from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = (fd, 1)
        return Claim(key)


def _holder(fd: int) -> str:
    """``pid N, `` from what the holder wrote in the lock file; empty if nothing usable."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f"pid {text}, " if text.isdigit() else ""


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


def open_store(path: str) -> StateStore:
    """Open (or create) the state file; raise :class:`StateFileError` if it cannot serve."""
    file = Path(path)
    if file.exists() and not file.is_file():
        raise StateFileError(path, "not a regular file")
    if not file.exists():
        if not file.parent.is_dir():
            raise StateFileError(path, f"directory {file.parent} does not exist")
        if not os.access(file.parent, os.W_OK):
            raise StateFileError(path, f"cannot create it: directory {file.parent} is read-only")
    elif not os.access(file, os.W_OK) or not os.access(file.parent, os.W_OK):
        # SQLite writes its journal beside the file: both must be writable.
        raise StateFileError(path, "not writable (the file and its directory must be)")
    held = claim(path)  # before reading it: another exporter may be writing it
    try:
        return _open(path, held)
    except BaseException:
        held.release()
        raise


def _open(path: str, held: Claim) -> StateStore:
    file = Path(path)
    created = not file.exists()
    try:
        conn = _connect(path)
    except sqlite3.Error as err:
        raise StateFileError(path, f"cannot open it ({err})") from None
    try:
        if created:
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if tables and "meta" not in tables:
            raise StateFileError(path, "not a state file of smsp-exporter (another database)")
        if not tables:
            conn.execute("BEGIN")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute("INSERT INTO meta VALUES ('format', ?), ('version', ?)", (FORMAT, VERSION))
            conn.execute("COMMIT")
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        if meta.get("format") != FORMAT:
            raise StateFileError(path, "not a state file of smsp-exporter (another database)")
        if str(meta.get("version")) != str(VERSION):
            raise StateFileError(
                path,
                f"state format version {meta.get('version')}, this smsp-exporter reads "
                f"version {VERSION}: move the file away (it is rebuilt)",
            )
        # A real write: the process may lack the right to write even where os.access said yes.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE meta SET value = value WHERE key = 'format'")
        conn.execute("COMMIT")
        store = StateStore(path, conn, held)
        store.load()  # a file whose content does not read back is corrupt
        return store
    except StateFileError:
        conn.close()
        raise
    except sqlite3.OperationalError as err:
        conn.close()
        if "readonly" in str(err) or "read-only" in str(err):
            raise StateFileError(path, "not writable") from None
        raise StateFileError(path, f"cannot use it ({err})") from None
    except sqlite3.DatabaseError as err:
        conn.close()
        raise StateFileError(path, f"corrupt or not a SQLite database ({err})") from None
    except (ValueError, TypeError, KeyError) as err:
        conn.close()
        raise StateFileError(path, f"corrupt content ({type(err).__name__}: {err})") from None


def check(path: str | None) -> None:
    """Start-up check of ``collection.state_file`` (raises :class:`StateFileError`)."""
    held = hold(path)
    if held is not None:
        held.release()


def hold(path: str | None) -> Claim | None:
    """:func:`check`, keeping the file's lock: the caller releases it once the exporter has
    opened the file (so that no other exporter takes it in between)."""
    if path is None:
        return None
    held = claim(path)
    try:
        open_store(path).close()  # the store's own claim is shared with ``held``
    except BaseException:
        held.release()
        raise
    return held


class StateStore:
    """An open state file. Thread-safe; writes are all or nothing per round."""

    def __init__(self, path: str, conn: sqlite3.Connection, held: Claim | None = None) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        self._held = held  # the file's lock, released after the connection is closed
        self._lock = threading.Lock()
        self._saved: dict[str, dict[int, Segment]] = {}  # tag -> lo -> the segment saved
        self.failed = False

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._held is not None:
                self._held.release()
                self._held = None

    def load(self) -> dict[str, TagState]:
        with self._lock:
            conn = self._conn
            assert conn is not None
            states: dict[str, TagState] = {}
            for tag, body in conn.execute("SELECT tag, body FROM tags"):
                doc = json.loads(body)
                state = TagState(
                    order=str(doc["order"]),
                    size=int(doc["size"]),
                    total=int(doc["total"]),
                    label_total=int(doc["label_total"]),
                    complete=bool(doc["complete"]),
                    statuses=[str(s) for s in doc["statuses"]],
                    cursor=int(doc["cursor"]),
                    whole_until=float(doc["whole_until"]),
                    api_newest=int(doc["api_newest"]),
                    api_seen=float(doc["api_seen"]),
                    # Added after the first files were written: absent reads as "long ago".
                    checked_at=float(doc.get("checked_at", 0.0)),
                    changed_at=float(doc.get("changed_at", 0.0)),
                    audited_at=float(doc.get("audited_at", 0.0)),
                    dirty=False,
                )
                if state.order not in ORDERS or state.size < 0 or state.total < 0:
                    raise ValueError(f"tag {tag!r}: impossible values")
                states[str(tag)] = state
            rows = conn.execute(
                "SELECT tag, lo, hi, codes, stops, dates, read_at, ref, unknown_seen, live "
                "FROM segments ORDER BY tag, lo"
            )
            for tag, lo, hi, codes, stops, dates, read_at, ref, unknown_seen, live in rows:
                owner = states.get(tag)
                if owner is None:
                    continue
                dates_array = array(DATES)
                dates_array.frombytes(dates)
                n = hi - lo
                if not (
                    n > 0 and len(codes) == n and len(stops) == n and len(dates_array) == n
                ) or (codes and max(codes) >= len(owner.statuses)):
                    raise ValueError(f"tag {tag!r}: a segment does not add up")
                owner.segments.append(
                    Segment(
                        lo,
                        hi,
                        bytes(codes),
                        bytes(stops),
                        dates_array,
                        read_at,
                        ref,
                        unknown_seen,
                        bool(live),
                    )
                )
            for tag, state in states.items():
                end = -1
                for seg in state.segments:
                    if seg.lo < end:
                        raise ValueError(f"tag {tag!r}: segments overlap")
                    end = seg.hi
                self._saved[tag] = {seg.lo: seg for seg in state.segments}
            return states

    def save(self, states: Mapping[str, TagState], keep: Iterable[str]) -> None:
        """Write what changed since the last save, in one transaction; forget other tags."""
        keep = set(keep)
        with self._lock:
            if self._conn is None or self.failed:
                return
            try:
                self._write(self._conn, states, keep)
            except (sqlite3.Error, OSError) as err:
                self.failed = True
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                log.error(
                    "cannot write the state file: the page state is kept in memory only from "
                    "now on (a restart reads every tag again)",
                    extra={"path": self.path, "error": str(err)},
                )

    def _write(
        self, conn: sqlite3.Connection, states: Mapping[str, TagState], keep: set[str]
    ) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for tag in list(self._saved):
            if tag not in keep:
                conn.execute("DELETE FROM tags WHERE tag = ?", (tag,))
                conn.execute("DELETE FROM segments WHERE tag = ?", (tag,))
                del self._saved[tag]
        saved_now: dict[str, dict[int, Segment]] = {}
        for tag, state in states.items():
            if tag not in keep or not state.dirty:
                continue
            body = {
                "order": state.order,
                "size": state.size,
                "total": state.total,
                "label_total": state.label_total,
                "complete": state.complete,
                "statuses": state.statuses,
                "cursor": state.cursor,
                "whole_until": state.whole_until,
                "api_newest": state.api_newest,
                "api_seen": state.api_seen,
                "checked_at": state.checked_at,
                "changed_at": state.changed_at,
                "audited_at": state.audited_at,
            }
            conn.execute("INSERT OR REPLACE INTO tags VALUES (?, ?)", (tag, json.dumps(body)))
            before = self._saved.get(tag, {})
            now = {seg.lo: seg for seg in state.segments}
            gone = [(tag, lo) for lo, seg in before.items() if now.get(lo) is not seg]
            conn.executemany("DELETE FROM segments WHERE tag = ? AND lo = ?", gone)
            conn.executemany(
                "INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        tag,
                        seg.lo,
                        seg.hi,
                        seg.codes,
                        seg.stops,
                        seg.dates.tobytes(),
                        seg.read_at,
                        seg.ref,
                        seg.unknown_seen,
                        int(seg.live),
                    )
                    for seg in state.segments
                    if before.get(seg.lo) is not seg
                ],
            )
            saved_now[tag] = now
        conn.execute("COMMIT")
        for tag, now in saved_now.items():
            self._saved[tag] = now
            states[tag].dirty = False
