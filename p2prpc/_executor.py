"""The executor pool: warm child processes that run a worker's calls.

Each child (p2prpc/_child.py) imports the user's module once when it starts,
then runs one job at a time. A child is a session and process-group leader
(start_new_session), so terminating a call kills exactly that call's process
group, grandchildren included, and a crash of the user's code never takes
down the worker. The kernel SIGKILLs a child when the thread that forked it
dies (PR_SET_PDEATHSIG); all children are therefore forked by one spawner
thread that lives as long as the pool, never by a caller's thread.

PR_SET_PDEATHSIG reaches the child only, not the processes the user's
function started (an ffmpeg, a trainer), which would keep the GPU busy for a
call already leased elsewhere. So the pool also runs a guardian process (its
own session, so a Ctrl-C meant for the worker does not reach it) that reads
the children's process groups from a pipe only the worker holds: when the
worker dies, even by SIGKILL, the pipe ends and the guardian SIGKILLs every
group it was told of. Only a process that left its group (setsid) escapes.

The protocol runs over a socketpair passed as a dedicated fd, JSON lines; the
children's stdout and stderr are the worker's own. A function's p2p_save
arrives as a "save" message naming a file; run() hands it to on_checkpoint
(the worker engine uploads it to the broker) and answers "saved" once that
returned, so p2p_save returns only when the checkpoint is durable.

Thread safety: run() may be called from several threads at once (up to the
pool size run in parallel, more wait for a free child); cancel() and close()
from any thread.
"""
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future

from .errors import ENGINE_ERRORS

__all__ = ["ExecutorPool"]

log = logging.getLogger("p2prpc.executor")


class _Child:
    """One executor process and the parent's end of its socket."""

    def __init__(self, popen, sock):
        self.popen = popen
        self.pid = popen.pid
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.cancelled = False
        self.fatal = None  # the import error the child reported, if any

    def send(self, msg):
        self.sock.sendall((json.dumps(msg) + "\n").encode("utf-8"))

    def recv(self):
        """The next message, or None once the child has gone."""
        try:
            line = self.reader.readline()
        except OSError:
            return None
        if not line:
            return None
        try:
            return json.loads(line)
        except ValueError:
            log.warning("executor %d sent a line that is not JSON: %.200r", self.pid, line)
            return {}

    def kill(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self):
        """Kill the process group, wait for the child, close the socket; the
        child's wait status (Popen.returncode)."""
        self.kill()
        code = self.popen.wait()
        self.reader.close()
        self.sock.close()
        return code


def _death(code) -> str:
    if code is None:
        return "the function process closed its channel"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "signal %d" % -code
        return "the function process died: killed by %s" % name
    return "the function process died: it exited with code %d before returning a result" % code


def _code_of(exc):
    """The engine code name (errors.ENGINE_ERRORS) of an exception, or None."""
    for name, cls in ENGINE_ERRORS.items():
        if type(exc) is cls:
            return name
    for name, cls in ENGINE_ERRORS.items():
        if isinstance(exc, cls):
            return name
    return None


def _same_lease(cancelled, running):
    """Whether a cancel of lease `cancelled` concerns a run of lease `running`
    (None on either side: the caller does not name leases)."""
    return cancelled is None or running is None or cancelled == running


def _failed(type_, message, tb=""):
    return {"state": "failed", "outputs": [], "error": {"type": type_, "message": message,
                                                         "traceback": tb}}


_CHILD_MAIN = "import sys; from p2prpc._child import main; sys.exit(main())"

# The guardian: "+PGID" / "-PGID" lines add and drop process groups; at the end
# of its input (the worker closed the pipe or died) it kills those left.
_GUARDIAN_MAIN = r"""
import os, signal, sys
groups = set()
for line in sys.stdin:
    g = int(line)
    if g > 0:
        groups.add(g)
    else:
        groups.discard(-g)
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
"""


