"""Running a broker node: the engine's broker (p2prpc._core.Broker) serving the
p2prpc_ functions of a file, and, when the broker can do work, an executor that
leases calls from it like any worker would."""

import json
import os
import signal
import sys
import threading

from . import _core
from ._spec import read_module_functions

DEFAULT_DATA_DIR = "p2prpc-broker"


def read_password(password_file=None, password=None):
    """The network password: an explicit value, else --password-file, else the
    P2PRPC_PASSWORD environment variable; None when none is set."""
    if password:
        return password
    if password_file:
        with open(password_file, encoding="utf-8") as f:
            value = f.read().strip()
        if not value:
            raise ValueError("password file %s is empty" % password_file)
        return value
    return os.environ.get("P2PRPC_PASSWORD") or None


def gpu_available():
    """True when the GPU probe finds at least one device (never raises)."""
    try:
        return len(_core.gpu_probe()) > 0
    except Exception:
        return False


class BrokerNode:
    """A started broker; .stop() stops everything it started."""

    def __init__(self, function_file, host="127.0.0.1", port=5001, data_dir=DEFAULT_DATA_DIR,
                 password=None, execute=None, can_do_work_func=None, lease_ms=30000,
                 heartbeat_ms=2000, max_attempts=3, synchronous=None, concurrency=1,
                 expire_after=7 * 24 * 3600, insecure=False, tls_cert=None, tls_key=None,
                 peers=(), advertise=None, ca=None, max_body=0, request_timeout_ms=0,
                 max_connections=0, max_leases_per_worker=0, max_headers=0,
                 max_header_bytes=0, max_depth=0, upload_stall_ms=0):
        self.specs = read_module_functions(function_file)
        self.function_file = os.path.abspath(function_file)
        self.data_dir = os.path.abspath(data_dir)
        os.makedirs(self.data_dir, exist_ok=True)
        self.password = password
        key = _core.derive_key(password) if password else None
        functions_json = json.dumps([s.to_json() for s in self.specs])
        self.broker = _core.Broker(functions_json, self.data_dir, host=host, port=port, key=key,
                                   lease_ms=lease_ms, heartbeat_ms=heartbeat_ms,
                                   max_attempts=max_attempts, synchronous=synchronous,
                                   expire_ms=int(expire_after * 1000) if expire_after > 0 else -1,
                                   insecure=insecure, tls_cert=tls_cert, tls_key=tls_key,
                                   peers=list(peers or ()), advertise=advertise,
                                   max_body=max_body, request_timeout_ms=request_timeout_ms,
                                   max_connections=max_connections,
                                   max_leases_per_worker=max_leases_per_worker,
                                   max_headers=max_headers, max_header_bytes=max_header_bytes,
                                   max_depth=max_depth, upload_stall_ms=upload_stall_ms)
        if insecure and not password and host not in ("127.0.0.1", "localhost", "::1"):
            print("p2prpc broker: WARNING: listening on %s WITHOUT a password (--insecure): "
                  "anyone who can reach this address can run the functions of %s"
                  % (host, function_file), file=sys.stderr, flush=True)
        self.host = host
        self.broker.start()
        self.port = self.broker.port
        self.worker = None
        if execute is None:
            execute = can_do_work_func() if can_do_work_func is not None else gpu_available()
        if execute:
            from ._worker_node import WorkerNode

            # Over TLS the executor checks the broker's certificate like any
            # worker: by the advertised name (or 127.0.0.1) against `ca`.
            if tls_cert:
                own = "https://" + (advertise or "127.0.0.1:%d" % self.port)
            else:
                own = "127.0.0.1:%d" % self.port
            self.worker = WorkerNode(self.function_file, [own],
                                     os.path.join(self.data_dir, "executor"),
                                     concurrency=concurrency, password=password, ca=ca)

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def stop(self):
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None


def wait_for_signal():
    """Block the main thread until SIGINT or SIGTERM."""
    stop = threading.Event()

    def handler(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop.wait(3600):
        pass


def run_broker(function_file, **kwargs):
    node = BrokerNode(function_file, **kwargs)
    names = ", ".join(s.name for s in node.specs)
    print("p2prpc broker listening on %s serving %s (data: %s%s)"
          % (node.address, names, node.data_dir,
             "; executes calls itself" if node.worker is not None else ""), flush=True)
    try:
        wait_for_signal()
    finally:
        node.stop()
        print("p2prpc broker stopped", file=sys.stderr, flush=True)
