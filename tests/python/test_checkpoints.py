"""Checkpoints: p2p_save / p2p_load inside a function, stored as blobs on the
broker, so that a call leased again (on another worker) resumes from them.

Layer by layer: the broker's route and lease answer over raw HTTP; the
engine's Worker.save_checkpoint in-process; the executor protocol between
p2p_save and the pool; then real broker and worker processes with a worker
killed mid-call.
"""
import hashlib
import json
import os
import signal
import time

import pytest

from broker_client import BrokerClient
from e2e.nodes import start_broker, start_worker, write_discovery
from p2prpc import _core
from p2prpc._executor import ExecutorPool
from p2prpc._spec import read_module_functions
from p2prpc._wire import encode_entry, encode_int
from p2prpc.errors import InvalidInputError, NotFoundError, StateError
from p2prpc.p2p_client import create_p2p_client_app, p2p_load, p2p_load_path, p2p_save

V_SMALL = "cd" * 32
FUNCTIONS = [{"name": "p2prpc_small", "version": V_SMALL,
              "args": [{"name": "n", "kind": "int"}], "returns": [{"name": "m", "kind": "int"}]}]
SMALL = [{"name": "p2prpc_small", "version": V_SMALL}]


def small_call(n):
    return {"id": _core.call_identifier_raw("p2prpc_small", V_SMALL, [("n", "i", n)]),
            "function": "p2prpc_small", "version": V_SMALL,
            "args": [{"name": "n", "kind": "int", "value": encode_int(n)}]}


def blob_path(data_dir, sha):
    return os.path.join(str(data_dir), "blobs", sha[:2], sha[2:])


def assert_error(reply, status, code, *needles):
    assert reply.status == status, reply
    got_code, message = reply.error
    assert got_code == code, reply
    for needle in needles:
        assert needle in message, (needle, message)


@pytest.fixture
def broker(tmp_path):
    b = _core.Broker(json.dumps(FUNCTIONS), str(tmp_path / "data"), lease_ms=800,
                     heartbeat_ms=200)
    b.start()
    yield b
    b.stop()


def lease(client):
    r = client.post("/v1/leases", {"worker": "w1", "functions": SMALL, "wait_ms": 3000})
    assert r.status == 200, r
    return r.json()


def save(client, lease_id, call_id, key, sha, size):
    return client.post("/v1/leases/%s/checkpoints" % lease_id,
                       {"call_id": call_id, "key": key, "blob": sha, "size": size})


# ---- the broker ---------------------------------------------------------------

def test_broker_keeps_checkpoints_across_leases_and_refuses_a_lapsed_lease(client, tmp_path):
    data = tmp_path / "data"
    call = small_call(1)
    assert client.post("/v1/calls", call).status == 200
    first = lease(client)
    assert first["checkpoints"] == []
    lid = first["lease"]["id"]
    one, two = client.upload(b"step 1"), client.upload(b"step 2")
    r = save(client, lid, call["id"], "state", one, 6)
    assert r.status == 200, r
    assert r.json() == {"call_id": call["id"], "key": "state", "blob": one, "size": 6}
    # Saving the key again replaces it; the replaced blob leaves the blob dir.
    assert save(client, lid, call["id"], "state", two, 6).status == 200
    assert not os.path.exists(blob_path(data, one))
    assert os.path.exists(blob_path(data, two))

    # Refusals name what was wrong.
    assert_error(save(client, lid, call["id"], "bad/key", two, 6), 400, "EINVAL", '"bad/key"')
    assert_error(save(client, lid, call["id"], "k" * 129, two, 6), 400, "EINVAL",
                 "longer than 128")
    missing = hashlib.sha256(b"never uploaded").hexdigest()
    assert_error(save(client, lid, call["id"], "state", missing, 14), 404, "ENOTFOUND", missing)
    assert_error(save(client, lid, call["id"], "state", two, 7), 404, "ENOTFOUND", two,
                 "7 bytes")
    assert_error(client.post("/v1/leases/%s/checkpoints" % lid, {"call_id": call["id"]}), 400,
                 "EINVAL", '"key"')

    # The lease lapses (800 ms): the next holder gets the checkpoint, the old
    # one can no longer save.
    time.sleep(1.3)
    again = lease(client)
    assert again["lease"]["call_id"] == call["id"] and again["lease"]["id"] != lid
    assert again["checkpoints"] == [{"key": "state", "blob": two, "size": 6}]
    assert_error(save(client, lid, call["id"], "state", two, 6), 409, "ESTATE",
                 lid, "replaced")
    time.sleep(1.3)
    assert_error(save(client, again["lease"]["id"], call["id"], "state", two, 6), 409, "ESTATE",
                 "lapsed")


