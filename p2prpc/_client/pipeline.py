"""The app's two threads: the submitter, which sends the calls queued since
its last request in one batch (through sending.py), and the collector, which
long-polls for many calls in flight at once (POST /v1/calls/wait) and hands
each finished call to its futures. A future's get() may also act itself (see
P2PFuture.get): send its own call (_Submitter.take) or poll a call the
collector is not watching.
"""
import collections
import itertools
import logging
import random
import threading
import time

from ..errors import ConnectionFailed, EngineTimeoutError, P2PRPCError
from .transport import REQUEST_MARGIN_MS, TERMINAL, _json

log = logging.getLogger("p2prpc.client")

SUBMIT_BATCH = 500  # calls per POST /v1/calls/batch (the broker takes up to 1000)
TAKE_MAX_QUEUED = 8  # get() sends its own call (submit-and-wait) when so few are queued
TAKEN_STREAK = 3  # ...and after this many in a row, new calls do not wake the submitter,
SUBMIT_LOOK_S = 0.005  # which looks this often for calls nobody is waiting for,
SUBMIT_LOOK_IDLE_S = 1.0  # until no call came for this long
WAIT_BATCH = 1000  # calls per POST /v1/calls/wait (the broker's cap)
COLLECT_WAIT_MS = 20000  # the collector's long-poll when it watches every call in flight
COLLECT_SWEEP_MS = 1000  # ...and when more calls are in flight than one wait can name
COLLECT_GATHER_S = 0.05  # then, between answers, so each one carries many finished calls


class _Submitter:
    """The app's thread that sends calls: it takes every call queued since its
    last request (up to SUBMIT_BATCH), uploads their files, and submits them in
    one POST /v1/calls/batch, so a burst of calls costs one round trip and
    one durable commit on the broker per batch, not per call."""

    def __init__(self, sender):
        self.sender = sender  # a Sender (sending.py)
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
                self._thread = self.sender.background_server.start_thread(
                    self._run, "p2prpc-submitter")
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
        stopping = self.sender.background_server.stopping
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
            broker = self.sender.brokers.find_broker()
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
                self.sender.drop_uploads(uploads)

    def _send_to(self, broker, batch, wait_ms, rest):
        for attempt in (1, 2):
            try:
                ready = []
                for f in batch:
                    try:
                        if f in rest:  # a second attempt, at another broker
                            self.sender.drop_uploads(rest.pop(f))
                        rest[f] = self.sender.upload_files(broker, f.prepared, early=True)
                        ready.append(f)
                    except (ConnectionFailed, EngineTimeoutError):
                        raise
                    except P2PRPCError as e:
                        f._on_submit_failed(e)
                if any(rest.values()):
                    wait_ms = 0  # the call cannot end before the rest of its upload
                results = (self.sender.submit_many(broker, [f.prepared for f in ready], wait_ms)
                           if ready else [])
                break
            except (ConnectionFailed, EngineTimeoutError) as e:
                if attempt == 2:
                    for f in batch:
                        if not f._submitted.is_set():
                            f._on_submit_failed(e)
                    return
                try:
                    broker = self.sender.brokers.find_broker(forget=broker)
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
                self.sender.finish_uploads(broker, f, rest.pop(f, []))


class _Collector:
    """The app's thread that waits for calls in flight, many per request
    (POST /v1/calls/wait), oldest first. It long-polls for up to
    COLLECT_WAIT_MS when one request names every call in flight, and sweeps
    with COLLECT_SWEEP_MS waits when there are more."""

    def __init__(self, background_server):
        self.background_server = background_server
        self._cond = threading.Condition()
        self._inflight = collections.OrderedDict()  # call id -> [futures]
        self._asking = frozenset()  # the ids of the request in progress
        self._thread = None

    def track(self, future):
        with self._cond:
            self._inflight.setdefault(future.call_id, []).append(future)
            if self._thread is None:
                self._thread = self.background_server.start_thread(self._run,
                                                                   "p2prpc-collector")
            self._cond.notify()

    def watching(self, future):
        with self._cond:
            return future.call_id in self._asking

    def _run(self):
        stopping = self.background_server.stopping
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

