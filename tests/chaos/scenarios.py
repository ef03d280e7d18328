"""The chaos scenarios of issue 5. Each takes a fresh work directory and a form
("short": what `make test` runs, about 20-30 s each; "long": by hand, see
README.md) and returns a harness.Report whose figures it has filled.

Every scenario calls the functions of functions.py through the real client
against real broker and worker processes, and scores the outcome the same way
(harness.Report.score): lost, unexpected, divergent, stale results accepted,
corrupt files served must be 0; duplicate executions at most kills + lapsed
leases (+ link cuts in scenario 5).

SCENARIOS maps a name to (function, environment of the scenario's own
process): scenario 3's client must see the faults from its first request, so
the runner starts each scenario in a process of its own.
"""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import functions as chaos_functions
from harness import (Cluster, Executions, Ledger, Report, alive, client_app, now_ms,
                     random_bytes)

SIZES = {
    "worker_kills": {"short": dict(calls=60, workers=2, pace_s=0.2, sleep_ms=(100, 400)),
                     "long": dict(calls=200, workers=3, pace_s=0.2, sleep_ms=(200, 800))},
    "broker_kills": {"short": dict(submits=100, kills=2), "long": dict(submits=500, kills=5)},
    "lost_replies": {"short": dict(calls=50), "long": dict(calls=200)},
    "paused_worker": {"short": dict(rounds=2), "long": dict(rounds=6)},
    "link_cuts": {"short": dict(calls=24, cuts=1, every_s=20.0),
                  "long": dict(calls=200, cuts=99, every_s=20.0)},
    "store_faults": {"short": dict(raw=40, calls=30), "long": dict(raw=200, calls=150)},
    "graceful_stop": {"short": dict(), "long": dict()},
}

KILL_EVERY_S = 3.0
CUT_S = 5.0


def _seed():
    seed = int(os.environ.get("P2PRPC_CHAOS_SEED") or time.time() * 1000) & 0xFFFFFFFF
    return seed, random.Random(seed)


def _submit_mix(ledger, rng, i, prefix, workdir, sleep_ms=(100, 400), file_every=5,
                file_bytes=(1, 256 * 1024)):
    tag = "%s-%d" % (prefix, i)
    sleep = rng.randint(*sleep_ms)
    n = rng.randint(-10 ** 6, 10 ** 6)
    if file_every and i % file_every == file_every - 1:
        return ledger.submit(tag, n, sleep, data=random_bytes(rng, *file_bytes), workdir=workdir)
    return ledger.submit(tag, n, sleep)


def _wait_all(ledger):
    ledger.finish()


def _orphans(kids, report, what):
    """Descendants of a SIGKILLed worker still alive 3 s later (the kernel's
    PR_SET_PDEATHSIG should have killed them at once): counted, then killed."""
    deadline = time.time() + 3
    left = [p for p in kids if alive(p)]
    while left and time.time() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    for p in left:
        report.f["orphans"] += 1
        report.problem("process %d outlived %s" % (p, what))
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _recover_after_worker(report, label, ledger, ex, events):
    """events: (ms, worker pid): the time from each event to the completion of
    the calls that worker was running then."""
    for t, pid in events:
        for tag in ex.in_flight_on(pid, t):
            op = ledger.ops.get(tag)
            if op and op.get("finished_ms"):
                report.add_recovery(label, (op["finished_ms"] - t) / 1000.0)


def _log_count(nodes, pattern):
    return sum(n.logs().count(pattern) for n in nodes)


# ---- 1 -----------------------------------------------------------------------------------


