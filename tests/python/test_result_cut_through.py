"""Cut-through of results (issue 4): a worker announces its outputs once the
first chunk of each result file is on the broker (POST
/v1/leases/{lease}/outputs, docs/API.md); readers of the call see them as
"arriving_outputs" while the call is leased, and the client downloads each
file following its upload, so the result's upload and its download overlap.

The broker side is driven over raw HTTP against an in-process broker; the
whole path through the public API against broker and worker processes."""
import hashlib
import json
import signal
import sys
import threading
import time

import pytest

from broker_client import BrokerClient
from e2e.nodes import http_req, metrics, start_broker, start_worker, write_discovery
from p2prpc import _core
from p2prpc._wire import encode_int
from p2prpc.p2p_client import create_p2p_client_app
from test_cut_through import CHUNK, Follower, content, put_chunk

VERSION = "cd" * 32
FUNCTIONS = [{"name": "p2prpc_g", "version": VERSION,
              "args": [{"name": "n", "kind": "int"}],
              "returns": [{"name": "out", "kind": "file"}, {"name": "k", "kind": "int"}]}]


@pytest.fixture
def broker(make_broker):
    return make_broker(lease_ms=1500, heartbeat_ms=300)


def submit_and_lease(client, n=1):
    body = {"id": _core.call_identifier_raw("p2prpc_g", VERSION, [("n", "i", n)]),
            "function": "p2prpc_g", "version": VERSION,
            "args": [{"name": "n", "kind": "int", "value": encode_int(n)}]}
    r = client.post("/v1/calls", body)
    assert r.status == 200, r
    r = client.post("/v1/leases", {"worker": "w1", "wait_ms": 0,
                                   "functions": [{"name": "p2prpc_g", "version": VERSION}]})
    assert r.status == 200, r
    lease = r.json()
    assert lease["call"]["id"] == body["id"]
    return body["id"], lease["lease"]["id"]


def outputs(sha, size, k=7):
    return [{"name": "out", "kind": "file", "blob": sha, "size": size, "filename": "out.bin"},
            {"name": "k", "kind": "int", "value": encode_int(k)}]


def test_announced_outputs_are_read_while_leased_and_go_with_the_result(broker, client):
    call_id, lease = submit_and_lease(client)
    size = 2 * CHUNK + 500
    data = content(size, seed=21)
    sha = hashlib.sha256(data).hexdigest()
    rec = client.get("/v1/calls/" + call_id).json()["call"]
    assert "arriving_outputs" not in rec
    # A reader parked on the record is answered by the announcement, though
    # the record itself did not change.
    parked = {}

    def park():
        c = BrokerClient(broker.port)
        try:
            t = time.monotonic()
            parked["r"] = c.get("/v1/calls/%s?wait_ms=10000&since=%d"
                                % (call_id, rec["updated_ms"]))
            parked["s"] = time.monotonic() - t
        finally:
            c.close()

    th = threading.Thread(target=park)
    th.start()
    time.sleep(0.2)
    put_chunk(client, sha, data, 0)
    r = client.post("/v1/leases/%s/outputs" % lease, {"call_id": call_id,
                                                      "outputs": outputs(sha, size)})
    assert r.status == 200 and r.json() == {"call_id": call_id}, r
    th.join(10)
    assert parked["s"] < 5, parked
    got = parked["r"].json()["call"]
    assert got["state"] == "leased" and got["outputs"] is None, got
    assert got["arriving_outputs"][0]["blob"] == sha, got
    assert got["arriving_outputs"][1]["value"] == encode_int(7), got
    # What a reader does with it: follow the upload.
    f = Follower(broker.port, sha, size)
    try:
        f.wait_for(CHUNK)
        put_chunk(client, sha, data, CHUNK)
        put_chunk(client, sha, data, 2 * CHUNK)
        assert client.post("/v1/blobs/%s/commit?size=%d" % (sha, size)).status == 200
        assert f.done.wait(10) and f.error is None, f.error
        assert bytes(f.got) == data
    finally:
        f.close()
    r = client.post("/v1/leases/%s/result" % lease, {"call_id": call_id, "state": "done",
                                                     "outputs": outputs(sha, size)})
    assert r.status == 200, r
    rec = client.get("/v1/calls/" + call_id).json()["call"]
    assert rec["state"] == "done" and rec["outputs"][0]["blob"] == sha
    assert "arriving_outputs" not in rec
    m = client.get("/v1/metrics").json()
    assert m["bytes_followed"] == size, m