def test_finish_restart_and_delete_drop_checkpoints_and_their_blobs(client, tmp_path):
    data = tmp_path / "data"
    for n in (2, 3, 4):
        assert client.post("/v1/calls", small_call(n)).status == 200
    shas = {}
    for _ in range(3):
        got = lease(client)
        cid, lid = got["lease"]["call_id"], got["lease"]["id"]
        content = ("checkpoint of %s" % cid).encode()
        sha = client.upload(content)
        assert save(client, lid, cid, "s", sha, len(content)).status == 200
        shas[cid] = (sha, lid)
    done, restarted, deleted = small_call(2)["id"], small_call(3)["id"], small_call(4)["id"]

    r = client.post("/v1/leases/%s/result" % shas[done][1],
                    {"call_id": done, "state": "done",
                     "outputs": [{"name": "m", "kind": "int", "value": "1"}]})
    assert r.status == 200, r
    assert not os.path.exists(blob_path(data, shas[done][0]))

    assert client.post("/v1/calls/%s/restart" % restarted).status == 200
    assert not os.path.exists(blob_path(data, shas[restarted][0]))
    assert lease(client)["checkpoints"] == []  # it runs from scratch

    assert os.path.exists(blob_path(data, shas[deleted][0]))
    assert client.delete("/v1/calls/%s" % deleted).status == 200
    assert not os.path.exists(blob_path(data, shas[deleted][0]))


def test_a_blob_still_referenced_elsewhere_is_kept(client, tmp_path):
    data = tmp_path / "data"
    for n in (5, 6):
        assert client.post("/v1/calls", small_call(n)).status == 200
    a, b = lease(client), lease(client)
    shared = client.upload(b"same content")
    for got in (a, b):
        r = save(client, got["lease"]["id"], got["lease"]["call_id"], "s", shared, 12)
        assert r.status == 200, r
    assert client.delete("/v1/calls/%s" % a["lease"]["call_id"]).status == 200
    assert os.path.exists(blob_path(data, shared))  # b's checkpoint still needs it
    assert client.delete("/v1/calls/%s" % b["lease"]["call_id"]).status == 200
    assert not os.path.exists(blob_path(data, shared))


# ---- the engine's worker ----------------------------------------------------------

