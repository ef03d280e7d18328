"""The engine's transport and worker loop from Python (csrc/py_httpc.c, csrc/py_worker.c)
against a real broker (_core.Broker) on loopback."""
import json
import os
import socket
import threading
import time

import pytest

from p2prpc import _core
from p2prpc.errors import (
    AuthenticationError,
    ConnectionFailed,
    InvalidInputError,
    NotFoundError,
    StateError,
)

VERSION = "ab" * 32
FUNCTIONS = [
    {
        "name": "p2prpc_scale",
        "version": VERSION,
        "args": [{"name": "n", "kind": "int"}, {"name": "data", "kind": "file"}],
        "returns": [{"name": "twice", "kind": "int"}, {"name": "report", "kind": "file"}],
    }
]


def start_broker(tmp_path, key=None, **kw):
    b = _core.Broker(json.dumps(FUNCTIONS), str(tmp_path / "broker"), key=key, **kw)
    b.start()
    return b


@pytest.fixture
def broker(tmp_path):
    b = start_broker(tmp_path, heartbeat_ms=200)
    yield b
    b.stop()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_health_over_one_connection(broker):
    conn = _core.Connection("127.0.0.1:%d" % broker.port)
    assert conn.base_url == "http://127.0.0.1:%d" % broker.port
    for _ in range(3):
        status, body = conn.request("GET", "/v1/health")
        assert status == 200
        assert json.loads(body)["ok"] is True
    status, body = conn.request("GET", "/v1/calls/" + "0" * 64)
    assert status == 404
    conn.close()
    conn.close()
    with pytest.raises(ValueError, match="closed"):
        conn.request("GET", "/v1/health")


def test_refused_names_the_url():
    port = free_port()
    conn = _core.Connection("127.0.0.1:%d" % port, connect_timeout_ms=500)
    t0 = time.monotonic()
    with pytest.raises(ConnectionFailed, match="127.0.0.1:%d/v1/health" % port):
        conn.request("GET", "/v1/health")
    assert time.monotonic() - t0 < 1.0


def test_bad_url_and_key():
    with pytest.raises(InvalidInputError, match="http://h:1/x"):
        _core.Connection("http://h:1/x")
    with pytest.raises(ValueError, match="32 bytes"):
        _core.Connection("h:1", key=b"short")


def test_signed_requests(tmp_path):
    key = _core.derive_key("correct horse")
    assert len(key) == 32 and key == _core.derive_key("correct horse")
    assert key != _core.derive_key("correct horse!")
    b = start_broker(tmp_path, key=key)
    try:
        url = "127.0.0.1:%d" % b.port
        status, _ = _core.Connection(url, key=key).request("GET", "/v1/functions")
        assert status == 200
        with pytest.raises(AuthenticationError):
            _core.Connection(url).request("GET", "/v1/functions")
        with pytest.raises(AuthenticationError):
            _core.Connection(url, key=_core.derive_key("wrong")).request("GET", "/v1/functions")
    finally:
        b.stop()


def test_blob_round_trip_and_missing(broker, tmp_path):
    conn = _core.Connection("127.0.0.1:%d" % broker.port)
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    sha = _core.sha256_file(str(src))
    with open(src, "rb") as f:
        conn.upload_blob(f.fileno(), sha, len(data))
        conn.upload_blob(f.fileno(), sha, len(data))  # held already: nothing sent
    path = conn.download_blob(sha, str(tmp_path / "cache"))
    with open(path, "rb") as f:
        assert f.read() == data
    assert sha[2:] in path and "src.bin" not in path
    with pytest.raises(NotFoundError, match="c" * 64):
        conn.download_blob("c" * 64, str(tmp_path / "cache"))


