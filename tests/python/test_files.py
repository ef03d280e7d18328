"""Large files end to end (issue 4): real broker and worker processes on
127.0.0.1, clients in their own processes where a test kills them. Bytes are
counted on the broker side (/v1/metrics: bytes_received = upload chunk bytes
the broker accepted, bytes_sent = blob bytes it sent, whether the blob was held
or still arriving).

The network runs without a password (the broker then serves loopback only), so
the tests can ask HEAD /v1/blobs/{sha} with a plain HTTP client and read
X-P2PRPC-Partial."""
import ast
import hashlib
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from e2e.nodes import http_req, metrics, start_broker, start_worker, write_discovery
from p2prpc import _hashindex, errors
from p2prpc.p2p_client import create_p2p_client_app

MiB = 1 << 20
CHUNK = 8 * MiB  # PRPC_BLOB_CHUNK (csrc/blob.h)
UPLOAD_CHUNK = 4 * MiB  # PRPC_BLOB_UPLOAD_CHUNK, what the engine's uploaders send

FUNCTIONS = '''
import hashlib
import io
import os
import random


def _digest(f):
    h = hashlib.sha256()
    size = 0
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        h.update(b)
        size += len(b)
    return h.hexdigest(), size


def p2prpc_digest(data: io.IOBase, n: int) -> {"sha": str, "size": int, "n": int}:
    sha, size = _digest(data)
    return {"sha": sha, "size": size, "n": n}


def p2prpc_three(a: io.IOBase, b: io.IOBase, c: io.IOBase, n: int) -> {"digests": str,
                                                                       "empty": io.IOBase,
                                                                       "n": int}:
    out = [list(_digest(f)) for f in (a, b, c)]
    path = os.path.join(os.getcwd(), "empty-result-%d" % n)
    open(path, "wb").close()
    return {"digests": repr(out), "empty": open(path, "rb"), "n": n}


def p2prpc_make(size: int, seed: int) -> {"out": io.IOBase}:
    path = os.path.join(os.getcwd(), "made-%d-%d.bin" % (size, seed))
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rnd.randbytes(n))
            left -= n
    return {"out": open(path, "rb")}


def p2prpc_add(n: int) -> {"n": int}:
    return {"n": n + 1}
'''

CLIENT = '''
import importlib.util, json, sys
from p2prpc.p2p_client import create_p2p_client_app
spec = importlib.util.spec_from_file_location("filefns", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
app = create_p2p_client_app(sys.argv[2], cache_path=sys.argv[3])
f = app.register_p2p_func()(m.p2prpc_digest)
try:
    with open(sys.argv[4], "rb") as fh:
        print(json.dumps(f(data=fh, n=int(sys.argv[5])).get(timeout=300)), flush=True)
finally:
    app.background_server.shutdown()
'''


def made_bytes(size, seed):
    """The content p2prpc_make(size, seed) writes, as SHA-256 hex."""
    rnd = random.Random(seed)
    h = hashlib.sha256()
    left = size
    while left:
        n = min(left, MiB)
        h.update(rnd.randbytes(n))
        left -= n
    return h.hexdigest()


def write_random(path, size):
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            b = os.urandom(min(left, MiB))
            h.update(b)
            f.write(b)
            left -= len(b)
    return h.hexdigest()


def sha_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(MiB), b""):
            h.update(b)
    return h.hexdigest()


def broker_partial(address, sha):
    """Bytes of blob sha the broker holds: ('whole', size) or ('partial', n)."""
    status, headers, _ = http_req(address, "HEAD", "/v1/blobs/" + sha)
    if status == 200:
        return "whole", int(headers["content-length"])
    assert status == 404, status
    return "partial", int(headers["x-p2prpc-partial"])


