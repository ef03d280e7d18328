"""The executor child: one warm process of a worker's ExecutorPool
(p2prpc/_executor.py), and p2p_progress_hook, which user functions call from
inside it.

Started as ``python -m p2prpc._child FUNCTION_FILE FD PARENT_PID``: it asks
the kernel to SIGKILL it when the parent dies, imports the user's module once,
then serves jobs one at a time over the stream socket FD with JSON lines.
stdout and stderr stay the user's (prints land in the worker's output); the
protocol never touches them.

Messages, child -> parent:
  {"t": "ready", "functions": [names]}     the module imported; jobs welcome
  {"t": "fatal", "error": {...}}           the module could not be imported; exits
  {"t": "progress", "call_id", "pct"}      from p2p_progress_hook
  {"t": "result", "call_id", "result"}     the job's result (see run_job)
parent -> child:
  {"t": "job", "job": {"call_id", "function", "version", "work_dir", "args"}}

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

__all__ = ["p2p_progress_hook", "run_job", "main"]

_PR_SET_PDEATHSIG = 1


class _JobChannel:
    """The job running in this process and the way to report its progress."""

    def __init__(self, call_id, send):
        self.call_id = call_id
        self._send = send
        self._last = None

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


def run_job(specs, job, send) -> dict:
    """Run one job with the functions of `specs` ({name: FunctionSpec}) and
    return its result: {"state": "done", "outputs": [typed entries, files as
    {"path"}]} or {"state": "failed", "outputs": [], "error": {"type",
    "message", "traceback"}}. Progress goes through send()."""
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
        _current = _JobChannel(job["call_id"], send)
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
    for line in reader:
        msg = json.loads(line)
        if msg.get("t") != "job":
            continue
        job = msg["job"]
        result = run_job(specs, job, send)
        # What the function printed shows up with its result, not whenever
        # the pipe's buffer happens to fill.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        send({"t": "result", "call_id": job["call_id"], "result": result})
    return 0


