"""Round trip and throughput of a no-op call through a broker and workers on loopback,
side by side with Celery 5 + Redis doing the same work in the same run (bench/peers.py).

Starts `python -m p2prpc broker FUNCTION_FILE --port 0 --no-execute` with its store on
the working directory's file system (not tmpfs; the store's default durability: a call
is acknowledged once it is on disk), and WORKERS `python -m p2prpc worker` processes
(concurrency 1 each). The function is a no-op, p2prpc_noop(i: int) -> {"i": int}, called
through the public client API (create_p2p_client_app + register_p2p_func) with a fresh
result cache; every call passes a different i, so none is answered from a cache.

Measured, after a warm-up:
  1. SEQ sequential calls, each f(i=...).get(): round trip p50, p99, mean.
  2. BURST calls submitted at once (every future first, then get() on each): calls/s
     from the first submit to the last result, how long each half took, the broker's
     per-state counts once the last call was submitted, and the span from the first
     call's created_ms to the last one's finished_ms in the broker's records (how fast
     the workers got through the queue, whatever the client did meanwhile).
  3. Where the time of one sequential call goes, seen from the client: the same loop
     with timers around the client's requests, its result-cache write, and the call's
     own timestamps (created_ms, finished_ms) as the broker recorded them.
  4. Floors: GET /v1/health round trips on one keep-alive connection (transport), and
     100-byte write + fsync pairs in the broker's store directory (disk).
  5. Peak RSS (VmHWM) of every process involved.

    .venv/bin/python bench/calls.py [--quick] [--seq N] [--burst N] [--workers N]
                                    [--dir DIR] [--password PW] [--no-peers] [--keep]

Exit status: 0 when both targets are met, 1 when one is not, 2 when the benchmark
itself failed (a node did not start, calls errored or timed out).
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import p2prpc
from p2prpc import _core
from p2prpc._spec import read_module_functions
from p2prpc.p2p_client import create_p2p_client_app

HERE = os.path.dirname(os.path.abspath(__file__))

TARGET_P50_MS = 0.4
TARGET_CALLS_S = 10000.0
# What the issue measured for Celery 5 + Redis on the same machine class.
REFERENCE = {"name": "reference (issue, same machine class)", "p50_ms": 1.24,
             "calls_s": 930.0}

FUNCTION_SOURCE = '''"""The benchmark's function: does nothing, so only the machinery is timed."""


def p2prpc_noop(i: int) -> {"i": int}:
    return {"i": i}