def worker_kills(workdir, form):
    """A random worker is SIGKILLed every 3 s and restarted while calls run."""
    size = SIZES["worker_kills"][form]
    rep = Report("1 worker kill -9 every 3 s", form)
    seed, rng = _seed()
    rep.extra["seed"] = seed
    c = Cluster(workdir, broker_args=["--lease-ms", "2000", "--heartbeat-ms", "400",
                                      "--max-attempts", "6"])
    c.start_broker()
    workers = [c.add_worker("w%d" % i) for i in range(size["workers"])]
    app = client_app(c)
    ledger = Ledger(app, deadline_s=size["calls"] * size["pace_s"] + 90)
    kills = []
    stop = threading.Event()

    def killer():
        while not stop.wait(KILL_EVERY_S):
            w = rng.choice(workers)
            t, pid = now_ms(), w.pid
            kids = w.kill()
            kills.append((t, pid))
            _orphans(kids, rep, "its worker %s (pid %d)" % (w.name, pid))
            w.start()

    k = threading.Thread(target=killer, daemon=True)
    try:
        k.start()
        for i in range(size["calls"]):
            _submit_mix(ledger, rng, i, "k", workdir, sleep_ms=size["sleep_ms"])
            time.sleep(size["pace_s"])
        _wait_all(ledger)
    finally:
        stop.set()
        k.join()
        app.background_server.shutdown()
        c.stop()
    rep.f["kills"] = len(kills)
    ex = c.executions()
    rep.score(ledger, ex)
    _recover_after_worker(rep, "a worker kill", ledger, ex, kills)
    return rep


# ---- 2 -----------------------------------------------------------------------------------


