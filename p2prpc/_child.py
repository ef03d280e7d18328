"""The executor child: one warm process of a worker's ExecutorPool
(p2prpc/_executor.py), and the helpers user functions call from inside it:
p2p_progress_hook, p2p_save, p2p_load and p2p_load_path.

Started as ``python -m p2prpc._child FUNCTION_FILE FD PARENT_PID``: it asks
the kernel to SIGKILL it when the parent dies, imports the user's module once,
then serves jobs one at a time over the stream socket FD with JSON lines.
stdout and stderr stay the user's (prints land in the worker's output); the
protocol never touches them.

Messages, child -> parent:
  {"t": "ready", "functions": [names]}     the module imported; jobs welcome
  {"t": "fatal", "error": {...}}           the module could not be imported; exits
  {"t": "progress", "call_id", "pct"}      from p2p_progress_hook
  {"t": "save", "call_id", "seq", "key", "path"}
                                           from p2p_save: store the file at path as
                                           checkpoint key; the child waits for "saved"
  {"t": "result", "call_id", "result"}     the job's result (see run_job)
parent -> child:
  {"t": "job", "job": {"call_id", "function", "version", "work_dir", "args",
                       "checkpoints": [{"key", "path"}]}}
  {"t": "saved", "seq", "error": null | {"code", "message"}}
                                           the answer to "save" number seq; code is an
                                           engine code name (errors.ENGINE_ERRORS)

While a job runs the parent sends nothing but "saved" answers, so p2p_save
reads its answer from the socket itself, from whichever thread calls it.

This module has no side effects on import: the client imports it for
p2p_progress_hook.
"""
import ctypes
import io
import json
import os
import shutil
import signal
import socket
import sys
import threading
import traceback

__all__ = ["p2p_progress_hook", "p2p_save", "p2p_load", "p2p_load_path", "run_job", "main"]

_PR_SET_PDEATHSIG = 1


class _JobChannel:
    """The job running in this process: reports its progress and keeps its
    checkpoints (key -> local path of the latest content)."""

    def __init__(self, call_id, send, recv=None, work_dir=None, checkpoints=()):
        self.call_id = call_id
        self._send = send
        self._recv = recv
        self._last = None
        self.work_dir = work_dir or os.getcwd()
        self.checkpoints = {c["key"]: c["path"] for c in checkpoints
                            if isinstance(c, dict) and "key" in c and "path" in c}
        self._save_lock = threading.Lock()  # one save round trip at a time
        self._seq = 0

    def save(self, key, data=None, path=None):
        """Make the broker hold data (bytes) or the file at path as checkpoint
        key; returns once it is durable there, raises the engine's error."""
        from .errors import ENGINE_ERRORS, P2PRPCError

        if self._recv is None:
            raise P2PRPCError("p2p_save: this executor cannot save checkpoints")
        with self._save_lock:
            if data is not None:
                # Replaced atomically: p2p_load never reads a half-written file.
                os.makedirs(self.work_dir, exist_ok=True)
                path = os.path.join(self.work_dir, "checkpoint-" + key)
                tmp = path + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            self._seq += 1
            seq = self._seq
            self._send({"t": "save", "call_id": self.call_id, "seq": seq, "key": key,
                        "path": os.path.abspath(path)})
            while True:
                msg = self._recv()
                if msg is None:
                    raise P2PRPCError("p2p_save(%r): the worker went away before the checkpoint "
                                      "was saved" % key)
                if msg.get("t") == "saved" and msg.get("seq") == seq:
                    break
            error = msg.get("error")
            if error:
                cls = ENGINE_ERRORS.get(error.get("code"), P2PRPCError)
                raise cls("p2p_save(%r): %s" % (key, error.get("message", "")))
            self.checkpoints[key] = os.path.abspath(path)

    def progress(self, pct):
        # One message per 0.1 % step at most: a hook called in a tight loop
        # must not flood the worker.
        step = round(pct, 1)
        if step == self._last:
            return
        self._last = step
        self._send({"t": "progress", "call_id": self.call_id, "pct": step})


# The job this process is running, or None. Module-level on purpose: the hook
# is called from the user's code, which knows nothing about the job.
_current = None


