"""The content-hash index: remembers which SHA-256 a file had, keyed by what
the file system says about it, so a repeated call with an unchanged 1 GiB
file does not read it again (issue 4, docs/FILES.md "The index").

A row maps (st_dev, st_ino) to the (st_size, st_mtime_ns, st_ctime_ns) the
file had when it was hashed and the SHA-256 found. A lookup is a hit only when
all five fields are unchanged, so an append, a same-size rewrite (mtime and
ctime move), a rename-replace (new inode) or a utime() that puts the old mtime
back (ctime still moves) all rehash.

Racy files: file systems stamp mtime from a coarse clock, so a write landing
in the same tick as the hash could leave every field unchanged. A row is
therefore only trusted when the file's mtime and ctime were at least
RACY_MARGIN_NS older than the moment hashing started (2 s when the file system
keeps whole seconds); a younger file is hashed every time until it ages, the
rule git's index uses.

Storage: one SQLite file (_sqlitefile.py: WAL, busy timeout), so several
client processes can share it. Each row carries a check value over its fields:
a row damaged on disk reads as a miss, never as a wrong hash. A file that is
not a database or is malformed is deleted and rebuilt; any other SQLite
failure (locked for too long, read-only, disk full) makes the index step aside
for that operation: the file is hashed as if there were no index. The index
never raises to its caller except for errors of hashing itself.

Size: at most max_entries rows (plus a small slack between trims); the least
recently used rows go first.

Thread safety: an index may be used from several threads; SQLite work is
serialised by a lock, hashing (which releases the GIL) is not. After fork()
the child opens its own connection.
"""
import hashlib
import logging
import os
import stat as stat_mod
import threading
import time
from typing import Dict, Optional, Tuple

from . import _core
from ._sqlitefile import SqliteFile

__all__ = ["HashIndex", "open_index", "default_index", "INDEX_NAME", "MAX_ENTRIES",
           "RACY_MARGIN_NS"]

log = logging.getLogger("p2prpc.hashindex")

INDEX_NAME = "hashindex.sqlite"  # file name under a client's cache_path
MAX_ENTRIES = 100_000
RACY_MARGIN_NS = 100_000_000  # > any coarse-clock tick of a Linux file system
_RACY_MARGIN_COARSE_NS = 2_000_000_000  # file systems that keep whole (even) seconds
_TOUCH_NS = 60_000_000_000  # refresh a hit's LRU stamp at most once a minute
_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    sha TEXT NOT NULL,
    chk TEXT NOT NULL,
    used_ns INTEGER NOT NULL,
    PRIMARY KEY (dev, ino)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_used ON files (used_ns);