def broker_kills(workdir, form):
    """The broker is SIGKILLed during the submits and restarted on the same port
    and data directory; every acknowledged call must complete."""
    size = SIZES["broker_kills"][form]
    rep = Report("2 broker kill -9 during submits", form)
    seed, rng = _seed()
    rep.extra["seed"] = seed
    c = Cluster(workdir, broker_args=["--lease-ms", "3000", "--heartbeat-ms", "500"])
    c.start_broker()
    for i in range(2):
        c.add_worker("w%d" % i)
    app = client_app(c)
    ledger = Ledger(app, deadline_s=size["submits"] * 0.1 + 90)
    kills, downtime = [], []
    submitted = [0]
    stop = threading.Event()
    marks = [size["submits"] * (j + 1) // (size["kills"] + 1) for j in range(size["kills"])]

    def killer():
        for mark in marks:
            while submitted[0] < mark and not stop.is_set():
                time.sleep(0.005)
            if stop.is_set():
                return
            t = now_ms()
            c.kill_broker()
            time.sleep(rng.uniform(0.1, 1.0))
            c.start_broker()
            up = now_ms()
            kills.append((t, up))
            downtime.append((up - t) / 1000.0)

    k = threading.Thread(target=killer, daemon=True)
    try:
        k.start()
        for i in range(size["submits"]):
            _submit_mix(ledger, rng, i, "b", workdir, sleep_ms=(10, 60), file_every=10,
                        file_bytes=(1, 64 * 1024))
            submitted[0] = i + 1
        k.join()
        _wait_all(ledger)
    finally:
        stop.set()
        k.join()
        app.background_server.shutdown()
        c.stop()
    rep.f["kills"] = len(kills)
    rep.extra["broker downtime s"] = ", ".join("%.2f" % d for d in downtime)
    ex = c.executions()
    rep.score(ledger, ex, allowed_extra=0)
    done = sorted(o["finished_ms"] for o in ledger.acked() if o.get("finished_ms"))
    for t, up in kills:
        # From the kill to the first call finished by the restarted broker.
        after = [f for f in done if f >= up]
        if after:
            rep.add_recovery("a broker restart", (after[0] - t) / 1000.0)
    return rep


# ---- 3 -----------------------------------------------------------------------------------


def lost_replies(workdir, form):
    """25% of the replies of every request of the client and the workers are
    thrown away after the broker acted (P2PRPC_FAULTS=drop_reply=0.25)."""
    size = SIZES["lost_replies"][form]
    rep = Report("3 25% of replies lost", form)
    seed, rng = _seed()
    rep.extra["seed"] = seed
    faults = os.environ.get("P2PRPC_FAULTS", "")
    if "drop_reply" not in faults:
        rep.problem("this process runs without drop_reply faults (P2PRPC_FAULTS=%r); start it "
                    "through run.py" % faults)
    c = Cluster(workdir, broker_args=["--lease-ms", "2000", "--heartbeat-ms", "400",
                                      "--max-attempts", "10"])
    c.start_broker()
    workers = [c.add_worker("w%d" % i, env={"P2PRPC_FAULTS": faults}) for i in range(2)]
    app = client_app(c)
    ledger = Ledger(app, deadline_s=size["calls"] * 0.2 + 90)
    try:
        for i in range(size["calls"]):
            _submit_mix(ledger, rng, i, "d", workdir, sleep_ms=(20, 120))
        _wait_all(ledger)
    finally:
        app.background_server.shutdown()
        c.stop()
    rep.score(ledger, c.executions())
    rep.extra["worker requests that lost their reply (logged)"] = _log_count(
        workers, "injected fault")
    return rep


# ---- 4 -----------------------------------------------------------------------------------


def _late_result_on_the_wire(c, app, rep):
    """A lease taken by hand and left to lapse: its heartbeat and its result are
    refused with 409 ESTATE."""
    from p2prpc import _core
    from p2prpc._spec import read_module_functions

    from harness import FUNCTIONS

    specs = read_module_functions(FUNCTIONS)
    ledger = Ledger(app, deadline_s=60, waiters=1)
    ledger.submit("wire-0", 5, 10)
    conn = _core.Connection(c.address, key=_core.derive_key(c.password))
    try:
        body = json.dumps({"worker": "chaos-by-hand", "wait_ms": 5000,
                           "functions": [{"name": s.name, "version": s.version}
                                         for s in specs]}).encode()
        status, data = conn.request("POST", "/v1/leases", body, timeout_ms=15000)
        if status != 200:
            rep.problem("leasing by hand: HTTP %d %r" % (status, data[:200]))
            return ledger
        lease = json.loads(data)["lease"]
        time.sleep(1.5 + 1.0)  # past --lease-ms and one expiry pass
        hb = json.dumps({"call_id": lease["call_id"], "progress": 50}).encode()
        st_hb, data_hb = conn.request("POST", "/v1/leases/%s/heartbeat" % lease["id"], hb)
        result = json.dumps({"call_id": lease["call_id"], "state": "done", "outputs": [
            {"name": "value", "kind": "int", "value": "666"},
            {"name": "token", "kind": "str", "value": "late"},
            {"name": "pid", "kind": "int", "value": "0"}], "error": None}).encode()
        st, data = conn.request("POST", "/v1/leases/%s/result" % lease["id"], result)
        code = (json.loads(data or b"{}").get("error") or {}).get("code")
        rep.extra["late result by hand"] = "HTTP %d %s (heartbeat HTTP %d)" % (st, code, st_hb)
        if st != 409 or code != "ESTATE":
            rep.f["stale_accepted"] += 1 if st == 200 else 0
            rep.problem("a result under a lapsed lease got HTTP %d %s, not 409 ESTATE: %r"
                        % (st, code, data[:200]))
        if st_hb != 409:
            rep.problem("a heartbeat of a lapsed lease got HTTP %d: %r" % (st_hb, data_hb[:200]))
    finally:
        conn.close()
    return ledger


def paused_worker(workdir, form):
    """A worker is SIGSTOPped while its call runs, past its lease; the call is
    leased again; the worker is resumed (SIGCONT) while the second execution
    runs. Its late result must be refused: the accepted result is the second
    execution's."""
    size = SIZES["paused_worker"][form]
    rep = Report("4 worker paused past its lease", form)
    c = Cluster(workdir, broker_args=["--lease-ms", "1500", "--heartbeat-ms", "300",
                                      "--max-attempts", "5"])
    c.start_broker()
    app = client_app(c)
    wire = _late_result_on_the_wire(c, app, rep)
    workers = [c.add_worker("w%d" % i) for i in range(2)]
    ledger = Ledger(app, deadline_s=size["rounds"] * 15 + 60, waiters=2)
    paused = []
    try:
        for r in range(size["rounds"]):
            tag = "p-%d" % r
            ledger.submit(tag, r, 1000)
            ex = Executions({}).wait_for_start(c.record, tag)
            first = ex.by_tag[tag][0]
            w = next(x for x in workers if x.pid == first["worker"])
            time.sleep(0.2)
            w.signal(signal.SIGSTOP)
            t = now_ms()
            try:
                Executions({}).wait_for_start(c.record, tag, count=2, timeout=20)
                time.sleep(0.2)
            finally:
                w.signal(signal.SIGCONT)
            paused.append((t, w.pid, first["token"], tag))
            ledger.ops[tag]["future"].get(timeout=30)
        wire.finish()
        _wait_all(ledger)
        time.sleep(1.0)  # the resumed workers' last log lines
    finally:
        app.background_server.shutdown()
        c.stop()
    ex = c.executions()
    # The hand-made call of _late_result_on_the_wire counts with the others.
    ledger.ops.update(wire.ops)
    ledger.order = wire.order + ledger.order
    rep.score(ledger, ex)
    logs = "".join(w.logs() for w in workers)
    refused = logs.count("broker refused the result")
    dropped = logs.count("lease lost, result dropped")
    rep.extra["late results refused by the broker (409)"] = refused
    rep.extra["late results dropped by the worker (heartbeat saw 409 first)"] = dropped
    for t, pid, token, tag in paused:
        res = ledger.ops[tag]["result"] or {}
        if res.get("token") == token:
            rep.f["stale_accepted"] += 1
            rep.problem("call %s: the paused worker's late result %s was accepted" % (tag, token))
        op = ledger.ops[tag]
        if op.get("finished_ms"):
            rep.add_recovery("a worker pause", (op["finished_ms"] - t) / 1000.0)
    if refused + dropped < len(paused):
        rep.problem("%d paused worker(s) resumed but only %d late result(s) were refused or "
                    "dropped" % (len(paused), refused + dropped))
    return rep


# ---- 5 -----------------------------------------------------------------------------------


class _Cut:
    """Drops every packet of a namespace's link (both ways) while on."""

    def __init__(self, nat):
        self.nat = nat
        self.tool = None  # what the cut in force was made with
        self.used = None  # what cuts are made with here

    def on(self):
        rules = ("table inet p2prpc_cut {\n"
                 " chain in { type filter hook input priority -10; policy drop; }\n"
                 " chain out { type filter hook output priority -10; policy drop; }\n"
                 "}\n")
        if self.nat.exec(["nft", "-f", "-"], check=False, input=rules).returncode == 0:
            self.tool = self.used = "nft"
            return
        for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
            self.nat.exec(["iptables", "-I", chain, "1", flag, self.nat.inner_if, "-j", "DROP"])
        self.tool = self.used = "iptables"

    def off(self):
        if self.tool == "nft":
            self.nat.exec(["nft", "delete", "table", "inet", "p2prpc_cut"])
        elif self.tool == "iptables":
            for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
                self.nat.exec(["iptables", "-D", chain, flag, self.nat.inner_if, "-j", "DROP"])
        self.tool = None


def link_cuts(workdir, form):
    """One worker runs in a network namespace whose link to the broker is cut
    (every packet dropped) for 5 s every 20 s; another runs outside."""
    size = SIZES["link_cuts"][form]
    rep = Report("5 worker link cut 5 s every 20 s", form)
    seed, rng = _seed()
    rep.extra["seed"] = seed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), "python"))
    try:
        from e2e.netns import NatNamespace, Unavailable
    except ImportError as e:
        rep.skipped = "tests/python/e2e/netns.py cannot be imported: %s" % e
        return rep
    try:
        nat = NatNamespace.create()
    except Unavailable as e:
        rep.skipped = "network namespaces are unavailable: %s" % e
        return rep
    cut = _Cut(nat)
    cuts = []
    try:
        c = Cluster(workdir, host=nat.host_ip,
                    broker_args=["--lease-ms", "3000", "--heartbeat-ms", "500"])
        c.start_broker()
        inside = c.add_worker("inside", prefix=nat.prefix)
        c.add_worker("outside")
        app = client_app(c)
        ledger = Ledger(app, deadline_s=size["calls"] * 0.5 + 90)
        stop = threading.Event()

        def cutter():
            first = 2.0 if form == "short" else 5.0
            if stop.wait(first):
                return
            while len(cuts) < size["cuts"]:
                t = now_ms()
                cut.on()
                cuts.append((t, inside.pid))
                stop.wait(CUT_S)
                cut.off()
                if len(cuts) >= size["cuts"] or stop.wait(size["every_s"] - CUT_S):
                    return

        k = threading.Thread(target=cutter, daemon=True)
        try:
            k.start()
            for i in range(size["calls"]):
                _submit_mix(ledger, rng, i, "n", workdir, sleep_ms=(300, 700), file_every=6)
                time.sleep(0.05)
            _wait_all(ledger)
            if form == "short":
                k.join()  # the one cut is over: the inside worker must be back
        finally:
            stop.set()
            k.join()
            app.background_server.shutdown()
        ex = c.executions()
        rep.score(ledger, ex, allowed_extra=len(cuts))
        _recover_after_worker(rep, "a link cut", ledger, ex, cuts)
        rep.extra["link cuts"] = "%d of %.0f s (made with %s)" % (len(cuts), CUT_S, cut.used)
        rep.extra["calls run by the worker behind the cut link"] = sum(
            1 for runs in ex.by_tag.values() for e in runs if e["worker"] == inside.pid)
        c.stop()
    finally:
        if cut.tool:
            cut.off()
        nat.close()
    return rep


