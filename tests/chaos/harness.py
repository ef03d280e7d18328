"""What the chaos scenarios share: real broker and worker processes that can be
killed, paused and restarted (Cluster), the record of every operation and its
outcome (Ledger), and the figures each scenario prints (Report).

Nodes are started as `python -m p2prpc ...` with this interpreter, so they run
the same p2prpc as the scenario (whatever sys.path / PYTHONPATH give).
"""
import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FUNCTIONS = os.path.join(HERE, "functions.py")
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import functions as chaos_functions  # noqa: E402  (the scenarios' function file)

PASSWORD = "chaos suite password"


def now_ms():
    return int(time.time() * 1000)


# ---- processes ---------------------------------------------------------------------------


def children_of(pid):
    """Pids of every live descendant of pid (from /proc)."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for c in parents.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Node:
    """One started node process and its log file."""

    def __init__(self, kind, name, args, workdir, env, prefix=()):
        self.kind, self.name, self.args = kind, name, list(args)
        self.workdir, self.env, self.prefix = workdir, dict(env), list(prefix)
        self.proc = None
        self.log_path = None
        self.starts = 0

    def start(self):
        self.starts += 1
        self.log_path = os.path.join(self.workdir, "%s.%d.log" % (self.name, self.starts))
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                self.prefix + [sys.executable, "-m", "p2prpc"] + self.args,
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def logs(self):
        """Every start's log, oldest first."""
        out = []
        for i in range(1, self.starts + 1):
            try:
                with open(os.path.join(self.workdir, "%s.%d.log" % (self.name, i)),
                          errors="replace") as f:
                    out.append(f.read())
            except OSError:
                pass
        return "\n".join(out)

    def signal(self, sig):
        if self.running():
            self.proc.send_signal(sig)

    def kill(self):
        """SIGKILL and reap; the pids of its descendants at the time of the kill."""
        kids = children_of(self.proc.pid) if self.running() else []
        self.signal(signal.SIGKILL)
        self.proc.wait()
        return kids

    def stop(self, timeout=20):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class Cluster:
    """A broker (restartable on the same port and data directory) and workers,
    all under workdir. Every node gets env; executions are recorded under
    workdir/record."""

    def __init__(self, workdir, broker_args=(), broker_env=None, password=PASSWORD,
                 host="127.0.0.1"):
        self.workdir = os.path.abspath(workdir)
        self.record = os.path.join(self.workdir, "record")
        os.makedirs(self.record, exist_ok=True)
        self.password = password
        self.host = host
        base = dict(os.environ, PYTHONUNBUFFERED="1")
        base.pop("P2PRPC_FAULTS", None)  # faults are given per node, never inherited
        base["P2PRPC_PASSWORD"] = password
        base[chaos_functions.RECORD_ENV] = self.record
        self.base_env = base
        self.broker_env = dict(base, **(broker_env or {}))
        self.broker_args = list(broker_args)
        self.port = 0
        self.broker = None
        self.workers = []
        self.discovery = os.path.join(self.workdir, "discovery.txt")

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start_broker(self, timeout=30):
        if self.broker is None:
            self.broker = Node("broker", "broker", [], self.workdir, self.broker_env)
        self.broker.args = ["broker", FUNCTIONS, "--host", self.host, "--port", str(self.port),
                            "--data-dir", os.path.join(self.workdir, "broker-data"),
                            "--no-execute"] + self.broker_args
        deadline = time.time() + timeout
        while True:
            self.broker.start()
            while time.time() < deadline:
                m = re.search(r"listening on \S+:(\d+)", self.broker.log())
                if m:
                    self.port = int(m.group(1))
                    with open(self.discovery, "w") as f:
                        f.write(self.address + "\n")
                    return self.broker
                if not self.broker.running():
                    break
                time.sleep(0.02)
            # The port of the killed broker may still be held for a moment.
            if time.time() >= deadline or "in use" not in self.broker.log():
                raise RuntimeError("the broker did not start:\n" + self.broker.log())
            time.sleep(0.2)

    def kill_broker(self):
        return self.broker.kill()

    def add_worker(self, name, env=None, prefix=(), concurrency=1):
        w = Node("worker", name,
                 ["worker", FUNCTIONS, "--discovery", self.discovery, "--data-dir",
                  os.path.join(self.workdir, name + "-data"), "--concurrency", str(concurrency)],
                 self.workdir, dict(self.base_env, **(env or {})), prefix)
        self.workers.append(w)
        return w.start()

    def stop(self):
        for w in self.workers:
            w.stop()
        if self.broker is not None:
            self.broker.stop()

    def executions(self):
        return Executions.read(self.record)


