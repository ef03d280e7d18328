"""The client: the seed's create_p2p_client_app / register_p2p_func / future
API on top of the engine's HTTP client (_core.Connection, docs/API.md).

Calling a registered function binds its arguments to the declaration, hashes
each file once, computes the call id and then, in this order: answers from
the local result cache (no network at all), or returns a P2PFuture at once
and hands the call to the app's submitter thread, which finds a broker from
the discovery file, uploads the file blobs it lacks and submits the calls
queued meanwhile together (POST /v1/calls/batch: one durable transaction for
all of them). Errors of that step (no broker, wrong password, versions that
differ) are raised by the future's get(). The app's collector thread then
long-polls for many calls at once (POST /v1/calls/wait); a get() on a call
it is not watching long-polls that call itself.

The cache (cache_path) holds `calls/<id>.json`, one finished call each
(written atomically), and `blobs/`, the content-addressed result files.

Retries: every request the client makes but restart is safe to repeat (a
submit of the same call id is the same call; blob uploads resume and commit
idempotently), so a transport failure or a 5xx answer is retried with a doubling, jittered
backoff (RETRY_FIRST_S up to RETRY_MAX_S) for up to no_broker_timeout seconds
of consecutive failures: a lost reply or a broker restart never reaches the
caller. Errors the broker answered on purpose (4xx) are raised at once.

Thread safety: an app and its futures may be used from several threads. Each
request borrows a connection of the broker's small pool, so a long-poll never
blocks another call. Background watcher threads (add_done_callback) stop with
app.background_server.shutdown().
"""
import atexit
import collections
import functools
import itertools
import json
import logging
import os
import random
import re
import tempfile
import threading
import time

from . import _core
from ._hashindex import open_index
from ._identity import PreparedCall, prepare_call, spec_of
from ._sqlitefile import SqliteFile
from ._wire import BlobRef, decode_entries, encode_entry
from .errors import (
    ENGINE_ERRORS,
    AuthenticationError,
    ClientCallDeleted,
    ClientCallFailed,
    ClientCallTerminated,
    ClientFunctionError,
    ClientFutureTimeoutError,
    ClientNoBrokerFound,
    ClientP2PFunctionInvalidArguments,
    ConnectionFailed,
    DiskFullError,
    EngineTimeoutError,
    FunctionVersionMismatch,
    NotFoundError,
    P2PRPCError,
    ProtocolError,
    StorageError,
)

__all__ = ["create_p2p_client_app", "P2PClientApp", "P2PFuture", "ResultCache", "read_discovery"]

log = logging.getLogger("p2prpc.client")

TERMINAL = ("done", "failed", "terminated")
LONG_POLL_MS = 60000  # the broker's cap on wait_ms
WATCH_POLL_MS = 2000  # watcher threads poll shorter, so shutdown() returns quickly
REQUEST_MARGIN_MS = 15000  # a long-poll's request timeout beyond its wait
CONNECT_TIMEOUT_MS = 2000
RETRY_FIRST_S = 0.1  # first wait after a transient failure...
RETRY_MAX_S = 2.0  # ...doubling up to this, each drawn in [d/2, d)
RETRY_STATUSES = (500, 502, 503, 504)  # the broker failed, it did not refuse
SUBMIT_BATCH = 500  # calls per POST /v1/calls/batch (the broker takes up to 1000)
TAKE_MAX_QUEUED = 8  # get() sends its own call (submit-and-wait) when so few are queued
# ...waiting this long in that request: other threads acting on the future
# (terminate, progress) wait for the submit's answer, so it must come soon.
INLINE_WAIT_MS = 500
PREFETCH_TRIES = 3  # downloads of one announced result blob before it is left to _store
TAKEN_STREAK = 3  # ...and after this many in a row, new calls do not wake the submitter,
SUBMIT_LOOK_S = 0.005  # which looks this often for calls nobody is waiting for,
SUBMIT_LOOK_IDLE_S = 1.0  # until no call came for this long
WRITE_BEHIND_GATHER_S = 0.1  # the result cache's writer wakes at most this often
WAIT_BATCH = 1000  # calls per POST /v1/calls/wait (the broker's cap)
# A file argument larger than this is sent only up to here before its call is
# submitted (PRPC_BLOB_CHUNK: the broker's first synced chunk); the rest goes
# on in a thread while the call's worker follows the upload (cut-through).
CUT_THROUGH_BYTES = 8 << 20
UPLOAD_STEP_BYTES = 256 << 20  # that thread checks for shutdown this often
COLLECT_WAIT_MS = 20000  # the collector's long-poll when it watches every call in flight
COLLECT_SWEEP_MS = 1000  # ...and when more calls are in flight than one wait can name
COLLECT_GATHER_S = 0.05  # then, between answers, so each one carries many finished calls
# Error types a broker records when it gave up on a call itself (e.g.
# "p2prpc.LeaseExpired" after too many lapsed leases), as opposed to the
# function raising, start with this prefix.
NETWORK_FAILURE_PREFIX = "p2prpc."

_SHA_RE = re.compile(r"[0-9a-f]{64}\Z")


def default_cache_path():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "p2prpc", "client")


