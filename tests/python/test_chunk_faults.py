"""Transfers damaged in flight (issue 4: "a corrupted chunk in flight (fault
hook) ... caught"): real broker, worker and client processes on 127.0.0.1,
one of them running with the fault hook (csrc/fault.h) that flips a byte of a
transfer after its hash was taken:
  corrupt_chunk     an upload chunk, after its X-P2PRPC-Chunk-Sha256 was made
  corrupt_download  a blob download, before it reaches the partial file
P2PRPC_FAULTS_SEED fixes each process's draws, so a run damages the same
transfers every time and the counts below do not depend on luck (seed 1 at
probability 0.3 damages the first try, then lets some through).

Bytes are counted on the broker (/v1/metrics): chunks_refused = chunks whose
bytes did not match their header hash, bytes_received = bytes of accepted
chunks, bytes_sent = blob bytes sent (held or following an upload)."""
import hashlib
import http.client
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from e2e.nodes import (DIGEST_FUNCTIONS, http_req, metrics, start_broker, start_worker,
                       write_discovery)
from p2prpc.p2p_client import create_p2p_client_app

MiB = 1 << 20
UPLOAD_CHUNK = 4 * MiB  # PRPC_BLOB_UPLOAD_CHUNK: the chunk the engine sends
SIZE = 40 * MiB  # ten 4 MiB chunks as sent (PRPC_BLOB_UPLOAD_CHUNK)
SENDS = 5        # times httpc.c sends one chunk (and tries one download) before ECORRUPT
SEED = "1"

FUNCTIONS = DIGEST_FUNCTIONS

# A client in its own process, so the fault hook acts on it alone. Prints
# {"ok": result} or {"error": exception class, "message": its words}.
CLIENT = '''
import importlib.util, json, sys
from p2prpc import errors
from p2prpc.p2p_client import create_p2p_client_app
spec = importlib.util.spec_from_file_location("faultfns", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
app = create_p2p_client_app(sys.argv[2], cache_path=sys.argv[3])
f = app.register_p2p_func()(m.p2prpc_digest)
try:
    with open(sys.argv[4], "rb") as fh:
        try:
            out = {"ok": f(data=fh, n=int(sys.argv[5])).get(timeout=60)}
        except errors.P2PRPCError as e:
            out = {"error": type(e).__name__, "message": str(e)}
    print(json.dumps(out), flush=True)
finally:
    app.background_server.shutdown()
'''


def write_random(path, size):
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def sha_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def faults(spec):
    return {"P2PRPC_FAULTS": spec, "P2PRPC_FAULTS_SEED": SEED}


@pytest.fixture(autouse=True)
def private_cache_home(tmp_path, monkeypatch):
    # The client's default hash index lives under $XDG_CACHE_HOME; keep it in tmp_path.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("P2PRPC_FAULTS", raising=False)


class Net:
    """A broker and one worker, the worker with worker_env added."""

    def __init__(self, tmp_path, worker_env=None):
        self.tmp_path = tmp_path
        self.fns = tmp_path / "faultfns.py"
        self.fns.write_text(textwrap.dedent(FUNCTIONS))
        self.broker = start_broker(tmp_path, function_file=str(self.fns),
                                   extra=["--no-execute", "--lease-ms", "3000",
                                          "--heartbeat-ms", "500"])
        self.address = self.broker.address
        self.discovery = write_discovery(tmp_path, self.address)
        self.worker = start_worker(tmp_path, self.discovery, function_file=str(self.fns),
                                   env=worker_env)
        self.apps = []

    def client_fn(self):
        """p2prpc_digest for a client app in this process (no faults here)."""
        spec = importlib.util.spec_from_file_location("faultfns_%d" % id(self), self.fns)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        app = create_p2p_client_app(self.discovery, cache_path=str(self.tmp_path / "clientdb"))
        self.apps.append(app)
        return app.register_p2p_func()(mod.p2prpc_digest)

    def run_client(self, src, n, env):
        """Call p2prpc_digest(src, n) from a client process with env added."""
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.update(env)
        # cwd: the installed package, never a source checkout in the working directory.
        p = subprocess.run([sys.executable, "-c", CLIENT, str(self.fns), self.discovery,
                            str(self.tmp_path / "clientdb"), str(src), str(n)],
                           capture_output=True, text=True, env=full_env, cwd=str(self.tmp_path),
                           timeout=90)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    def close(self):
        for app in self.apps:
            app.background_server.shutdown()
        self.worker.stop()
        self.broker.stop()


