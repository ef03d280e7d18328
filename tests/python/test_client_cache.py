"""The client without a network: cache hits, argument errors, no broker."""
import hashlib
import io
import os
import socket
import sqlite3
import threading
import time

import pytest

from p2prpc._client import RESULTS_NAME, ResultCache, read_discovery
from p2prpc._identity import call_identifier, prepare_call, spec_of
from p2prpc._wire import BlobRef, encode_entry
from p2prpc.errors import (
    AuthenticationError,
    ClientCallDeleted,
    ClientCallTerminated,
    ClientFunctionError,
    ClientFutureTimeoutError,
    ClientNoBrokerFound,
    ClientP2PFunctionInvalidArguments,
    P2PFunctionDeclarationError,
)
from p2prpc.p2p_client import create_p2p_client_app


def p2prpc_analyze(video_handle: io.IOBase, arg2: int) -> {"results_file": io.IOBase,
                                                           "res_var": int, "note": str}:
    """Doubles arg2."""
    return {"results_file": video_handle, "res_var": 2 * arg2, "note": "x"}


def record_on_disk(cache_root, call_id):
    """Whether the cache's SQLite file holds call_id's record (read directly)."""
    db = sqlite3.connect(str(cache_root / RESULTS_NAME))
    try:
        return db.execute("SELECT 1 FROM results WHERE id = ?", (call_id,)).fetchone() is not None
    finally:
        db.close()


def seed_cache(cache_root, fn, result_bytes, tmp_path, **kwargs):
    """Write a finished call of fn(**kwargs) into the cache the way the client
    does after a download; the call id."""
    call_id = call_identifier(fn, **kwargs)
    cache = ResultCache(cache_root)
    src = tmp_path / "result.bin"
    src.write_bytes(result_bytes)
    sha, size, blob_path = cache.add_file(str(src))
    outputs = [encode_entry("results_file", "file", BlobRef(sha, size, "result.bin")),
               encode_entry("res_var", "int", 2 * kwargs["arg2"]),
               encode_entry("note", "str", "from the cache")]
    cache.store(call_id, "p2prpc_analyze", "v", outputs, {"results_file": blob_path})
    return call_id, blob_path


@pytest.fixture
def app(tmp_path):
    # The discovery file does not exist: any attempt to reach the network fails loudly.
    a = create_p2p_client_app(str(tmp_path / "missing-discovery.txt"),
                              cache_path=str(tmp_path / "clientdb"), no_broker_timeout=0.5)
    yield a
    a.background_server.shutdown()


def test_cache_hit_needs_no_broker(app, tmp_path, rb_file):
    video = rb_file(b"video bytes")
    call_id, _ = seed_cache(str(tmp_path / "clientdb"), p2prpc_analyze, b"cached result",
                            tmp_path, video_handle=video, arg2=160)
    remote = app.register_p2p_func()(p2prpc_analyze)
    start = time.monotonic()
    fut = remote(video_handle=video, arg2=160)
    assert fut.call_id == call_id
    assert fut.done() is True and fut.progress == 100.0
    res = fut.get(timeout=0)
    assert time.monotonic() - start < 0.5
    assert list(res) == ["results_file", "res_var", "note"]
    assert res["res_var"] == 320 and res["note"] == "from the cache"
    assert res["results_file"].mode == "rb"
    assert res["results_file"].read() == b"cached result"
    res["results_file"].close()
    # The argument file's position is untouched by hashing.
    assert video.tell() == 0
    # Another argument value is another call: not in the cache, so the client
    # goes to the network, which here is a missing discovery file. Calling
    # returns a future at once; the submitter's error comes out of get().
    with pytest.raises(ClientNoBrokerFound, match="cannot read the discovery file .*missing-discovery"):
        remote(video_handle=video, arg2=161).get(timeout=30)


def test_a_cache_entry_with_a_missing_file_is_a_miss(app, tmp_path, rb_file):
    video = rb_file(b"v")
    _, blob_path = seed_cache(str(tmp_path / "clientdb"), p2prpc_analyze, b"r", tmp_path,
                              video_handle=video, arg2=1)
    os.unlink(blob_path)
    remote = app.register_p2p_func()(p2prpc_analyze)
    with pytest.raises(ClientNoBrokerFound, match="discovery"):
        remote(video_handle=video, arg2=1).get(timeout=30)


