"""The peer of bench/calls.py: the same no-op workload on Celery 5 + Redis.

Starts its own redis-server on a free loopback port (built-in defaults: RDB snapshots,
no append-only file, so an accepted task is not on disk yet) and one Celery worker
with a prefork pool of WORKERS processes (Celery's defaults otherwise: prefetch 4,
early acks, Redis as broker and result backend). The task is a no-op,
noop(i) -> {"i": i}, called with a different i each time.

Measured the way calls.py measures p2prpc, after a warm-up: SEQ sequential
noop.delay(i).get() round trips (p50, p99, mean), then BURST delay() calls first and
get() on each after (calls/s), and the peak RSS of redis-server, the Celery processes
and this client.

    .venv/bin/python bench/peers.py [--quick] [--seq N] [--burst N] [--workers N] [--dir DIR]
                                    [--json]

Needs redis-server (Debian: apt-get install redis-server) and the packages of
bench/requirements.txt in the venv. --json prints one JSON object as its last line,
{"ok": true, ...} or {"ok": false, "why": ...}; calls.py reads it.
"""
import argparse
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from calls import (  # noqa: E402  (the shared measuring code lives in calls.py)
    BenchError,
    Node,
    children_of,
    latency_summary,
    mib,
    vm_hwm_kib,
)

TASKS_SOURCE = '''"""The peer benchmark's Celery app: one no-op task."""
import os

from celery import Celery

app = Celery("peer_noop", broker=os.environ["PEER_REDIS_URL"],
             backend=os.environ["PEER_REDIS_URL"])


@app.task
def noop(i):
    return {"i": i}
'''

WARM_BASE = -1000000
SEQ_BASE = 0
BURST_BASE = 10000000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_redis_server():
    exe = shutil.which("redis-server")
    if exe is None:
        raise BenchError("redis-server is not installed (Debian: apt-get install redis-server)")
    return exe


def start_redis(exe, run_dir, port):
    proc = Node("redis", [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", run_dir,
                          "--daemonize", "no"], run_dir)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if client.ping():
                return proc
        except redis.exceptions.ConnectionError:
            pass
        if proc.proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.stop(timeout=20)
    raise BenchError("redis-server did not start; its output:\n" + proc.log())


def versions(redis_exe):
    import celery
    import redis

    out = subprocess.run([redis_exe, "--version"], capture_output=True, text=True).stdout
    server = next((w[2:] for w in out.split() if w.startswith("v=")), "?")
    return celery.__version__, redis.__version__, server


def run_sequential(noop, base, n, timeout):
    out = []
    for k in range(n):
        i = base + k
        t0 = time.perf_counter()
        res = noop.delay(i).get(timeout=timeout)
        out.append(time.perf_counter() - t0)
        if res != {"i": i}:
            raise BenchError("task with i=%d answered %.200r" % (i, res))
    return out


def run_burst(noop, base, n, deadline_s):
    errors = {}

    def note(e):
        key = type(e).__name__
        count, first = errors.get(key, (0, str(e)))
        errors[key] = (count + 1, first)

    pending = []
    t0 = time.perf_counter()
    for k in range(n):
        try:
            pending.append((base + k, noop.delay(base + k)))
        except Exception as e:
            note(e)
    t_submitted = time.perf_counter()
    give_up = t0 + deadline_s
    done = 0
    for i, r in pending:
        try:
            res = r.get(timeout=max(0.001, give_up - time.perf_counter()))
            if res != {"i": i}:
                raise BenchError("task with i=%d answered %.200r" % (i, res))
            done += 1
        except BenchError:
            raise
        except Exception as e:
            note(e)
    t_end = time.perf_counter()
    total = t_end - t0
    return {"n": n, "done": done, "submit_s": t_submitted - t0, "drain_s": t_end - t_submitted,
            "total_s": total, "calls_s": done / total if total > 0 else 0.0,
            "errors": {k: list(v) for k, v in errors.items()}}