"""

Key = Tuple[int, int, int, int, int]


def _i64(v: int) -> int:
    """st_dev / st_ino are unsigned 64-bit; SQLite integers are signed."""
    return v - (1 << 64) if v >= (1 << 63) else v


def stat_key(st: os.stat_result) -> Key:
    """(dev, ino, size, mtime_ns, ctime_ns) of a stat result, as stored."""
    return (_i64(st.st_dev), _i64(st.st_ino), st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _check(key: Key, sha: str) -> str:
    return hashlib.sha256(("%d:%d:%d:%d:%d:%s" % (key + (sha,))).encode()).hexdigest()[:16]


def _valid_sha(sha) -> bool:
    return (isinstance(sha, str) and len(sha) == 64
            and all(c in "0123456789abcdef" for c in sha))


def _trusted(st: os.stat_result, started_ns: int) -> bool:
    margin = RACY_MARGIN_NS
    if st.st_mtime_ns % 1_000_000_000 == 0:
        margin = _RACY_MARGIN_COARSE_NS
    return max(st.st_mtime_ns, st.st_ctime_ns) + margin <= started_ns


class HashIndex:
    """The index kept in the SQLite file `path` (created with its directory
    when missing). Use sha256_fd(); lookup() and remember() are its parts."""

    def __init__(self, path, max_entries: int = MAX_ENTRIES):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1, not %r" % (max_entries,))
        self.path = os.path.abspath(os.fspath(path))
        self.max_entries = int(max_entries)
        self._trim_every = max(1, self.max_entries // 100)
        self._inserts = 0
        self._file = SqliteFile(self.path, _SCHEMA, _SCHEMA_VERSION, "hash index", "files")
        self.hits = 0
        self.misses = 0

    @property
    def rebuilds(self):
        """How often the file was found damaged and rebuilt."""
        return self._file.rebuilds

    def _run(self, what, fn):
        return self._file.run(what, fn)

    def close(self):
        """Close the SQLite connection; the index reopens it when used again."""
        self._file.close()

    # -- rows --------------------------------------------------------------------

    def lookup(self, st: os.stat_result) -> Optional[str]:
        """The SHA-256 remembered for a file with exactly this stat, or None."""
        key = stat_key(st)
        now = time.time_ns()

        def q(db):
            row = db.execute("SELECT size, mtime_ns, ctime_ns, sha, chk, used_ns FROM files "
                             "WHERE dev = ? AND ino = ?", key[:2]).fetchone()
            if row is None or tuple(row[:3]) != key[2:]:
                return None
            sha, chk, used = row[3], row[4], row[5]
            if not _valid_sha(sha) or chk != _check(key, sha):
                db.execute("DELETE FROM files WHERE dev = ? AND ino = ?", key[:2])
                return None
            if not isinstance(used, int) or now - used > _TOUCH_NS:
                db.execute("UPDATE files SET used_ns = ? WHERE dev = ? AND ino = ?",
                           (now,) + key[:2])
            return sha

        return self._run("be read", q)

    def remember(self, st: os.stat_result, sha: str) -> None:
        """Record that the file with this stat hashed to sha (64 lowercase hex).
        The caller checks the file was old enough (see the module doc)."""
        if not _valid_sha(sha):
            raise ValueError("not a SHA-256 (64 lowercase hex): %.80r" % (sha,))
        key = stat_key(st)
        row = key + (sha, _check(key, sha), time.time_ns())

        def w(db):
            db.execute("INSERT OR REPLACE INTO files (dev, ino, size, mtime_ns, ctime_ns, sha, "
                       "chk, used_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            self._inserts += 1
            if self._inserts >= self._trim_every:
                self._inserts = 0
                self._trim(db)
            return True

        self._run("be written", w)

    def _trim(self, db):
        count = db.execute("SELECT count(*) FROM files").fetchone()[0]
        if count <= self.max_entries:
            return
        keep = self.max_entries - self.max_entries // 10
        db.execute("DELETE FROM files WHERE (dev, ino) IN "
                   "(SELECT dev, ino FROM files ORDER BY used_ns LIMIT ?)", (count - keep,))

    def __len__(self):
        n = self._run("be read", lambda db: db.execute("SELECT count(*) FROM files").fetchone()[0])
        return n or 0

    # -- what callers use ----------------------------------------------------------

    def sha256_fd(self, fd: int) -> Tuple[str, int]:
        """(SHA-256 hex, size) of the whole content of the open file fd: from
        the index when the file is unchanged since it was last hashed, else
        hashed (from offset 0, position kept, GIL released) and remembered.
        Errors are those of hashing (p2prpc StorageError and the like)."""
        sha, size, _ = self._digest(fd, False)
        return sha, size

    def sha256_fd_chunks(self, fd: int) -> Tuple[str, int, bytes]:
        """sha256_fd, and the digests of the file's upload chunks when it was
        hashed now (_core.sha256_fd_chunks; b"" when the index answered)."""
        return self._digest(fd, True)

    def _digest(self, fd: int, chunks_too: bool) -> Tuple[str, int, bytes]:
        def hash_now():
            if chunks_too:
                return _core.sha256_fd_chunks(fd)
            return _core.sha256_file(fd), os.fstat(fd).st_size, b""

        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            return hash_now()
        sha = self.lookup(st)
        if sha is not None:
            self.hits += 1
            return sha, st.st_size, b""
        self.misses += 1
        for _ in range(3):
            started = time.time_ns()
            sha, size, chunks = hash_now()
            after = os.fstat(fd)
            if stat_key(after) == stat_key(st):
                break
            st = after  # changed while being read: hash the new content
        else:
            return sha, size, chunks
        if _trusted(st, started):
            self.remember(st, sha)
        return sha, st.st_size, chunks


_open: Dict[str, HashIndex] = {}
_open_lock = threading.Lock()


def open_index(cache_path, max_entries: int = MAX_ENTRIES) -> HashIndex:
    """The process's HashIndex kept in cache_path/INDEX_NAME (cache_path is a
    client's cache directory), shared by every caller naming the same one."""
    path = os.path.join(os.path.abspath(os.fspath(cache_path)), INDEX_NAME)
    with _open_lock:
        idx = _open.get(path)
        if idx is None:
            idx = _open[path] = HashIndex(path, max_entries)
        return idx


def default_index() -> HashIndex:
    """The index under the client's default cache_path
    (~/.cache/p2prpc/client, or $XDG_CACHE_HOME/p2prpc/client)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return open_index(os.path.join(base, "p2prpc", "client"))