def test_registered_function_keeps_name_doc_and_identity(app, rb_file):
    remote = app.register_p2p_func()(p2prpc_analyze)
    assert remote.__name__ == "p2prpc_analyze" and remote.__doc__ == "Doubles arg2."
    assert remote.p2p_spec.name == "p2prpc_analyze"
    assert [(a.name, a.kind) for a in remote.p2p_spec.args] == [("video_handle", "file"),
                                                                ("arg2", "int")]
    f = rb_file(b"same")
    assert call_identifier(remote, video_handle=f, arg2=1) == call_identifier(
        p2prpc_analyze, video_handle=f, arg2=1)
    assert call_identifier(p2prpc_analyze, video_handle=f, arg2=1) != call_identifier(
        p2prpc_analyze, video_handle=f, arg2=2)


def test_identity_follows_content_not_name(rb_file):
    a, b, c = rb_file(b"same"), rb_file(b"same"), rb_file(b"other")
    b.read(2)
    ida = call_identifier(p2prpc_analyze, video_handle=a, arg2=1)
    assert ida == call_identifier(p2prpc_analyze, video_handle=b, arg2=1)
    assert b.tell() == 2
    assert ida != call_identifier(p2prpc_analyze, video_handle=c, arg2=1)
    prepared = prepare_call(spec_of(p2prpc_analyze), {"video_handle": a, "arg2": 1})
    assert prepared.call_id == ida
    assert prepared.files["video_handle"].sha == hashlib.sha256(b"same").hexdigest()
    assert prepared.files["video_handle"].size == 4
    assert prepared.files["video_handle"].filename == os.path.basename(a.name)


@pytest.mark.parametrize(
    "args, kwargs, words",
    [
        ((1,), {}, "keyword arguments only"),
        ((), {"arg2": 1}, "missing argument 'video_handle'"),
        ((), {"video_handle": None, "arg2": 1, "extra": 2}, "unexpected argument 'extra'"),
        ((), {"video_handle": "path.mp4", "arg2": 1}, "argument 'video_handle'"),
        ((), {"video_handle": None, "arg2": True}, "argument 'arg2'.*bool"),
    ],
)
def test_bad_arguments(app, rb_file, args, kwargs, words):
    remote = app.register_p2p_func()(p2prpc_analyze)
    if kwargs.get("video_handle", "") is None:
        kwargs["video_handle"] = rb_file()
    with pytest.raises(ClientP2PFunctionInvalidArguments, match=words):
        remote(*args, **kwargs)


def test_text_mode_file_is_refused(app, rb_file):
    remote = app.register_p2p_func()(p2prpc_analyze)
    with pytest.raises(ClientP2PFunctionInvalidArguments, match="'video_handle'.*text mode"):
        remote(video_handle=rb_file(mode="r"), arg2=1)


def test_bad_declaration_is_refused_at_registration(app):
    def p2prpc_bad(x) -> {"y": int}:
        return {"y": 1}

    with pytest.raises(P2PFunctionDeclarationError, match="'x'.*annotation is missing"):
        app.register_p2p_func()(p2prpc_bad)


def test_no_broker_found_within_the_timeout(tmp_path, rb_file):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused
    discovery = tmp_path / "discovery.txt"
    discovery.write_text("# brokers\n\n127.0.0.1:%d\n" % port)
    app = create_p2p_client_app(str(discovery), cache_path=str(tmp_path / "db"),
                                no_broker_timeout=1.0)
    try:
        remote = app.register_p2p_func()(p2prpc_analyze)
        start = time.monotonic()
        with pytest.raises(ClientNoBrokerFound) as e:
            remote(video_handle=rb_file(), arg2=1).get(timeout=30)
        elapsed = time.monotonic() - start
        assert 0.9 <= elapsed < 4.0
        assert "no broker answered within 1.0 s" in str(e.value)
        assert "127.0.0.1:%d:" % port in str(e.value)
    finally:
        app.background_server.shutdown()