# ---- 6 -----------------------------------------------------------------------------------


def _raw_submits(c, app, rep, count, rng):
    """POST /v1/calls by hand, without the client's retries: an answer other
    than 200 must mean the call was not stored; it is then retried until 200."""
    from p2prpc import _core
    from p2prpc._identity import prepare_call, spec_of
    from p2prpc._wire import encode_entry

    import functions as fns

    spec = spec_of(fns.p2prpc_chaos)
    conn = _core.Connection(c.address, key=_core.derive_key(c.password))
    tags = []
    acked = errors = absent = present = retries = 0
    try:
        for i in range(count):
            tag = "raw-%d" % i
            kwargs = {"n": rng.randint(0, 10 ** 6), "tag": tag, "sleep_ms": 20}
            prepared = prepare_call(spec, spec.bind((), kwargs))
            body = json.dumps({"id": prepared.call_id, "function": spec.name,
                               "version": spec.version,
                               "args": [encode_entry(a.name, a.kind, kwargs[a.name])
                                        for a in spec.args]}).encode()
            status, data = conn.request("POST", "/v1/calls", body)
            if status != 200:
                errors += 1
                gs, _ = conn.request("GET", "/v1/calls/%s" % prepared.call_id)
                if gs == 404:
                    absent += 1
                else:
                    present += 1
                    rep.f["unexpected"] += 1
                    rep.problem("submit %s answered HTTP %d %r, yet the call is stored (GET: "
                                "HTTP %d)" % (tag, status, data[:120], gs))
                for _ in range(50):
                    retries += 1
                    status, data = conn.request("POST", "/v1/calls", body)
                    if status == 200:
                        break
                    time.sleep(0.02)
            if status == 200:
                acked += 1
                tags.append((tag, kwargs))
            else:
                rep.problem("submit %s still failing after 50 retries: HTTP %d %r"
                            % (tag, status, data[:200]))
    finally:
        conn.close()
    rep.extra["raw submits"] = ("%d: %d errors (%d absent after the error, %d present), "
                                "%d retries, %d acknowledged" % (count, errors, absent, present,
                                                                 retries, acked))
    return tags