def read_discovery(path):
    """The broker addresses of a discovery file, in order: one host:port per
    line; blank lines and lines starting with '#' are skipped, as is anything
    after a '#'. Raises ClientNoBrokerFound when the file cannot be read or
    lists no address."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ClientNoBrokerFound(
            "cannot read the discovery file %s: %s" % (path, e.strerror or e)) from None
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and line not in out:
            out.append(line)
    if not out:
        raise ClientNoBrokerFound(
            "the discovery file %s lists no broker; write one host:port per line" % path)
    return out


def _error_fields(body):
    try:
        err = json.loads(body or b"{}").get("error") or {}
        return str(err.get("code") or ""), str(err.get("message") or "")
    except (ValueError, AttributeError):
        return "", (body or b"")[:200].decode("utf-8", "replace")


def raise_for_status(status, body, what):
    """Raise the p2prpc error for a non-2xx answer: the engine code of the
    broker's {"error": {"code", "message"}} through errors.ENGINE_ERRORS
    (401: AuthenticationError), prefixed by `what`."""
    code, message = _error_fields(body)
    if status == 401 or code == "EAUTH":
        raise AuthenticationError(
            "%s: the broker refused our credentials (%s); check the password given to "
            "create_p2p_client_app" % (what, message or "HTTP 401"))
    cls = ENGINE_ERRORS.get(code)
    if cls is None:
        raise ProtocolError("%s: the broker answered HTTP %d %s" % (what, status, message))
    raise cls("%s: %s" % (what, message or code))


class _ServerFailed(P2PRPCError):
    """A 5xx answer: worth another try; raised as the broker's error when the
    tries run out."""

    def __init__(self, status, body, what):
        super().__init__("%s: HTTP %d" % (what, status))
        self.status, self.body, self.what = status, body, what

    def reraise(self):
        raise_for_status(self.status, self.body, self.what)


def _transient(e):
    """True for a failure that another try may not meet: the connection, a
    timeout, a 5xx answer, or the broker's store failing to write (EIO; a full
    disk is not transient)."""
    return (isinstance(e, (ConnectionFailed, EngineTimeoutError, _ServerFailed))
            or (isinstance(e, StorageError) and not isinstance(e, DiskFullError)))


def _json(body, what):
    try:
        value = json.loads(body)
    except ValueError:
        raise ProtocolError("%s: the broker answered something that is not JSON: %.200r"
                            % (what, body)) from None
    if not isinstance(value, dict):
        raise ProtocolError("%s: the broker answered %.200r, not an object" % (what, value))
    return value


class _Broker:
    """One broker address and a small pool of idle connections to it."""

    def __init__(self, address, key, ca=None):
        self.address = address
        self.key = key
        self.ca = ca
        self._idle = []
        self._lock = threading.Lock()
        self._closed = False

    def _acquire(self):
        with self._lock:
            if self._closed:
                raise P2PRPCError("the client app was shut down")
            if self._idle:
                return self._idle.pop()
        return _core.Connection(self.address, key=self.key, connect_timeout_ms=CONNECT_TIMEOUT_MS,
                                ca=self.ca)

    def _release(self, conn, ok):
        with self._lock:
            if ok and not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def run(self, fn):
        """fn(connection) with a pooled connection; a connection that saw a
        transport error is dropped, not reused."""
        conn = self._acquire()
        ok = False
        try:
            out = fn(conn)
            ok = True
            return out
        except AuthenticationError as e:
            if "not signed by a holder of the password" in str(e):
                # ok stays False: whatever is on this connection is not trusted.
                raise AuthenticationError(
                    "the answer from %s does not come from a broker that knows this client's "
                    "password: a wrong broker address, a broker started with another password "
                    "(or none), or someone in between (%s)" % (self.address, e)) from None
            ok = True  # the broker answered 401: the connection itself is fine
            raise AuthenticationError(
                "broker %s refused our credentials (%s); check the password given to "
                "create_p2p_client_app" % (self.address, e)) from None
        except (NotFoundError, FunctionVersionMismatch):
            ok = True
            raise
        finally:
            self._release(conn, ok)

    def request(self, method, path, body=None, timeout_ms=30000):
        data = None if body is None else json.dumps(body).encode("utf-8")
        return self.run(lambda c: c.request(method, path, data, timeout_ms=timeout_ms))

    def close(self):
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()


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


class BackgroundServer:
    """What an app runs in the background: watcher threads and broker
    connections. shutdown() stops and closes all of it."""

    def __init__(self):
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads = set()
        self._brokers = []
        self._closers = []

    def start_thread(self, target, name):
        with self._lock:
            if self.stopping.is_set():
                raise P2PRPCError("the client app was shut down")
            t = threading.Thread(target=self._run, args=(target,), name=name, daemon=True)
            self._threads.add(t)
        t.start()
        return t

    def _run(self, target):
        try:
            target()
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def on_shutdown(self, fn):
        """Call fn() at shutdown, after the threads stopped."""
        with self._lock:
            self._closers.append(fn)

    def add_broker(self, broker):
        with self._lock:
            self._brokers.append(broker)

    def shutdown(self, timeout=None):
        """Stop every background thread (each ends within one watcher poll,
        about 2 s) and close every connection. Idempotent."""
        self.stopping.set()
        with self._lock:
            threads = list(self._threads)
            brokers, self._brokers = self._brokers, []
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout)
        for b in brokers:
            b.close()
        with self._lock:
            closers = list(self._closers)
        for fn in closers:
            fn()


class P2PClientApp:
    """A client of a p2prpc network. Build it with create_p2p_client_app()."""

    def __init__(self, discovery_file, password=None, cache_path=None, no_broker_timeout=10.0,
                 ca=None):
        self.discovery_file = os.path.abspath(discovery_file)
        self.ca = os.fspath(ca) if ca is not None else None
        self.key = _core.derive_key(password) if password is not None else None
        self.cache = open_cache(cache_path or default_cache_path())
        self.no_broker_timeout = float(no_broker_timeout)
        self.background_server = BackgroundServer()
        self.background_server.on_shutdown(self.cache.flush)
        self._broker = None
        self._broker_lock = threading.Lock()
        self._brokers = {}
        self._submitter = _Submitter(self)
        self._collector = _Collector(self)
        # Uploads going on after their calls were submitted, by (broker, sha):
        # a second call naming the same blob joins the one already running.
        self._uploads = {}
        self._uploads_lock = threading.Lock()

    def register_p2p_func(self):
        """Decorator factory: `f = app.register_p2p_func()(f)`. The returned
        function keeps f's name, docstring and spec (`.p2p_spec`); calling it
        with keyword arguments returns a P2PFuture. Raises
        P2PFunctionDeclarationError when f breaks a declaration rule."""

        def decorate(fn):
            spec = spec_of(fn)

            @functools.wraps(spec.func)
            def remote(*args, **kwargs):
                return self.call(spec, args, kwargs)

            remote.p2p_spec = spec
            remote.p2p_app = self
            return remote

        return decorate

    # -- brokers ---------------------------------------------------------------

    def broker_at(self, address):
        with self._broker_lock:
            b = self._brokers.get(address)
            if b is None:
                b = _Broker(address, self.key, self.ca)
                self._brokers[address] = b
                self.background_server.add_broker(b)
            return b

    def find_broker(self, forget=None):
        """The broker in use, else the first one of the discovery file that
        answers /v1/health, trying them in order until no_broker_timeout
        seconds have passed (ClientNoBrokerFound naming each address and why)."""
        with self._broker_lock:
            if forget is not None and self._broker is forget:
                self._broker = None
            if self._broker is not None:
                return self._broker
        addresses = read_discovery(self.discovery_file)
        deadline = time.monotonic() + self.no_broker_timeout
        why = {}
        while True:
            for address in addresses:
                left_ms = int((deadline - time.monotonic()) * 1000)
                try:
                    conn = _core.Connection(address, key=self.key, ca=self.ca,
                                            connect_timeout_ms=max(100, min(CONNECT_TIMEOUT_MS, left_ms)))
                except P2PRPCError as e:
                    why[address] = str(e)
                    continue
                try:
                    status, body = conn.request("GET", "/v1/health",
                                                timeout_ms=max(200, min(5000, left_ms)))
                    health = json.loads(body) if status == 200 else None
                    if isinstance(health, dict) and health.get("ok") is True:
                        b = self.broker_at(address)
                        with self._broker_lock:
                            self._broker = b
                        return b
                    why[address] = "not a p2prpc broker (HTTP %d: %.80r)" % (status, body)
                except AuthenticationError as e:
                    # It answered, but not as a holder of our password: a wrong
                    # password, not a missing broker.
                    raise AuthenticationError(
                        "broker %s does not share this client's password (%s); check the "
                        "password given to create_p2p_client_app" % (address, e)) from None
                except (P2PRPCError, ValueError) as e:
                    why[address] = str(e) or type(e).__name__
                finally:
                    conn.close()
            left = deadline - time.monotonic()
            if left <= 0 or self.background_server.stopping.is_set():
                raise ClientNoBrokerFound(
                    "no broker answered within %.1f s; tried (from %s): %s"
                    % (self.no_broker_timeout, self.discovery_file,
                       "; ".join("%s: %s" % (a, why.get(a, "not tried")) for a in addresses)))
            self.background_server.stopping.wait(min(0.5, left))

    def retry(self, what, attempt):
        """attempt() until it returns or raises a non-transient error (see
        _transient); between tries a doubling, jittered wait. After
        no_broker_timeout seconds of failures (or once the app is shut down)
        the last error is raised, a 5xx as the broker's error."""
        give_up = time.monotonic() + self.no_broker_timeout
        delay = RETRY_FIRST_S
        while True:
            try:
                return attempt()
            except P2PRPCError as e:
                left = give_up - time.monotonic()
                if not _transient(e) or left <= 0 or self.background_server.stopping.is_set():
                    if isinstance(e, _ServerFailed):
                        e.reraise()
                    raise
                log.info("%s: %s; trying again", what, e)
            self.background_server.stopping.wait(min(left, random.uniform(delay / 2, delay)))
            delay = min(delay * 2, RETRY_MAX_S)

    # -- calls -----------------------------------------------------------------

    def call(self, spec, args, kwargs):
        """Call `spec`'s function remotely; a P2PFuture. See the module doc."""
        if self.background_server.stopping.is_set():
            raise P2PRPCError("the client app was shut down; create a new one to call %s"
                              % spec.name)
        bound = spec.bind(tuple(args), dict(kwargs))
        prepared = prepare_call(spec, bound, index=self.cache.root)
        entry = self.cache.load(prepared.call_id)
        if entry is not None:
            return P2PFuture(self, prepared, None, cached=entry)
        future = P2PFuture(self, prepared, None, submitting=True)
        self._submitter.enqueue(future)
        return future

    def upload_files(self, broker, prepared, early=False):
        """Upload the call's file blobs the broker lacks (each retried).

        With early, a blob over CUT_THROUGH_BYTES is sent only until the
        broker has synced its first chunk: the broker accepts a call whose
        argument is still arriving, and its worker downloads the blob as it
        lands. Returns [(name, d, fd)] of the blobs left to finish with
        finish_uploads once the call is submitted (fd: a dup of the caller's
        file, which the caller may close meanwhile)."""
        spec = prepared.spec
        rest = []
        try:
            for name, d in prepared.files.items():
                fd = _live_fd(prepared, name, self.cache.root)
                until = CUT_THROUGH_BYTES if early and d.size > CUT_THROUGH_BYTES else None
                held = self.retry(
                    "uploading %s of %s to %s" % (name, spec.name, broker.address),
                    lambda fd=fd, d=d, until=until: broker.run(
                        lambda c: c.upload_blob(fd, d.sha, d.size, until, d.chunks or None)))
                if not held:
                    rest.append((name, d, os.dup(fd)))
        except BaseException:
            self.drop_uploads(rest)
            raise
        return rest

    @staticmethod
    def drop_uploads(rest):
        for _, _, fd in rest:
            os.close(fd)

    def finish_uploads(self, broker, future, rest):
        """Send the rest of each blob upload_files(early=True) began, in a
        thread per blob; a failure ends future's call (see
        P2PFuture._on_upload_failed). Takes ownership of the fds."""
        for i, (name, d, fd) in enumerate(rest):
            key = (broker.address, d.sha)
            with self._uploads_lock:
                joined = self._uploads.get(key)
                if joined is not None:
                    joined.append(future)
                else:
                    self._uploads[key] = [future]
            if joined is not None:
                os.close(fd)
                continue
            try:
                self.background_server.start_thread(
                    functools.partial(self._upload_rest, broker, key, name, d, fd),
                    "p2prpc-upload")
            except P2PRPCError as e:
                with self._uploads_lock:
                    waiting = self._uploads.pop(key, [])
                self.drop_uploads(rest[i:])
                for f in waiting:
                    f._on_upload_failed(e)
                return

    def _upload_rest(self, broker, key, name, d, fd):
        what = "uploading %s (%d bytes) to %s" % (name, d.size, broker.address)
        error = None
        try:
            held, until = False, CUT_THROUGH_BYTES
            while not held:
                if self.background_server.stopping.is_set():
                    raise P2PRPCError("%s: the client app was shut down before the upload "
                                      "ended" % what)
                # In steps, so a shutdown does not wait for a whole multi-GB file.
                until += UPLOAD_STEP_BYTES
                held = self.retry(what, lambda until=until: broker.run(
                    lambda c: c.upload_blob(fd, d.sha, d.size, until, d.chunks or None)))
        except P2PRPCError as e:
            error = e
        except OSError as e:
            error = P2PRPCError("%s: %s" % (what, e))
        finally:
            os.close(fd)
            with self._uploads_lock:
                waiting = self._uploads.pop(key, [])
        if error is not None:
            log.warning("%s failed: %s", what, error)
            for f in waiting:
                f._on_upload_failed(error)

    @staticmethod
    def submit_body(prepared):
        spec = prepared.spec
        args = []
        for a in spec.args:
            if a.kind == "file":
                d = prepared.files[a.name]
                args.append(encode_entry(a.name, "file", BlobRef(d.sha, d.size, d.filename)))
            else:
                args.append(encode_entry(a.name, a.kind, prepared.bound[a.name]))
        return {"id": prepared.call_id, "function": spec.name, "version": spec.version,
                "args": args}

    def submit_error(self, broker, prepared, status, code, message):
        """The exception for a submit the broker refused."""
        spec = prepared.spec
        what = "calling %s on broker %s" % (spec.name, broker.address)
        if code == "EVERSION":
            return FunctionVersionMismatch("%s: function versions differ, this client has "
                                           "version %s: %s" % (what, spec.version, message))
        if code == "ENOTFOUND" and "not registered" in (message or ""):
            served = self._served_functions(broker)
            return NotFoundError("%s: the broker does not serve function %s (it serves: %s); "
                                 "start it with this function's file"
                                 % (what, spec.name, ", ".join(served or []) or "nothing"))
        cls = ENGINE_ERRORS.get(code, P2PRPCError)
        return cls("%s: %s (HTTP %s)" % (what, message, status))

    def submit_many(self, broker, prepared_list, wait_ms=0):
        """Submit calls whose blobs are uploaded, in one request; for each, the
        broker's CALL record or the exception for its refusal. With wait_ms
        (one call only) the broker answers when the call has ended or wait_ms
        passed: submit and result in one round trip."""
        what = "calling %d function(s) on broker %s" % (len(prepared_list), broker.address)
        if wait_ms > 0 and len(prepared_list) == 1:
            body = self.submit_body(prepared_list[0])
            status, data = self.retry(what, lambda: _checked(
                broker.request("POST", "/v1/calls?wait_ms=%d" % wait_ms, body,
                               timeout_ms=wait_ms + REQUEST_MARGIN_MS), what))
            if status == 200:
                results = [_json(data, what)]
            else:
                code, message = _error_fields(data)
                if status == 401 or code in ("", "EAUTH"):
                    raise_for_status(status, data, what)
                results = [{"error": {"code": code, "message": message}}]
        else:
            body = {"calls": [self.submit_body(p) for p in prepared_list]}
            status, data = self.retry(what, lambda: _checked(
                broker.request("POST", "/v1/calls/batch", body), what))
            if status != 200:
                raise_for_status(status, data, what)
            results = _json(data, what).get("results")
        if not isinstance(results, list) or len(results) != len(prepared_list):
            raise ProtocolError("%s: the broker answered %.200r" % (what, results))
        out = []
        for prepared, r in zip(prepared_list, results):
            if isinstance(r, dict) and isinstance(r.get("error"), dict):
                out.append(self.submit_error(broker, prepared, status,
                                             r["error"].get("code"), r["error"].get("message")))
                continue
            call = r.get("call") if isinstance(r, dict) else None
            if not isinstance(call, dict) or call.get("id") != prepared.call_id:
                out.append(ProtocolError("%s: the broker answered a call record for another "
                                         "call: %.200r" % (what, call)))
            else:
                out.append(call)
        return out

    def submit(self, broker, prepared):
        """Upload the file blobs and POST one call; the broker's CALL record.
        Each step is retried on its own (see retry)."""
        self.upload_files(broker, prepared)
        result = self.submit_many(broker, [prepared])[0]
        if isinstance(result, Exception):
            raise result
        return result

    @staticmethod
    def _served_functions(broker):
        """Names of the functions the broker serves, or None when it will not say."""
        try:
            status, data = broker.request("GET", "/v1/functions")
            if status != 200:
                return None
            return [f["name"] for f in _json(data, "listing functions")["functions"]]
        except (P2PRPCError, KeyError, TypeError):
            return None