def p2p_progress_hook(current, end) -> bool:
    """Report that the running call has done `current` of `end` steps.

    Inside a p2prpc executor the progress (100 * current / end, clamped to
    0..100) reaches the broker with the worker's next heartbeat, where clients
    read it as future.progress. Called anywhere else (a plain local call of the
    function) it does nothing and returns False; it returns True when the
    progress was reported. Raises ValueError when `end` is not positive or an
    argument is not a number.
    """
    try:
        current, end = float(current), float(end)
    except (TypeError, ValueError):
        raise ValueError(
            "p2p_progress_hook(current, end) takes two numbers, got %r and %r" % (current, end)
        ) from None
    if not end > 0:
        raise ValueError("p2p_progress_hook: end must be positive, got %r" % end)
    job = _current
    if job is None:
        return False
    job.progress(min(100.0, max(0.0, 100.0 * current / end)))
    return True


def _check_key(key):
    from ._wire import check_checkpoint_key  # the engine's rule (csrc/store.h)

    check_checkpoint_key(key)


def p2p_save(key, item) -> bool:
    """Save a checkpoint of the running call: `item` is bytes, or the path
    (str or os.PathLike) of a file. Objects are never pickled: serialise them
    yourself, e.g. torch.save(model.state_dict(), path) then p2p_save("model",
    path). `key` names the checkpoint: 1 to 128 characters of [A-Za-z0-9._-];
    a call holds at most 64 keys, and saving a key again replaces it.

    Inside a p2prpc executor the content is uploaded to the broker, and the
    call returns True once the broker stored it durably: if the worker dies
    after that, the call's next lease, on whatever worker, finds it with
    p2p_load. A file must not change until p2p_save returns. Raises StateError
    when the call's lease lapsed (the call belongs to another worker now).
    Called anywhere else (a plain local call of the function) it saves
    nothing and returns False. Raises ValueError for a bad key, TypeError for
    an item of another type, FileNotFoundError for a path that is not a file.
    """
    _check_key(key)
    data = path = None
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
    elif isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if not isinstance(path, str):
            path = os.fsdecode(path)
        if not os.path.isfile(path):
            raise FileNotFoundError("p2p_save(%r): %r is not a file" % (key, path))
    else:
        raise TypeError("p2p_save(%r, item): item must be bytes or the path of a file, got %s; "
                        "serialise objects yourself (e.g. torch.save(obj, path), then "
                        "p2p_save(key, path))" % (key, type(item).__name__))
    job = _current
    if job is None:
        return False
    job.save(key, data=data, path=path)
    return True


def p2p_load_path(key):
    """The local path of the latest content of checkpoint `key` of the running
    call, or None when it has none (a fresh call, or outside an executor). The
    file belongs to the worker: read it, never change it. Raises ValueError
    for a bad key."""
    _check_key(key)
    job = _current
    if job is None:
        return None
    return job.checkpoints.get(key)


def p2p_load(key):
    """The latest content (bytes) of checkpoint `key` of the running call:
    what an earlier run of the same call (on any worker) or this one saved with
    p2p_save. None when there is none (a fresh call, or outside an executor).
    Raises ValueError for a bad key. For a large checkpoint, p2p_load_path
    avoids reading it into memory."""
    path = p2p_load_path(key)
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def _error_of(exc) -> dict:
    t = type(exc)
    name = t.__qualname__ if t.__module__ == "builtins" else "%s.%s" % (t.__module__, t.__qualname__)
    return {
        "type": name,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(t, exc, exc.__traceback__)),
    }


def _output_path(key, f, work_dir):
    """A local path holding the content of the output file object f."""
    name = getattr(f, "name", None)
    if isinstance(name, str) and os.path.isfile(name):
        return os.path.abspath(name)
    # No usable name (e.g. a file opened from an fd): copy its content out.
    os.makedirs(work_dir, exist_ok=True)
    path = os.path.join(work_dir, "output-%s" % key)
    f.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(f, out)
    return path


