"""The client app: create_p2p_client_app() builds a P2PClientApp, whose
register_p2p_func() turns a declared function into one that returns a
P2PFuture, and whose BackgroundServer owns everything it runs in the
background. The app only wires the layers below together (see the package
doc) and decides, per call, between the local cache and the network.
"""
import functools
import os
import threading

from .. import _core
from .._identity import prepare_call, spec_of
from ..errors import P2PRPCError
# The layers, top down: each module imports only modules below it.
from .future import P2PFuture
from .pipeline import _Collector, _Submitter
from .sending import Sender
from .transport import Brokers
from .cache import default_cache_path, open_cache


class BackgroundServer:
    """What an app runs in the background: watcher threads and broker
    connections. shutdown() stops and closes all of it.

    The layers below get it handed in (Brokers, Sender, _Collector, through
    the app P2PFuture): start_thread for their threads, stopping to end
    their waits and retries."""

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
    """A client of a p2prpc network. Build it with create_p2p_client_app().

    Its parts, each in its own module: brokers (transport.py: finding a
    broker, connection pools, retries), cache (cache.py), sender
    (sending.py: uploads and submits), _submitter and _collector
    (pipeline.py: the two threads), background_server (below)."""

    def __init__(self, discovery_file, password=None, cache_path=None, no_broker_timeout=10.0,
                 ca=None):
        discovery_file = os.path.abspath(discovery_file)
        ca = os.fspath(ca) if ca is not None else None
        key = _core.derive_key(password) if password is not None else None
        self.cache = open_cache(cache_path or default_cache_path())
        no_broker_timeout = float(no_broker_timeout)
        self.background_server = BackgroundServer()
        self.background_server.on_shutdown(self.cache.flush)
        self.brokers = Brokers(discovery_file, key, ca, no_broker_timeout, self.background_server)
        self.sender = Sender(self.brokers, self.cache, self.background_server)
        self._submitter = _Submitter(self.sender)
        self._collector = _Collector(self.background_server)

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

    def call(self, spec, args, kwargs):
        """Call `spec`'s function remotely; a P2PFuture. See the package doc
        (__init__.py)."""
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