def test_announcing_outputs_bad_input(broker, client):
    call_id, lease = submit_and_lease(client)
    data = content(CHUNK + 10, seed=22)
    sha = hashlib.sha256(data).hexdigest()
    path = "/v1/leases/%s/outputs" % lease
    # Neither held nor arriving.
    r = client.post(path, {"call_id": call_id, "outputs": outputs(sha, len(data))})
    assert r.status == 404 and r.error[0] == "ENOTFOUND" and sha in r.error[1], r
    put_chunk(client, sha, data, 0)
    for body, code, words in (
            ({"outputs": outputs(sha, len(data))}, "EINVAL", "call_id"),
            ({"call_id": call_id}, "EINVAL", "outputs"),
            ({"call_id": call_id, "outputs": outputs(sha, len(data))[:1]}, "EINVAL", "2 declared"),
            ({"call_id": call_id, "outputs": [dict(outputs(sha, len(data))[0], kind="int"),
                                              outputs(sha, len(data))[1]]}, "EINVAL", "out"),
    ):
        r = client.post(path, body)
        assert r.status == 400 and r.error[0] == code and words in r.error[1], (body, r)
    # More bytes than the output says: not this output's upload.
    r = client.post(path, {"call_id": call_id, "outputs": outputs(sha, CHUNK - 1)})
    assert r.status == 404, r
    # Another lease, or a call not leased at all.
    r = client.post("/v1/leases/%s/outputs" % ("0" * 32),
                    {"call_id": call_id, "outputs": outputs(sha, len(data))})
    assert r.status == 409 and r.error[0] == "ESTATE", r
    other = _core.call_identifier_raw("p2prpc_g", VERSION, [("n", "i", 99)])
    r = client.post(path, {"call_id": other, "outputs": outputs(sha, len(data))})
    assert r.status == 404, r
    # Over 64 KiB of outputs JSON: not kept (the result brings them).
    sys.set_int_max_str_digits(0)
    try:
        big = outputs(sha, len(data), k=10 ** 70000)
    finally:
        sys.set_int_max_str_digits(4300)
    r = client.post(path, {"call_id": call_id, "outputs": big})
    assert r.status == 413 and r.error[0] == "ELIMIT" and "65536 kept" in r.error[1], r
    # Nothing was announced by any of these.
    assert "arriving_outputs" not in client.get("/v1/calls/" + call_id).json()["call"]


def test_a_reader_that_has_not_seen_the_announcement_is_answered_at_once(broker, client):
    call_id, lease = submit_and_lease(client)
    data = content(CHUNK + 10, seed=24)
    sha = hashlib.sha256(data).hexdigest()
    since = client.get("/v1/calls/" + call_id).json()["call"]["updated_ms"]
    put_chunk(client, sha, data, 0)
    r = client.post("/v1/leases/%s/outputs" % lease,
                    {"call_id": call_id, "outputs": outputs(sha, len(data))})
    assert r.status == 200, r
    # Announced between two polls: the record did not change, but a reader
    # saying it has not seen announced outputs gets them now...
    t0 = time.monotonic()
    r = client.get("/v1/calls/%s?wait_ms=3000&since=%d&arriving=0" % (call_id, since))
    assert time.monotonic() - t0 < 1 and r.json()["call"]["arriving_outputs"][0]["blob"] == sha
    # ...and one that has seen them waits for a change, as before.
    t0 = time.monotonic()
    r = client.get("/v1/calls/%s?wait_ms=600&since=%d" % (call_id, since))
    assert time.monotonic() - t0 >= 0.5 and r.status == 200, r


def test_a_lapsed_lease_takes_its_announcement_with_it(broker, client):
    call_id, lease = submit_and_lease(client)
    data = content(CHUNK + 10, seed=23)
    sha = hashlib.sha256(data).hexdigest()
    put_chunk(client, sha, data, 0)
    r = client.post("/v1/leases/%s/outputs" % lease,
                    {"call_id": call_id, "outputs": outputs(sha, len(data))})
    assert r.status == 200, r
    assert "arriving_outputs" in client.get("/v1/calls/" + call_id).json()["call"]
    # No heartbeat: the lease lapses (lease_ms=1500), the call is queued again.
    deadline = time.monotonic() + 15
    rec = client.get("/v1/calls/" + call_id).json()["call"]
    while rec["state"] != "queued":
        assert time.monotonic() < deadline, rec
        time.sleep(0.1)
        rec = client.get("/v1/calls/" + call_id).json()["call"]
    assert "arriving_outputs" not in rec
    # Its next lease starts without the old announcement, and the old lease
    # cannot announce any more.
    r = client.post("/v1/leases", {"worker": "w2", "wait_ms": 0,
                                   "functions": [{"name": "p2prpc_g", "version": VERSION}]})
    assert r.status == 200, r
    assert "arriving_outputs" not in client.get("/v1/calls/" + call_id).json()["call"]
    r = client.post("/v1/leases/%s/outputs" % lease,
                    {"call_id": call_id, "outputs": outputs(sha, len(data))})
    assert r.status == 409 and r.error[0] == "ESTATE", r