class ExecutorPool:
    """`size` warm child processes serving the p2prpc_ functions of
    `function_file`. on_progress(call_id, pct) is called from the thread
    inside run() whenever the function reports progress;
    on_checkpoint(call_id, key, path) from that thread for each p2p_save, and
    must return only once the file at path is stored (its exception, mapped to
    its engine code, is raised by p2p_save). Without on_checkpoint, p2p_save
    raises NotSupportedError."""

    # How long a cancel() that came before its run() is remembered, seconds:
    # long enough for the engine's race, short enough that a restart of the
    # same call (same id) later is not refused.
    EARLY_CANCEL_S = 10.0

    def __init__(self, function_file, size=1, on_progress=None, on_checkpoint=None):
        if size < 1:
            raise ValueError("ExecutorPool: size must be at least 1, got %r" % size)
        self.function_file = os.path.abspath(function_file)
        self.size = size
        self.on_progress = on_progress
        self.on_checkpoint = on_checkpoint
        self._lock = threading.Lock()
        self._closed = False
        self._idle = queue.Queue()
        self._running = {}  # call_id -> _Child, or None while waiting for one
        # call_id -> (monotonic time, lease id or None) of a cancel() that came
        # before its run(): it stops only a run of that lease.
        self._early_cancel = {}
        self._leases = {}  # call_id -> the lease id of its run in progress (or None)
        self._children = set()  # every live child, for close()
        self._spawn_q = queue.Queue()
        self._guard_lock = threading.Lock()
        self._guardian = subprocess.Popen([sys.executable, "-c", _GUARDIAN_MAIN],
                                          stdin=subprocess.PIPE, start_new_session=True)
        self._spawner = threading.Thread(target=self._spawn_loop, name="p2prpc-spawner",
                                         daemon=True)
        self._spawner.start()
        try:
            for _ in range(size):
                self._idle.put(self._spawn())
        except BaseException:
            self.close()
            raise

    # -- children ------------------------------------------------------------

    def _spawn_loop(self):
        while True:
            fut = self._spawn_q.get()
            if fut is None:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(self._start_child())
            except BaseException as e:
                fut.set_exception(e)

    def _spawn(self) -> _Child:
        fut = Future()
        with self._lock:
            # Under the lock, so that close() queues its stop after this request.
            if self._closed:
                raise RuntimeError("the executor pool is closed")
            self._spawn_q.put(fut)
        return fut.result()

    def _start_child(self) -> _Child:
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor pool is closed")
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        # Import the same p2prpc as this process, whatever the working
        # directory holds (-m would otherwise put it first on sys.path). The
        # child puts both variables back as they were before it runs user
        # code, so processes the function starts see the worker's environment.
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["P2PRPC_CHILD_ENV"] = json.dumps(
            {k: env.get(k) for k in ("PYTHONPATH", "PYTHONSAFEPATH")})
        env["PYTHONPATH"] = os.pathsep.join(
            [pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        env["PYTHONSAFEPATH"] = "1"
        try:
            popen = subprocess.Popen(
                # -c, not -m: p2prpc imports p2prpc._child itself, and running
                # it with -m would execute a second copy of it.
                [sys.executable, "-c", _CHILD_MAIN, self.function_file,
                 str(child.fileno()), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                pass_fds=[child.fileno()],
                start_new_session=True,
                env=env,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        c = _Child(popen, parent)
        self._guard("+", c.pid)  # its group: start_new_session made it the leader
        with self._lock:
            self._children.add(c)
            closed = self._closed
        if closed:
            self._retire(c)
            raise RuntimeError("the executor pool is closed")
        return c

    def _guard(self, sign, pgid):
        """Tell the guardian that process group pgid is to be killed with the
        worker (sign "+") or is gone (sign "-")."""
        with self._guard_lock:
            if self._guardian.stdin.closed:
                return  # the pool is closed: the guardian has done its work
            try:
                self._guardian.stdin.write(b"%s%d\n" % (sign.encode(), pgid))
                self._guardian.stdin.flush()
            except (OSError, ValueError) as e:  # it died, or the pool is closed
                log.warning("the executor guardian is gone (%s): processes the functions start "
                            "may outlive a killed worker", e)

    def _retire(self, c):
        code = c.reap()
        self._guard("-", c.pid)
        with self._lock:
            self._children.discard(c)
        return code

    def _replace(self):
        """Put a fresh warm child in the idle queue (unless closed)."""
        try:
            self._idle.put(self._spawn())
        except Exception as e:
            if not self._closed:
                log.error("cannot start a new executor process: %s", e)
                self._idle.put(None)  # the next job tries again

    def pids(self):
        """Pids of the live executor processes (for tests and diagnostics)."""
        with self._lock:
            return sorted(c.pid for c in self._children)

    # -- jobs ----------------------------------------------------------------

    def run(self, job_json: str) -> str:
        """Run one job (see p2prpc/_child.py) and return its result JSON:
        state done with outputs, failed with error, or terminated when
        cancel() stopped it. Blocks until then."""
        job = json.loads(job_json)
        call_id = job["call_id"]
        with self._lock:
            if self._closed:
                return json.dumps(_failed("p2prpc.ExecutorClosed", "the executor pool is closed"))
            if call_id in self._running:
                return json.dumps(_failed("p2prpc.ExecutorBusy",
                                          "call %s is already running in this executor" % call_id))
            early = self._early_cancel.pop(call_id, None)
            if (early is not None and time.monotonic() - early[0] <= self.EARLY_CANCEL_S
                    and _same_lease(early[1], job.get("lease_id"))):
                return json.dumps({"state": "terminated", "outputs": []})
            self._running[call_id] = None
            self._leases[call_id] = job.get("lease_id")
        try:
            return json.dumps(self._run(job, call_id))
        finally:
            with self._lock:
                self._running.pop(call_id, None)
                self._leases.pop(call_id, None)
                self._early_cancel.pop(call_id, None)

    def _take_child(self, call_id, lease_id=None):
        while True:
            c = self._idle.get()
            if c is None and not self._closed:
                # A replacement failed to start earlier: try again for this job.
                try:
                    c = self._spawn()
                except Exception as e:
                    self._idle.put(None)
                    return "cannot start an executor process for %s: %s" % (self.function_file, e)
            with self._lock:
                closed = self._closed
                if not closed and (c.popen.poll() is None or c.fatal is not None):
                    self._running[call_id] = c
                    early = self._early_cancel.get(call_id)
                    if early is not None and _same_lease(early[1], lease_id):
                        c.cancelled = True
                        c.kill()
                    return c
            if closed:
                if c is not None:
                    self._retire(c)
                return None
            # It died while idle (OOM killer, someone's kill): a fatal import
            # error is reported to the job, anything else is replaced quietly.
            msg = c.recv()
            while msg is not None and msg.get("t") != "fatal":
                msg = c.recv()
            if msg is not None:
                c.fatal = msg.get("error")
                self._idle.put(c)
                continue
            code = self._retire(c)
            log.warning("an idle executor process went away (%s); starting a new one",
                        _death(code))
            self._replace()

    def _run(self, job, call_id):
        c = self._take_child(call_id, job.get("lease_id"))
        if c is None:
            return _failed("p2prpc.ExecutorClosed", "the executor pool is closed")
        if isinstance(c, str):
            return _failed("p2prpc.ExecutorUnavailable", c)
        result = None
        if c.fatal is None:
            try:
                c.send({"t": "job", "job": job})
            except OSError:
                pass  # it died; the reads below find out how
            while True:
                msg = c.recv()
                if msg is None:
                    break
                t = msg.get("t")
                if t == "progress" and msg.get("call_id") == call_id:
                    self._progress(call_id, msg.get("pct"))
                elif t == "save" and msg.get("call_id") == call_id:
                    self._save(c, call_id, msg)
                elif t == "result" and msg.get("call_id") == call_id:
                    result = msg.get("result")
                    break
                elif t == "fatal":
                    c.fatal = msg.get("error")
        with self._lock:
            self._running.pop(call_id, None)
            cancelled = c.cancelled
            closed = self._closed
        if result is not None and not cancelled and not closed:
            self._idle.put(c)
            return result
        code = self._retire(c)
        if not closed:
            self._replace()
        if result is not None:
            return result  # finished just before the kill landed: the result stands
        if cancelled:
            return {"state": "terminated", "outputs": []}
        if closed:
            return _failed("p2prpc.ExecutorClosed",
                           "the executor pool was closed while the call ran")
        if c.fatal is not None:
            e = c.fatal
            return _failed(e.get("type", "ImportError"),
                           "cannot load %s: %s" % (self.function_file, e.get("message", "")),
                           e.get("traceback", ""))
        return _failed("p2prpc.ExecutorDied", "%s (call %s, pid %d)"
                       % (_death(code), call_id, c.pid))

    def _progress(self, call_id, pct):
        if self.on_progress is None or not isinstance(pct, (int, float)):
            return
        try:
            self.on_progress(call_id, float(pct))
        except Exception:
            log.exception("the progress callback failed for call %s", call_id)

    def _save(self, c, call_id, msg):
        """Store one p2p_save of the child c and answer it."""
        key, path = msg.get("key"), msg.get("path")
        error = None
        if self.on_checkpoint is None:
            error = {"code": "ENOTSUP", "message": "this executor pool keeps no checkpoints"}
        elif not isinstance(key, str) or not isinstance(path, str):
            error = {"code": "EINVAL", "message": "a save names a key and a path"}
        else:
            try:
                self.on_checkpoint(call_id, key, path)
            except Exception as e:
                error = {"code": _code_of(e), "message": str(e)}
                log.warning("checkpoint %s of call %s not saved: %s", key, call_id, e)
        try:
            c.send({"t": "saved", "seq": msg.get("seq"), "error": error})
        except OSError:
            pass  # it was killed meanwhile (cancel): the reads find out

    def cancel(self, call_id, lease_id=None) -> bool:
        """Stop the call: SIGKILL its process group (a fresh warm child takes
        its place) so its run() returns state terminated. True when the call
        was running or waiting here. Otherwise False, and a run() of call_id
        starting within EARLY_CANCEL_S seconds returns terminated at once: the
        worker engine may cancel a call while its run() is still on the way.
        With lease_id (the job's "lease_id"), only a run of that lease: a late
        cancel of an earlier lease must not stop the call leased again."""
        with self._lock:
            now = time.monotonic()
            for old in [k for k, (t, _) in self._early_cancel.items()
                        if now - t > self.EARLY_CANCEL_S]:
                del self._early_cancel[old]
            if call_id not in self._running:
                self._early_cancel[call_id] = (now, lease_id)
                return False
            if not _same_lease(lease_id, self._leases.get(call_id)):
                return False  # a late cancel of an earlier lease of this call
            c = self._running[call_id]
            if c is None:
                self._early_cancel[call_id] = (now, lease_id)
                return True
            c.cancelled = True
            c.kill()
            return True

    def close(self):
        """Kill and reap every child and stop the spawner. Runs in progress
        return failed. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            children = list(self._children)
            self._spawn_q.put(None)
        for c in children:
            c.kill()
        self._spawner.join()
        for c in children:
            c.popen.wait()
        while True:
            try:
                c = self._idle.get_nowait()
            except queue.Empty:
                break
            if c is not None:
                self._retire(c)
        for _ in range(len(self._running) + 1):
            self._idle.put(None)  # wake waiters in _take_child
        with self._guard_lock:
            try:
                self._guardian.stdin.close()  # it kills what is left of the groups and ends
            except OSError:
                pass
        self._guardian.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