def test_read_discovery(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("# comment\n\n  10.0.0.1:5002  \nhost:1 # trailing comment\n10.0.0.1:5002\n")
    assert read_discovery(str(path)) == ["10.0.0.1:5002", "host:1"]
    path.write_text("# only a comment\n\n")
    with pytest.raises(ClientNoBrokerFound, match="lists no broker"):
        read_discovery(str(path))


def test_cache_records_are_written_behind_and_seen_at_once(tmp_path):
    cache = ResultCache(str(tmp_path / "db"))
    a = "a" * 64
    cache.store(a, "p2prpc_f", "v", [encode_entry("n", "int", 5)], {}, later=True)
    assert cache.load(a)["outputs"] == [encode_entry("n", "int", 5)]  # before it is on disk
    cache.flush()
    assert record_on_disk(tmp_path / "db", a)
    assert ResultCache(str(tmp_path / "db")).load(a)["outputs"] == [encode_entry("n", "int", 5)]
    b = "b" * 64
    cache.store(b, "p2prpc_f", "v", [], {}, later=True)
    cache.remove(b)  # removed before the writer got to it: never written
    cache.flush()
    assert cache.load(b) is None and not record_on_disk(tmp_path / "db", b)
    with pytest.raises(ValueError, match="not a call id"):
        cache.load("../etc/passwd")


def test_cache_damaged_file_is_rebuilt_and_calls_go_on(tmp_path, caplog):
    root = tmp_path / "db"
    cache = ResultCache(str(root))
    a = "a" * 64
    cache.store(a, "p2prpc_f", "v", [encode_entry("n", "int", 5)], {})
    cache.close()
    (root / RESULTS_NAME).write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        if (root / (RESULTS_NAME + suffix)).exists():
            (root / (RESULTS_NAME + suffix)).unlink()
    fresh = ResultCache(str(root))
    assert fresh.load(a) is None  # a miss: the call goes to the broker again
    assert "damaged" in caplog.text and "rebuilding" in caplog.text
    fresh.store(a, "p2prpc_f", "v", [encode_entry("n", "int", 6)], {})
    assert ResultCache(str(root)).load(a)["outputs"] == [encode_entry("n", "int", 6)]


def test_cache_unusable_file_means_no_cache_not_an_error(tmp_path, caplog):
    root = tmp_path / "db"
    root.mkdir()
    (root / RESULTS_NAME).mkdir()  # SQLite cannot open a directory
    cache = ResultCache(str(root))
    a = "a" * 64
    cache.store(a, "p2prpc_f", "v", [encode_entry("n", "int", 5)], {})  # logged, not raised
    assert cache.load(a) is None
    cache.remove(a)
    assert "could not" in caplog.text


def test_cache_remove_keeps_shared_and_outside_files(tmp_path):
    cache = ResultCache(str(tmp_path / "db"))
    user_file = tmp_path / "mine.bin"
    user_file.write_bytes(b"shared")
    other = tmp_path / "other.bin"
    other.write_bytes(b"only one")
    sha1, size1, shared = cache.add_file(str(user_file))
    sha2, size2, lonely = cache.add_file(str(other))
    a, b = "a" * 64, "b" * 64
    cache.store(a, "p2prpc_f", "v", [encode_entry("x", "file", BlobRef(sha1, size1, "m")),
                                     encode_entry("y", "file", BlobRef(sha2, size2, "o"))],
                {"x": shared, "y": lonely})
    cache.store(b, "p2prpc_f", "v", [encode_entry("x", "file", BlobRef(sha1, size1, "m"))],
                {"x": shared})
    assert cache.load(a) is not None and cache.load(b) is not None
    cache.remove(a)
    assert cache.load(a) is None
    assert not os.path.exists(lonely)
    assert os.path.exists(shared) and cache.load(b) is not None
    assert user_file.read_bytes() == b"shared" and other.read_bytes() == b"only one"
    with pytest.raises(ValueError, match="not a call id"):
        cache.load("../../etc/passwd")


# ---------------------------------------------------------------------------
# Through a real broker and worker on loopback: the result lands in the cache,
# and the future's other operations.

NETWORK_FUNCTIONS = '''
import io, os, time
from p2prpc.p2p_client import p2p_progress_hook

def p2prpc_analyze_large_file(video_handle: io.IOBase, arg2: int) -> {"results_file1": io.IOBase,
                                                               "res_var": int}:
    video_handle.close()
    return {"results_file1": open(video_handle.name, 'rb'), "res_var": 10 * arg2}

def p2prpc_halfway(flag: str) -> {"ok": bool}:
    p2p_progress_hook(1, 2)
    deadline = time.time() + 30
    while not os.path.exists(flag) and time.time() < deadline:
        time.sleep(0.02)
    return {"ok": True}

def p2prpc_fails(n: int) -> {"x": int}:
    raise KeyError("no such thing %d" % n)

def p2prpc_sleeps(seconds: float) -> {"x": int}:
    time.sleep(seconds)
    return {"x": 1}
'''


@pytest.fixture
def network(tmp_path, write_module):
    from p2prpc._broker_node import BrokerNode
    from p2prpc._spec import read_module_functions
    from p2prpc._worker_node import WorkerNode

    path = write_module(NETWORK_FUNCTIONS, name="network_functions.py")
    broker = BrokerNode(str(path), port=0, data_dir=str(tmp_path / "broker"), execute=False,
                        heartbeat_ms=200, password="pw")
    worker = None
    try:
        worker = WorkerNode(str(path), [broker.address], str(tmp_path / "worker"), concurrency=2,
                            password="pw", lease_wait_ms=1000)
        discovery = tmp_path / "discovery.txt"
        discovery.write_text(broker.address + "\n")
        app = create_p2p_client_app(str(discovery), password="pw",
                                    cache_path=str(tmp_path / "clientdb"), no_broker_timeout=5)
        fns = {s.name: app.register_p2p_func()(s.func) for s in read_module_functions(str(path))}
        yield app, fns, broker
        app.background_server.shutdown()
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def test_network_result_is_cached_for_a_later_app(network, tmp_path, rb_file):
    app, fns, _ = network
    video = rb_file(b"frames" * 1000)
    fut = fns["p2prpc_analyze_large_file"](video_handle=video, arg2=160)
    res = fut.get(timeout=60)
    assert res["res_var"] == 1600
    assert res["results_file1"].read() == b"frames" * 1000
    assert res["results_file1"].name.startswith(str(tmp_path / "clientdb"))
    res["results_file1"].close()
    assert fut.done() and fut.progress == 100.0
    # A new app whose discovery file names no reachable broker: served from the cache.
    (tmp_path / "nowhere.txt").write_text("127.0.0.1:1\n")
    later = create_p2p_client_app(str(tmp_path / "nowhere.txt"), password="pw",
                                  cache_path=str(tmp_path / "clientdb"), no_broker_timeout=0.2)
    remote = later.register_p2p_func()(fns["p2prpc_analyze_large_file"])
    again = remote(video_handle=video, arg2=160)
    assert again.call_id == fut.call_id
    assert again.get(timeout=0)["res_var"] == 1600
    later.background_server.shutdown()


def test_network_progress_and_done_callback(network, tmp_path):
    app, fns, _ = network
    flag = tmp_path / "flag"
    fut = fns["p2prpc_halfway"](flag=str(flag))
    called = threading.Event()
    fut.add_done_callback(lambda f: called.set())
    deadline = time.monotonic() + 20
    while fut.progress != 50.0:
        assert time.monotonic() < deadline, "progress never reached 50%"
        time.sleep(0.05)
    assert not fut.done() and not called.is_set()
    with pytest.raises(ClientFutureTimeoutError, match="did not finish within 0.2 s"):
        fut.get(timeout=0.2)
    flag.write_text("go")
    assert fut.get(timeout=30) == {"ok": True}
    assert called.wait(10)


def test_network_failure_carries_the_remote_error(network):
    app, fns, _ = network
    with pytest.raises(ClientFunctionError) as e:
        fns["p2prpc_fails"](n=3).get(timeout=60)
    assert e.value.remote_type == "KeyError"
    assert e.value.remote_message == "'no such thing 3'"
    assert 'raise KeyError("no such thing %d" % n)' in e.value.remote_traceback


def test_network_terminate_restart_delete(network, tmp_path):
    app, fns, _ = network
    fut = fns["p2prpc_sleeps"](seconds=60.0)
    start = time.monotonic()
    fut.terminate()
    with pytest.raises(ClientCallTerminated):
        fut.get(timeout=30)
    assert time.monotonic() - start < 15
    fut.delete()
    with pytest.raises(ClientCallDeleted):
        fut.get(timeout=1)
    quick = fns["p2prpc_sleeps"](seconds=0.0)
    assert quick.get(timeout=60) == {"x": 1}
    app.cache.flush()  # the record is written behind get(); flush() writes it now
    assert record_on_disk(tmp_path / "clientdb", quick.call_id)
    quick.restart()
    assert not record_on_disk(tmp_path / "clientdb", quick.call_id)
    assert quick.get(timeout=60) == {"x": 1}
    quick.delete()
    assert not record_on_disk(tmp_path / "clientdb", quick.call_id)


def test_wrong_password_is_an_authentication_error(network, tmp_path, rb_file):
    app, fns, broker = network
    wrong = create_p2p_client_app(str(tmp_path / "discovery.txt"), password="not it",
                                  cache_path=str(tmp_path / "other"), no_broker_timeout=2)
    try:
        remote = wrong.register_p2p_func()(fns["p2prpc_fails"])
        with pytest.raises(AuthenticationError, match="password"):
            remote(n=1).get(timeout=30)
    finally:
        wrong.background_server.shutdown()


def test_network_get_sends_its_own_call_and_others_can_act_on_it(network):
    """A get() on a call not yet sent sends it itself (submit and wait in one
    request); another thread's terminate() meanwhile still reaches the call."""
    app, fns, _ = network
    fut = fns["p2prpc_sleeps"](seconds=30.0)
    outcome = []
    t = threading.Thread(target=lambda: outcome.append(_raised(lambda: fut.get(timeout=60))))
    t.start()
    time.sleep(0.3)
    started = time.monotonic()
    fut.terminate()
    t.join(20)
    assert not t.is_alive()
    assert outcome and isinstance(outcome[0], ClientCallTerminated), outcome
    assert time.monotonic() - started < 10
    # A sequential run: every call's get() sends it, one request each.
    sent = []
    orig = app.sender.submit_many
    app.sender.submit_many = lambda broker, prepared, wait_ms=0: (
        sent.append((len(prepared), wait_ms)) or orig(broker, prepared, wait_ms))
    try:
        for k in range(6):
            assert fns["p2prpc_sleeps"](seconds=0.001 * k).get(timeout=30) == {"x": 1}
    finally:
        del app.sender.submit_many
    assert [n for n, _ in sent] == [1] * 6 and all(w > 0 for _, w in sent), sent


def test_network_calls_nobody_waits_for_are_still_sent(network):
    """After a run of calls whose get() sent them, the submitter is no longer
    woken per call; a call nobody waits for is still sent within moments."""
    app, fns, _ = network
    for k in range(5):
        assert fns["p2prpc_sleeps"](seconds=0.002 * k).get(timeout=30) == {"x": 1}
    done = threading.Event()
    fut = fns["p2prpc_sleeps"](seconds=0.0123)
    fut.add_done_callback(lambda f: done.set())
    assert done.wait(15), "the call nobody waited for was never sent"
    assert fut.get(timeout=1) == {"x": 1}
    # Many at once: all sent in the background, in batches.
    futures = [fns["p2prpc_sleeps"](seconds=0.0001 * k) for k in range(40)]
    assert [f.get(timeout=60) for f in futures] == [{"x": 1}] * 40


def _raised(fn):
    try:
        return fn()
    except Exception as e:  # the test inspects it
        return e
