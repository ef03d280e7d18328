"""The client's result cache: finished calls kept on the client's disk, so
that calling a function again with the same arguments answers without the
network. One ResultCache per cache_path in a process (open_cache), shared by
every app that names it.
"""
import atexit
import json
import os
import re
import tempfile
import threading
import time

from .. import _core
from .._sqlitefile import SqliteFile
from .._wire import decode_entries

WRITE_BEHIND_GATHER_S = 0.1  # the result cache's writer wakes at most this often

_SHA_RE = re.compile(r"[0-9a-f]{64}\Z")


def default_cache_path():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "p2prpc", "client")


RESULTS_NAME = "results.sqlite"  # the result records, under a client's cache_path
_RESULTS_SCHEMA_VERSION = 1
_RESULTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS result_files (
    path TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (path, id)
) WITHOUT ROWID;
"""


class ResultCache:
    """The client's local store of finished calls under `root`: their records
    in results.sqlite (one row each, JSON) and blobs/ (content-addressed
    result files).

    Records live in SQLite rather than a file each: a file per record cost a
    create and a rename per call, metadata work that on a shared disk made the
    broker's own fsyncs wait for it. Like the hash index the file is only a
    cache (_sqlitefile.py): damaged, it is rebuilt; unusable, calls go to the
    broker as if nothing were cached."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.blob_dir = os.path.join(self.root, "blobs")
        self._file = SqliteFile(os.path.join(self.root, RESULTS_NAME), _RESULTS_SCHEMA,
                                _RESULTS_SCHEMA_VERSION, "result cache", "results")
        # _lock guards the dicts and is held only briefly, so a caller's load()
        # never waits for the disk; _io_lock orders the writer's rows and
        # remove()'s unlinks.
        self._lock = threading.Lock()
        self._io_lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._pending = {}  # call id -> record not yet written (see store(later=True))
        self._writing = {}  # call id -> record being written now
        self._writer = None

    @staticmethod
    def _check_id(call_id):
        if not isinstance(call_id, str) or not _SHA_RE.match(call_id):
            raise ValueError("not a call id (64 lowercase hex): %.80r" % (call_id,))

    def _read(self, call_id):
        row = self._file.run("be read", lambda db: db.execute(
            "SELECT record FROM results WHERE id = ?", (call_id,)).fetchone())
        if row is None:
            return None
        try:
            entry = json.loads(row[0])
        except ValueError:
            return None
        return entry if isinstance(entry, dict) and entry.get("id") == call_id else None

    def load(self, call_id):
        """The cached record of a finished call, or None. A record whose result
        files are missing or the wrong size counts as absent."""
        self._check_id(call_id)
        with self._lock:
            entry = self._pending.get(call_id) or self._writing.get(call_id)
        if entry is None:
            entry = self._read(call_id)
            if entry is None:
                return None
        try:
            for name, rel in entry.get("files", {}).items():
                blob = next(e for e in entry["outputs"] if e["name"] == name)
                st = os.stat(os.path.join(self.root, rel))
                if st.st_size != blob["size"]:
                    return None
        except (OSError, KeyError, StopIteration, TypeError, AttributeError):
            return None
        return entry

    def store(self, call_id, function, version, outputs, files, finished_ms=None, later=False):
        """Record a finished call. outputs: the typed entries as the broker
        sent them; files: {output name: path of its blob inside the cache's
        blob dir}. later=True hands the write to a background writer (get()
        need not wait for the disk); load() sees the record at once either
        way, and flush() (called at shutdown and exit) writes what is
        pending."""
        self._check_id(call_id)
        entry = {
            "id": call_id,
            "function": function,
            "version": version,
            "state": "done",
            "finished_ms": finished_ms,
            "outputs": outputs,
            "files": {name: os.path.relpath(path, self.root) for name, path in files.items()},
        }
        if not later:
            with self._io_lock:
                self._write([entry])
            return entry
        with self._lock:
            self._pending[call_id] = entry
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_behind, daemon=True,
                                                name="p2prpc-cache-writer")
                self._writer.start()
                atexit.register(self.flush)
            self._wake.notify()
        return entry

    def _write(self, entries):
        """Write records in one transaction. Not fsynced: this is a cache of
        what the broker keeps durably; a record lost to a power cut is fetched
        again. Caller holds _io_lock."""
        def w(db):
            with db:
                db.execute("BEGIN")
                for e in entries:
                    db.execute("INSERT OR REPLACE INTO results (id, record) VALUES (?, ?)",
                               (e["id"], json.dumps(e)))
                    db.execute("DELETE FROM result_files WHERE id = ?", (e["id"],))
                    db.executemany("INSERT OR IGNORE INTO result_files (path, id) VALUES (?, ?)",
                                   [(rel, e["id"]) for rel in e["files"].values()])
            return True

        self._file.run("be written", w)

    def flush(self):
        """Write every pending record now."""
        with self._io_lock:
            with self._lock:
                self._writing, self._pending = self._pending, {}
            try:
                if self._writing:
                    self._write(list(self._writing.values()))
            finally:
                with self._lock:
                    self._writing = {}

    def _write_behind(self):
        while True:
            with self._lock:
                while not self._pending:
                    self._wake.wait()
            # Let a run of calls gather: one wake-up writes many records in one
            # transaction, and the writer keeps off the CPU the calls need.
            time.sleep(WRITE_BEHIND_GATHER_S)
            self.flush()

    def add_file(self, path):
        """Copy a local file into the blob dir (for seeding the cache); its
        (sha, size, path in the blob dir)."""
        sha = _core.sha256_file(path)
        dest = os.path.join(self.blob_dir, sha[:2], sha[2:])
        if not os.path.exists(dest):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".tmp-")
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        return sha, os.path.getsize(dest), dest

    def open_outputs(self, entry, spec):
        """The declared result dict of a cached record: file outputs opened
        'rb' from the cache, the rest as values."""
        values = decode_entries(entry["outputs"], expected=[(r.name, r.kind) for r in spec.returns])
        out, opened = {}, []
        try:
            for r in spec.returns:
                if r.kind == "file":
                    f = open(os.path.join(self.root, entry["files"][r.name]), "rb")
                    opened.append(f)
                    out[r.name] = f
                else:
                    out[r.name] = values[r.name]
        except BaseException:
            for f in opened:
                f.close()
            raise
        return out

    def remove(self, call_id):
        """Drop a call's record and the result files no other record uses.
        Only files inside the cache are ever removed."""
        self._check_id(call_id)
        with self._io_lock:
            with self._lock:
                pending = self._pending.pop(call_id, None)
            entry = pending or self.load(call_id)
            mine = set((entry or {}).get("files", {}).values())

            def d(db):
                with db:
                    db.execute("BEGIN")
                    db.execute("DELETE FROM results WHERE id = ?", (call_id,))
                    db.execute("DELETE FROM result_files WHERE id = ?", (call_id,))
                    return {rel for rel in mine if db.execute(
                        "SELECT 1 FROM result_files WHERE path = ? LIMIT 1", (rel,)).fetchone()}

            used = self._file.run("be written", d)
            if used is None:
                return  # the record may still be there: its files stay with it
            with self._lock:
                others = list(self._pending.values())
            for other in others:
                used |= set(other.get("files", {}).values())
            for rel in mine - used:
                path = os.path.normpath(os.path.join(self.root, rel))
                if path.startswith(self.blob_dir + os.sep):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass

    def close(self):
        self.flush()
        self._file.close()


_caches = {}
_caches_lock = threading.Lock()


def open_cache(root):
    """The process's ResultCache of root, shared by every app naming it: a
    record written behind one app's get() is seen at once by the others."""
    root = os.path.abspath(os.fspath(root))
    with _caches_lock:
        cache = _caches.get(root)
        if cache is None:
            cache = _caches[root] = ResultCache(root)
        return cache

