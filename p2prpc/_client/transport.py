"""How the client talks to brokers: the discovery file, a pool of connections
per broker address (_Broker), finding a broker that answers and retrying a
request that may succeed the next time (Brokers), and turning a broker's
non-2xx answer into a p2prpc error (raise_for_status).

Retries: every request the client makes but restart is safe to repeat (a
submit of the same call id is the same call; blob uploads resume and commit
idempotently), so a transport failure or a 5xx answer is retried with a doubling, jittered
backoff (RETRY_FIRST_S up to RETRY_MAX_S) for up to no_broker_timeout seconds
of consecutive failures: a lost reply or a broker restart never reaches the
caller. Errors the broker answered on purpose (4xx) are raised at once.

Each request borrows a connection of its broker's small pool, so a long-poll
never blocks another call.
"""
import json
import logging
import random
import threading
import time

from .. import _core
from ..errors import (
    ENGINE_ERRORS,
    AuthenticationError,
    ClientNoBrokerFound,
    ConnectionFailed,
    DiskFullError,
    EngineTimeoutError,
    FunctionVersionMismatch,
    NotFoundError,
    P2PRPCError,
    ProtocolError,
    StorageError,
    UnsignedAnswerError,
    error_for_answer,
)

log = logging.getLogger("p2prpc.client")

TERMINAL = ("done", "failed", "terminated")  # call states after which a record never changes
REQUEST_MARGIN_MS = 15000  # a long-poll's request timeout beyond its wait
CONNECT_TIMEOUT_MS = 2000
RETRY_FIRST_S = 0.1  # first wait after a transient failure...
RETRY_MAX_S = 2.0  # ...doubling up to this, each drawn in [d/2, d)
RETRY_STATUSES = (500, 502, 503, 504)  # the broker failed, it did not refuse


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
    """Raise the p2prpc error for a non-2xx answer, prefixed by `what`: the
    class of the engine code in the broker's {"error": {"code", "message"}},
    else of what its status means (errors.error_for_answer, from the engine's
    one table, csrc/error_map.h)."""
    code, message = _error_fields(body)
    cls = error_for_answer(status, code)
    if cls is AuthenticationError:
        raise AuthenticationError(
            "%s: the broker refused our credentials (%s); check the password given to "
            "create_p2p_client_app" % (what, message or "HTTP %d" % status))
    if code not in ENGINE_ERRORS:
        raise cls("%s: the broker answered HTTP %d %s" % (what, status, message))
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


def _checked(answer, what):
    """answer (status, body), or _ServerFailed for a 5xx, which is retried."""
    if answer[0] in RETRY_STATUSES:
        raise _ServerFailed(answer[0], answer[1], what)
    return answer


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
        except UnsignedAnswerError as e:
            # ok stays False: whatever is on this connection is not trusted.
            raise UnsignedAnswerError(
                "the answer from %s does not come from a broker that knows this client's "
                "password: a wrong broker address, a broker started with another password "
                "(or none), or someone in between (%s)" % (self.address, e)) from None
        except AuthenticationError as e:
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


class Brokers:
    """The brokers of one app's discovery file: the one in use (find_broker),
    a _Broker pool per address (broker_at), and the rule for trying a request
    again (retry).

    background_server is the app's BackgroundServer (app.py): once it is
    stopping, searches and retries end, and at shutdown it closes the pools
    broker_at made."""

    def __init__(self, discovery_file, key, ca, no_broker_timeout, background_server):
        self.discovery_file = discovery_file
        self.key = key
        self.ca = ca
        self.no_broker_timeout = no_broker_timeout
        self.background_server = background_server
        self._broker = None
        self._broker_lock = threading.Lock()
        self._brokers = {}

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