def measure(seq_n, burst_n, workers, warmup, deadline, run_dir):
    """The peer's figures as a dict (see the module doc)."""
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as e:
        raise BenchError("%s; install bench/requirements.txt into the venv" % e) from None
    exe = find_redis_server()
    celery_v, redis_py_v, server_v = versions(exe)
    with open(os.path.join(run_dir, "peer_noop.py"), "w") as f:
        f.write(TASKS_SOURCE)
    port = free_port()
    url = "redis://127.0.0.1:%d/0" % port
    os.environ["PEER_REDIS_URL"] = url
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    redis_proc = worker = None
    try:
        redis_proc = start_redis(exe, run_dir, port)
        worker = Node("celery-worker", [sys.executable, "-m", "celery", "-A", "peer_noop",
                                        "worker", "--pool", "prefork", "--concurrency",
                                        str(workers), "--loglevel", "WARNING"], run_dir, env)
        sys.path.insert(0, run_dir)
        import peer_noop

        try:
            run_sequential(peer_noop.noop, WARM_BASE, max(1, warmup), timeout=60)
        except Exception as e:
            if isinstance(e, BenchError):
                raise
            raise BenchError("the Celery worker did not answer the warm-up (%s: %s); its "
                             "output:\n%s" % (type(e).__name__, e, worker.log())) from None
        seq = latency_summary(run_sequential(peer_noop.noop, SEQ_BASE, seq_n, timeout=30))
        burst = run_burst(peer_noop.noop, BURST_BASE, burst_n, deadline)
        memory = [("redis-server %s" % server_v, redis_proc.proc.pid,
                   vm_hwm_kib(redis_proc.proc.pid)),
                  ("celery worker (main)", worker.proc.pid, vm_hwm_kib(worker.proc.pid))]
        for c in children_of(worker.proc.pid):
            memory.append(("  celery pool process", c, vm_hwm_kib(c)))
        memory.append(("celery client (peers.py)", os.getpid(), vm_hwm_kib(os.getpid())))
        # AsyncResults sit in reference cycles; each one's __del__ unsubscribes
        # from Redis and retries for a long time once Redis is gone. Collect
        # them while it still answers.
        gc.collect()
        peer_noop.app.close()
    finally:
        if worker is not None:
            worker.stop(timeout=20)
        if redis_proc is not None:
            redis_proc.stop(timeout=20)
    return {"ok": True, "name": "Celery %s + Redis %s (redis-py %s)"
            % (celery_v, server_v, redis_py_v), "seq": seq, "burst": burst, "memory": memory}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 sequential, a burst of 1,000")
    ap.add_argument("--seq", type=int, default=None, help="sequential calls (default 2000)")
    ap.add_argument("--burst", type=int, default=None, help="calls in the burst (default 10000)")
    ap.add_argument("--workers", type=int, default=2, help="pool processes (default 2)")
    ap.add_argument("--warmup", type=int, default=50, help="warm-up calls (default 50)")
    ap.add_argument("--deadline", type=int, default=180, help="seconds the burst may take")
    ap.add_argument("--dir", default=os.path.join("build", "bench"),
                    help="where the run's files go (default build/bench)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = ap.parse_args()
    seq_n = args.seq if args.seq is not None else (300 if args.quick else 2000)
    burst_n = args.burst if args.burst is not None else (1000 if args.quick else 10000)
    if min(seq_n, burst_n, args.workers) < 1:
        ap.error("--seq, --burst and --workers must be at least 1")
    os.makedirs(args.dir, exist_ok=True)
    run_dir = os.path.abspath(tempfile.mkdtemp(prefix="peers-", dir=args.dir))
    try:
        data = measure(seq_n, burst_n, args.workers, args.warmup, args.deadline, run_dir)
    except BenchError as e:
        if args.json:
            print(json.dumps({"ok": False, "why": str(e)}))
        else:
            print("bench/peers.py: %s" % e, file=sys.stderr)
        if os.listdir(run_dir):
            print("run directory kept: %s" % run_dir, file=sys.stderr)
        else:
            os.rmdir(run_dir)
        return 2
    shutil.rmtree(run_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(data))
        return 0
    s, b = data["seq"], data["burst"]
    print(data["name"])
    print()
    print("| measure | value |")
    print("|---|---|")
    print("| round trip p50, ms (%d sequential) | %.3f |" % (s["n"], s["p50_ms"]))
    print("| round trip p99, ms | %.3f |" % s["p99_ms"])
    print("| round trip mean, ms | %.3f |" % s["mean_ms"])
    print("| burst calls/s (%d at once, %d pool processes) | %.0f |"
          % (b["n"], args.workers, b["calls_s"]))
    print("| burst: submitting all, s | %.2f |" % b["submit_s"])
    print("| burst: then getting all, s | %.2f |" % b["drain_s"])
    print("| burst: errored or timed out | %d |" % (b["n"] - b["done"]))
    for name, (count, first) in sorted(b["errors"].items()):
        print("burst error %s x%d, first: %s" % (name, count, first))
    print()
    print("| process | pid | peak RSS MiB |")
    print("|---|---|---|")
    for name, pid, kib in data["memory"]:
        print("| %s | %d | %s |" % (name, pid, mib(kib)))
    return 0 if b["done"] == b["n"] else 2


if __name__ == "__main__":
    sys.exit(main())
