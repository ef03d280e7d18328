"""The client's content-hash index (p2prpc/_hashindex.py): an unchanged file is
not read again, any change is, and a damaged or shared index never yields a
wrong hash."""
import hashlib
import io
import logging
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from p2prpc import _hashindex
from p2prpc._hashindex import INDEX_NAME, HashIndex, open_index
from p2prpc._identity import file_digests, prepare_call, spec_of
from p2prpc.errors import StorageError

AGE_S = _hashindex.RACY_MARGIN_NS / 1e9 + 0.05  # old enough to be trusted


def sha_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def aged(path, content):
    """Write content and wait until the index may trust the file's stamps."""
    with open(path, "wb") as f:
        f.write(content)
    time.sleep(AGE_S)
    return str(path)


def aged_many(tmp_path, prefix, contents):
    paths = []
    for i, content in enumerate(contents):
        paths.append(str(tmp_path / ("%s%d.bin" % (prefix, i))))
        with open(paths[-1], "wb") as f:
            f.write(content)
    time.sleep(AGE_S)
    return paths


def digest(idx, path):
    with open(path, "rb") as f:
        f.seek(3 if os.path.getsize(path) > 3 else 0)
        got = idx.sha256_fd(f.fileno())
        # The caller's file position is left alone.
        assert f.tell() == (3 if os.path.getsize(path) > 3 else 0)
        return got


def count_reads(monkeypatch, reads):
    """Record in reads every fd the index's hashing functions read."""
    for name in ("sha256_file", "sha256_fd_chunks"):
        real = getattr(_hashindex._core, name)
        monkeypatch.setattr(_hashindex._core, name,
                            lambda fd, real=real: reads.append(fd) or real(fd))


@pytest.fixture
def idx(tmp_path):
    i = HashIndex(tmp_path / "cache" / INDEX_NAME)
    yield i
    i.close()


def test_an_unchanged_file_is_a_hit_and_not_read_again(idx, tmp_path, monkeypatch):
    p = aged(tmp_path / "a.bin", os.urandom(70000))
    assert digest(idx, p) == (sha_of(p), 70000)
    assert (idx.hits, idx.misses) == (0, 1)
    reads = []
    count_reads(monkeypatch, reads)
    assert digest(idx, p) == (sha_of(p), 70000)
    assert (idx.hits, idx.misses) == (1, 1)
    assert reads == []
    # Another HashIndex on the same file (another process, later) sees the row.
    again = HashIndex(idx.path)
    assert digest(again, p) == (sha_of(p), 70000) and again.hits == 1
    again.close()


def test_a_file_too_young_to_trust_is_hashed_every_time(idx, tmp_path):
    p = tmp_path / "young.bin"
    p.write_bytes(b"fresh")
    digest(idx, p)
    digest(idx, p)
    assert (idx.hits, idx.misses) == (0, 2)
    assert len(idx) == 0
    time.sleep(AGE_S)
    digest(idx, p)
    assert digest(idx, p) == (sha_of(p), 5)
    assert idx.hits == 1


def test_touch_rehashes(idx, tmp_path):
    p = aged(tmp_path / "t.bin", b"same bytes")
    digest(idx, p)
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    time.sleep(AGE_S)
    assert digest(idx, p) == (sha_of(p), 10)
    assert (idx.hits, idx.misses) == (0, 2)


def test_same_size_rewrite_rehashes_even_with_the_old_mtime_put_back(idx, tmp_path):
    p = aged(tmp_path / "r.bin", b"A" * 4096)
    old = digest(idx, p)[0]
    st = os.stat(p)
    with open(p, "r+b") as f:
        f.write(b"B")
    assert digest(idx, p) == (sha_of(p), 4096) != old
    # Rewrite again and put back the mtime the index remembered: ctime still
    # moved, so it is still a miss.
    time.sleep(AGE_S)
    digest(idx, p)
    remembered = os.stat(p)
    with open(p, "r+b") as f:
        f.write(b"C")
    os.utime(p, ns=(st.st_atime_ns, remembered.st_mtime_ns))
    assert os.stat(p).st_mtime_ns == remembered.st_mtime_ns
    got = digest(idx, p)[0]
    assert got == sha_of(p)
    assert got == hashlib.sha256(b"C" + b"A" * 4095).hexdigest()


def test_rename_replace_rehashes(idx, tmp_path):
    p = aged(tmp_path / "v.bin", b"1" * 1000)
    digest(idx, p)
    st = os.stat(p)
    new = tmp_path / "v.bin.new"
    new.write_bytes(b"2" * 1000)
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    os.replace(new, p)
    assert os.stat(p).st_ino != st.st_ino
    assert digest(idx, p) == (hashlib.sha256(b"2" * 1000).hexdigest(), 1000)
    assert idx.hits == 0


