"""The future a call returns (P2PFuture): its state as the submitter and the
collector (pipeline.py) or its own requests last saw it, the result once it
is done (stored in the app's ResultCache, result files downloaded while the
worker still uploads them: cut-through), and the call's controls
(terminate, restart, delete, done callbacks).
"""
import logging
import os
import threading
import time

from .._identity import PreparedCall
from .._wire import decode_entries
from ..errors import (
    ClientCallDeleted,
    ClientCallFailed,
    ClientCallTerminated,
    ClientFunctionError,
    ClientFutureTimeoutError,
    ConnectionFailed,
    EngineTimeoutError,
    P2PRPCError,
    ProtocolError,
)
from .transport import REQUEST_MARGIN_MS, TERMINAL, _checked, _json, raise_for_status

log = logging.getLogger("p2prpc.client")

LONG_POLL_MS = 60000  # the broker's cap on wait_ms
WATCH_POLL_MS = 2000  # watcher threads poll shorter, so shutdown() returns quickly
# A get() that sends its own call (_Submitter.take) waits this long in that
# submit-and-wait request: other threads acting on the future (terminate,
# progress) wait for the submit's answer, so it must come soon.
INLINE_WAIT_MS = 500
PREFETCH_TRIES = 3  # downloads of one announced result blob before it is left to _store
# Error types a broker records when it gave up on a call itself (e.g.
# "p2prpc.LeaseExpired" after too many lapsed leases), as opposed to the
# function raising, start with this prefix.
NETWORK_FAILURE_PREFIX = "p2prpc."


class P2PFuture:
    """The pending result of a remote call (returned by a registered function).

    get(timeout=None) waits and returns the declared result dict (file
    outputs opened 'rb' from the client's cache); done(), progress,
    add_done_callback(fn), terminate(), restart() and delete() act on the
    call. Thread-safe.

    app is the P2PClientApp (app.py) that made it; the future uses its
    brokers, sender, cache, _submitter, _collector and background_server."""

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
            self._broker = self.app.brokers.find_broker()
        return self._broker

    def _poll(self, wait_ms, unseen_arriving=False):
        """One GET of the call record (long-poll up to wait_ms); a broker that
        does not answer (restarting, a lost reply) is retried as Brokers.retry
        says, so a wait rides through a broker restart. unseen_arriving: no
        announced outputs seen yet, so one answers the poll at once."""
        broker = self._broker_or_find()
        since = int((self._call or {}).get("updated_ms") or 0)
        path = "/v1/calls/%s?wait_ms=%d&since=%d%s" % (self.call_id, wait_ms, since,
                                                       "&arriving=0" if unseen_arriving else "")
        what = "waiting for %s" % self._what()
        try:
            status, data = self.app.brokers.retry(what, lambda: _checked(
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
        """POST /v1/calls/{id}/{action}, retried as Brokers.retry says unless
        retry is False: a restart repeated after its reply was lost would
        reset a call another worker has leased since (a second run)."""
        broker = self._broker_or_find()
        what = "%s %s" % (action, self._what())
        path = "/v1/calls/%s/%s" % (self.call_id, action)
        if not retry:
            status, data = broker.request("POST", path)
            return broker, status, data
        status, data = self.app.brokers.retry(
            what, lambda: _checked(broker.request("POST", path), what))
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
                files[r.name] = self.app.brokers.retry(
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
            call = self.app.sender.submit(broker, self.prepared)
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
        status, data = self.app.brokers.retry(what, lambda: _checked(
            broker.request("DELETE", "/v1/calls/%s" % self.call_id), what))
        if status not in (200, 404):
            raise_for_status(status, data, "deleting %s" % self._what())