def test_worker_save_checkpoint(broker, client, tmp_path):
    """Worker.save_checkpoint from inside run: saves, refuses bad input naming it,
    and refuses once the call's lease is gone (here: the call was restarted)."""
    outcomes, jobs = [], []
    holder = {}

    def attempt(*args):
        try:
            holder["w"].save_checkpoint(*args)
            outcomes.append(None)
        except Exception as e:  # collected, asserted below: run must return
            outcomes.append((type(e), str(e)))

    def run(job_json):
        job = json.loads(job_json)
        jobs.append(job)
        cid = job["call_id"]
        os.makedirs(job["work_dir"], exist_ok=True)  # made by the run that needs it
        path = os.path.join(job["work_dir"], "ck.bin")
        with open(path, "wb") as f:
            f.write(b"run %d" % len(jobs))
        if len(jobs) == 1:
            other = BrokerClient(broker.port)  # the test's own client is the main thread's
            attempt(cid, "ck", path)
            attempt(cid, "a/b", path)
            attempt(cid, "", path)
            attempt("0" * 64, "ck", path)
            attempt(cid, "ck", os.path.join(job["work_dir"], "absent.bin"))
            assert other.post("/v1/calls/%s/restart" % cid).status == 200
            other.close()
            attempt(cid, "ck", path)
        else:
            attempt(cid, "ck", path)
            empty = os.path.join(job["work_dir"], "empty.bin")
            open(empty, "wb").close()
            attempt(cid, "empty", empty)
        return json.dumps({"state": "done",
                           "outputs": [{"name": "m", "kind": "int", "value": "1"}]})

    w = _core.Worker(["127.0.0.1:%d" % broker.port], [("p2prpc_small", V_SMALL)],
                     str(tmp_path / "worker"), run, lambda call_id: None, name="w-ck",
                     lease_wait_ms=500)
    holder["w"] = w
    call = small_call(7)
    assert client.post("/v1/calls", call).status == 200
    w.start()
    try:
        deadline = time.time() + 20
        state = None
        while time.time() < deadline and state != "done":
            state = client.get("/v1/calls/%s" % call["id"]).json()["call"]["state"]
            time.sleep(0.1)
    finally:
        w.stop()
    assert state == "done"
    assert len(jobs) == 2
    assert jobs[0]["checkpoints"] == [] and jobs[1]["checkpoints"] == []  # restart cleared it
    first = outcomes[:6]
    assert first[0] is None
    assert first[1][0] is InvalidInputError and '"a/b"' in first[1][1]
    assert first[2][0] is InvalidInputError and "checkpoint key" in first[2][1]
    assert first[3][0] is NotFoundError and "0" * 64 in first[3][1]
    assert first[4][0] is NotFoundError and "absent.bin" in first[4][1]
    assert first[5][0] is StateError and "lapsed" in first[5][1], first[5]
    assert outcomes[6:] == [None, None]
    with pytest.raises(NotFoundError, match="not running"):
        w.save_checkpoint(call["id"], "ck", __file__)


# ---- the executor: p2p_save / p2p_load in the function's process ---------------------

EXEC_FUNCTIONS = '''
import os
from p2prpc.p2p_client import p2p_load, p2p_load_path, p2p_save

def p2prpc_ck(mode: str, path: str) -> {"loaded": str, "seen": str}:
    before = p2p_load("state")
    if mode == "bytes":
        assert p2p_save("state", b"from bytes") is True
    elif mode == "path":
        with open(path, "wb") as f:
            f.write(b"from a file")
        assert p2p_save("state", path) is True
    elif mode == "badkey":
        p2p_save("no spaces", b"x")
    elif mode == "object":
        p2p_save("state", {"not": "bytes"})
    elif mode == "missing":
        p2p_save("state", path)
    after = p2p_load("state")
    where = p2p_load_path("state")
    return {"loaded": repr(before), "seen": repr((after, where is not None))}
'''


def ck_job(call_id, mode, path="", checkpoints=(), work_dir=None):
    return json.dumps({"call_id": call_id, "function": "p2prpc_ck", "version": None,
                       "work_dir": work_dir,
                       "args": [encode_entry("mode", "str", mode),
                                encode_entry("path", "str", path)],
                       "checkpoints": list(checkpoints)})


def outputs(result):
    assert result["state"] == "done", result
    return {e["name"]: e["value"] for e in result["outputs"]}


