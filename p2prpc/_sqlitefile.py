"""A client-side SQLite file that is only ever a cache: the content-hash index
(_hashindex.py) and the result cache (_client/cache.py ResultCache) keep their rows
in one each.

What they share: WAL with synchronous=NORMAL (a row lost to a power cut only
costs a rehash or a fetch from the broker), a busy timeout so several client
processes can share a cache_path, a schema version, one connection per
process (reopened after fork) used under a lock, and this rule for failures:
a file that is not a database, is malformed or has another schema version is
deleted and rebuilt (once per operation); any other SQLite or OS failure
(locked for too long, read-only, disk full) makes the operation return None,
logged once, so the caller goes on without the cache.
"""
import logging
import os
import sqlite3
import threading
import time
from typing import Optional

__all__ = ["SqliteFile"]

log = logging.getLogger("p2prpc.cache")

_BUSY_TIMEOUT_S = 5.0
_LOCKED_TRIES = 5  # tries of one operation SQLite answered "locked" at once
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


def _is_locked(e: sqlite3.Error) -> bool:
    text = str(e).lower()
    return isinstance(e, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def _is_corruption(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xff in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(e).lower()
    return type(e) is sqlite3.DatabaseError and ("not a database" in text or "malformed" in text)


class SqliteFile:
    """The SQLite file `path` holding `schema` (CREATE ... IF NOT EXISTS
    statements) at `version`; `what` names it in log messages and
    `first_table` is read on open so a damaged file fails there."""

    def __init__(self, path, schema, version, what, first_table):
        self.path = os.path.abspath(os.fspath(path))
        self.schema = schema
        self.version = version
        self.what = what
        self.first_table = first_table
        self.lock = threading.Lock()
        self._db: Optional[sqlite3.Connection] = None
        self._pid = -1
        self._warned = False
        self.rebuilds = 0

    def _connect(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None,
                             check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, self.version):
                raise sqlite3.DatabaseError("%s schema version %d is not %d"
                                            % (self.what, version, self.version))
            db.executescript(self.schema)
            if version == 0:
                db.execute("PRAGMA user_version=%d" % self.version)
            # Fail here, not halfway through an operation, when the file is damaged.
            db.execute("SELECT count(*) FROM (SELECT 1 FROM %s LIMIT 1)"
                       % self.first_table).fetchone()
        except BaseException:
            db.close()
            raise
        return db

    def remove_files(self):
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(self.path + suffix)
            except FileNotFoundError:
                pass

    def _conn(self) -> sqlite3.Connection:
        """The open connection; opened (or rebuilt) on first use and after fork.
        Caller holds the lock. Raises sqlite3.Error / OSError when unusable."""
        if self._db is not None and self._pid == os.getpid():
            return self._db
        self._db = None  # a parent's connection is never used after fork
        try:
            db = self._connect()
        except sqlite3.Error as e:
            if not _is_corruption(e) and "schema version" not in str(e):
                raise
            log.warning("the %s %s is damaged (%s); rebuilding it", self.what, self.path, e)
            self.remove_files()
            self.rebuilds += 1
            db = self._connect()
        self._db, self._pid = db, os.getpid()
        return db

    def run(self, what, fn, fallback=None):
        """fn(connection) under the lock. A damaged file is rebuilt and fn tried
        once more; other SQLite or OS failures return `fallback` (logged once)."""
        with self.lock:
            rebuilt = False
            for attempt in range(_LOCKED_TRIES):
                started = time.monotonic()
                try:
                    return fn(self._conn())
                except sqlite3.Error as e:
                    if (_is_locked(e) and attempt + 1 < _LOCKED_TRIES
                            and time.monotonic() - started < _BUSY_TIMEOUT_S / 2):
                        # SQLite answers "locked" at once, without waiting out the
                        # busy timeout, where waiting could deadlock (a reader
                        # becoming a writer, a first open switching to WAL while
                        # another process does): try again shortly.
                        time.sleep(0.02 * (attempt + 1))
                        continue
                    if not rebuilt and _is_corruption(e):
                        rebuilt = True
                        log.warning("the %s %s is damaged (%s); rebuilding it",
                                    self.what, self.path, e)
                        self._close_locked()
                        try:
                            self.remove_files()
                        except OSError:
                            pass
                        self.rebuilds += 1
                        continue
                    self._warn(what, e)
                    return fallback
                except (OSError, ValueError) as e:
                    self._warn(what, e)
                    return fallback
        return fallback

    def _warn(self, what, e):
        if not self._warned:
            self._warned = True
            log.warning("the %s %s could not %s (%s); going on without it",
                        self.what, self.path, what, e)

    def _close_locked(self):
        db, self._db = self._db, None
        if db is not None and self._pid == os.getpid():
            try:
                db.close()
            except sqlite3.Error:
                pass

    def close(self):
        """Close the connection; it is reopened when used again."""
        with self.lock:
            self._close_locked()