def test_upload_with_the_chunk_digests_of_its_naming_pass(broker, tmp_path):
    """sha256_fd_chunks names the file and digests its upload chunks in one
    pass; an upload given those digests delivers the blob, and digests that
    no longer fit the file (it changed since) cost one refused chunk, not the
    upload."""
    import hashlib
    chunk = 4 * 1024 * 1024  # PRPC_BLOB_UPLOAD_CHUNK
    data = os.urandom(2 * chunk + 5)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    with open(src, "rb") as f:
        sha, size, digests = _core.sha256_fd_chunks(f.fileno())
        assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
        assert digests == b"".join(hashlib.sha256(data[i:i + chunk]).digest()
                                   for i in range(0, len(data), chunk))
        conn = _core.Connection("127.0.0.1:%d" % broker.port)
        assert conn.upload_blob(f.fileno(), sha, size, None, digests) is True
        path = conn.download_blob(sha, str(tmp_path / "cache"))
        with open(path, "rb") as g:
            assert g.read() == data
    other = bytearray(data)
    other[chunk + 1] ^= 1
    src.write_bytes(bytes(other))
    with open(src, "rb") as f:
        sha2 = _core.sha256_file(f.fileno())
        # The digests of the old content: chunk 1 is refused once, then hashed as read.
        assert conn.upload_blob(f.fileno(), sha2, size, chunk_digests=digests) is True
    assert conn.download_blob(sha2, str(tmp_path / "cache2"))
    with open(src, "rb") as f:
        with pytest.raises(ValueError, match="32 bytes per chunk, got 31"):
            conn.upload_blob(f.fileno(), sha, size, None, b"x" * 31)
    with pytest.raises(TypeError, match="fd must be an int"):
        _core.sha256_fd_chunks(str(src))
    with pytest.raises(InvalidInputError, match="fd -1"):
        _core.sha256_fd_chunks(-1)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with open(empty, "rb") as f:
        assert _core.sha256_fd_chunks(f.fileno()) == (hashlib.sha256(b"").hexdigest(), 0, b"")
    conn.close()


def test_gpu_probe_lists_dicts():
    gpus = _core.gpu_probe()
    assert isinstance(gpus, list)
    for g in gpus:
        assert set(g) == {"index", "name", "uuid", "total_bytes", "free_bytes", "free_known",
                          "source"}
        assert g["total_bytes"] >= g["free_bytes"] >= 0


def submit(conn, tmp_path, n, content):
    src = tmp_path / ("in-%d.bin" % n)
    src.write_bytes(content)
    sha = _core.sha256_file(str(src))
    with open(src, "rb") as f:
        conn.upload_blob(f.fileno(), sha, len(content))
    call_id = _core.call_identifier_raw(
        "p2prpc_scale", VERSION, [("n", "i", n), ("data", "F", str(src))]
    )
    args = [
        {"name": "n", "kind": "int", "value": str(n)},
        {"name": "data", "kind": "file", "blob": sha, "size": len(content), "filename": "in.bin"},
    ]
    body = json.dumps({"id": call_id, "function": "p2prpc_scale", "version": VERSION, "args": args})
    status, answer = conn.request("POST", "/v1/calls", body.encode())
    assert status == 200, answer
    return call_id


def wait_call(conn, call_id, timeout=20.0):
    end = time.monotonic() + timeout
    since = 0
    while time.monotonic() < end:
        status, body = conn.request("GET", "/v1/calls/%s?wait_ms=2000&since=%d" % (call_id, since),
                                    timeout_ms=10000)
        assert status == 200, body
        call = json.loads(body)["call"]
        if call["state"] in ("done", "failed", "terminated"):
            return call
        since = call["updated_ms"]
    raise AssertionError("call %s did not finish" % call_id)


class Executor:
    """A stand-in for the executor pool: runs the call inline on the engine thread."""

    def __init__(self):
        self.worker = None
        self.jobs = []
        self.cancelled = []
        self.logs = []
        self.fail = False
        self.release = threading.Event()
        self.block = False

    def run(self, job_json):
        job = json.loads(job_json)
        self.jobs.append(job)
        if self.fail:
            raise RuntimeError("the function broke on purpose")
        if self.block:
            self.release.wait(20)
            return json.dumps({"state": "terminated", "outputs": [], "error": None})
        args = {a["name"]: a for a in job["args"]}
        with open(args["data"]["path"], "rb") as f:
            data = f.read()
        os.makedirs(job["work_dir"], exist_ok=True)  # made by the run that needs it
        out = os.path.join(job["work_dir"], "report.bin")
        with open(out, "wb") as f:
            f.write(data[::-1])
        self.worker.report_progress(job["call_id"], 50.0)
        time.sleep(0.5)
        outputs = [
            {"name": "twice", "kind": "int", "value": str(2 * int(args["n"]["value"]))},
            {"name": "report", "kind": "file", "path": out},
        ]
        return json.dumps({"state": "done", "outputs": outputs, "error": None})

    def cancel(self, call_id, lease_id):
        self.cancelled.append(call_id)
        self.release.set()

    def log(self, level, message):
        self.logs.append((level, message))


