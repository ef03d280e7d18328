"""The worker's blob cache is bounded (--cache-size): least recently used
blobs are evicted after a call, never one a running call uses."""
import os

from e2e import functions
from e2e.nodes import metrics, start_broker, start_worker, write_discovery
from p2prpc.p2p_client import create_p2p_client_app

MiB = 1024 * 1024


def cache_bytes(d):
    total = 0
    for root, _, files in os.walk(d):
        if os.path.basename(root) == "tmp":
            continue
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def test_cache_stays_under_its_bound(tmp_path):
    broker = start_broker(tmp_path, extra=["--no-execute"])
    discovery = write_discovery(tmp_path, broker.address)
    worker = start_worker(tmp_path, discovery, extra=["--cache-size", "12M"])
    app = create_p2p_client_app(discovery, cache_path=str(tmp_path / "c"))
    blobs = tmp_path / "worker" / "blobs"
    try:
        f = app.register_p2p_func()(functions.p2prpc_analyze_large_file)
        for i in range(4):
            src = tmp_path / ("in%d.bin" % i)
            src.write_bytes(os.urandom(5 * MiB))
            with open(src, "rb") as fh:
                res = f(video_handle=fh, arg2=i).get(timeout=60)
            assert res["results_file1"].read() == src.read_bytes()
            for v in res.values():
                if hasattr(v, "close"):
                    v.close()
            assert cache_bytes(blobs) <= 12 * MiB, cache_bytes(blobs)
        # 4 inputs of 5 MiB went through: some had to be evicted.
        assert cache_bytes(blobs) < 4 * 5 * MiB
    finally:
        app.background_server.shutdown()
        worker.stop()
        broker.stop()


def test_bad_cache_size_is_refused(tmp_path):
    discovery = write_discovery(tmp_path, "127.0.0.1:9")
    worker = start_worker(tmp_path, discovery, extra=["--cache-size", "lots"])
    assert worker.proc.wait(30) == 2
    assert "not a size" in worker.log()


def test_a_cached_blob_that_rotted_is_fetched_again_not_used(tmp_path):
    """A bit flip in the worker's cached copy of an argument is caught by the
    hash taken before the function reads it: the blob is fetched again and the
    function sees the right bytes."""
    import hashlib

    broker = start_broker(tmp_path, extra=["--no-execute"])
    discovery = write_discovery(tmp_path, broker.address)
    worker = start_worker(tmp_path, discovery)
    app = create_p2p_client_app(discovery, cache_path=str(tmp_path / "c"))

    try:
        f = app.register_p2p_func()(functions.p2prpc_analyze_large_file)
        src = tmp_path / "in.bin"
        data = os.urandom(3 * MiB)
        src.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        with open(src, "rb") as fh:
            first = f(video_handle=fh, arg2=1).get(timeout=60)
        assert first["results_file1"].read() == data
        cached = tmp_path / "worker" / "blobs" / sha[:2] / sha[2:]
        assert cached.read_bytes() == data
        with open(cached, "r+b") as fh:  # one bit rots on the worker's disk
            fh.seek(MiB)
            b = fh.read(1)
            fh.seek(MiB)
            fh.write(bytes([b[0] ^ 0x10]))
        before = metrics(broker.address)["bytes_served"]
        with open(src, "rb") as fh:
            second = f(video_handle=fh, arg2=2).get(timeout=60)
        assert second["results_file1"].read() == data
        assert metrics(broker.address)["bytes_served"] - before >= len(data)  # fetched again
        assert cached.read_bytes() == data
        assert "corrupt on disk" in worker.log()
        for res in (first, second):
            for v in res.values():
                if hasattr(v, "close"):
                    v.close()
    finally:
        app.background_server.shutdown()
        worker.stop()
        broker.stop()