def _checked(answer, what):
    """answer (status, body), or _ServerFailed for a 5xx, which is retried."""
    if answer[0] in RETRY_STATUSES:
        raise _ServerFailed(answer[0], answer[1], what)
    return answer


def _live_fd(prepared, name, cache_root=None):
    """The fd of a file argument, reopening it by name (and checking its
    content is unchanged: through the content-hash index, so an unchanged
    file is not read again) when the caller closed it since the call."""
    f = prepared.bound[name]
    if not f.closed:
        return f.fileno()
    d = prepared.files[name]
    path = getattr(f, "name", None)
    if isinstance(path, str) and os.path.isfile(path):
        again = open(path, "rb")
        if cache_root is not None:
            sha = open_index(cache_root).sha256_fd(again.fileno())[0]
        else:
            sha = _core.sha256_file(again.fileno())
        if sha == d.sha:
            prepared.bound[name] = again
            return again.fileno()
        again.close()
    raise ClientP2PFunctionInvalidArguments(
        "%s(): argument %r: the file was closed and its content is gone or changed, so the "
        "call cannot be sent again" % (prepared.spec.name, name))


class _Submitter:
    """The app's thread that sends calls: it takes every call queued since its
    last request (up to SUBMIT_BATCH), uploads their files, and submits them in
    one POST /v1/calls/batch, so a burst of calls costs one round trip and
    one durable commit on the broker per batch, not per call."""

    def __init__(self, app):
        self.app = app
        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._thread = None
        # Guarded by _cond: how many calls in a row their own get() sent, and
        # when the last call came. While callers send their own calls, waking
        # this thread for each would only cost the call in flight a context
        # switch: it looks every SUBMIT_LOOK_S instead, for calls nobody waits on.
        self._taken = 0
        self._last_call = 0.0
        self._looking_now = False  # the thread is in one of those short waits

    def _looking(self):
        return (self._taken >= TAKEN_STREAK
                and time.monotonic() - self._last_call < SUBMIT_LOOK_IDLE_S)

    def enqueue(self, future):
        with self._cond:
            self._queue.append(future)
            self._last_call = time.monotonic()
            if self._thread is None:
                self._thread = self.app.background_server.start_thread(self._run,
                                                                       "p2prpc-submitter")
            if not (self._looking_now and self._looking()) or len(self._queue) > TAKE_MAX_QUEUED:
                self._cond.notify()

    def take(self, future):
        """Remove future from the queue when it is still there and few calls
        wait with it (a caller about to wait for it sends it itself, with one
        submit-and-wait request); True when taken."""
        with self._cond:
            if len(self._queue) > TAKE_MAX_QUEUED:
                return False
            try:
                self._queue.remove(future)
            except ValueError:
                return False
            self._taken += 1
            return True

    def _run(self):
        stopping = self.app.background_server.stopping
        while True:
            with self._cond:
                while not self._queue and not stopping.is_set():
                    # Idle: woken at once for new calls, or looking often
                    # while callers send their own (see __init__).
                    self._looking_now = self._looking()
                    self._cond.wait(SUBMIT_LOOK_S if self._looking_now else 1.0)
                    self._looking_now = False
                if not self._queue:
                    return
                batch = [self._queue.popleft()
                         for _ in range(min(len(self._queue), SUBMIT_BATCH))]
                self._taken = 0  # nobody sent these: wake at once for the next
            if stopping.is_set():
                for f in batch:
                    f._on_submit_failed(P2PRPCError("the client app was shut down before %s "
                                                    "was sent" % f._what()))
                continue
            self._send(batch)

    def _send(self, batch, wait_ms=0):
        try:
            broker = self.app.find_broker()
        except P2PRPCError as e:
            for f in batch:
                f._on_submit_failed(e)
            return
        # future -> the uploads begun for it; whatever is still here when this
        # returns (a failure, or a future not handed on) has its fds closed.
        rest = {}
        try:
            self._send_to(broker, batch, wait_ms, rest)
        finally:
            for uploads in rest.values():
                self.app.drop_uploads(uploads)

    def _send_to(self, broker, batch, wait_ms, rest):
        for attempt in (1, 2):
            try:
                ready = []
                for f in batch:
                    try:
                        if f in rest:  # a second attempt, at another broker
                            self.app.drop_uploads(rest.pop(f))
                        rest[f] = self.app.upload_files(broker, f.prepared, early=True)
                        ready.append(f)
                    except (ConnectionFailed, EngineTimeoutError):
                        raise
                    except P2PRPCError as e:
                        f._on_submit_failed(e)
                if any(rest.values()):
                    wait_ms = 0  # the call cannot end before the rest of its upload
                results = (self.app.submit_many(broker, [f.prepared for f in ready], wait_ms)
                           if ready else [])
                break
            except (ConnectionFailed, EngineTimeoutError) as e:
                if attempt == 2:
                    for f in batch:
                        if not f._submitted.is_set():
                            f._on_submit_failed(e)
                    return
                try:
                    broker = self.app.find_broker(forget=broker)
                except P2PRPCError as e2:
                    for f in batch:
                        f._on_submit_failed(e2)
                    return
            except P2PRPCError as e:
                for f in batch:
                    if not f._submitted.is_set():
                        f._on_submit_failed(e)
                return
        for f, r in zip(ready, results):
            if isinstance(r, Exception):
                f._on_submit_failed(r)
                continue
            f._on_submitted(broker, r)
            if r.get("state") not in TERMINAL:  # else it ended before: nothing waits for the blob
                self.app.finish_uploads(broker, f, rest.pop(f, []))


