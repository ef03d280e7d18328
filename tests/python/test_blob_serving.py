"""Blobs as the broker serves them: verified while streamed, counted, deduplicated."""
import hashlib
import json
import os

import pytest

from p2prpc import _core, errors

FUNCTIONS = json.dumps([{"name": "p2prpc_f", "version": "ab" * 32,
                         "args": [{"name": "f", "kind": "file"}],
                         "returns": [{"name": "r", "kind": "int"}]}])


@pytest.fixture
def broker(tmp_path):
    b = _core.Broker(FUNCTIONS, str(tmp_path / "broker"))
    b.start()
    yield b
    b.stop()


def metrics(conn):
    status, body = conn.request("GET", "/v1/metrics")
    assert status == 200
    return json.loads(body)


def upload(conn, path):
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    with open(path, "rb") as f:
        conn.upload_blob(f.fileno(), sha, os.path.getsize(path))
    return sha


def test_dedup_and_byte_counts(broker, tmp_path):
    conn = _core.Connection("127.0.0.1:%d" % broker.port)
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(9 * 1024 * 1024 + 3))
    sha = upload(conn, src)
    m = metrics(conn)
    assert m["bytes_received"] == src.stat().st_size
    assert m["chunks_received"] == 3 and m["blobs_committed"] == 1  # 4 MiB chunks as sent
    # The broker holds it: uploading again sends nothing.
    upload(conn, src)
    assert metrics(conn)["bytes_received"] == src.stat().st_size
    got = conn.download_blob(sha, str(tmp_path / "cache"))
    assert open(got, "rb").read() == src.read_bytes()
    assert metrics(conn)["bytes_served"] == src.stat().st_size


def blob_file(tmp_path, sha):
    return tmp_path / "broker" / "blobs" / sha[:2] / sha[2:]


@pytest.mark.parametrize("damage", ["bit flip", "truncation"])
def test_a_blob_rotten_on_disk_is_never_served_and_is_dropped(broker, tmp_path, damage):
    conn = _core.Connection("127.0.0.1:%d" % broker.port)
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 11))
    sha = upload(conn, src)
    on_disk = blob_file(tmp_path, sha)
    data = bytearray(on_disk.read_bytes())
    if damage == "bit flip":
        data[len(data) - 5] ^= 0x10
    else:
        data = data[:-100]
    os.chmod(on_disk, 0o600)
    on_disk.write_bytes(bytes(data))
    with pytest.raises(errors.P2PRPCError) as info:
        conn.download_blob(sha, str(tmp_path / "cache"))
    assert sha in str(info.value) or "blob" in str(info.value)
    # Nothing partial or wrong was kept by the receiver.
    cache = tmp_path / "cache"
    assert not (cache / sha[:2] / sha[2:]).exists()
    # The broker dropped it: it is no longer offered, and a fresh upload heals it.
    assert not on_disk.exists()
    status, _ = conn.request("HEAD", "/v1/blobs/" + sha)
    assert status == 404
    assert metrics(conn)["corrupt_blobs_dropped"] >= 1
    upload(conn, src)
    got = conn.download_blob(sha, str(tmp_path / "cache"))
    assert open(got, "rb").read() == src.read_bytes()