def store_faults(workdir, form):
    """20% of the broker's store writes fail (P2PRPC_FAULTS=store_write=0.2 for
    the broker only): it never acknowledges what it did not write, and what it
    acknowledged completes, run once."""
    size = SIZES["store_faults"][form]
    rep = Report("6 20% of store writes fail", form)
    seed, rng = _seed()
    rep.extra["seed"] = seed
    c = Cluster(workdir, broker_env={"P2PRPC_FAULTS": "store_write=0.2"},
                broker_args=["--lease-ms", "2000", "--heartbeat-ms", "400",
                             "--max-attempts", "10"])
    c.start_broker()
    workers = [c.add_worker("w%d" % i) for i in range(2)]
    app = client_app(c)
    ledger = Ledger(app, deadline_s=size["calls"] * 0.2 + 90)
    try:
        raw = _raw_submits(c, app, rep, size["raw"], rng)
        # The client's own submit of the same call (same id: same call) gives
        # it a future; the call must not run again.
        for tag, kw in raw:
            ledger.submit(tag, kw["n"], kw["sleep_ms"])
        for i in range(size["calls"]):
            _submit_mix(ledger, rng, i, "s", workdir, sleep_ms=(20, 120))
        _wait_all(ledger)
    finally:
        app.background_server.shutdown()
        c.stop()
    rep.score(ledger, c.executions())
    rep.extra["broker errors seen by workers (logged)"] = _log_count(workers, "failed (injected")
    rep.extra["results the broker refused (worker logs)"] = _log_count(
        workers, "broker refused the result")
    return rep