class _Collector:
    """The app's thread that waits for calls in flight, many per request
    (POST /v1/calls/wait), oldest first. It long-polls for up to
    COLLECT_WAIT_MS when one request names every call in flight, and sweeps
    with COLLECT_SWEEP_MS waits when there are more."""

    def __init__(self, app):
        self.app = app
        self._cond = threading.Condition()
        self._inflight = collections.OrderedDict()  # call id -> [futures]
        self._asking = frozenset()  # the ids of the request in progress
        self._thread = None

    def track(self, future):
        with self._cond:
            self._inflight.setdefault(future.call_id, []).append(future)
            if self._thread is None:
                self._thread = self.app.background_server.start_thread(self._run,
                                                                       "p2prpc-collector")
            self._cond.notify()

    def watching(self, future):
        with self._cond:
            return future.call_id in self._asking

    def _run(self):
        stopping = self.app.background_server.stopping
        while not stopping.is_set():
            with self._cond:
                while not self._inflight and not stopping.is_set():
                    self._cond.wait(1.0)
                if stopping.is_set():
                    return
                broker = None
                ids = []
                for call_id, futures in itertools.islice(self._inflight.items(), WAIT_BATCH):
                    b = futures[0]._broker
                    if broker is None:
                        broker = b
                    if b is broker:
                        ids.append(call_id)
                more = len(ids) < len(self._inflight)
                self._asking = frozenset(ids)
            wait_ms = COLLECT_SWEEP_MS if more else COLLECT_WAIT_MS
            try:
                status, data = broker.request("POST", "/v1/calls/wait",
                                              {"ids": ids, "wait_ms": wait_ms},
                                              timeout_ms=wait_ms + REQUEST_MARGIN_MS)
                answer = _json(data, "waiting for calls") if status == 200 else None
            except P2PRPCError as e:
                log.info("waiting for %d call(s) on %s: %s", len(ids), broker.address, e)
                answer = None
            with self._cond:
                self._asking = frozenset()
            if not isinstance(answer, dict):
                # get() still polls on its own; try again after a pause.
                if stopping.wait(random.uniform(0.2, 0.6)):
                    return
                continue
            finished = [(c.get("id"), c) for c in answer.get("calls") or []
                        if isinstance(c, dict)]
            finished += [(m, None) for m in answer.get("missing") or []]
            for call_id, call in finished:
                with self._cond:
                    futures = self._inflight.pop(call_id, [])
                for f in futures:
                    f._on_collected(call)
            # Calls the waiting thread already resolved need no watching.
            with self._cond:
                for call_id in ids:
                    futures = self._inflight.get(call_id)
                    if futures is not None and all(f._finished() for f in futures):
                        del self._inflight[call_id]
            if more and finished:
                # Many calls in flight, finishing fast: let a few more finish
                # before asking again, so each request (which makes the broker
                # look at up to WAIT_BATCH calls) brings back many answers.
                if stopping.wait(COLLECT_GATHER_S):
                    return


