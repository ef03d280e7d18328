"""Cut-through (issue 4): a call may be submitted once the first chunk of its
file argument is on the broker, and its worker downloads the blob while the
client is still uploading it (GET /v1/blobs/{sha}?follow=SIZE, docs/API.md).

The broker side is driven here over raw HTTP (tests/python/broker_client.py)
against an in-process broker; the client side through the public API against
broker and worker processes."""
import hashlib
import http.client
import json
import os
import threading
import time

import pytest

from broker_client import BrokerClient
from e2e.nodes import (DIGEST_FUNCTIONS, http_req, metrics, start_broker, start_worker,
                       write_discovery)
from p2prpc import _core, errors
from p2prpc._wire import encode_int
from p2prpc.p2p_client import create_p2p_client_app

MiB = 1 << 20
CHUNK = 8 * MiB  # PRPC_BLOB_CHUNK, the largest chunk a broker takes
UPLOAD_CHUNK = 4 * MiB  # PRPC_BLOB_UPLOAD_CHUNK, the chunk the engine's uploaders send
VERSION = "ab" * 32
FUNCTIONS = json.dumps([{"name": "p2prpc_f", "version": VERSION,
                         "args": [{"name": "f", "kind": "file"}],
                         "returns": [{"name": "r", "kind": "int"}]}])


@pytest.fixture
def broker(tmp_path):
    b = _core.Broker(FUNCTIONS, str(tmp_path / "broker"), upload_stall_ms=700)
    b.start()
    yield b
    b.stop()