def make_worker(broker, tmp_path, ex, **kw):
    w = _core.Worker(["127.0.0.1:%d" % broker.port], [("p2prpc_scale", VERSION)],
                     str(tmp_path / "worker"), ex.run, ex.cancel, name="w-test",
                     lease_wait_ms=1000, log=ex.log, **kw)
    ex.worker = w
    return w


def test_worker_runs_a_call_end_to_end(broker, tmp_path):
    conn = _core.Connection("127.0.0.1:%d" % broker.port)
    ex = Executor()
    w = make_worker(broker, tmp_path, ex, concurrency=2)
    w.start()
    try:
        call_id = submit(conn, tmp_path, 21, b"hello worker")
        call = wait_call(conn, call_id)
    finally:
        w.stop()
    assert call["state"] == "done", call
    outs = {o["name"]: o for o in call["outputs"]}
    assert outs["twice"]["value"] == "42"
    path = conn.download_blob(outs["report"]["blob"], str(tmp_path / "client"))
    with open(path, "rb") as f:
        assert f.read() == b"hello worker"[::-1]
    assert outs["report"]["filename"] == "report.bin"
    assert len(ex.jobs) == 1 and ex.jobs[0]["call_id"] == call_id
    assert not os.path.exists(ex.jobs[0]["work_dir"])
    assert w.report_progress(call_id, 10.0) is False
    assert any("result delivered" in m for _, m in ex.logs)


def test_exception_in_run_fails_the_call(broker, tmp_path, monkeypatch):
    conn = _core.Connection("127.0.0.1:%d" % broker.port)
    unraisable = []
    monkeypatch.setattr("sys.unraisablehook", unraisable.append)
    ex = Executor()
    ex.fail = True
    w = make_worker(broker, tmp_path, ex)
    w.start()
    try:
        call_id = submit(conn, tmp_path, 1, b"x")
        call = wait_call(conn, call_id)
    finally:
        w.stop()
    assert [type(u.exc_value) for u in unraisable] == [RuntimeError]
    assert call["state"] == "failed"
    assert call["error"]["type"] == "RuntimeError"
    assert call["error"]["message"] == "the function broke on purpose"
    assert "Traceback" in call["error"]["traceback"]


def test_terminate_reaches_the_running_call(broker, tmp_path):
    conn = _core.Connection("127.0.0.1:%d" % broker.port)
    ex = Executor()
    ex.block = True
    w = make_worker(broker, tmp_path, ex)
    w.start()
    try:
        call_id = submit(conn, tmp_path, 2, b"y")
        end = time.monotonic() + 10
        while not ex.jobs and time.monotonic() < end:
            time.sleep(0.05)
        assert ex.jobs
        status, _ = conn.request("POST", "/v1/calls/%s/terminate" % call_id)
        assert status == 200
        call = wait_call(conn, call_id)
    finally:
        ex.release.set()
        w.stop()
    assert call["state"] == "terminated"
    assert ex.cancelled == [call_id]


def test_stop_is_prompt_and_idempotent(broker, tmp_path):
    ex = Executor()
    w = make_worker(broker, tmp_path, ex, concurrency=3)
    w.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    w.stop()
    w.stop()
    assert time.monotonic() - t0 < 2.5
    with pytest.raises(StateError, match="already started"):
        w.start()


def test_worker_arguments_are_checked(tmp_path):
    ex = Executor()
    with pytest.raises(TypeError, match="callable"):
        _core.Worker(["h:1"], [("f", VERSION)], str(tmp_path), None, ex.cancel)
    with pytest.raises(TypeError, match=r"functions\[0\]"):
        _core.Worker(["h:1"], ["f"], str(tmp_path), ex.run, ex.cancel)
    with pytest.raises(InvalidInputError, match="no broker"):
        _core.Worker([], [("f", VERSION)], str(tmp_path), ex.run, ex.cancel)