class P2PFuture:
    """The pending result of a remote call (returned by a registered function).

    get(timeout=None) waits and returns the declared result dict (file
    outputs opened 'rb' from the client's cache); done(), progress,
    add_done_callback(fn), terminate(), restart() and delete() act on the
    call. Thread-safe."""

    def __init__(self, app, prepared: PreparedCall, broker, call=None, cached=None,
                 submitting=False):
        self.app = app
        self.prepared = prepared
        self.call_id = prepared.call_id
        self.function = prepared.spec.name
        self._broker = broker
        self._call = call
        self._cached = cached
        self._deleted = False
        self._lock = threading.Lock()
        self._callbacks = []
        self._watcher = None
        # The submitter sets _submitted (and _submit_error when it failed);
        # the collector sets _changed when it saw the call finish or vanish.
        self._submitted = threading.Event()
        self._submit_error = None
        self._upload_error = None  # the rest of an argument's upload failed after the submit
        self._changed = threading.Event()
        # Result files downloaded while the worker still uploads them
        # (cut-through): sha -> the thread doing it; _store waits for them.
        self._returns_files = any(r.kind == "file" for r in prepared.spec.returns)
        self._prefetches = {}
        self._prefetch_tries = {}  # a worker killed mid-upload: the next one's upload is resumed
        self._prefetch_lock = threading.Lock()  # get() may run in several threads
        self._storing = False  # set by _store: no prefetch starts after it
        if not submitting:
            self._submitted.set()

    # -- set by the submitter and the collector --------------------------------

    def _on_submitted(self, broker, call):
        with self._lock:
            self._broker = broker
            self._call = call
        self._submitted.set()
        if call.get("state") not in TERMINAL:
            self.app._collector.track(self)

    def _on_submit_failed(self, error):
        self._submit_error = error
        self._submitted.set()

    def _on_upload_failed(self, error):
        """The rest of a file argument could not be sent after the call was
        submitted: end the call (its worker would wait for bytes that never
        come) and make get() raise the upload's error."""
        self._upload_error = error
        try:
            self._post("terminate")
        except P2PRPCError as e:
            log.warning("terminating %s after its upload failed: %s", self._what(), e)
        self._changed.set()

    def _on_collected(self, call):
        with self._lock:
            if call is None:
                self._deleted = True
            else:
                self._call = call
        self._changed.set()

    def _finished(self):
        return (self._cached is not None or self._deleted or self._submit_error is not None
                or self._upload_error is not None
                or (self._call or {}).get("state") in TERMINAL)

    def _wait_submitted(self, deadline=None):
        """Block until the submitter has sent the call; raise what it met."""
        if not self._submitted.is_set():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._submitted.wait(left):
                raise ClientFutureTimeoutError("%s was not even submitted within the timeout "
                                               "(still looking for a broker?)" % self._what())
        if self._submit_error is not None:
            raise self._submit_error

    def __repr__(self):
        return "<P2PFuture %s call %s… %s>" % (self.function, self.call_id[:12], self._state())

    def _state(self):
        if not self._submitted.is_set():
            return "submitting"
        if self._deleted:
            return "deleted"
        if self._cached is not None:
            return "done"
        return (self._call or {}).get("state", "unknown")

    def _what(self):
        return "call %s of %s" % (self.call_id, self.function)

    # -- talking to the broker -------------------------------------------------

    def _broker_or_find(self):
        self._wait_submitted()
        if self._broker is None:
            self._broker = self.app.find_broker()
        return self._broker

    def _poll(self, wait_ms, unseen_arriving=False):
        """One GET of the call record (long-poll up to wait_ms); a broker that
        does not answer (restarting, a lost reply) is retried as app.retry
        says, so a wait rides through a broker restart. unseen_arriving: no
        announced outputs seen yet, so one answers the poll at once."""
        broker = self._broker_or_find()
        since = int((self._call or {}).get("updated_ms") or 0)
        path = "/v1/calls/%s?wait_ms=%d&since=%d%s" % (self.call_id, wait_ms, since,
                                                       "&arriving=0" if unseen_arriving else "")
        what = "waiting for %s" % self._what()
        try:
            status, data = self.app.retry(what, lambda: _checked(
                broker.request("GET", path, timeout_ms=wait_ms + REQUEST_MARGIN_MS), what))
        except (ConnectionFailed, EngineTimeoutError) as e:
            raise ConnectionFailed("%s: broker %s stopped answering: %s"
                                   % (self._what(), broker.address, e)) from None
        if status == 404:
            self._deleted = True
            raise ClientCallDeleted("%s was deleted from broker %s while waiting for it"
                                    % (self._what(), broker.address))
        if status != 200:
            raise_for_status(status, data, "waiting for %s" % self._what())
        call = _json(data, "waiting for %s" % self._what()).get("call")
        if not isinstance(call, dict) or call.get("state") not in TERMINAL + ("queued", "leased"):
            raise ProtocolError("waiting for %s: bad call record %.200r" % (self._what(), call))
        with self._lock:
            self._call = call
        return call

    def _post(self, action, retry=True):
        """POST /v1/calls/{id}/{action}, retried as app.retry says unless
        retry is False: a restart repeated after its reply was lost would
        reset a call another worker has leased since (a second run)."""
        broker = self._broker_or_find()
        what = "%s %s" % (action, self._what())
        path = "/v1/calls/%s/%s" % (self.call_id, action)
        if not retry:
            status, data = broker.request("POST", path)
            return broker, status, data
        status, data = self.app.retry(what, lambda: _checked(broker.request("POST", path), what))
        return broker, status, data

    # -- results ---------------------------------------------------------------

    def _finish(self, call):
        state = call["state"]
        if state == "failed":
            err = call.get("error") or {}
            rtype, rmsg, rtb = (str(err.get("type") or ""), str(err.get("message") or ""),
                                str(err.get("traceback") or ""))
            if rtype.startswith(NETWORK_FAILURE_PREFIX):
                raise ClientCallFailed("%s failed: %s" % (self._what(), rmsg))
            raise ClientFunctionError("%s failed on the worker: %s: %s%s"
                                      % (self._what(), rtype, rmsg,
                                         "\n\nremote traceback:\n" + rtb if rtb else ""),
                                      rtype, rmsg, rtb)
        if state == "terminated":
            raise ClientCallTerminated("%s was terminated before it finished" % self._what())
        return self._store(call)

    def _prefetch(self, call):
        """Start downloading the result files the worker announced while it
        still uploads them (the call's "arriving_outputs", docs/API.md): each
        follows its upload (GET ?follow=SIZE) in a thread, so the result
        reaches this cache about when the worker's upload ends. Only a head
        start: a download that fails here is left to _store."""
        arriving = call.get("arriving_outputs")
        if call.get("state") != "leased" or not isinstance(arriving, list):
            return
        spec = self.prepared.spec
        try:
            values = decode_entries(arriving, expected=[(r.name, r.kind) for r in spec.returns])
        except (ProtocolError, ValueError, TypeError) as e:
            log.debug("%s: ignoring announced outputs: %s", self._what(), e)
            return
        broker = self._broker_or_find()
        with self._prefetch_lock:
            for r in spec.returns:
                if r.kind != "file" or self._storing:
                    continue
                ref = values[r.name]
                running = self._prefetches.get(ref.blob)
                if running is not None and running.is_alive():
                    continue
                tries = self._prefetch_tries.get(ref.blob, 0)
                if tries >= PREFETCH_TRIES:
                    continue  # left to _store
                self._prefetch_tries[ref.blob] = tries + 1
                t = threading.Thread(target=self._prefetch_one,
                                     args=(broker, ref.blob, ref.size),
                                     name="p2prpc-prefetch", daemon=True)
                self._prefetches[ref.blob] = t
                t.start()

    def _prefetch_one(self, broker, sha, size):
        try:
            os.makedirs(self.app.cache.blob_dir, exist_ok=True)
            broker.run(lambda c: c.download_blob(sha, self.app.cache.blob_dir, follow=size))
        except (P2PRPCError, OSError) as e:
            log.debug("%s: downloading result blob %s while it arrives: %s", self._what(),
                      sha, e)

    def _store(self, call):
        spec = self.prepared.spec
        outputs = call.get("outputs")
        values = decode_entries(outputs, expected=[(r.name, r.kind) for r in spec.returns])
        # One writer per blob: a download of one of these blobs still running
        # is waited for, and what it fetched is resumed, not fetched again.
        # Downloads of blobs an earlier lease announced are left to end alone.
        shas = {values[r.name].blob for r in spec.returns if r.kind == "file"}
        with self._prefetch_lock:
            self._storing = True
            running = [t for sha, t in self._prefetches.items() if sha in shas]
        for t in running:
            t.join()
        files = {}
        broker = self._broker_or_find()
        for r in spec.returns:
            if r.kind == "file":
                os.makedirs(self.app.cache.blob_dir, exist_ok=True)
                sha = values[r.name].blob
                files[r.name] = self.app.retry(
                    "downloading result %s of %s" % (r.name, self._what()),
                    lambda sha=sha: broker.run(
                        lambda c: c.download_blob(sha, self.app.cache.blob_dir)))
        entry = self.app.cache.store(self.call_id, spec.name, spec.version, outputs, files,
                                     call.get("finished_ms"), later=True)
        with self._lock:
            if not self._deleted:
                self._cached = entry
        return entry

    def get(self, timeout=None):
        """Wait for the call and return its result dict. Raises
        ClientFutureTimeoutError after `timeout` seconds, ClientFunctionError
        when the function raised, ClientCallTerminated, ClientCallDeleted."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._submitted.is_set() and self.app._submitter.take(self):
            # Not sent yet: one request submits it and waits for its end.
            wait_ms = INLINE_WAIT_MS if deadline is None else max(
                1, min(INLINE_WAIT_MS, int((deadline - time.monotonic()) * 1000)))
            if self._returns_files:
                wait_ms = 0  # get() reads the record itself to see outputs announced early
            self.app._submitter._send([self], wait_ms)
        self._wait_submitted(deadline)
        while True:
            if self._upload_error is not None and self._cached is None:
                raise self._upload_error
            if self._deleted:
                raise ClientCallDeleted("%s was deleted" % self._what())
            entry = self._cached
            if entry is not None:
                return self.app.cache.open_outputs(entry, self.prepared.spec)
            call = self._call
            if call is not None and call.get("state") in TERMINAL:
                self._finish(call)
                continue
            if deadline is None:
                wait_ms = LONG_POLL_MS
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ClientFutureTimeoutError(
                        "%s did not finish within %s s (state %s, progress %.1f%%)"
                        % (self._what(), timeout, (call or {}).get("state", "unknown"),
                           float((call or {}).get("progress") or 0)))
                wait_ms = max(1, min(LONG_POLL_MS, int(left * 1000)))
            self._changed.clear()
            if self._returns_files:
                # Our own long-poll sees the call while it is leased: result
                # files announced before the call ends are fetched meanwhile.
                self._prefetch(self._poll(wait_ms, unseen_arriving=not self._prefetches))
            elif self.app._collector.watching(self):
                # The collector's current long-poll names this call: wait for
                # it rather than ask again.
                self._changed.wait(wait_ms / 1000.0)
            else:
                self._poll(wait_ms)

    def result(self, timeout=None):
        """The same as get(timeout), as concurrent.futures names it."""
        return self.get(timeout)

    def done(self) -> bool:
        """True once the call finished (done, failed or terminated)."""
        if self._cached is not None:
            return True
        if not self._submitted.is_set():
            return False
        self._wait_submitted()
        if self._upload_error is not None:
            return True
        if self._deleted:
            return False
        call = self._call
        if call is None or call.get("state") not in TERMINAL:
            call = self._poll(0)
        return call["state"] in TERMINAL

    @property
    def progress(self) -> float:
        """The call's progress, 0..100, as the function last reported it
        (p2p_progress_hook); asks the broker unless the call is finished."""
        if self._cached is not None:
            return 100.0
        call = self._call
        if call is None or call.get("state") not in TERMINAL:
            call = self._poll(0)
        if call["state"] == "done":
            return 100.0
        return float(call.get("progress") or 0.0)

    def add_done_callback(self, fn):
        """Call fn(future) once the call finished (at once when it already
        has), from a background thread of the app."""
        with self._lock:
            finished = self._cached is not None or (self._call or {}).get("state") in TERMINAL
            if not finished:
                self._callbacks.append(fn)
                if self._watcher is None:
                    self._watcher = self.app.background_server.start_thread(
                        self._watch, "p2prpc-watch-%s" % self.call_id[:8])
        if finished:
            self._invoke(fn)

    def _invoke(self, fn):
        try:
            fn(self)
        except Exception:
            log.exception("a done callback of %s raised", self._what())

    def _watch(self):
        stopping = self.app.background_server.stopping
        while not stopping.is_set():
            try:
                call = self._poll(WATCH_POLL_MS)
            except ClientCallDeleted:
                break
            except P2PRPCError as e:
                log.warning("watching %s: %s", self._what(), e)
                if stopping.wait(1.0):
                    return
                continue
            if call["state"] in TERMINAL:
                break
        else:
            return
        with self._lock:
            callbacks, self._callbacks = self._callbacks, []
            self._watcher = None
        for fn in callbacks:
            self._invoke(fn)

    # -- control ---------------------------------------------------------------

    def terminate(self):
        """Ask the network to stop the call: a queued call stops at once, a
        running one at its worker's next heartbeat. No-op for a result served
        from the local cache."""
        if self._cached is not None:
            return
        broker, status, data = self._post("terminate")
        if status != 200:
            raise_for_status(status, data, "terminating %s" % self._what())
        call = _json(data, "terminating %s" % self._what()).get("call")
        if isinstance(call, dict):
            with self._lock:
                self._call = call

    def restart(self):
        """Run the call again: outputs and error are cleared on the broker and
        in the local cache, and the call goes back to the queue (resubmitted
        when the broker no longer has it)."""
        self.app.cache.remove(self.call_id)
        with self._lock:
            self._cached = None
            self._call = None
            self._deleted = False
        broker, status, data = self._post("restart", retry=False)
        if status == 404:
            call = self.app.submit(broker, self.prepared)
        elif status != 200:
            raise_for_status(status, data, "restarting %s" % self._what())
        else:
            call = _json(data, "restarting %s" % self._what()).get("call")
        with self._lock:
            self._call = call if isinstance(call, dict) else None
        if isinstance(call, dict) and call.get("state") not in TERMINAL:
            self.app._collector.track(self)

    def delete(self):
        """Remove the call from the broker and from the local cache (result
        files in the cache included; never the caller's own files). Threads
        waiting in get() raise ClientCallDeleted."""
        self.app.cache.remove(self.call_id)
        with self._lock:
            self._cached = None
            self._deleted = True
        broker = self._broker_or_find()
        what = "deleting %s" % self._what()
        status, data = self.app.retry(what, lambda: _checked(
            broker.request("DELETE", "/v1/calls/%s" % self.call_id), what))
        if status not in (200, 404):
            raise_for_status(status, data, "deleting %s" % self._what())


def create_p2p_client_app(discovery_file, password=None, cache_path=None, no_broker_timeout=10.0,
                          ca=None):
    """A client app (the seed's entry point). discovery_file lists the
    brokers, one host:port (or https://host:port) per line; password must
    match the network's; cache_path holds finished results (default
    ~/.cache/p2prpc/client); no_broker_timeout bounds the search for a
    broker, in seconds; ca is a PEM file of the CA that signed the brokers'
    TLS certificates (default: the system's trusted CAs)."""
    return P2PClientApp(discovery_file, password=password, cache_path=cache_path,
                        no_broker_timeout=no_broker_timeout, ca=ca)