def test_empty_file_and_a_pipe(idx, tmp_path):
    p = aged(tmp_path / "empty", b"")
    assert digest(idx, p) == (hashlib.sha256(b"").hexdigest(), 0)
    assert digest(idx, p)[0] == hashlib.sha256(b"").hexdigest() and idx.hits == 1
    r, w = os.pipe()
    os.write(w, b"piped")
    os.close(w)
    try:
        # The engine hashes with pread: a pipe is refused, naming it, never remembered.
        with pytest.raises(StorageError, match="fd %d" % r):
            idx.sha256_fd(r)
    finally:
        os.close(r)
    assert len(idx) == 1  # the pipe was not remembered


CHILD = r"""
import hashlib, os, sys
from p2prpc._hashindex import HashIndex
idx = HashIndex(sys.argv[1])
bad = 0
for rnd in range(3):
    for p in sys.argv[2:]:
        with open(p, "rb") as f:
            sha, size = idx.sha256_fd(f.fileno())
            f.seek(0)
            if sha != hashlib.sha256(f.read()).hexdigest():
                bad += 1
print("bad=%d hits=%d misses=%d" % (bad, idx.hits, idx.misses))
"""


def test_concurrent_processes_share_the_index(tmp_path):
    files = aged_many(tmp_path, "c", [os.urandom(1000 + i) for i in range(40)])
    path = str(tmp_path / "cache" / INDEX_NAME)
    # cwd: the installed package, never a source checkout in the working directory.
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, path] + files[i::2] + files,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=str(tmp_path))
             for i in range(4)]
    total_hits = 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "could not" not in err and "damaged" not in err, err
        assert out.startswith("bad=0 "), out
        total_hits += int(out.split("hits=")[1].split()[0])
    assert total_hits > 0
    idx = HashIndex(path)
    assert len(idx) == len(files)
    for p in files:
        assert digest(idx, p)[0] == sha_of(p)
    assert idx.hits == len(files)


def test_threads_share_one_index(idx, tmp_path):
    import threading
    files = aged_many(tmp_path, "th", [os.urandom(5000 + i) for i in range(20)])
    errors = []

    def work():
        for _ in range(3):
            for p in files:
                if digest(idx, p)[0] != sha_of(p):
                    errors.append(p)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(idx) == len(files)


def test_a_garbage_index_file_is_rebuilt(tmp_path, caplog):
    p = aged(tmp_path / "g.bin", os.urandom(3000))
    path = tmp_path / "cache" / INDEX_NAME
    path.parent.mkdir()
    path.write_bytes(b"this is not an SQLite database at all" * 200)
    idx = HashIndex(path)
    with caplog.at_level(logging.WARNING, logger="p2prpc.hashindex"):
        assert digest(idx, p)[0] == sha_of(p)
    assert idx.rebuilds == 1
    assert any(str(path) in r.getMessage() and "damaged" in r.getMessage()
               for r in caplog.records)
    assert digest(idx, p)[0] == sha_of(p) and idx.hits == 1


def test_an_index_damaged_under_an_open_connection_is_rebuilt(idx, tmp_path):
    files = aged_many(tmp_path, "d", [os.urandom(2000) for i in range(50)])
    for p in files:
        digest(idx, p)
    idx.close()
    raw = bytearray(open(idx.path, "rb").read())
    for off in range(4096, len(raw), 97):  # every page but the header
        raw[off] ^= 0x5A
    with open(idx.path, "wb") as f:
        f.write(raw)
    for p in files:
        assert digest(idx, p)[0] == sha_of(p)
    assert idx.rebuilds == 1
    for p in files:
        assert digest(idx, p)[0] == sha_of(p)
    assert idx.hits == len(files)


def test_a_row_altered_on_disk_reads_as_a_miss_never_a_wrong_hash(idx, tmp_path):
    p = aged(tmp_path / "w.bin", b"the real content")
    digest(idx, p)
    idx.close()
    db = sqlite3.connect(idx.path)
    db.execute("UPDATE files SET sha = ?", ("0" * 64,))
    db.commit()
    db.close()
    assert digest(idx, p)[0] == sha_of(p)
    assert idx.hits == 0
    assert digest(idx, p)[0] == sha_of(p)  # remembered again, correctly
    assert idx.hits == 1


def test_an_index_from_another_schema_version_is_rebuilt(tmp_path):
    path = tmp_path / "cache" / INDEX_NAME
    path.parent.mkdir()
    db = sqlite3.connect(str(path))
    db.execute("PRAGMA user_version = 99")
    db.execute("CREATE TABLE files (x)")
    db.commit()
    db.close()
    p = aged(tmp_path / "s.bin", b"schema")
    idx = HashIndex(path)
    assert digest(idx, p)[0] == sha_of(p)
    assert idx.rebuilds == 1
    assert digest(idx, p)[0] == sha_of(p) and idx.hits == 1


