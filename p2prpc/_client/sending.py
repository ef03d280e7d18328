"""Sending calls to a broker, request by request: a call's file arguments
uploaded (the blobs the broker lacks, a large one cut through: see
CUT_THROUGH_BYTES), then the calls submitted, many in one POST
/v1/calls/batch or one with its wait (submit and result in one round trip),
and a refusal turned into the error its future raises. The submitter thread
(pipeline.py) decides when; this module says how.
"""
import functools
import logging
import os
import threading

from .. import _core
from .._hashindex import open_index
from .._wire import BlobRef, encode_entry
from ..errors import (
    ENGINE_ERRORS,
    ClientP2PFunctionInvalidArguments,
    FunctionVersionMismatch,
    NotFoundError,
    P2PRPCError,
    ProtocolError,
)
from .transport import REQUEST_MARGIN_MS, _checked, _error_fields, _json, raise_for_status

log = logging.getLogger("p2prpc.client")

# A file argument larger than this is sent only up to here before its call is
# submitted (PRPC_BLOB_CHUNK: the broker's first synced chunk); the rest goes
# on in a thread while the call's worker follows the upload (cut-through).
CUT_THROUGH_BYTES = 8 << 20
UPLOAD_STEP_BYTES = 256 << 20  # that thread checks for shutdown this often


class Sender:
    """The requests that send calls, for one app: its brokers (for retry),
    its cache (the content-hash index that checks a reopened file argument),
    and its background_server (the threads that finish uploads)."""

    def __init__(self, brokers, cache, background_server):
        self.brokers = brokers
        self.cache = cache
        self.background_server = background_server
        # Uploads going on after their calls were submitted, by (broker, sha):
        # a second call naming the same blob joins the one already running.
        self._uploads = {}
        self._uploads_lock = threading.Lock()

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
                held = self.brokers.retry(
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
                held = self.brokers.retry(what, lambda until=until: broker.run(
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
        served = self._served_functions(broker) if code == "ENOTFOUND" else None
        if served is not None and spec.name not in served:
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
            status, data = self.brokers.retry(what, lambda: _checked(
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
            status, data = self.brokers.retry(what, lambda: _checked(
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
        Each step is retried on its own (see Brokers.retry)."""
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