def test_executor_save_and_load(tmp_path, write_module):
    fn = write_module(EXEC_FUNCTIONS)
    saved = []

    def on_checkpoint(call_id, key, path):
        with open(path, "rb") as f:
            saved.append((call_id, key, f.read()))
        if key == "state" and call_id == "c" * 64:
            raise StateError("lease of call %s lapsed" % call_id)

    work = tmp_path / "work"
    with ExecutorPool(str(fn), size=1, on_checkpoint=on_checkpoint) as pool:
        # A fresh call has nothing to load; a save is read back at once.
        out = outputs(json.loads(pool.run(ck_job("a" * 64, "bytes", work_dir=str(work)))))
        assert out["loaded"] == "None"
        assert out["seen"] == repr((b"from bytes", True))
        assert saved[-1] == ("a" * 64, "state", b"from bytes")
        target = str(tmp_path / "model.bin")
        out = outputs(json.loads(pool.run(ck_job("b" * 64, "path", target))))
        assert out["seen"] == repr((b"from a file", True))
        assert saved[-1] == ("b" * 64, "state", b"from a file")
        # The job's checkpoints (a resumed call) are what p2p_load finds.
        prior = tmp_path / "prior.bin"
        prior.write_bytes(b"saved by an earlier lease")
        out = outputs(json.loads(pool.run(ck_job(
            "d" * 64, "none", checkpoints=[{"key": "state", "path": str(prior)}]))))
        assert out["loaded"] == repr(b"saved by an earlier lease")
        # Refusals reach the function as exceptions naming what was wrong.
        for mode, path, etype, words in [
                ("badkey", "", "ValueError", "'no spaces'"),
                ("object", "", "TypeError", "serialise objects yourself"),
                ("missing", str(tmp_path / "nowhere.bin"), "FileNotFoundError", "nowhere.bin")]:
            res = json.loads(pool.run(ck_job("e" * 64, mode, path)))
            assert res["state"] == "failed"
            assert res["error"]["type"] == etype, res
            assert words in res["error"]["message"], res
        res = json.loads(pool.run(ck_job("c" * 64, "bytes", work_dir=str(work))))
        assert res["state"] == "failed"
        assert res["error"]["type"] == "p2prpc.errors.StateError", res
        assert "lapsed" in res["error"]["message"]
    # Without a place to keep checkpoints, saving says so.
    with ExecutorPool(str(fn), size=1) as pool:
        res = json.loads(pool.run(ck_job("f" * 64, "bytes", work_dir=str(work))))
        assert res["error"]["type"] == "p2prpc.errors.NotSupportedError", res
        assert "keeps no checkpoints" in res["error"]["message"]


def test_outside_an_executor_nothing_is_saved(tmp_path):
    assert p2p_save("state", b"x") is False
    assert p2p_load("state") is None
    assert p2p_load_path("state") is None
    with pytest.raises(ValueError, match="'a b'"):
        p2p_save("a b", b"x")
    with pytest.raises(ValueError, match="128"):
        p2p_load("x" * 129)
    with pytest.raises(TypeError, match="item must be bytes"):
        p2p_save("state", 42)


# ---- end to end: a worker killed mid-call, another resumes ------------------------------

E2E_FUNCTIONS = '''
import os
import time
from p2prpc.p2p_client import p2p_load, p2p_load_path, p2p_save

def _record(name, step):
    with open(os.path.join(os.environ["P2PRPC_TEST_RECORD"], name), "a") as f:
        f.write("%d %d %d\\n" % (os.getpid(), os.getppid(), step))

def p2prpc_count(steps: int, delay: float) -> {"total": int, "started_at": int}:
    state = p2p_load("state")
    start, total = (0, 0) if state is None else (int(x) for x in state.split())
    if state is not None:
        with open(p2p_load_path("state"), "rb") as f:
            assert f.read() == state
    _record("start", start)
    for i in range(start, steps):
        time.sleep(delay)
        total += i
        data = b"%d %d" % (i + 1, total)
        _record("saving", i + 1)
        if i % 2:  # alternately as a file and as bytes
            path = os.path.join(os.environ["P2PRPC_TEST_RECORD"], "state-%d" % os.getpid())
            with open(path, "wb") as f:
                f.write(data)
            p2p_save("state", path)
        else:
            p2p_save("state", data)
        assert p2p_load("state") == data
        _record("saved", i + 1)
    return {"total": total, "started_at": start}

def p2prpc_hold(tag: str) -> {"never": int}:
    p2p_save("held", ("held by " + tag).encode())
    _record("held", 0)
    time.sleep(60)
    return {"never": 0}
'''


