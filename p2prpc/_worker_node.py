"""Running a worker node: the engine's worker loop (_core.Worker) leasing calls
from brokers and running them in a warm ExecutorPool.

The engine calls run(job_json) from its slot threads and cancel(call_id,
lease_id) from its heartbeat threads; progress the function reports goes back through
Worker.report_progress. A broker that executes calls itself builds the same
WorkerNode pointed at its own address (p2prpc/_broker_node.py).
"""
import logging
import os
import signal
import socket
import sys
import threading

from . import _core
from ._client import read_discovery
from ._executor import ExecutorPool
from ._spec import read_module_functions
from .errors import P2PRPCError, StateError

__all__ = ["WorkerNode", "run_worker", "read_discovery"]

log = logging.getLogger("p2prpc.worker")


class WorkerNode:
    """A started worker: leases calls of the functions of `function_file` from
    `brokers` (host:port, tried in order) and runs up to `concurrency` of them
    at once. stop() stops it. Raises P2PFunctionDeclarationError for a bad
    function file and the engine's errors for a bad configuration."""

    def __init__(self, function_file, brokers, data_dir, concurrency=1, password=None,
                 name=None, lease_wait_ms=20000, ca=None, cache_max_bytes=0):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1, got %r" % concurrency)
        if not brokers:
            raise ValueError("a worker needs at least one broker address")
        self.function_file = os.path.abspath(function_file)
        self.specs = read_module_functions(self.function_file)
        self.brokers = list(brokers)
        self.data_dir = os.path.abspath(data_dir)
        self.name = name or "%s-%d" % (socket.gethostname(), os.getpid())
        key = _core.derive_key(password) if password else None
        self.worker = None
        self.pool = ExecutorPool(self.function_file, size=concurrency,
                                 on_progress=self._on_progress,
                                 on_checkpoint=self._on_checkpoint)
        try:
            # _engine stays set through stop(): calls finishing then may still save.
            self.worker = self._engine = _core.Worker(
                self.brokers,
                functions=[(s.name, s.version) for s in self.specs],
                data_dir=self.data_dir,
                run=self.pool.run,
                cancel=self._cancel,
                key=key,
                name=self.name,
                concurrency=concurrency,
                lease_wait_ms=lease_wait_ms,
                ca=os.fspath(ca) if ca is not None else None,
                cache_max_bytes=int(cache_max_bytes or 0),
            )
            self.worker.start()
        except BaseException:
            self.pool.close()
            raise

    def _cancel(self, call_id, lease_id):
        self.pool.cancel(call_id, lease_id)

    def _on_progress(self, call_id, pct):
        w = self.worker
        if w is None:
            return
        try:
            w.report_progress(call_id, pct)
        except P2PRPCError as e:  # the call ended meanwhile
            log.debug("progress of %s not recorded: %s", call_id, e)

    def _on_checkpoint(self, call_id, key, path):
        w = getattr(self, "_engine", None)
        if w is None:
            raise StateError("checkpoint %s of call %s: the worker is not started" % (key, call_id))
        w.save_checkpoint(call_id, key, path)

    def stop(self):
        """Stop asking for work, let running calls finish and push their
        results, then stop the executor processes. Idempotent."""
        w, self.worker = self.worker, None
        if w is not None:
            w.stop()
        self.pool.close()


def run_worker(function_file, discovery_file, data_dir, concurrency=1, password=None, name=None,
               ca=None, cache_max_bytes=0):
    """`p2prpc worker`: run a WorkerNode on the brokers of discovery_file until
    SIGTERM or SIGINT; a second signal abandons running calls at once (their
    leases lapse and brokers hand them to other workers)."""
    brokers = read_discovery(discovery_file)
    node = WorkerNode(function_file, brokers, data_dir, concurrency=concurrency,
                      password=password, name=name, ca=ca, cache_max_bytes=cache_max_bytes)
    print("p2prpc worker %s serving %s from %s (data: %s)"
          % (node.name, ", ".join(s.name for s in node.specs), ", ".join(brokers),
             node.data_dir), flush=True)
    signalled = threading.Event()
    count = [0]

    def handler(signum, frame):
        count[0] += 1
        if count[0] > 1:
            print("p2prpc worker: stopping now; running calls are abandoned",
                  file=sys.stderr, flush=True)
            os._exit(1)  # executors die with us (PR_SET_PDEATHSIG)
        signalled.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not signalled.wait(3600):
            pass
        print("p2prpc worker: stopping; waiting for running calls to finish "
              "(signal again to abandon them)", file=sys.stderr, flush=True)
        # Stop from another thread: the main thread must stay free to take a
        # second signal while the engine waits for running calls.
        stopper = threading.Thread(target=node.stop, name="p2prpc-worker-stop")
        stopper.start()
        while stopper.is_alive():
            stopper.join(0.5)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    print("p2prpc worker stopped", file=sys.stderr, flush=True)