# ---- what ran ----------------------------------------------------------------------------


class Executions:
    """The parsed executions.log: per tag, the executions in start order, each
    {"token", "pid", "worker", "start_ms", "end_ms"}."""

    def __init__(self, by_tag, spawned=None):
        self.by_tag = by_tag
        self.by_token = {e["token"]: e for runs in by_tag.values() for e in runs}
        self.spawned = spawned or {}  # tag -> pids of helper processes

    @classmethod
    def read(cls, record_dir):
        by_tag, ends, spawned = {}, {}, {}
        path = os.path.join(record_dir, chaos_functions.LOG_NAME)
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            p = line.split()
            if len(p) == 6 and p[0] == "start":
                by_tag.setdefault(p[1], []).append({
                    "token": p[2], "pid": int(p[3]), "worker": int(p[4]),
                    "start_ms": int(p[5]), "end_ms": None})
            elif len(p) == 4 and p[0] == "end":
                ends[p[2]] = int(p[3])
            elif len(p) == 3 and p[0] == "spawn":
                spawned.setdefault(p[1], []).append(int(p[2]))
        for runs in by_tag.values():
            runs.sort(key=lambda e: e["start_ms"])
            for e in runs:
                e["end_ms"] = ends.get(e["token"])
        return cls(by_tag, spawned)

    def in_flight_on(self, worker_pid, at_ms):
        """Tags whose execution on worker_pid had started and not ended at at_ms."""
        return sorted(tag for tag, runs in self.by_tag.items() for e in runs
                      if e["worker"] == worker_pid and e["start_ms"] <= at_ms
                      and (e["end_ms"] is None or e["end_ms"] > at_ms))

    def wait_for_start(self, record_dir, tag, count=1, timeout=30):
        """Wait until `count` executions of tag have started; the fresh Executions."""
        deadline = time.time() + timeout
        ex = self
        while time.time() < deadline:
            ex = Executions.read(record_dir)
            if len(ex.by_tag.get(tag, [])) >= count:
                return ex
            time.sleep(0.02)
        raise AssertionError("call %s did not start %d time(s) within %ss" % (tag, count, timeout))


def percentile(samples, p):
    if not samples:
        return None
    s = sorted(samples)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


# ---- calls and their outcomes ------------------------------------------------------------


class Ledger:
    """Every call a scenario makes and what became of it. Submits run on the
    caller's thread; `waiters` threads call get() on acknowledged futures as
    they come, so long-polls are in flight while the chaos happens."""

    def __init__(self, app, deadline_s, waiters=8):
        from p2prpc.p2p_client import create_p2p_client_app  # noqa: F401 (import check)

        self.app = app
        self.deadline = time.monotonic() + deadline_s
        self.ops = {}  # tag -> op dict
        self.order = []
        self._lock = threading.Lock()
        self._q = queue.Queue()
        self._threads = [threading.Thread(target=self._wait_loop, daemon=True)
                         for _ in range(waiters)]
        self.chaos = self.app.register_p2p_func()(chaos_functions.p2prpc_chaos)
        self.chaos_file = self.app.register_p2p_func()(chaos_functions.p2prpc_chaos_file)
        for t in self._threads:
            t.start()

    def submit(self, tag, n, sleep_ms, data=None, workdir=None):
        """Call the chaos function (the file one when data is given). An
        exception from the call itself means the call was not acknowledged."""
        op = {"tag": tag, "n": n, "data": data, "submitted_ms": now_ms(), "acked": False,
              "error": None, "result": None, "outcome": None, "call": None}
        with self._lock:
            self.ops[tag] = op
            self.order.append(tag)
        try:
            if data is None:
                fut = self.chaos(n=n, tag=tag, sleep_ms=sleep_ms)
            else:
                path = os.path.join(workdir, "in-%s.bin" % tag)
                with open(path, "wb") as f:
                    f.write(data)
                with open(path, "rb") as f:
                    fut = self.chaos_file(data=f, n=n, tag=tag, sleep_ms=sleep_ms)
        except Exception as e:
            op["error"] = "%s: %s" % (type(e).__name__, e)
            op["outcome"] = "submit-error"
            return None
        op["acked"] = True
        op["acked_ms"] = now_ms()
        op["future"] = fut
        self._q.put(op)
        return fut

    def _wait_loop(self):
        while True:
            op = self._q.get()
            if op is None:
                return
            self._wait_one(op)

    def _wait_one(self, op):
        from p2prpc import errors

        fut = op["future"]
        try:
            left = self.deadline - time.monotonic()
            res = fut.get(timeout=max(0.1, left))
            out = {}
            for k, v in res.items():
                if hasattr(v, "read"):
                    out[k] = v.read()
                    v.close()
                else:
                    out[k] = v
            op["result"] = out
            op["outcome"] = "done"
        except errors.ClientFutureTimeoutError as e:
            op["outcome"] = "lost"
            op["error"] = str(e)
        except Exception as e:
            op["outcome"] = "error"
            op["error"] = "%s: %s" % (type(e).__name__, e)
        op["call"] = dict(getattr(fut, "_call", None) or {})
        cached = getattr(fut, "_cached", None) or {}
        op["finished_ms"] = op["call"].get("finished_ms") or cached.get("finished_ms")
        op["completed_ms"] = now_ms()

    def finish(self):
        """Wait for every acknowledged call (until the deadline) and stop the
        waiter threads."""
        for _ in self._threads:
            self._q.put(None)
        for t in self._threads:
            t.join(max(1.0, self.deadline - time.monotonic() + 30))

    def acked(self):
        return [self.ops[t] for t in self.order if self.ops[t]["acked"]]