# ---- through the client ------------------------------------------------------------------

MAKE_FUNCTIONS = '''
import io
import os
import time

CHUNK = 8 << 20


def p2prpc_make(chunks: int, seed: int, pause: float) -> {"out": io.IOBase, "n": int}:
    """chunks 8 MiB pieces, each different; waits pause s first (time for a
    test to act while the call is leased)."""
    time.sleep(pause)
    path = os.path.join(os.getcwd(), "made-%d.bin" % seed)
    with open(path, "wb") as f:
        for i in range(chunks):
            f.write((b"%08d%08d" % (seed, i)) * (CHUNK // 16))
    return {"out": open(path, "rb"), "n": chunks}
'''


def check_made(res, chunks, seed):
    """res is p2prpc_make's result for (chunks, seed); its file is closed."""
    try:
        want = b"".join((b"%08d%08d" % (seed, i)) * (CHUNK // 16) for i in range(chunks))
        assert res["n"] == chunks and res["out"].read() == want
    finally:
        res["out"].close()


@pytest.fixture
def net(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    fn_file = tmp_path / "makefns.py"
    fn_file.write_text(MAKE_FUNCTIONS)
    # Each chunk's fsync on the broker takes 150 ms: the result's upload lasts
    # long enough for the client to follow it, and for a test to act during it.
    b = start_broker(tmp_path, function_file=str(fn_file),
                     extra=["--no-execute", "--upload-stall", "1.5", "--lease-ms", "3000",
                            "--heartbeat-ms", "500"],
                     env={"P2PRPC_FAULTS": "slow_disk=1:150"})
    discovery = write_discovery(tmp_path, b.address)
    ns = {}
    exec(compile(MAKE_FUNCTIONS, str(fn_file), "exec"), ns)
    app = create_p2p_client_app(discovery, cache_path=str(tmp_path / "cache"))
    net = type("Net", (), {"broker": b, "app": app, "tmp_path": tmp_path, "fn_file": fn_file,
                           "discovery": discovery, "workers": [],
                           "make": app.register_p2p_func()(ns["p2prpc_make"])})
    yield net
    app.background_server.shutdown()
    for w in net.workers:
        w.stop()
    b.stop()


def test_the_client_downloads_a_result_while_the_worker_uploads_it(net):
    net.workers.append(start_worker(net.tmp_path, net.discovery, function_file=str(net.fn_file)))
    chunks = 6
    check_made(net.make(chunks=chunks, seed=5, pause=0.0).get(timeout=120), chunks, 5)
    m = metrics(net.broker.address)
    print("broker metrics: %r" % m)
    size = chunks * CHUNK
    assert m["bytes_received"] == size and m["blobs_committed"] == 1, m
    # The client took most of the result while it was still arriving, and no
    # byte of it twice.
    assert m["bytes_followed"] >= size - 2 * CHUNK and m["bytes_sent"] == size, m


def test_a_worker_killed_mid_result_upload_leaves_a_call_that_another_worker_finishes(net):
    chunks = 8
    w1 = start_worker(net.tmp_path, net.discovery, name="w1", function_file=str(net.fn_file))
    net.workers.append(w1)
    fut = net.make(chunks=chunks, seed=6, pause=0.0)
    got = {}

    def get():
        try:
            got["res"] = fut.get(timeout=180)
        except Exception as e:  # noqa: BLE001 - the test reports it
            got["error"] = e

    th = threading.Thread(target=get)
    th.start()
    # Wait until get() follows the announced result, then kill its worker.
    deadline = time.monotonic() + 60
    while metrics(net.broker.address)["bytes_followed"] < 2 * CHUNK:
        assert time.monotonic() < deadline and "res" not in got, got
        time.sleep(0.02)
    w1.stop(sig=signal.SIGKILL)
    status, _, body = http_req(net.broker.address, "GET", "/v1/calls/" + fut.call_id)
    assert json.loads(body)["call"]["state"] == "leased"
    # The lease lapses; a second worker runs the call again and its result,
    # the same bytes, resumes the upload the first one left.
    net.workers.append(start_worker(net.tmp_path, net.discovery, name="w2",
                                    function_file=str(net.fn_file)))
    th.join(200)
    assert "res" in got, got
    check_made(got["res"], chunks, 6)
    m = metrics(net.broker.address)
    print("broker metrics: %r" % m)
    size = chunks * CHUNK
    # The broker received each byte of the result once: the second worker
    # resumed the first one's partial upload.
    assert m["bytes_received"] <= size + CHUNK, m