def test_chunks_damaged_on_the_way_to_the_broker_are_refused_and_sent_again(tmp_path):
    src = tmp_path / "arg.bin"
    sha = write_random(src, SIZE)
    net = Net(tmp_path)
    try:
        out = net.run_client(src, 1, faults("corrupt_chunk=0.3"))
        assert out == {"ok": {"sha": sha, "size": SIZE, "n": 1}}, out
        m = metrics(net.address)
        print("chunks refused %d, received %d" % (m["chunks_refused"], m["chunks_received"]))
        assert m["chunks_refused"] > 0, m  # damage happened, and was caught
        # Only good chunks were kept, each once: the blob the worker hashed is the file.
        assert m["chunks_received"] == SIZE // UPLOAD_CHUNK and m["bytes_received"] == SIZE, m
        assert m["blobs_committed"] == 1, m
        assert sha_of(tmp_path / "broker" / "blobs" / sha[:2] / sha[2:]) == sha
    finally:
        net.close()


def test_a_download_damaged_on_the_way_to_the_worker_is_fetched_again(tmp_path):
    src = tmp_path / "arg.bin"
    sha = write_random(src, SIZE)
    net = Net(tmp_path, worker_env=faults("corrupt_download=0.3"))
    try:
        digest = net.client_fn()
        with open(src, "rb") as f:
            assert digest(data=f, n=2).get(timeout=60) == {"sha": sha, "size": SIZE, "n": 2}
        m = metrics(net.address)
        print("broker served %d bytes for a %d-byte blob" % (m["bytes_sent"], SIZE))
        # At least one whole download was damaged, dropped and fetched again from zero.
        assert SIZE < m["bytes_sent"] <= SENDS * SIZE, m
        assert m["bytes_sent"] % SIZE == 0, m
        blobs = tmp_path / "worker" / "blobs"
        assert sha_of(blobs / sha[:2] / sha[2:]) == sha  # what the worker kept is right
        assert not (blobs / "tmp" / (sha + ".part")).exists()
    finally:
        net.close()


def test_a_chunk_damaged_every_time_fails_the_call_naming_the_blob(tmp_path):
    src = tmp_path / "arg.bin"
    sha = write_random(src, SIZE)
    net = Net(tmp_path)
    try:
        out = net.run_client(src, 3, faults("corrupt_chunk=1"))
        assert out.get("error") == "CorruptDataError", out
        assert sha in out["message"], out
        assert "offset 0 was refused as corrupt %d times" % SENDS in out["message"], out
        m = metrics(net.address)
        # Each try sent the chunk and the one behind it (two on the wire), both damaged.
        assert SENDS <= m["chunks_refused"] <= 2 * SENDS, m
        assert m["chunks_received"] == 0 and m["bytes_received"] == 0, m
        assert m["blobs_committed"] == 0 and m["calls_submitted"] == 0, m
        # Nothing of the blob on the broker, whole or partial.
        status, headers, _ = http_req(net.address, "HEAD", "/v1/blobs/" + sha)
        assert (status, headers.get("x-p2prpc-partial")) == (404, "0")
        blobs = tmp_path / "broker" / "blobs"
        assert not (blobs / sha[:2] / sha[2:]).exists()
        part = blobs / "tmp" / (sha + ".part")
        assert not part.exists() or part.stat().st_size == 0
    finally:
        net.close()