def read_records(record, name):
    path = os.path.join(record, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [tuple(int(x) for x in line.split()) for line in f if line.strip()]


def wait_for(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def test_killed_worker_resumes_from_checkpoint_on_another(tmp_path, write_module):
    fn = str(write_module(E2E_FUNCTIONS, name="ck_functions.py"))
    record = tmp_path / "record"
    record.mkdir()
    record = str(record)
    env = {"P2PRPC_TEST_RECORD": record}
    broker = start_broker(tmp_path, function_file=fn, env=env,
                          extra=["--no-execute", "--lease-ms", "2000", "--heartbeat-ms", "300"])
    discovery = write_discovery(tmp_path, broker.address)
    first = start_worker(tmp_path, discovery, name="w1", function_file=fn, env=env)
    second = None
    specs = {s.name: s.func for s in read_module_functions(fn)}
    app = create_p2p_client_app(discovery, cache_path=str(tmp_path / "client"))
    try:
        count = app.register_p2p_func()(specs["p2prpc_count"])
        steps = 10
        fut = count(steps=steps, delay=0.25)
        wait_for(lambda: len(read_records(record, "saved")) >= 3, 30, "three saved steps")
        first.stop(signal.SIGKILL)
        first_child = read_records(record, "start")[0][0]
        wait_for(lambda: not os.path.exists("/proc/%d" % first_child) or
                 open("/proc/%d/stat" % first_child).read().rsplit(")", 1)[1].split()[0] == "Z",
                 10, "the killed worker's function process to die")
        saved = max(s for p, _, s in read_records(record, "saved") if p == first_child)
        saving = max(s for p, _, s in read_records(record, "saving") if p == first_child)

        second = start_worker(tmp_path, discovery, name="w2", function_file=fn, env=env)
        res = fut.get(timeout=40)
        assert res["total"] == sum(range(steps))
        starts = read_records(record, "start")
        assert [s for _, _, s in starts][0] == 0  # the fresh call found no checkpoint
        assert len(starts) == 2, starts
        _, worker_pid, resumed_at = starts[1]
        assert worker_pid == second.proc.pid
        # It resumed from the last save the broker acknowledged: at least the
        # last one the function saw return, at most the one it was making.
        assert saved <= resumed_at <= saving, (saved, resumed_at, saving)
        assert resumed_at >= 3
        assert res["started_at"] == resumed_at
        # The finished call's checkpoints are gone from the broker.
        blobs = tmp_path / "broker"
        for i in range(steps + 1):
            data = b"%d %d" % (i, sum(range(i)))
            assert not os.path.exists(blob_path(blobs, hashlib.sha256(data).hexdigest())), i

        # Deleting a running call removes its checkpoint from the broker's blob dir
        # at once.
        hold = app.register_p2p_func()(specs["p2prpc_hold"])
        held = hold(tag="t1")
        wait_for(lambda: read_records(record, "held"), 30, "the held checkpoint")
        sha = hashlib.sha256(b"held by t1").hexdigest()
        assert os.path.exists(blob_path(blobs, sha))
        held.delete()
        assert not os.path.exists(blob_path(blobs, sha))
        # The worker learns of the delete from its next heartbeat and stops the function.
        held_pid = read_records(record, "held")[0][0]
        wait_for(lambda: not os.path.exists("/proc/%d" % held_pid) or
                 open("/proc/%d/stat" % held_pid).read().rsplit(")", 1)[1].split()[0] == "Z",
                 5, "the deleted call's function process to be killed")
    finally:
        app.background_server.shutdown()
        for node in (first, second):
            if node is not None:
                node.stop()
        broker.stop()