def run_job(specs, job, send, recv=None) -> dict:
    """Run one job with the functions of `specs` ({name: FunctionSpec}) and
    return its result: {"state": "done", "outputs": [typed entries, files as
    {"path"}]} or {"state": "failed", "outputs": [], "error": {"type",
    "message", "traceback"}}. Progress and checkpoint saves go through send();
    recv() returns the parent's next message (None once it is gone): without
    it, p2p_save raises."""
    global _current
    from ._wire import decode_entries, encode_entry

    opened = []
    outputs = {}
    result = None
    try:
        spec = specs.get(job.get("function"))
        if spec is None:
            raise LookupError(
                "this executor does not serve function %r (it serves: %s)"
                % (job.get("function"), ", ".join(sorted(specs)) or "none")
            )
        if job.get("version") not in (None, spec.version):
            raise LookupError(
                "function %s: the job asks for version %s but the executor runs version %s"
                % (spec.name, job.get("version"), spec.version)
            )
        values = decode_entries(job.get("args", []), expected=[(a.name, a.kind) for a in spec.args])
        kwargs = {}
        for a in spec.args:
            if a.kind == "file":
                f = open(values[a.name], "rb")
                opened.append(f)
                kwargs[a.name] = f
            else:
                kwargs[a.name] = values[a.name]
        _current = _JobChannel(job["call_id"], send, recv, job.get("work_dir"),
                               job.get("checkpoints") or ())
        try:
            result = spec.func(**kwargs)
        finally:
            _current = None
        outputs = spec.check_outputs(result)
        entries = []
        for r in spec.returns:
            value = outputs[r.name]
            if r.kind == "file":
                value = _output_path(r.name, value, job.get("work_dir") or os.getcwd())
            entries.append(encode_entry(r.name, r.kind, value))
        return {"state": "done", "outputs": entries}
    except BaseException as e:  # the user's SystemExit too: a call never ends the executor
        return {"state": "failed", "outputs": [], "error": _error_of(e)}
    finally:
        # Close what the call opened and returned, so a long-lived executor
        # does not collect file descriptors (also when the result was refused).
        returned = list(result.values()) if isinstance(result, dict) else []
        for f in opened + list(outputs.values()) + returned:
            if isinstance(f, io.IOBase):
                try:
                    f.close()
                except Exception:
                    pass


def _die_with_parent(parent_pid):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        sys.stderr.write("p2prpc executor: prctl(PR_SET_PDEATHSIG) failed: %s\n" % os.strerror(err))
    # The parent may have died before prctl took effect.
    if os.getppid() != parent_pid:
        os._exit(1)


def _restore_env():
    """Undo the parent's PYTHONPATH / PYTHONSAFEPATH settings (see
    ExecutorPool._start_child): they were for importing p2prpc only."""
    saved = os.environ.pop("P2PRPC_CHILD_ENV", None)
    if saved is None:
        return
    for key, value in json.loads(saved).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        sys.stderr.write("usage: p2prpc executor child FUNCTION_FILE FD PARENT_PID (started by ExecutorPool)\n")
        return 2
    function_file, fd, parent_pid = argv[0], int(argv[1]), int(argv[2])
    _die_with_parent(parent_pid)
    _restore_env()
    os.set_inheritable(fd, False)  # a process the user's code forks must not hold our end
    sock = socket.socket(fileno=fd)
    lock = threading.Lock()

    def send(msg):
        data = (json.dumps(msg) + "\n").encode("utf-8")
        with lock:
            sock.sendall(data)

    try:
        from ._spec import read_module_functions

        specs = {s.name: s for s in read_module_functions(function_file)}
    except BaseException as e:
        send({"t": "fatal", "error": _error_of(e)})
        return 3
    send({"t": "ready", "functions": sorted(specs)})
    reader = sock.makefile("rb")

    def recv():
        line = reader.readline()
        return json.loads(line) if line else None

    for line in reader:
        msg = json.loads(line)
        if msg.get("t") != "job":
            continue
        job = msg["job"]
        result = run_job(specs, job, send, recv)
        # What the function printed shows up with its result, not whenever
        # the pipe's buffer happens to fill.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        send({"t": "result", "call_id": job["call_id"], "result": result})
    return 0