'''

# Each phase calls with its own range of i, so no call repeats another one.
WARM_BASE = -1000000
SEQ_BASE = 0
BURST_BASE = 10000000
BREAK_BASE = 20000000


class BenchError(Exception):
    """The benchmark could not measure (as opposed to measuring something slow)."""


def percentile(sorted_values, q):
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def vm_hwm_kib(pid):
    """Peak resident set size of a live process, KiB (None once it is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def children_of(pid, deep=False):
    """The direct children of a process, from /proc/PID/task/*/children (with
    deep, their descendants too)."""
    out = []
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            pass
    if deep:
        for c in list(out):
            out += children_of(c, deep=True)
    return out


class Node:
    """A node process started by the benchmark, its output going to a log file
    (env None: this process's environment)."""

    def __init__(self, name, args, cwd, env=None):
        self.name = name
        self.log_path = os.path.join(cwd, "%s.log" % name)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                         env=env)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def node_env(password):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("P2PRPC_PASSWORD", None)
    if password:
        env["P2PRPC_PASSWORD"] = password
    return env


def start_broker(run_dir, function_file, password):
    node = Node("broker", [sys.executable, "-m", "p2prpc", "broker", function_file,
                           "--host", "127.0.0.1", "--port", "0", "--no-execute",
                           "--data-dir", os.path.join(run_dir, "broker")],
                run_dir, node_env(password))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = re.search(r"listening on (\S+)", node.log())
        if m:
            return node, m.group(1)
        if not node.alive():
            break
        time.sleep(0.02)
    node.stop()
    raise BenchError("the broker did not start; its output:\n" + node.log())


def start_workers(run_dir, function_file, discovery, count, password):
    return [Node("worker%d" % k, [sys.executable, "-m", "p2prpc", "worker", function_file,
                                  "--discovery", discovery,
                                  "--data-dir", os.path.join(run_dir, "worker%d" % k)],
                 run_dir, node_env(password))
            for k in range(count)]


def check_result(i, res):
    if res != {"i": i}:
        raise BenchError("call with i=%d answered %.200r, expected {'i': %d}" % (i, res, i))


def run_sequential(noop, base, n, timeout):
    """Seconds of each of n call+get round trips, in order."""
    out = []
    for k in range(n):
        i = base + k
        t0 = time.perf_counter()
        res = noop(i=i).get(timeout=timeout)
        out.append(time.perf_counter() - t0)
        check_result(i, res)
    return out


def function_stats(address, key, name):
    """The broker's per-state counts of a function (GET /v1/functions/NAME/stats)."""
    conn = _core.Connection(address, key=key)
    try:
        status, body = conn.request("GET", "/v1/functions/%s/stats" % name)
    finally:
        conn.close()
    if status != 200:
        raise BenchError("GET /v1/functions/%s/stats answered HTTP %d: %.200r"
                         % (name, status, body))
    data = json.loads(body)
    return {k: data.get(k) for k in ("queued", "leased", "done", "failed", "terminated")}


def run_burst(noop, base, n, deadline_s, stats=lambda: None):
    """Submit n calls (every future first), then get() each. Returns a dict of
    timings, of the errors seen (by type, with the first message of each), of
    stats() taken once every call was submitted, and of the span between the
    first call's creation and the last one's finish in the broker's records."""
    errors = {}

    def note(e):
        key = type(e).__name__
        count, first = errors.get(key, (0, str(e)))
        errors[key] = (count + 1, first)

    before = stats()
    futures = []
    t0 = time.perf_counter()
    for k in range(n):
        try:
            futures.append((base + k, noop(i=base + k)))
        except Exception as e:  # measured, reported, not fatal to the run
            note(e)
    t_submitted = time.perf_counter()
    at_submitted = stats()
    if before and at_submitted:  # this burst's calls only, not the earlier phases'
        at_submitted = {k: v - before[k] for k, v in at_submitted.items()}
    give_up = t0 + deadline_s
    done = 0
    for i, fut in futures:
        left = give_up - time.perf_counter()
        try:
            res = fut.get(timeout=max(0.001, left))
            check_result(i, res)
            done += 1
        except BenchError:
            raise
        except Exception as e:
            note(e)
    t_end = time.perf_counter()
    records = [f._call for _, f in futures if isinstance(f._call, dict)]
    created = [r["created_ms"] for r in records if r.get("created_ms")]
    finished = [r["finished_ms"] for r in records if r.get("finished_ms")]
    broker_span_s = (max(finished) - min(created)) / 1000.0 if created and finished else None
    return {"n": n, "done": done, "submit_s": t_submitted - t0, "drain_s": t_end - t_submitted,
            "total_s": t_end - t0, "errors": errors, "at_submitted": at_submitted,
            "broker_span_s": broker_span_s}


class _Timed:
    """Wraps a callable and adds the seconds each call took to a list chosen by a
    classifier of its arguments (None: not recorded)."""

    def __init__(self, fn, sink, classify=lambda *a, **k: "all"):
        self.fn = fn
        self.sink = sink
        self.classify = classify

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            key = self.classify(*args, **kwargs)
            if key is not None:
                self.sink.setdefault(key, []).append(time.perf_counter() - t0)


def run_breakdown(app, noop, base, n, timeout):
    """Where one sequential call's time goes, from the client's side. Timers wrap
    this app's broker connection pool and result cache (instance attributes only,
    removed afterwards); the broker's own timestamps come from each call record."""
    broker = app.brokers.find_broker()
    spans = {}

    def classify_request(method, path, body=None, timeout_ms=30000):
        if method == "POST" and path.startswith("/v1/calls?wait_ms="):
            return "submit_wait"
        return "other"

    broker.request = _Timed(broker.request, spans, classify_request)
    app.cache.store = _Timed(app.cache.store, spans, lambda *a, **k: "store")
    rows = []
    try:
        for k in range(n):
            i = base + k
            before = {key: len(v) for key, v in spans.items()}
            t0 = time.perf_counter()
            fut = noop(i=i)
            t1 = time.perf_counter()
            res = fut.get(timeout=timeout)
            t2 = time.perf_counter()
            check_result(i, res)

            def new(key):
                return spans.get(key, [])[before.get(key, 0):]

            call = fut._call or {}
            rows.append({
                "call": t1 - t0, "get": t2 - t1,
                "submit_wait": sum(new("submit_wait")), "other": sum(new("other")),
                "requests": len(new("submit_wait")) + len(new("other")),
                "store": sum(new("store")),
                "broker_ms": (call.get("finished_ms") or 0) - (call.get("created_ms") or 0),
            })
    finally:
        del broker.request
        del app.cache.store
    return rows


def transport_floor(address, key, n):
    """Seconds of each of n GET /v1/health round trips on one keep-alive connection."""
    conn = _core.Connection(address, key=key)
    try:
        conn.request("GET", "/v1/health")
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            status, _ = conn.request("GET", "/v1/health")
            out.append(time.perf_counter() - t0)
            if status != 200:
                raise BenchError("GET /v1/health answered HTTP %d" % status)
        return out
    finally:
        conn.close()


def disk_floor(directory, n):
    """Seconds of each of n 100-byte write + fsync pairs on a file in directory:
    what one durable acknowledgement costs on this disk at the least."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 100)
            os.fsync(fd)
            out.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return out


def latency_summary(seconds):
    ms = sorted(s * 1000.0 for s in seconds)
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "mean_ms": sum(ms) / len(ms), "max_ms": ms[-1]}


def memory_rows(broker, workers):
    rows = [("p2prpc broker", broker.proc.pid, vm_hwm_kib(broker.proc.pid))]
    for w in workers:
        rows.append(("p2prpc %s" % w.name, w.proc.pid, vm_hwm_kib(w.proc.pid)))
        for c in children_of(w.proc.pid):
            rows.append(("  executor child of %s" % w.name, c, vm_hwm_kib(c)))
    rows.append(("p2prpc client (this process)", os.getpid(), vm_hwm_kib(os.getpid())))
    return rows


def run_peers(args, run_dir):
    """bench/peers.py's figures as a dict, or (None, why) when it could not run."""
    cmd = [sys.executable, os.path.join(HERE, "peers.py"), "--json", "--seq", str(args.seq),
           "--burst", str(args.burst), "--workers", str(args.workers), "--dir", run_dir]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.deadline + 120)
    except subprocess.TimeoutExpired:
        return None, "bench/peers.py did not finish within %d s" % (args.deadline + 120)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                break
            if data.get("ok"):
                return data, None
            return None, data.get("why") or "bench/peers.py failed"
    tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
    return None, "bench/peers.py exited %d: %s" % (out.returncode, " | ".join(tail))


def fmt(v, spec="%.3f"):
    return "—" if v is None else spec % v


def mib(kib):
    return "gone" if kib is None else "%.1f" % (kib / 1024.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="a smaller run: 300 sequential calls, a burst of 1,000")
    ap.add_argument("--seq", type=int, default=None, help="sequential calls (default 2000)")
    ap.add_argument("--burst", type=int, default=None, help="calls in the burst (default 10000)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--warmup", type=int, default=50, help="warm-up calls (default 50)")
    ap.add_argument("--breakdown", type=int, default=None,
                    help="calls timed piece by piece (default 300; --quick 100)")
    ap.add_argument("--deadline", type=int, default=180,
                    help="seconds the burst may take before the rest counts as timed out")
    ap.add_argument("--dir", default=os.path.join("build", "bench"),
                    help="where the run's stores go (default build/bench: a real disk)")
    ap.add_argument("--password", default=None,
                    help="run the network with this password (requests signed)")
    ap.add_argument("--no-peers", action="store_true",
                    help="skip Celery + Redis; print the issue's reference figures instead")
    ap.add_argument("--keep", action="store_true", help="keep the run's directory and logs")
    args = ap.parse_args()
    args.seq = args.seq if args.seq is not None else (300 if args.quick else 2000)
    args.burst = args.burst if args.burst is not None else (1000 if args.quick else 10000)
    args.breakdown = (args.breakdown if args.breakdown is not None
                      else (100 if args.quick else 300))
    if min(args.seq, args.burst, args.workers, args.breakdown) < 1 or args.warmup < 0:
        ap.error("--seq, --burst, --workers and --breakdown must be at least 1")

    os.makedirs(args.dir, exist_ok=True)
    run_dir = os.path.abspath(tempfile.mkdtemp(prefix="calls-", dir=args.dir))
    function_file = os.path.join(run_dir, "bench_noop.py")
    with open(function_file, "w") as f:
        f.write(FUNCTION_SOURCE)
    discovery = os.path.join(run_dir, "discovery.txt")

    broker, workers, app = None, [], None
    failed = None
    try:
        broker, address = start_broker(run_dir, function_file, args.password)
        with open(discovery, "w") as f:
            f.write(address + "\n")
        workers = start_workers(run_dir, function_file, discovery, args.workers, args.password)
        app = create_p2p_client_app(discovery, password=args.password,
                                    cache_path=os.path.join(run_dir, "client-cache"))
        spec = read_module_functions(function_file)[0]
        noop = app.register_p2p_func()(spec.func)

        # Warm-up: connections, executor children, page cache. The first get()
        # also waits for the workers to come up.
        run_sequential(noop, WARM_BASE, max(1, args.warmup), timeout=60)
        for w in workers:
            if not w.alive():
                raise BenchError("%s exited during warm-up; its output:\n%s" % (w.name, w.log()))

        seq = latency_summary(run_sequential(noop, SEQ_BASE, args.seq, timeout=30))
        key = _core.derive_key(args.password) if args.password else None
        burst = run_burst(noop, BURST_BASE, args.burst, args.deadline,
                          lambda: function_stats(address, key, spec.name))
        burst["calls_s"] = burst["done"] / burst["total_s"] if burst["total_s"] > 0 else 0.0
        parts = run_breakdown(app, noop, BREAK_BASE, args.breakdown, timeout=30)
        floor = latency_summary(transport_floor(address, key, 1000))
        fsync = latency_summary(disk_floor(os.path.join(run_dir, "broker"), 300))
        memory = memory_rows(broker, workers)
    except BenchError as e:
        failed = str(e)
    finally:
        if app is not None:
            app.background_server.shutdown()
        for w in workers:
            w.stop()
        if broker is not None:
            broker.stop()

    if failed:
        print("bench/calls.py: %s" % failed, file=sys.stderr)
        print("run directory kept: %s" % run_dir, file=sys.stderr)
        return 2

    peers, peers_why = (None, "--no-peers") if args.no_peers else run_peers(args, run_dir)
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)

    print("p2prpc %s (%s); %d worker process(es), concurrency 1 each; broker --no-execute, "
          "store durability: default (full)%s"
          % (p2prpc.__version__, os.path.dirname(p2prpc.__file__), args.workers,
             "; requests signed" if args.password else "; no password"))
    print("store and caches under %s%s" % (run_dir, "" if args.keep else " (removed)"))
    print("warm-up %d calls; sequential %d calls; burst %d calls (%d answered)"
          % (args.warmup, args.seq, args.burst, burst["done"]))
    print()

    peer_name = ("%s (this run)" % peers["name"]) if peers else None
    head = ["measure", "p2prpc"] + ([peer_name] if peers else []) + [REFERENCE["name"], "target"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))

    def row(label, ours, theirs, ref, target, spec="%.3f"):
        cells = [label, fmt(ours, spec)]
        if peers:
            cells.append(fmt(theirs, spec))
        cells += [fmt(ref, spec), target]
        print("| " + " | ".join(cells) + " |")

    ps = peers["seq"] if peers else {}
    pb = peers["burst"] if peers else {}
    row("round trip p50, ms (%d sequential)" % args.seq, seq["p50_ms"], ps.get("p50_ms"),
        REFERENCE["p50_ms"], "<= %.1f" % TARGET_P50_MS)
    row("round trip p99, ms", seq["p99_ms"], ps.get("p99_ms"), None, "")
    row("round trip mean, ms", seq["mean_ms"], ps.get("mean_ms"), None, "")
    row("round trip max, ms", seq["max_ms"], ps.get("max_ms"), None, "")
    row("burst calls/s (%d at once, %d workers)" % (args.burst, args.workers), burst["calls_s"],
        pb.get("calls_s"), REFERENCE["calls_s"], ">= %d" % TARGET_CALLS_S, spec="%.0f")
    row("burst: submitting all, s", burst["submit_s"], pb.get("submit_s"), None, "", "%.2f")
    row("burst: then getting all, s", burst["drain_s"], pb.get("drain_s"), None, "", "%.2f")
    row("burst: broker's first created_ms to last finished_ms, s", burst["broker_span_s"],
        None, None, "", "%.2f")
    row("burst: calls that errored or timed out", args.burst - burst["done"],
        (pb["n"] - pb["done"]) if pb else None, None, "0", spec="%d")
    if not peers:
        print()
        print("Celery + Redis not measured in this run: %s" % peers_why)
    if burst["at_submitted"]:
        print()
        print("the burst's calls on the broker when the last one was submitted: %s"
              % ", ".join("%s %s" % kv for kv in burst["at_submitted"].items()))
    for who, errors in (("p2prpc", burst["errors"]), ("peer", pb.get("errors") or {})):
        for name, (count, first) in sorted(errors.items()):
            print("%s burst error %s x%d, first: %s" % (who, name, count, first))

    print()
    print("Where one sequential call's time goes (%d calls, seen from the client; ms):"
          % len(parts))
    print()
    print("| piece | p50 | p99 | mean |")
    print("|---|---|---|---|")

    def piece(label, values_ms):
        v = sorted(values_ms)
        print("| %s | %.3f | %.3f | %.3f |"
              % (label, percentile(v, 50), percentile(v, 99), sum(v) / len(v)))

    ms = 1000.0
    piece("whole round trip: f(i=...) + .get()", [(r["call"] + r["get"]) * ms for r in parts])
    piece("f(i=...): bind, id hash, cache lookup, future returned",
          [r["call"] * ms for r in parts])
    piece(".get(): until the result dict is returned", [r["get"] * ms for r in parts])
    piece("  of which POST /v1/calls?wait_ms (durable submit + wait, one request)",
          [r["submit_wait"] * ms for r in parts])
    piece("  of which other requests (background submits, polls)",
          [r["other"] * ms for r in parts])
    piece("  of which recording the result (written behind)", [r["store"] * ms for r in parts])
    piece("  of which the rest (decode, open outputs)",
          [(r["get"] - r["submit_wait"] - r["other"] - r["store"]) * ms for r in parts])
    piece("broker's record: finished_ms - created_ms (1 ms steps)",
          [float(r["broker_ms"]) for r in parts])
    print("| transport floor: GET /v1/health on a kept-alive connection (%d) | %.3f | %.3f | "
          "%.3f |" % (floor["n"], floor["p50_ms"], floor["p99_ms"], floor["mean_ms"]))
    print("| disk floor: 100 B write + fsync in the store's directory (%d) | %.3f | %.3f | "
          "%.3f |" % (fsync["n"], fsync["p50_ms"], fsync["p99_ms"], fsync["mean_ms"]))
    requests = sorted(r["requests"] for r in parts)
    print()
    print("requests per call: p50 %d, max %d" % (percentile(requests, 50), requests[-1]))

    print()
    print("Peak resident memory (VmHWM, MiB), read at the end of the run:")
    print()
    print("| process | pid | peak RSS MiB |")
    print("|---|---|---|")
    for name, pid, kib in memory + (peers.get("memory", []) if peers else []):
        print("| %s | %d | %s |" % (name, pid, mib(kib)))

    print()
    met_p50 = seq["p50_ms"] <= TARGET_P50_MS
    met_rate = burst["calls_s"] >= TARGET_CALLS_S
    print("targets: p50 %.3f ms <= %.1f: %s; %.0f calls/s >= %d: %s"
          % (seq["p50_ms"], TARGET_P50_MS, "met" if met_p50 else "NOT met", burst["calls_s"],
             TARGET_CALLS_S, "met" if met_rate else "NOT met"))
    if peers:
        print("against %s: p50 %.2fx, calls/s %.2fx (above 1 = p2prpc better)"
              % (peers["name"], ps["p50_ms"] / seq["p50_ms"], burst["calls_s"] / pb["calls_s"]))
    if burst["done"] != args.burst:
        return 2
    return 0 if met_p50 and met_rate else 1


if __name__ == "__main__":
    sys.exit(main())
