"""The functions the chaos scenarios call.

Every execution appends a `start` line when it begins and an `end` line when it
returns to $P2PRPC_CHAOS_RECORD/executions.log, so a scenario can count how
many times each call really ran, on which worker, and which execution produced
the result the client accepted:

    start TAG TOKEN PID PPID MS      (PPID: the worker process; MS: wall clock)
    end TAG TOKEN MS
    spawn TAG PID                    (a helper process the function started)

TOKEN is fresh for every execution and is also returned, so the accepted
result names the execution it came from. The returned values are a pure
function of the inputs (expected_value, expected_file): anything else the
client receives is a wrong or divergent result.
"""
import hashlib
import io
import os
import subprocess
import time
import uuid

RECORD_ENV = "P2PRPC_CHAOS_RECORD"
LOG_NAME = "executions.log"


def expected_value(n, tag):
    return n * 7919 + len(tag) * 31 + sum(tag.encode("utf-8"))


def expected_file(data, n):
    """The bytes p2prpc_chaos_file returns for input file content `data`."""
    return hashlib.sha256(data + b"/%d" % n).digest() * 8 + data[::-1]


def _record(line):
    d = os.environ.get(RECORD_ENV)
    if not d:
        return
    # One write(2) of a short line with O_APPEND: lines of concurrent
    # executions never interleave.
    fd = os.open(os.path.join(d, LOG_NAME), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def _begin(tag):
    token = uuid.uuid4().hex
    _record("start %s %s %d %d %d\n" % (tag, token, os.getpid(), os.getppid(),
                                       int(time.time() * 1000)))
    return token


def _finish(tag, token):
    _record("end %s %s %d\n" % (tag, token, int(time.time() * 1000)))


def p2prpc_chaos(n: int, tag: str, sleep_ms: int) -> {"value": int, "token": str, "pid": int}:
    token = _begin(tag)
    time.sleep(sleep_ms / 1000.0)
    _finish(tag, token)
    return {"value": expected_value(n, tag), "token": token, "pid": os.getppid()}


def p2prpc_chaos_file(data: io.IOBase, n: int, tag: str, sleep_ms: int) -> {"out": io.IOBase,
                                                                             "value": int,
                                                                             "token": str}:
    token = _begin(tag)
    content = data.read()
    data.close()
    time.sleep(sleep_ms / 1000.0)
    out_dir = os.path.join(os.environ.get(RECORD_ENV) or ".", "out")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, token)
    with open(path, "wb") as f:
        f.write(expected_file(content, n))
    _finish(tag, token)
    return {"out": open(path, "rb"), "value": expected_value(n, tag), "token": token}


def p2prpc_chaos_spawn(tag: str, sleep_ms: int) -> {"token": str}:
    """Runs a helper process of its own, as heavy functions do (ffmpeg, a
    trainer), and waits for it."""
    token = _begin(tag)
    helper = subprocess.Popen(["sleep", "%.3f" % (sleep_ms / 1000.0)])
    _record("spawn %s %d\n" % (tag, helper.pid))
    helper.wait()
    _finish(tag, token)
    return {"token": token}