def content(size, seed=1):
    """size bytes in which no two chunks are equal."""
    block = hashlib.sha256(b"%d" % seed).digest() * (MiB // 32)
    out = bytearray()
    i = 0
    while len(out) < size:
        out += i.to_bytes(8, "big") + block[8:]
        i += 1
    return bytes(out[:size])


def put_chunk(client, sha, data, offset, size=CHUNK):
    part = data[offset:offset + size]
    r = client.put("/v1/blobs/%s?offset=%d" % (sha, offset), part,
                   headers={"X-P2PRPC-Chunk-Sha256": hashlib.sha256(part).hexdigest()})
    assert r.status == 200, r
    return r.json()["partial"]


class Follower:
    """GET ?follow= in a thread, reading as bytes arrive: .got grows, .done
    and .error say how it ended."""

    def __init__(self, port, sha, size, range_from=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Range": "bytes=%d-" % range_from} if range_from is not None else {}
        self.conn.request("GET", "/v1/blobs/%s?follow=%d" % (sha, size), headers=headers)
        self.resp = self.conn.getresponse()
        self.got = bytearray()
        self.done = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                b = self.resp.read1(256 * 1024)
                if not b:
                    break
                self.got += b
            if self.resp.length not in (None, 0):
                raise http.client.IncompleteRead(bytes(), self.resp.length)
        except Exception as e:  # noqa: BLE001 - how the answer ended is what the tests check
            self.error = e
        finally:
            self.done.set()

    def wait_for(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while len(self.got) < n and not self.done.is_set():
            assert time.monotonic() < deadline, "follower got %d of %d bytes" % (len(self.got), n)
            time.sleep(0.005)
        assert len(self.got) >= n, (len(self.got), n, self.error)

    def close(self):
        self.conn.close()


def stays_at(follower, n, seconds=0.3):
    time.sleep(seconds)
    return len(follower.got) == n and not follower.done.is_set()


def test_a_follower_gets_each_chunk_once_synced_and_ends_at_the_commit(broker, client):
    size = 2 * CHUNK + 1000
    data = content(size)
    sha = hashlib.sha256(data).hexdigest()
    put_chunk(client, sha, data, 0)
    f = Follower(broker.port, sha, size)
    try:
        assert f.resp.status == 200 and int(f.resp.getheader("Content-Length")) == size
        f.wait_for(CHUNK)
        assert stays_at(f, CHUNK)  # parked: nothing more is synced
        put_chunk(client, sha, data, CHUNK)
        f.wait_for(2 * CHUNK)
        put_chunk(client, sha, data, 2 * CHUNK)
        # Everything is synced, but the last byte waits for the commit's hash.
        f.wait_for(size - 1)
        assert stays_at(f, size - 1)
        r = client.post("/v1/blobs/%s/commit?size=%d" % (sha, size))
        assert r.status == 200, r
        assert f.done.wait(10) and f.error is None, f.error
        assert bytes(f.got) == data
    finally:
        f.close()
    m = client.get("/v1/metrics").json()
    assert m["bytes_followed"] == size and m["bytes_served"] == 0, m
    # Chunks over the engine's own 4 MiB are not copied for followers (read from
    # disk); the short last one was, as it arrived.
    assert m["bytes_followed_from_memory"] == size - 2 * CHUNK, m


def follow_in_step(broker, client, followers, size=3 * UPLOAD_CHUNK + 1000, seed=7):
    """Upload a blob of 4 MiB chunks while `followers` downloads wait for each
    chunk; returns (data, the followers' bytes, the metrics)."""
    data = content(size, seed=seed)
    sha = hashlib.sha256(data).hexdigest()
    put_chunk(client, sha, data, 0, UPLOAD_CHUNK)
    fs = [Follower(broker.port, sha, size) for _ in range(followers)]
    try:
        for off in range(UPLOAD_CHUNK, size, UPLOAD_CHUNK):
            for f in fs:
                f.wait_for(off)
                assert stays_at(f, off, 0.05)  # waiting for the next chunk
            put_chunk(client, sha, data, off, UPLOAD_CHUNK)
        for f in fs:
            f.wait_for(size - 1)
        r = client.post("/v1/blobs/%s/commit?size=%d" % (sha, size))
        assert r.status == 200, r
        for f in fs:
            assert f.done.wait(10) and f.error is None, f.error
        return data, [bytes(f.got) for f in fs], client.get("/v1/metrics").json()
    finally:
        for f in fs:
            f.close()


def test_a_follower_waiting_for_a_chunk_gets_it_from_memory(broker, client):
    data, got, m = follow_in_step(broker, client, 1)
    assert got == [data]
    # The first chunk was on disk before the follower came; every later byte
    # (the held-back last one too) came from the chunk as it arrived.
    assert m["bytes_followed"] == len(data), m
    assert m["bytes_followed_from_memory"] == len(data) - UPLOAD_CHUNK, m


def test_followers_past_the_copy_cap_read_the_disk(broker, client):
    data, got, m = follow_in_step(broker, client, 3)
    assert got == [data] * 3
    # Two followers hold a copy (BROKER_FOLLOW_TAILS); the third reads the partial file.
    assert m["bytes_followed"] == 3 * len(data), m
    assert m["bytes_followed_from_memory"] == 2 * (len(data) - UPLOAD_CHUNK), m


def test_a_follow_with_range_sends_the_rest(broker, client):
    size = 2 * CHUNK + 77
    data = content(size, seed=2)
    sha = hashlib.sha256(data).hexdigest()
    put_chunk(client, sha, data, 0)
    put_chunk(client, sha, data, CHUNK)
    start = CHUNK + 5
    f = Follower(broker.port, sha, size, range_from=start)
    try:
        assert f.resp.status == 206
        assert f.resp.getheader("Content-Range") == "bytes %d-%d/%d" % (start, size - 1, size)
        f.wait_for(CHUNK - 5)
        put_chunk(client, sha, data, 2 * CHUNK)
        assert client.post("/v1/blobs/%s/commit?size=%d" % (sha, size)).status == 200
        assert f.done.wait(10) and f.error is None, f.error
        assert bytes(f.got) == data[start:]
    finally:
        f.close()


def test_a_failed_commit_cuts_the_follower_short(broker, client):
    size = CHUNK + 100
    data = content(size, seed=3)
    sha = hashlib.sha256(data).hexdigest()
    wrong = content(size, seed=4)  # each chunk matches its own hash, the whole is not sha
    put_chunk(client, sha, wrong, 0)
    f = Follower(broker.port, sha, size)
    try:
        f.wait_for(CHUNK)
        put_chunk(client, sha, wrong, CHUNK)
        r = client.post("/v1/blobs/%s/commit?size=%d" % (sha, size))
        assert r.status == 400 and r.error[0] == "ECORRUPT", r
        assert f.done.wait(10)
        assert isinstance(f.error, http.client.IncompleteRead), f.error
        assert len(f.got) < size
    finally:
        f.close()
    # The refused upload is gone: a new follower learns there is nothing to follow.
    r = client.get("/v1/blobs/%s?follow=%d" % (sha, size))
    assert r.status == 404 and "no upload of it in progress" in r.error[1], r


def test_a_commit_of_another_size_cuts_the_follower_short(broker, client):
    size = CHUNK + 10
    data = content(size, seed=5)
    sha = hashlib.sha256(data).hexdigest()
    put_chunk(client, sha, data, 0)
    f = Follower(broker.port, sha, size + 1)  # the follower was told a wrong size
    try:
        f.wait_for(CHUNK)
        put_chunk(client, sha, data, CHUNK)
        assert client.post("/v1/blobs/%s/commit?size=%d" % (sha, size)).status == 200
        assert f.done.wait(10)
        assert isinstance(f.error, http.client.IncompleteRead), f.error
    finally:
        f.close()


def test_a_stalled_upload_cuts_the_follower_then_says_where_it_stopped(broker, client):
    size = 2 * CHUNK
    data = content(size, seed=6)
    sha = hashlib.sha256(data).hexdigest()
    put_chunk(client, sha, data, 0)
    t0 = time.monotonic()
    f = Follower(broker.port, sha, size)
    try:
        f.wait_for(CHUNK)
        assert f.done.wait(10)  # upload_stall_ms=700 with no new chunk
        assert time.monotonic() - t0 >= 0.6
        assert isinstance(f.error, http.client.IncompleteRead), f.error
        assert bytes(f.got) == data[:CHUNK]
    finally:
        f.close()
    # Asking again from there: nothing to send and nothing arriving.
    r = client.get("/v1/blobs/%s?follow=%d" % (sha, size), headers={"Range": "bytes=%d-" % CHUNK})
    assert r.status == 404, r
    assert "upload stopped at %d of %d bytes" % (CHUNK, size) in r.error[1], r
    # The upload goes on later: a follower is served again, and to the end.
    put_chunk(client, sha, data, CHUNK)
    assert client.post("/v1/blobs/%s/commit?size=%d" % (sha, size)).status == 200
    r = client.get("/v1/blobs/%s?follow=%d" % (sha, size))
    assert r.status == 200 and r.body == data


def test_a_follower_waiting_for_its_first_byte_is_cut_too(broker, client):
    size = 2 * CHUNK
    data = content(size, seed=13)
    sha = hashlib.sha256(data).hexdigest()
    put_chunk(client, sha, data, 0)
    # Everything up to CHUNK is there already: this answer has nothing to send yet.
    conn = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=10)
    try:
        conn.request("GET", "/v1/blobs/%s?follow=%d" % (sha, size),
                     headers={"Range": "bytes=%d-" % CHUNK})
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            resp = conn.getresponse()
            got = resp.read()
            raise AssertionError("a whole answer came: %d %d bytes" % (resp.status, len(got)))
    finally:
        conn.close()
    # The broker is still well.
    assert client.get("/v1/metrics").status == 200


def test_follow_bad_input_and_held_blobs(broker, client):
    data = content(3 * MiB, seed=7)
    sha = hashlib.sha256(data).hexdigest()
    for bad in ("abc", "-1", ""):
        r = client.get("/v1/blobs/%s?follow=%s" % (sha, bad))
        assert r.status == 400 and r.error[0] == "EINVAL" and "follow=SIZE" in r.error[1], r
    r = client.get("/v1/blobs/%s?follow=%d" % (sha, len(data)))
    assert r.status == 404 and "no upload of it in progress" in r.error[1], r
    put_chunk(client, sha, data, 0, size=MiB)
    r = client.get("/v1/blobs/%s?follow=%d" % (sha, len(data)),
                   headers={"Range": "bytes=%d-" % len(data)})
    assert r.status == 416 and r.headers["content-range"] == "bytes */%d" % len(data), r
    # A held blob is served as a plain GET would (verified on the way).
    put_chunk(client, sha, data, MiB, size=len(data) - MiB)
    assert client.post("/v1/blobs/%s/commit?size=%d" % (sha, len(data))).status == 200
    r = client.get("/v1/blobs/%s?follow=%d" % (sha, len(data)))
    assert r.status == 200 and r.body == data
    assert client.get("/v1/metrics").json()["bytes_served"] == len(data)


def test_a_chunk_that_comes_before_the_one_it_continues_waits_for_it(broker, client):
    """Uploaders keep two chunks on the wire at once, on two connections: the
    second may be whole at the broker first. It waits for the first (a
    bounded time) instead of being refused."""
    up = UPLOAD_CHUNK
    size = 3 * up
    data = content(size, seed=15)
    sha = hashlib.sha256(data).hexdigest()
    put_chunk(client, sha, data, 0, size=up)
    got = {}

    def early():
        c = BrokerClient(broker.port)
        try:
            got["r"] = put_chunk(c, sha, data, 2 * up, size=up)
        finally:
            c.close()

    th = threading.Thread(target=early)
    th.start()
    time.sleep(0.5)
    assert "r" not in got  # parked, not refused
    assert put_chunk(client, sha, data, up, size=up) == 2 * up
    th.join(10)
    assert got["r"] == 3 * up
    assert client.post("/v1/blobs/%s/commit?size=%d" % (sha, size)).status == 200
    # One that nothing continues is refused once its wait (5 s) is over, as it
    # would have been at once; one that is not one upload chunk ahead, at once.
    other = content(3 * up, seed=16)
    osha = hashlib.sha256(other).hexdigest()
    t0 = time.monotonic()
    part = other[up:2 * up]
    r = client.put("/v1/blobs/%s?offset=%d" % (osha, up), part,
                   headers={"X-P2PRPC-Chunk-Sha256": hashlib.sha256(part).hexdigest()})
    assert r.status == 409 and r.error[0] == "ESTATE", r
    assert time.monotonic() - t0 >= 4.5
    t0 = time.monotonic()
    r = client.put("/v1/blobs/%s?offset=%d" % (osha, 2 * up), part,
                   headers={"X-P2PRPC-Chunk-Sha256": hashlib.sha256(part).hexdigest()})
    assert r.status == 409 and time.monotonic() - t0 < 2, r
    m = client.get("/v1/metrics").json()
    assert m["bytes_received"] == size and m["chunks_refused"] == 2, m


def test_a_broker_stopping_answers_a_parked_chunk_at_once(tmp_path):
    b = _core.Broker(FUNCTIONS, str(tmp_path / "broker"))
    b.start()
    data = content(2 * UPLOAD_CHUNK, seed=17)
    sha = hashlib.sha256(data).hexdigest()
    got = {}

    def early():
        c = BrokerClient(b.port)
        try:
            part = data[UPLOAD_CHUNK:]
            got["r"] = c.put("/v1/blobs/%s?offset=%d" % (sha, UPLOAD_CHUNK), part,
                             headers={"X-P2PRPC-Chunk-Sha256":
                                      hashlib.sha256(part).hexdigest()})
        except Exception as e:  # noqa: BLE001 - the test reports it
            got["error"] = e
        finally:
            c.close()

    th = threading.Thread(target=early)
    th.start()
    time.sleep(0.5)
    assert not got  # parked: nothing before it
    t0 = time.monotonic()
    b.stop()
    th.join(10)
    assert time.monotonic() - t0 < 3, "the stop waited out the chunk's 5 s"
    assert got.get("r") is not None and got["r"].status == 409, got


def submit_body(path, sha, size):
    return {"id": _core.call_identifier_raw("p2prpc_f", VERSION, [("f", "F", str(path))]),
            "function": "p2prpc_f", "version": VERSION,
            "args": [{"name": "f", "kind": "file", "blob": sha, "size": size,
                      "filename": "in.bin"}]}


def test_a_call_is_accepted_once_its_argument_is_arriving(broker, client, tmp_path):
    size = CHUNK + 3
    data = content(size, seed=8)
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    r = client.post("/v1/calls", submit_body(path, sha, size))
    assert r.status == 404 and "has not been uploaded" in r.error[1], r
    put_chunk(client, sha, data, 0)
    r = client.post("/v1/calls", submit_body(path, sha, size))
    assert r.status == 200 and r.json()["call"]["state"] == "queued", r
    # A partial longer than the size a call gives is not that call's argument.
    other = content(CHUNK // 2, seed=9)
    opath = tmp_path / "other.bin"
    opath.write_bytes(other)
    r = client.post("/v1/calls", submit_body(opath, sha, len(other)))
    assert r.status == 404 and "has not been uploaded" in r.error[1], r


def fail_call(client, error_type):
    """Lease the queued call and report it failed with error_type."""
    r = client.post("/v1/leases", {"worker": "w1", "wait_ms": 0,
                                   "functions": [{"name": "p2prpc_f", "version": VERSION}]})
    assert r.status == 200, r
    lease = r.json()
    r = client.post("/v1/leases/%s/result" % lease["lease"]["id"],
                    {"call_id": lease["call"]["id"], "state": "failed",
                     "error": {"type": error_type, "message": "m"}})
    assert r.status == 200, r


def test_a_call_failed_for_a_missing_argument_is_queued_again_when_submitted_again(
        broker, client, tmp_path):
    data = content(CHUNK + 5, seed=14)
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    put_chunk(client, sha, data, 0)
    body = submit_body(path, sha, len(data))
    assert client.post("/v1/calls", body).status == 200
    fail_call(client, "p2prpc.ArgumentMissing")
    r = client.post("/v1/calls", body)
    assert r.status == 200 and r.json()["created"] is False, r
    call = r.json()["call"]
    assert call["state"] == "queued" and call["error"] is None, call
    # Any other failure is the call's result: submitting again returns it as it is.
    fail_call(client, "ValueError")
    r = client.post("/v1/calls", body)
    assert r.status == 200 and r.json()["call"]["state"] == "failed", r
    assert r.json()["call"]["error"]["type"] == "ValueError"


# ---- through the client ------------------------------------------------------------------



@pytest.fixture
def net(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    fn_file = tmp_path / "digestfns.py"
    fn_file.write_text(DIGEST_FUNCTIONS)
    # Each chunk's fsync on the broker takes 150 ms: the upload lasts long
    # enough for a worker to follow it, and for a test to act during it.
    b = start_broker(tmp_path, function_file=str(fn_file),
                     extra=["--no-execute", "--upload-stall", "1.5"],
                     env={"P2PRPC_FAULTS": "slow_disk=1:150"})
    discovery = write_discovery(tmp_path, b.address)
    w = start_worker(tmp_path, discovery, function_file=str(fn_file))
    ns = {}
    exec(compile(DIGEST_FUNCTIONS, str(fn_file), "exec"), ns)
    app = create_p2p_client_app(discovery, cache_path=str(tmp_path / "cache"))
    yield type("Net", (), {"broker": b, "worker": w, "app": app, "tmp_path": tmp_path,
                           "digest": app.register_p2p_func()(ns["p2prpc_digest"])})
    app.background_server.shutdown()
    w.stop()
    b.stop()


def call_record(address, call_id):
    status, _, body = http_req(address, "GET", "/v1/calls/" + call_id)
    return json.loads(body)["call"] if status == 200 else None


def test_the_worker_downloads_an_argument_while_the_client_uploads_it(net):
    size = 6 * CHUNK + 12345
    data = content(size, seed=10)
    src = net.tmp_path / "arg.bin"
    src.write_bytes(data)
    with open(src, "rb") as f:
        fut = net.digest(data=f, n=3)
    # The call reaches the broker after the first chunk, long before the last.
    rec = None
    deadline = time.monotonic() + 30
    while rec is None:
        assert time.monotonic() < deadline
        rec = call_record(net.broker.address, fut.call_id)
        time.sleep(0.01)
    status, headers, _ = http_req(net.broker.address, "HEAD",
                                  "/v1/blobs/" + hashlib.sha256(data).hexdigest())
    assert status == 404 and int(headers["x-p2prpc-partial"]) < size
    assert fut.get(timeout=120) == {"sha": hashlib.sha256(data).hexdigest(), "size": size, "n": 3}
    m = metrics(net.broker.address)
    print("broker metrics: %r" % m)
    assert m["bytes_received"] == size and m["blobs_committed"] == 1, m
    # Most of the blob went to the worker while it was still arriving.
    assert m["bytes_followed"] >= size - 2 * CHUNK and m["bytes_sent"] == size, m


def test_an_upload_failing_after_the_submit_ends_the_call_and_get_raises_it(net):
    size = 8 * CHUNK
    data = content(size, seed=11)
    src = net.tmp_path / "arg.bin"
    src.write_bytes(data)
    with open(src, "rb") as f:
        fut = net.digest(data=f, n=4)
        deadline = time.monotonic() + 30
        while call_record(net.broker.address, fut.call_id) is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.truncate(src, 3 * CHUNK)  # the rest of the file is gone mid-upload
        with pytest.raises(errors.P2PRPCError, match="shorter") as e:
            fut.get(timeout=60)
    print("get() raised: %s" % e.value)
    assert fut.done()
    # The client terminated the call; its worker, following the upload, stops it.
    deadline = time.monotonic() + 30
    rec = call_record(net.broker.address, fut.call_id)
    while rec["state"] != "terminated":
        assert rec["state"] == "leased" and time.monotonic() < deadline, rec
        time.sleep(0.05)
        rec = call_record(net.broker.address, fut.call_id)
    # The worker that followed the upload let go of it and serves the next call.
    small = net.tmp_path / "small.bin"
    small.write_bytes(b"tiny")
    with open(small, "rb") as f:
        assert net.digest(data=f, n=5).get(timeout=60)["size"] == 4


def test_an_upload_abandoned_after_the_submit_fails_the_call_naming_the_blob(net):
    size = 4 * CHUNK
    data = content(size, seed=12)
    sha = hashlib.sha256(data).hexdigest()
    # The client that began the upload is gone after its first chunk and the submit:
    # a raw client plays it, so nothing finishes the upload.
    c = BrokerClient(int(net.broker.address.rsplit(":", 1)[1]))
    try:
        put_chunk(c, sha, data, 0)
        path = net.tmp_path / "arg.bin"
        path.write_bytes(data)
        body = {"id": _core.call_identifier_raw("p2prpc_digest",
                                                net.digest.p2p_spec.version,
                                                [("data", "F", str(path)), ("n", "i", 1)]),
                "function": "p2prpc_digest", "version": net.digest.p2p_spec.version,
                "args": [{"name": "data", "kind": "file", "blob": sha, "size": size,
                          "filename": "arg.bin"},
                         {"name": "n", "kind": "int", "value": encode_int(1)}]}
        r = c.post("/v1/calls", body)
        assert r.status == 200, r
        call_id = body["id"]
        deadline = time.monotonic() + 60
        rec = call_record(net.broker.address, call_id)
        while rec["state"] not in ("done", "failed", "terminated"):
            assert time.monotonic() < deadline, rec
            time.sleep(0.05)
            rec = call_record(net.broker.address, call_id)
    finally:
        c.close()
    assert rec["state"] == "failed", rec
    assert rec["error"]["type"] == "p2prpc.ArgumentMissing", rec
    assert sha in rec["error"]["message"] and "upload stopped" in rec["error"]["message"], rec
    # Calling again from a client that has the file: the upload resumes where it
    # stopped, the same call is queued again and ends.
    with open(path, "rb") as f:
        fut = net.digest(data=f, n=1)
        assert fut.call_id == call_id
        assert fut.get(timeout=60) == {"sha": sha, "size": size, "n": 1}
    m = metrics(net.broker.address)
    assert m["bytes_received"] == size, m  # nothing the broker had was sent again
