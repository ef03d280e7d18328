"""The executor pool: warm children that run calls, report progress, fail
cleanly, die on terminate and with their parent."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from p2prpc._executor import ExecutorPool
from p2prpc._spec import read_module_functions
from p2prpc._wire import encode_entry

FUNCTIONS = '''
import io, os, sys, time
from p2prpc.p2p_client import p2p_progress_hook

LOADED_BY = os.getpid()

def p2prpc_work(data: io.IOBase, n: int, label: str) -> {"out": io.IOBase, "count": int,
                                                        "pid": int, "label": str}:
    content = data.read()
    path = os.path.join(os.path.dirname(data.name), "out-%d.bin" % n)
    with open(path, "wb") as f:
        f.write(content * n)
    print("printed by the function")
    return {"out": open(path, "rb"), "count": len(content) * n, "pid": os.getpid(),
            "label": label + "!"}

def p2prpc_steps(n: int) -> {"loaded_by": int, "pid": int}:
    for i in range(n):
        p2p_progress_hook(i + 1, n)
        time.sleep(0.02)
    return {"loaded_by": LOADED_BY, "pid": os.getpid()}

class Boom(Exception):
    pass

def p2prpc_fail(n: int) -> {"x": int}:
    raise Boom("went wrong with %d" % n)

def p2prpc_sleep(seconds: float) -> {"pid": int}:
    with open(os.environ["P2PRPC_TEST_PIDFILE"], "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    return {"pid": os.getpid()}

def p2prpc_crash(code: int) -> {"x": int}:
    os._exit(code)

def p2prpc_segv(n: int) -> {"x": int}:
    os.kill(os.getpid(), 11)
    time.sleep(5)
    return {"x": n}

def p2prpc_env(n: int) -> {"safepath": str, "pythonpath": str}:
    return {"safepath": os.environ.get("PYTHONSAFEPATH", "<unset>"),
            "pythonpath": os.environ.get("PYTHONPATH", "<unset>")}

def p2prpc_wrong(n: int) -> {"x": int}:
    return {"y": n}
'''


def job(call_id, function, args, version=None, work_dir=None, lease_id=None):
    j = {"call_id": call_id, "function": function, "version": version, "work_dir": work_dir,
         "args": [encode_entry(*a) for a in args]}
    if lease_id is not None:
        j["lease_id"] = lease_id
    return json.dumps(j)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purpose.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def module(write_module):
    return write_module(FUNCTIONS)


@pytest.fixture
def pool(module, tmp_path, monkeypatch):
    monkeypatch.setenv("P2PRPC_TEST_PIDFILE", str(tmp_path / "pid"))
    progress = []
    p = ExecutorPool(str(module), size=1, on_progress=lambda c, pct: progress.append((c, pct)))
    p.progress = progress
    yield p
    p.close()


def test_run_returns_outputs(pool, module, tmp_path):
    data = tmp_path / "in.bin"
    data.write_bytes(b"abc")
    spec = {s.name: s for s in read_module_functions(str(module))}["p2prpc_work"]
    res = json.loads(pool.run(job("c1", "p2prpc_work",
                                  [("data", "file", str(data)), ("n", "int", 3),
                                   ("label", "str", "hé")], version=spec.version)))
    assert res["state"] == "done", res
    out = {e["name"]: e for e in res["outputs"]}
    assert [e["name"] for e in res["outputs"]] == ["out", "count", "pid", "label"]
    assert out["out"] == {"name": "out", "kind": "file", "path": str(tmp_path / "out-3.bin")}
    assert open(out["out"]["path"], "rb").read() == b"abcabcabc"
    assert out["count"]["value"] == "9"
    assert out["label"]["value"] == "hé!"
    assert int(out["pid"]["value"]) in pool.pids() and int(out["pid"]["value"]) != os.getpid()


def test_prints_reach_the_workers_stdout(capfd, module, tmp_path):
    # The pool is made inside the test: its child inherits fd 1 as capfd set it.
    data = tmp_path / "in.bin"
    data.write_bytes(b"abc")
    spec = {s.name: s for s in read_module_functions(str(module))}["p2prpc_work"]
    with ExecutorPool(str(module), size=1) as p:
        res = json.loads(p.run(job("c1", "p2prpc_work",
                                   [("data", "file", str(data)), ("n", "int", 3),
                                    ("label", "str", "x")], version=spec.version)))
    assert res["state"] == "done", res
    assert "printed by the function" in capfd.readouterr().out


def test_child_is_warm_and_reused(pool):
    a = json.loads(pool.run(job("a", "p2prpc_steps", [("n", "int", 1)])))
    b = json.loads(pool.run(job("b", "p2prpc_steps", [("n", "int", 1)])))
    va = {e["name"]: int(e["value"]) for e in a["outputs"]}
    vb = {e["name"]: int(e["value"]) for e in b["outputs"]}
    # The module was imported by the process that ran both calls: imported once.
    assert va["loaded_by"] == va["pid"] == vb["loaded_by"] == vb["pid"]


def test_progress_is_relayed(pool):
    res = json.loads(pool.run(job("p1", "p2prpc_steps", [("n", "int", 4)])))
    assert res["state"] == "done"
    assert pool.progress == [("p1", 25.0), ("p1", 50.0), ("p1", 75.0), ("p1", 100.0)]


def test_progress_hook_outside_an_executor_does_nothing():
    from p2prpc.p2p_client import p2p_progress_hook

    assert p2p_progress_hook(1, 2) is False
    with pytest.raises(ValueError, match="end must be positive, got 0"):
        p2p_progress_hook(1, 0)
    with pytest.raises(ValueError, match="takes two numbers"):
        p2p_progress_hook("a", 3)


def test_exception_gives_type_message_traceback(pool):
    res = json.loads(pool.run(job("f1", "p2prpc_fail", [("n", "int", 7)])))
    assert res["state"] == "failed"
    err = res["error"]
    assert err["type"].endswith(".Boom")
    assert err["message"] == "went wrong with 7"
    assert "Traceback (most recent call last)" in err["traceback"]
    assert 'raise Boom("went wrong with %d" % n)' in err["traceback"]
    # The child survives a failed call.
    assert json.loads(pool.run(job("f2", "p2prpc_steps", [("n", "int", 1)])))["state"] == "done"


def test_result_breaking_the_declaration_fails(pool):
    res = json.loads(pool.run(job("w1", "p2prpc_wrong", [("n", "int", 1)])))
    assert res["state"] == "failed"
    assert res["error"]["type"].startswith("p2prpc.errors.P2PFunction")
    assert "'x'" in res["error"]["message"] and "'y'" in res["error"]["message"]


def test_bad_jobs_fail_with_the_reason(pool):
    res = json.loads(pool.run(job("u1", "p2prpc_nope", [("n", "int", 1)])))
    assert res["state"] == "failed"
    assert "does not serve function 'p2prpc_nope'" in res["error"]["message"]
    res = json.loads(pool.run(job("u2", "p2prpc_steps", [("n", "int", 1)], version="0" * 64)))
    assert "asks for version " + "0" * 64 in res["error"]["message"]
    res = json.loads(pool.run(job("u3", "p2prpc_steps", [("n", "str", "1")])))
    assert res["error"]["type"] == "p2prpc.errors.ProtocolError"
    assert "declared (n: int)" in res["error"]["message"]


def test_terminate_kills_the_child_and_the_pool_goes_on(pool, tmp_path):
    result = {}
    t = threading.Thread(target=lambda: result.update(
        json.loads(pool.run(job("t1", "p2prpc_sleep", [("seconds", "float", 60.0)])))))
    t.start()
    pidfile = tmp_path / "pid"
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the function never started"
        time.sleep(0.02)
    pid = int(pidfile.read_text())
    assert pool.cancel("t1") is True
    t.join(2)
    assert not t.is_alive()
    assert result == {"state": "terminated", "outputs": []}
    assert wait_gone(pid, 2)
    res = json.loads(pool.run(job("t2", "p2prpc_steps", [("n", "int", 1)])))
    assert res["state"] == "done"
    assert {e["name"]: int(e["value"]) for e in res["outputs"]}["pid"] != pid


def test_crash_is_reported_and_replaced(pool):
    res = json.loads(pool.run(job("x1", "p2prpc_crash", [("code", "int", 3)])))
    assert res["state"] == "failed"
    assert res["error"]["type"] == "p2prpc.ExecutorDied"
    assert "process died: it exited with code 3" in res["error"]["message"]
    res = json.loads(pool.run(job("x2", "p2prpc_segv", [("n", "int", 1)])))
    assert "killed by SIGSEGV" in res["error"]["message"]
    assert json.loads(pool.run(job("x3", "p2prpc_steps", [("n", "int", 1)])))["state"] == "done"


def test_import_error_is_reported(write_module):
    path = write_module("import io\nraise RuntimeError('module is broken')\n", name="broken.py")
    with ExecutorPool(str(path)) as p:
        res = json.loads(p.run(job("i1", "p2prpc_x", [])))
        assert res["state"] == "failed"
        assert res["error"]["type"] == "RuntimeError"
        assert "cannot load %s: module is broken" % path in res["error"]["message"]
        # Every job tells the same story; the pool does not spin.
        res = json.loads(p.run(job("i2", "p2prpc_x", [])))
        assert "module is broken" in res["error"]["message"]


def test_parallel_runs_use_separate_children(module, tmp_path, monkeypatch):
    monkeypatch.setenv("P2PRPC_TEST_PIDFILE", str(tmp_path / "pid"))
    with ExecutorPool(str(module), size=2) as p:
        assert len(p.pids()) == 2
        results = [None, None]

        def go(i):
            results[i] = json.loads(p.run(job("par%d" % i, "p2prpc_sleep",
                                              [("seconds", "float", 0.5)])))

        threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.monotonic() - start < 5
        pids = {int(r["outputs"][0]["value"]) for r in results}
        assert len(pids) == 2


def test_close_kills_children_and_refuses_jobs(module):
    p = ExecutorPool(str(module), size=2)
    pids = p.pids()
    p.close()
    for pid in pids:
        assert wait_gone(pid, 2)
    res = json.loads(p.run(job("c", "p2prpc_steps", [("n", "int", 1)])))
    assert res["state"] == "failed" and "closed" in res["error"]["message"]
    p.close()


PARENT = '''
import sys, time
from p2prpc._executor import ExecutorPool
pool = ExecutorPool(sys.argv[1], size=2)
print(" ".join(map(str, pool.pids())), flush=True)
time.sleep(60)
'''


def test_parent_sigkill_takes_the_children(module, tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    proc = subprocess.Popen([sys.executable, str(script), str(module)], stdout=subprocess.PIPE,
                            text=True)
    try:
        pids = [int(x) for x in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        proc.kill()
        proc.wait()
        for pid in pids:
            assert wait_gone(pid, 2), "executor %d outlived its killed parent" % pid
    finally:
        proc.kill()
        proc.wait()


def test_pool_size_must_be_positive(module):
    with pytest.raises(ValueError, match="size must be at least 1, got 0"):
        ExecutorPool(str(module), size=0)


def test_cancel_before_run_terminates_the_run(pool):
    assert pool.cancel("early") is False
    assert json.loads(pool.run(job("early", "p2prpc_steps", [("n", "int", 1)]))) == {
        "state": "terminated", "outputs": []}
    # Remembered once only: the same call runs when asked again (a restart).
    assert json.loads(pool.run(job("early", "p2prpc_steps", [("n", "int", 1)])))["state"] == "done"
    pool.EARLY_CANCEL_S = 0.05
    pool.cancel("late")
    time.sleep(0.1)
    assert json.loads(pool.run(job("late", "p2prpc_steps", [("n", "int", 1)])))["state"] == "done"


def test_a_late_cancel_of_an_earlier_lease_stops_nothing(pool):
    """The engine may cancel a lease just after its run returned (its heartbeat
    was in flight); the same call leased again must run, not end terminated."""
    done = pool.run(job("again", "p2prpc_steps", [("n", "int", 1)], lease_id="L1"))
    assert json.loads(done)["state"] == "done"
    assert pool.cancel("again", "L1") is False  # late: L1's run is over
    res = json.loads(pool.run(job("again", "p2prpc_steps", [("n", "int", 1)], lease_id="L2")))
    assert res["state"] == "done", res
    # An early cancel of the lease about to run still stops it.
    assert pool.cancel("again", "L3") is False
    res = json.loads(pool.run(job("again", "p2prpc_steps", [("n", "int", 1)], lease_id="L3")))
    assert res == {"state": "terminated", "outputs": []}
    # A cancel of another lease leaves a running one alone; its own lease stops it.
    out = []
    t = threading.Thread(target=lambda: out.append(json.loads(pool.run(
        job("long", "p2prpc_sleep", [("seconds", "float", 30.0)], lease_id="L5")))))
    t.start()
    deadline = time.monotonic() + 10
    while pool._running.get("long") is None and time.monotonic() < deadline:
        time.sleep(0.01)  # until the run has its child
    assert pool._running.get("long") is not None
    assert pool.cancel("long", "L4") is False
    assert t.is_alive()
    assert pool.cancel("long", "L5") is True
    t.join(15)
    assert out and out[0]["state"] == "terminated", out


def test_child_imports_our_p2prpc_and_keeps_the_users_environment(module, tmp_path, monkeypatch):
    # A p2prpc directory in the working directory must not shadow the package
    # (python -m puts the working directory first on sys.path).
    fake = tmp_path / "cwd" / "p2prpc"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('the shadowing p2prpc was imported')")
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    monkeypatch.delenv("PYTHONSAFEPATH", raising=False)
    with ExecutorPool(str(module)) as p:
        res = json.loads(p.run(job("e1", "p2prpc_env", [("n", "int", 1)])))
    assert res["state"] == "done", res
    out = {e["name"]: e["value"] for e in res["outputs"]}
    assert out == {"safepath": "<unset>", "pythonpath": "/somewhere/else"}


def test_children_outlive_the_thread_that_asked_for_them(module):
    # PR_SET_PDEATHSIG fires when the forking *thread* ends; engine threads
    # come and go, so children must not be forked by them.
    # Each asking thread lives on a little, so that a child it forked itself
    # would have set PR_SET_PDEATHSIG before the thread ends.
    box = {}
    t = threading.Thread(target=lambda: (box.update(pool=ExecutorPool(str(module))),
                                         time.sleep(0.5)))
    t.start()
    t.join()
    p = box["pool"]
    try:
        pid = p.pids()[0]
        time.sleep(0.3)
        assert pid_alive(pid)
        res = {}
        runner = threading.Thread(target=lambda: (res.update(
            json.loads(p.run(job("o1", "p2prpc_crash", [("code", "int", 1)])))), time.sleep(0.5)))
        runner.start()
        runner.join()  # the replacement child was asked for by this ending thread
        new_pid = p.pids()[0]
        assert new_pid != pid
        time.sleep(0.3)
        assert pid_alive(new_pid)
        assert json.loads(p.run(job("o2", "p2prpc_steps", [("n", "int", 1)])))["state"] == "done"
    finally:
        p.close()