def test_an_unusable_location_hashes_without_an_index(tmp_path, caplog):
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"a file where the cache directory should be")
    p = aged(tmp_path / "u.bin", b"still hashed")
    idx = HashIndex(blocker / "cache" / INDEX_NAME)
    with caplog.at_level(logging.WARNING, logger="p2prpc.hashindex"):
        assert digest(idx, p)[0] == sha_of(p)
        assert digest(idx, p)[0] == sha_of(p)
    assert idx.hits == 0
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and str(blocker) in msgs[0] and "without it" in msgs[0], msgs


def test_bounded_least_recently_used_first(tmp_path):
    idx = HashIndex(tmp_path / "cache" / INDEX_NAME, max_entries=10)
    files = aged_many(tmp_path, "l", [b"%d" % i for i in range(15)])
    for p in files[:10]:
        digest(idx, p)
    # Make the first file the most recently used (stamps refresh after a minute).
    db = sqlite3.connect(idx.path)
    db.execute("UPDATE files SET used_ns = used_ns - 120000000000")
    db.commit()
    db.close()
    digest(idx, files[0])
    assert idx.hits == 1
    for p in files[10:]:
        digest(idx, p)
    assert len(idx) <= 10
    hits = idx.hits
    digest(idx, files[0])
    digest(idx, files[-1])
    assert idx.hits == hits + 2
    digest(idx, files[1])  # among the oldest: trimmed
    assert idx.hits == hits + 2


def test_bad_arguments_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="max_entries must be at least 1, not 0"):
        HashIndex(tmp_path / "x", max_entries=0)
    idx = HashIndex(tmp_path / "cache" / INDEX_NAME)
    with pytest.raises(ValueError, match="not a SHA-256.*'XYZ'"):
        idx.remember(os.stat(tmp_path), "XYZ")


def p2prpc_two_files(a: io.IOBase, b: io.IOBase, n: int) -> {"r": int}:
    return {"r": n}


def test_prepare_call_uses_the_index_of_the_cache_path(tmp_path, monkeypatch):
    spec = spec_of(p2prpc_two_files)
    pa = aged(tmp_path / "a.bin", os.urandom(10000))
    pb = aged(tmp_path / "b.bin", b"")
    cache = tmp_path / "clientdb"
    with open(pa, "rb") as fa, open(pb, "rb") as fb:
        bound = spec.bind((), {"a": fa, "b": fb, "n": 1})
        first = prepare_call(spec, bound, index=str(cache))
        assert (cache / INDEX_NAME).exists()
        # Hashed just now: each file's upload-chunk digests came with its name.
        assert first.files["a"].chunks == hashlib.sha256(open(pa, "rb").read()).digest()
        assert first.files["b"].chunks == b""  # an empty file has no chunk
        reads = []
        count_reads(monkeypatch, reads)
        again = prepare_call(spec, bound, index=str(cache))
        assert reads == []
        assert again.call_id == first.call_id
        assert again.files["a"].sha == sha_of(pa) and again.files["a"].size == 10000
        assert again.files["a"].chunks == b""  # from the index: the upload hashes its chunks
        assert again.files["b"].sha == hashlib.sha256(b"").hexdigest()
        assert open_index(str(cache)).hits == 2
        # index=False never touches an index.
        digests = file_digests(spec, bound, index=False)
        assert len(reads) == 2
        assert {k: d._replace(chunks=b"") for k, d in digests.items()} == again.files
        assert digests["a"].chunks == first.files["a"].chunks


def fake_stat(ino, dev, size, mtime_ns, ctime_ns):
    real = os.stat(__file__)
    fields = list(real[:10])
    fields[1], fields[2], fields[6] = ino, dev, size
    return os.stat_result(fields + [0.0, 0.0, 0.0, 0, mtime_ns, ctime_ns])


def test_64_bit_inodes_devices_and_sizes(idx):
    st = fake_stat((1 << 64) - 1, (1 << 63) + 5, (5 << 30) + 1, 1 << 62, (1 << 62) + 1)
    sha = "ab" * 32
    idx.remember(st, sha)
    assert idx.lookup(st) == sha
    other = fake_stat((1 << 63) - 1, (1 << 63) + 5, (5 << 30) + 1, 1 << 62, (1 << 62) + 1)
    assert idx.lookup(other) is None
    bigger = fake_stat((1 << 64) - 1, (1 << 63) + 5, (5 << 30) + 2, 1 << 62, (1 << 62) + 1)
    assert idx.lookup(bigger) is None


def test_a_sparse_file_over_4_gib(idx, tmp_path):  # hashes 4 GiB twice: about 10 s here
    p = tmp_path / "over4g.bin"
    size = (4 << 30) + 4097
    with open(p, "wb") as f:
        f.truncate(size)
        f.seek((1 << 32) - 3)
        f.write(b"across the 4 GiB line")
    time.sleep(AGE_S)
    want = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(8 << 20), b""):
            want.update(b)
    assert digest(idx, p) == (want.hexdigest(), size)
    assert digest(idx, p) == (want.hexdigest(), size)
    assert idx.hits == 1