UPLOADER = '''
import sys
from p2prpc import _core
key = _core.derive_key(sys.argv[2])
c = _core.Connection(sys.argv[1], key=key)
with open(sys.argv[3], "rb") as f:
    c.upload_blob(f.fileno(), sys.argv[4], int(sys.argv[5]))
print("uploaded", flush=True)
'''


def test_with_a_password_a_damaged_chunk_is_resent_not_refused_as_forged(tmp_path):
    from p2prpc import _core
    password = "chunk fault password"
    key = _core.derive_key(password)
    fns = json.dumps([{"name": "p2prpc_x", "version": "ab" * 32,
                       "args": [{"name": "f", "kind": "file"}],
                       "returns": [{"name": "n", "kind": "int"}]}])
    b = _core.Broker(fns, str(tmp_path / "broker"), key=key)
    b.start()
    try:
        src = tmp_path / "arg.bin"
        sha = write_random(src, 3 * 8 * MiB)
        env = dict(os.environ, **faults("corrupt_chunk=0.3"))
        p = subprocess.run([sys.executable, "-c", UPLOADER, "127.0.0.1:%d" % b.port, password,
                            str(src), sha, str(3 * 8 * MiB)], capture_output=True, text=True,
                           env=env, cwd=str(tmp_path), timeout=90)
        assert p.returncode == 0 and "uploaded" in p.stdout, p.stderr
        c = _core.Connection("127.0.0.1:%d" % b.port, key=key)
        status, body = c.request("GET", "/v1/metrics")
        m = json.loads(body)
        assert m["chunks_refused"] > 0 and m["auth_refused"] == 0, m
        assert sha_of(tmp_path / "broker" / "blobs" / sha[:2] / sha[2:]) == sha
        c.close()
    finally:
        b.stop()


def test_broker_answers_while_a_chunk_is_written(tmp_path):
    """Chunk writes and commits run on the broker's blob thread: with a disk
    that takes over a second per chunk (slow_disk), calls and health checks
    are answered meanwhile, the chunk's own answer comes once it is synced,
    and a client that hangs up mid-write leaves a broker that goes on."""
    import hashlib
    import threading
    import time

    from broker_client import BrokerClient

    fns = tmp_path / "faultfns.py"
    fns.write_text(textwrap.dedent(FUNCTIONS))
    broker = start_broker(tmp_path, function_file=str(fns), env=faults("slow_disk=1:1500"))
    try:
        port = int(broker.address.rsplit(":", 1)[1])
        data = os.urandom(3 * MiB)
        sha = hashlib.sha256(data).hexdigest()
        put = {}

        def upload():
            c = BrokerClient(port)
            put["reply"] = c.put("/v1/blobs/%s?offset=0" % sha, data,
                                 headers={"X-P2PRPC-Chunk-Sha256": sha})
            put["at"] = time.monotonic()
            c.close()

        t = threading.Thread(target=upload)
        t.start()
        time.sleep(0.3)
        other = BrokerClient(port)
        health = other.get("/v1/health")
        answered = time.monotonic()
        assert health.status == 200
        assert "at" not in put, "the chunk was answered before the health check"
        t.join(30)
        assert put["reply"].status == 200 and put["reply"].json() == {"partial": len(data)}
        assert put["at"] > answered
        commit = other.post("/v1/blobs/%s/commit?size=%d" % (sha, len(data)))
        assert commit.status == 200, commit
        assert other.get("/v1/blobs/" + sha).body == data

        # A client that hangs up while its chunk is being written.
        data2 = os.urandom(MiB)
        sha2 = hashlib.sha256(data2).hexdigest()
        raw = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        raw.request("PUT", "/v1/blobs/%s?offset=0" % sha2, body=data2,
                    headers={"X-P2PRPC-Chunk-Sha256": sha2})
        time.sleep(0.3)
        raw.close()
        time.sleep(2.0)  # the write ends with nobody to answer
        assert other.get("/v1/health").status == 200
        head = other.request("HEAD", "/v1/blobs/" + sha2)
        assert head.status == 404 and head.headers["x-p2prpc-partial"] == str(len(data2))
        other.close()
    finally:
        broker.stop()