# ---- 7 -----------------------------------------------------------------------------------


def graceful_stop(workdir, form):
    """SIGTERM / SIGINT while a call runs: the worker finishes it, pushes the
    result and exits; it takes no new call meanwhile. SIGKILL mid-call: the
    function's process dies with the worker."""
    rep = Report("7 worker stop: SIGTERM, SIGINT, SIGKILL", form)
    c = Cluster(workdir, broker_args=["--lease-ms", "30000", "--heartbeat-ms", "500"])
    c.start_broker()
    app = client_app(c)
    ledger = Ledger(app, deadline_s=90, waiters=4)
    try:
        for sig, name in ((signal.SIGTERM, "term"), (signal.SIGINT, "int")):
            w = c.add_worker("g-" + name)
            ledger.submit("g-%s-run" % name, 1, 1500)
            ex = Executions({}).wait_for_start(c.record, "g-%s-run" % name)
            ledger.submit("g-%s-queued" % name, 2, 10)
            time.sleep(0.3)
            t = time.time()
            w.signal(sig)
            try:
                rc = w.proc.wait(15)
            except subprocess.TimeoutExpired:
                rc = None
                rep.problem("%s: the worker did not exit within 15 s" % name.upper())
                w.kill()
            took = time.time() - t
            rep.extra["SIG%s: exit code, seconds to exit" % name.upper()] = "%s, %.2f" % (rc,
                                                                                       took)
            if rc != 0:
                rep.problem("SIG%s: the worker exited with %r" % (name.upper(), rc))
            op = ledger.ops["g-%s-run" % name]
            op["future"].get(timeout=5)  # pushed before the worker exited: no lapse to wait for
            queued = Executions.read(c.record).by_tag.get("g-%s-queued" % name, [])
            if any(e["worker"] == w.pid for e in queued):
                rep.problem("SIG%s: the stopping worker took a new call" % name.upper())
            log = w.log()
            if "result delivered" not in log and "stopped" not in log:
                rep.notes.append("SIG%s worker log: %s" % (name.upper(), log[-400:]))
        # The queued calls are waiting for a worker: one that is SIGKILLed
        # mid-call, while the function waits for a helper process it started.
        w = c.add_worker("g-kill")
        spawn = app.register_p2p_func()(chaos_functions.p2prpc_chaos_spawn)
        fut = spawn(tag="g-kill-run", sleep_ms=60000)
        deadline = time.time() + 30
        ex = Executions.read(c.record)
        while not ex.spawned.get("g-kill-run") and time.time() < deadline:
            time.sleep(0.02)
            ex = Executions.read(c.record)
        if not ex.spawned.get("g-kill-run"):
            raise AssertionError("the spawning call did not start within 30 s")
        fn_pid = ex.by_tag["g-kill-run"][0]["pid"]
        helper = ex.spawned["g-kill-run"][0]
        kids = w.kill()
        rep.f["kills"] += 1
        _orphans(sorted(set(kids) | {fn_pid, helper}), rep,
                 "its SIGKILLed worker (function pid %d, its helper %d)" % (fn_pid, helper))
        rep.extra["function process gone after SIGKILL of its worker"] = not alive(fn_pid)
        rep.extra["helper process of the function gone too"] = not alive(helper)
        fut.delete()  # a minute of sleep need not run again
        c.add_worker("g-after")
        _wait_all(ledger)
    finally:
        app.background_server.shutdown()
        c.stop()
    ex = c.executions()
    ex.by_tag.pop("g-kill-run", None)
    rep.score(ledger, ex)
    return rep


SCENARIOS = {
    "worker_kills": (worker_kills, {}),
    "broker_kills": (broker_kills, {}),
    "lost_replies": (lost_replies, {"P2PRPC_FAULTS": "drop_reply=0.25"}),
    "paused_worker": (paused_worker, {}),
    "link_cuts": (link_cuts, {}),
    "store_faults": (store_faults, {}),
    "graceful_stop": (graceful_stop, {}),
}