@pytest.fixture(autouse=True)
def private_cache_home(tmp_path, monkeypatch):
    # The client's default hash index lives under $XDG_CACHE_HOME; keep it in tmp_path.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def fns(tmp_path):
    path = tmp_path / "filefns.py"
    path.write_text(textwrap.dedent(FUNCTIONS))
    spec = importlib.util.spec_from_file_location("filefns_%d" % id(path), path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    m.path = str(path)
    return m


class Net:
    def __init__(self, tmp_path, fns, broker_extra=(), worker=True, worker_env=None):
        self.tmp_path, self.fns = tmp_path, fns
        self.broker = start_broker(tmp_path, function_file=fns.path,
                                   extra=["--no-execute", "--lease-ms", "3000",
                                          "--heartbeat-ms", "500"] + list(broker_extra))
        self.address = self.broker.address
        self.discovery = write_discovery(tmp_path, self.address)
        self.workers = []
        self.apps = []
        if worker:
            self.start_worker(env=worker_env)

    def start_worker(self, name="worker", env=None):
        w = start_worker(self.tmp_path, self.discovery, name=name, function_file=self.fns.path,
                         env=env)
        self.workers.append(w)
        return w

    def client(self, name="clientdb"):
        app = create_p2p_client_app(self.discovery, cache_path=str(self.tmp_path / name))
        self.apps.append(app)
        return app

    def fn(self, app, name):
        return app.register_p2p_func()(getattr(self.fns, name))

    def close(self):
        for app in self.apps:
            app.background_server.shutdown()
        for w in self.workers:
            w.stop()
        self.broker.stop()


@pytest.fixture
def net(tmp_path, fns):
    n = Net(tmp_path, fns)
    yield n
    n.close()


def run_client(net, src, n, name="clientdb", env=None, **kw):
    full_env = dict(os.environ, PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    # cwd: the installed package, never a source checkout in the working directory.
    kw.setdefault("cwd", str(net.tmp_path))
    return subprocess.Popen([sys.executable, "-c", CLIENT, net.fns.path, net.discovery,
                             str(net.tmp_path / name), str(src), str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full_env, **kw)


def wait_until(what, cond, timeout=60, step=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)


# ---- resume --------------------------------------------------------------------------


def test_client_killed_mid_upload_resumes_from_the_brokers_partial(net, tmp_path):
    size = 256 * MiB
    src = tmp_path / "big.bin"
    sha = write_random(src, size)
    # The first client is slowed (each request waits 100 ms) so the kill lands mid-upload.
    first = run_client(net, src, 1, env={"P2PRPC_FAULTS": "delay_request=1:100"})
    try:
        def mid_upload():
            kind, n = broker_partial(net.address, sha)
            assert kind == "partial", "the slowed upload finished before it could be killed"
            assert first.poll() is None, first.communicate()
            return n if 0 < n < size else 0

        at_kill = wait_until("a partial upload", mid_upload)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    before = metrics(net.address)["bytes_received"]
    assert at_kill <= before < size
    second = run_client(net, src, 1)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert json.loads(out) == {"sha": sha, "size": size, "n": 1}
    m = metrics(net.address)
    print("client killed at broker partial %d; broker received %d bytes in all"
          % (at_kill, m["bytes_received"]))
    # Nothing the broker had acknowledged was sent again.
    assert size <= m["bytes_received"] <= size + CHUNK, m
    assert m["blobs_committed"] == 1 and m["chunks_refused"] == 0, m
    assert broker_partial(net.address, sha) == ("whole", size)


def test_worker_killed_mid_download_resumes_with_range(net, tmp_path):
    size = 256 * MiB
    src = tmp_path / "big.bin"
    sha = write_random(src, size)
    app = net.client()
    fut = net.fn(app, "p2prpc_digest")(data=open(src, "rb"), n=7)
    part = tmp_path / "worker" / "blobs" / "tmp" / (sha + ".part")
    whole = tmp_path / "worker" / "blobs" / sha[:2] / sha[2:]

    def mid_download():
        assert not whole.exists(), "the download finished before the worker could be killed"
        try:
            n = part.stat().st_size
        except FileNotFoundError:
            return 0
        return n if 0 < n < size else 0

    at_kill = wait_until("the worker's partial download", mid_download, step=0.001)
    net.workers[0].stop(sig=signal.SIGKILL)
    left = part.stat().st_size
    assert at_kill <= left < size
    served_before = metrics(net.address)["bytes_sent"]
    net.start_worker()  # same data directory: its partial file is resumed
    assert fut.get(timeout=120) == {"sha": sha, "size": size, "n": 7}
    m = metrics(net.address)
    print("worker killed with %d bytes on disk; broker served %d before, %d in all"
          % (left, served_before, m["bytes_sent"]))
    # The second attempt asked for exactly the rest (Range from what was on disk);
    # what was sent twice is what the killed worker had not yet written (socket
    # buffers, its writer's stage). Counted after the kill besides the rest: what
    # the broker handed the dead connection before it saw it gone, at most one
    # piece (a chunk's copy to a follower waiting for it, 4 MiB).
    resent_after_kill = m["bytes_sent"] - served_before - (size - left)
    assert 0 <= resent_after_kill <= UPLOAD_CHUNK, (m, served_before, left)
    assert m["bytes_sent"] <= size + CHUNK, m
    assert whole.exists() and not part.exists()


def test_worker_killed_mid_result_upload_resumes(tmp_path, fns):
    size = 256 * MiB
    sha = made_bytes(size, 42)
    # The first worker is slowed (each request waits 100 ms) so the kill lands mid-upload.
    net = Net(tmp_path, fns, worker_env={"P2PRPC_FAULTS": "delay_request=1:100"})
    try:
        app = net.client()
        fut = net.fn(app, "p2prpc_make")(size=size, seed=42)

        def mid_upload():
            kind, n = broker_partial(net.address, sha)
            assert kind == "partial", "the slowed upload finished before it could be killed"
            return n if 0 < n < size else 0

        wait_until("the worker's result upload", mid_upload, timeout=120)
        net.workers[0].stop(sig=signal.SIGKILL)
        before = metrics(net.address)["bytes_received"]
        assert 0 < before < size
        net.start_worker(name="worker")  # the call is leased again when the lease lapses
        res = fut.get(timeout=120)
        assert sha_of(res["out"].name) == sha
        res["out"].close()
        m = metrics(net.address)
        print("worker killed at broker partial %d; broker received %d bytes in all"
              % (before, m["bytes_received"]))
        assert size <= m["bytes_received"] <= size + CHUNK, m
        assert m["blobs_committed"] == 1 and m["chunks_refused"] == 0, m
    finally:
        net.close()


# ---- dedup ---------------------------------------------------------------------------


def test_a_second_call_with_the_same_file_uploads_and_hashes_nothing(net, tmp_path, monkeypatch):
    size = 64 * MiB
    src = tmp_path / "same.bin"
    sha = write_random(src, size)
    time.sleep(_hashindex.RACY_MARGIN_NS / 1e9 + 0.05)  # old enough for the index to trust
    app = net.client()
    digest = net.fn(app, "p2prpc_digest")
    with open(src, "rb") as f:
        assert digest(data=f, n=1).get(timeout=120) == {"sha": sha, "size": size, "n": 1}
    m1 = metrics(net.address)
    assert m1["bytes_received"] == size, m1
    hashed = []
    for name in ("sha256_file", "sha256_fd_chunks"):
        real = getattr(_hashindex._core, name)
        monkeypatch.setattr(_hashindex._core, name,
                            lambda fd, real=real: hashed.append(fd) or real(fd))
    t = time.perf_counter()
    with open(src, "rb") as f:
        fut = digest(data=f, n=2)
    submit_s = time.perf_counter() - t
    assert fut.get(timeout=120) == {"sha": sha, "size": size, "n": 2}
    m2 = metrics(net.address)
    assert m2["bytes_received"] == m1["bytes_received"], m2
    assert m2["calls_submitted"] == m1["calls_submitted"] + 1
    assert hashed == [], "the unchanged file was read again"
    assert submit_s < 1.0, submit_s
    # Another client (its own cache) with the same file: still nothing uploaded.
    other = net.client("other-clientdb")
    with open(src, "rb") as f:
        assert net.fn(other, "p2prpc_digest")(data=f, n=3).get(timeout=120)["sha"] == sha
    assert metrics(net.address)["bytes_received"] == size


# ---- shapes of files -----------------------------------------------------------------


def test_empty_files_several_files_and_non_ascii_names(net, tmp_path):
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    named = tmp_path / "vidéo 日本語 ☃ ..%2f.bin"
    named.write_bytes(b"non-ascii name" * 1000)
    third = tmp_path / "third.bin"
    third_sha = write_random(third, 3 * MiB + 5)
    app = net.client()
    three = net.fn(app, "p2prpc_three")
    with open(empty, "rb") as a, open(named, "rb") as b, open(third, "rb") as c:
        res = three(a=a, b=b, c=c, n=5).get(timeout=60)
    empty_sha = hashlib.sha256(b"").hexdigest()
    assert ast.literal_eval(res["digests"]) == [[empty_sha, 0], [sha_of(named), 14000],
                                                [third_sha, 3 * MiB + 5]]
    assert res["n"] == 5
    assert res["empty"].read() == b""
    res["empty"].close()
    # The user's file name is metadata: no node made a file of that name anywhere.
    found = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs
             if "日本語" in f or "vid" in f]
    assert found == [str(named)], found
    # Again, with the same files: served from the client's cache, nothing sent.
    sent = metrics(net.address)["bytes_received"]
    with open(empty, "rb") as a, open(named, "rb") as b, open(third, "rb") as c:
        assert three(a=a, b=b, c=c, n=5).get(timeout=60)["n"] == 5
    assert metrics(net.address)["bytes_received"] == sent


def sparse_file(path, size):
    """A sparse file of `size` bytes with a few marks, across the 4 GiB line."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off in (0, size // 2, (1 << 32) - 3, size - 7):
            if 0 <= off < size - 7:
                f.seek(off)
                f.write(b"p2prpc!")
        f.seek(size - 7)
        f.write(b"the end")
    assert os.stat(path).st_blocks * 512 < 1 << 20  # really sparse
    return sha_of(path)


@pytest.mark.parametrize("size", [
    pytest.param((4 << 30) + 4097, id="4GiB+4097"),  # about a minute here
    pytest.param(96 * MiB + 1, id="96MiB+1"),
])
def test_a_sparse_file_argument(net, tmp_path, size):
    src = tmp_path / "sparse.bin"
    sha = sparse_file(src, size)
    app = net.client()
    try:
        with open(src, "rb") as f:
            assert net.fn(app, "p2prpc_digest")(data=f, n=4).get(timeout=600) == {
                "sha": sha, "size": size, "n": 4}
        m = metrics(net.address)
        assert m["bytes_received"] == size and m["bytes_sent"] == size, m
    finally:
        # pytest keeps recent tmp dirs: do not leave GiBs of blobs behind in them.
        for node in ("broker", "worker"):
            shutil.rmtree(tmp_path / node / "blobs", ignore_errors=True)


# ---- disk full -----------------------------------------------------------------------


@pytest.fixture
def full_net(tmp_path, fns):
    """A network whose broker keeps its blobs on a 16 MiB tmpfs."""
    blobs = tmp_path / "broker" / "blobs"
    blobs.mkdir(parents=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(blobs)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("cannot mount a tmpfs for the disk-full test (needs root): %s"
                    % (p.stderr.strip() or p.returncode))
    n = None
    try:
        n = Net(tmp_path, fns)
        yield n
    finally:
        if n is not None:
            n.close()
        if subprocess.run(["umount", str(blobs)]).returncode != 0:
            subprocess.run(["umount", "-l", str(blobs)])


def fill_the_disk(net, tmp_path):
    src = tmp_path / "too-big.bin"
    sha = write_random(src, 32 * MiB)
    app = net.client()
    with open(src, "rb") as f, pytest.raises(errors.DiskFullError) as info:
        net.fn(app, "p2prpc_digest")(data=f, n=1).get(timeout=120)
    return app, sha, str(info.value)


def test_disk_full_is_a_clear_error_and_the_broker_keeps_serving(full_net, tmp_path):
    app, sha, message = fill_the_disk(full_net, tmp_path)
    assert sha in message and "No space left on device" in message, message
    assert full_net.broker.proc.poll() is None
    assert full_net.fn(app, "p2prpc_add")(n=41).get(timeout=60) == {"n": 42}
    assert not os.path.exists(tmp_path / "broker" / "blobs" / sha[:2] / sha[2:])


def test_disk_full_leaves_no_partial_blob_and_small_files_still_go(full_net, tmp_path):
    app, sha, _ = fill_the_disk(full_net, tmp_path)
    left = os.listdir(tmp_path / "broker" / "blobs" / "tmp")
    small = tmp_path / "small.bin"
    small.write_bytes(b"small file after a full disk")
    with open(small, "rb") as f:
        res = full_net.fn(app, "p2prpc_digest")(data=f, n=2).get(timeout=60)
    assert res == {"sha": sha_of(small), "size": 28, "n": 2}
    assert left == [], left