class Report:
    """The figures of one scenario. check() lists what broke the rules."""

    ZERO = ("lost", "unexpected", "divergent", "stale_accepted", "corrupt_files")

    def __init__(self, name, form):
        self.name, self.form = name, form
        self.f = {"calls": 0, "acknowledged": 0, "submit_errors": 0, "lost": 0, "unexpected": 0,
                  "divergent": 0, "stale_accepted": 0, "corrupt_files": 0, "executions": 0,
                  "duplicates": 0, "kills": 0, "lapsed_leases": 0, "orphans": 0}
        self.extra = {}
        self.notes = []
        self.recovery = {}  # label -> [seconds]
        self.problems = []
        self.allow_submit_errors = False
        self.skipped = None
        self.started = time.time()

    def add_recovery(self, label, seconds):
        self.recovery.setdefault(label, []).append(seconds)

    def problem(self, what):
        self.problems.append(what)

    def score(self, ledger, executions, allowed_extra=0):
        """Fill the call figures from the ledger and the executions log.
        allowed_extra: duplicates the scenario's chaos explains besides kills
        and lapsed leases (e.g. link cuts)."""
        f = self.f
        ops = [ledger.ops[t] for t in ledger.order]
        f["calls"] = len(ops)
        f["acknowledged"] = sum(1 for o in ops if o["acked"])
        f["submit_errors"] = sum(1 for o in ops if o["outcome"] == "submit-error")
        for o in ops:
            if o["acked"]:
                attempts = int((o["call"] or {}).get("attempts") or 1)
                f["lapsed_leases"] += max(0, attempts - 1)
                if len(executions.by_tag.get(o["tag"], [])) > attempts:
                    f["unexpected"] += 1
                    self.problem("call %s ran %d times under %d lease(s)"
                                 % (o["tag"], len(executions.by_tag[o["tag"]]), attempts))
            if o["outcome"] == "submit-error":
                if not self.allow_submit_errors:
                    self.problem("call %s: the submit failed: %s" % (o["tag"], o["error"]))
                ran = len(executions.by_tag.get(o["tag"], []))
                if ran:
                    f["unexpected"] += 1
                    self.problem("call %s: the submit answered an error, yet the call was "
                                 "stored and ran %d time(s)" % (o["tag"], ran))
                continue
            if o["outcome"] == "lost" or o["outcome"] is None:
                f["lost"] += 1
                self.problem("call %s never completed: %s" % (o["tag"], o["error"]))
                continue
            if o["outcome"] == "error":
                f["unexpected"] += 1
                self.problem("call %s: unexpected error: %s" % (o["tag"], o["error"]))
                continue
            res = o["result"]
            runs = executions.by_tag.get(o["tag"], [])
            want = chaos_functions.expected_value(o["n"], o["tag"])
            if res.get("value") != want:
                f["divergent"] += 1
                self.problem("call %s: value %r, expected %r" % (o["tag"], res.get("value"), want))
            if o["data"] is not None and res.get("out") != chaos_functions.expected_file(
                    o["data"], o["n"]):
                f["corrupt_files"] += 1
                self.problem("call %s: the result file's content is wrong (%d bytes)"
                             % (o["tag"], len(res.get("out") or b"")))
            token = res.get("token")
            mine = [e for e in runs if e["token"] == token]
            if not mine:
                f["unexpected"] += 1
                self.problem("call %s: result token %s matches no recorded execution"
                             % (o["tag"], token))
            elif any(e["start_ms"] > mine[0]["start_ms"] and e["token"] != token for e in runs):
                # A later lease ran the call again: the accepted result came
                # from a lease that had lapsed.
                f["stale_accepted"] += 1
                self.problem("call %s: accepted result %s of an execution that was superseded"
                             % (o["tag"], token))
        tags = set(ledger.ops)
        for tag, runs in executions.by_tag.items():
            f["executions"] += len(runs)
            f["duplicates"] += max(0, len(runs) - 1)
            if tag not in tags:
                f["unexpected"] += 1
                self.problem("an execution of %s, which this scenario never called" % tag)
        bound = f["kills"] + f["lapsed_leases"] + allowed_extra
        self.extra["duplicate_bound"] = bound
        if f["duplicates"] > bound:
            self.problem("%d duplicate executions, more than kills + lapsed leases%s = %d"
                         % (f["duplicates"], " + cuts" if allowed_extra else "", bound))

    def check(self):
        out = list(self.problems)
        for k in self.ZERO:
            if self.f[k] and not any(k in p for p in out):
                out.append("%s = %d" % (k, self.f[k]))
        if self.f["orphans"]:
            out.append("%d function process(es) outlived their killed worker" % self.f["orphans"])
        return out

    def as_dict(self):
        rec = {}
        for label, s in self.recovery.items():
            rec[label] = {"n": len(s), "p50_s": percentile(s, 50), "p99_s": percentile(s, 99)}
        return {"scenario": self.name, "form": self.form, "figures": self.f, "extra": self.extra,
                "recovery": rec, "notes": self.notes, "problems": self.check(),
                "skipped": self.skipped, "seconds": round(time.time() - self.started, 1)}

    def print(self, out=sys.stdout):
        d = self.as_dict()
        print("== chaos %s (%s form) %s" % (self.name, self.form,
                                             "SKIPPED: " + self.skipped if self.skipped else
                                             "in %.1f s" % d["seconds"]), file=out)
        if not self.skipped:
            f = self.f
            print("   lost %d  unexpected %d  divergent %d  stale accepted %d  corrupt files %d"
                  % (f["lost"], f["unexpected"], f["divergent"], f["stale_accepted"],
                     f["corrupt_files"]), file=out)
            print("   duplicate executions %d (bound %d = kills %d + lapsed leases %d%s)"
                  % (f["duplicates"], self.extra.get("duplicate_bound", 0), f["kills"],
                     f["lapsed_leases"],
                     " + other %d" % (self.extra["duplicate_bound"] - f["kills"] -
                                      f["lapsed_leases"])
                     if self.extra.get("duplicate_bound", 0) > f["kills"] + f["lapsed_leases"]
                     else ""), file=out)
            print("   calls %d  acknowledged %d  submit errors %d  executions %d  orphans %d"
                  % (f["calls"], f["acknowledged"], f["submit_errors"], f["executions"],
                     f["orphans"]), file=out)
            for k, v in sorted(self.extra.items()):
                if k != "duplicate_bound":
                    print("   %s: %s" % (k.replace("_", " "), v), file=out)
            for label, r in sorted(d["recovery"].items()):
                if r["n"]:
                    print("   recovery after %s: p50 %.2f s  p99 %.2f s  (n=%d)"
                          % (label, r["p50_s"], r["p99_s"], r["n"]), file=out)
                else:
                    print("   recovery after %s: no sample" % label, file=out)
        for n in self.notes:
            print("   note: %s" % n, file=out)
        for p in d["problems"][:20]:
            print("   PROBLEM: %s" % p, file=out)
        if len(d["problems"]) > 20:
            print("   ... and %d more problems" % (len(d["problems"]) - 20), file=out)
        out.flush()


def client_app(cluster, name="client", no_broker_timeout=10.0):
    from p2prpc.p2p_client import create_p2p_client_app

    return create_p2p_client_app(cluster.discovery, password=cluster.password,
                                 cache_path=os.path.join(cluster.workdir, name),
                                 no_broker_timeout=no_broker_timeout)


def random_bytes(rng, lo, hi):
    return rng.randbytes(rng.randint(lo, hi))


def dump_json(report, path):
    with open(path, "w") as f:
        json.dump(report.as_dict(), f, indent=1)


__all__ = ["Cluster", "Executions", "Ledger", "Report", "client_app", "children_of", "alive",
           "now_ms", "percentile", "random_bytes", "dump_json", "PASSWORD", "random"]
