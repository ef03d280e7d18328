"""Functions the end-to-end tests run. Each records what it did under the
directory named by $P2PRPC_TEST_RECORD, so tests can count executions."""
import io
import os
import time

from p2prpc.p2p_client import p2p_progress_hook


def _record(what):
    d = os.environ.get("P2PRPC_TEST_RECORD")
    if d:
        with open(os.path.join(d, what), "a") as f:
            f.write("%d %d\n" % (os.getpid(), os.getppid()))


def p2prpc_analyze_large_file(video_handle: io.IOBase, arg2: int) -> {"results_file1": io.IOBase,
                                                                      "results_file2": io.IOBase,
                                                                      "res_var": int}:
    _record("analyze")
    video_handle.close()
    return {"results_file1": open(video_handle.name, 'rb'),
            "results_file2": open(__file__, 'rb'),
            "res_var": 10 * arg2}


def p2prpc_slow(seconds: float, tag: str) -> {"pid": int, "worker": int}:
    _record("slow")
    steps = 20
    for i in range(steps):
        p2p_progress_hook(i + 1, steps)
        time.sleep(seconds / steps)
    return {"pid": os.getpid(), "worker": os.getppid()}


def p2prpc_fail(message: str) -> {"never": int}:
    _record("fail")
    raise ValueError(message)


def p2prpc_forever(tag: str) -> {"never": int}:
    d = os.environ.get("P2PRPC_TEST_RECORD")
    tmp = os.path.join(d, "forever.pid.tmp")
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, os.path.join(d, "forever.pid"))  # readers never see it half-written
    while True:
        time.sleep(0.05)
