"""End to end: real broker and worker processes on 127.0.0.1, the seed's client API."""
import os
import time

import pytest

from e2e import functions
from e2e.nodes import (pid_alive, records, start_broker, start_worker, write_discovery)
from p2prpc import errors
from p2prpc._spec import read_function
from p2prpc.p2p_client import create_p2p_client_app

PASSWORD = "super secret password"


@pytest.fixture
def record(tmp_path):
    d = tmp_path / "record"
    d.mkdir()
    return str(d)


@pytest.fixture
def network(tmp_path, record):
    """A broker (not executing) and one worker, with a password."""
    env = {"P2PRPC_TEST_RECORD": record}
    broker = start_broker(tmp_path, extra=["--no-execute"], env=env, password=PASSWORD)
    discovery = write_discovery(tmp_path, broker.address)
    worker = start_worker(tmp_path, discovery, env=env, password=PASSWORD)
    yield {"broker": broker, "worker": worker, "discovery": discovery, "env": env}
    worker.stop()
    broker.stop()


def client(net, tmp_path, name="clientdb", password=PASSWORD, **kw):
    return create_p2p_client_app(net["discovery"], password=password,
                                 cache_path=str(tmp_path / name), **kw)


def register(app, fn):
    return app.register_p2p_func()(fn)


def test_seed_example_files_in_and_out(network, tmp_path, record):
    app = client(network, tmp_path)
    try:
        f = register(app, functions.p2prpc_analyze_large_file)
        data = os.urandom(3 * 1024 * 1024 + 17)
        src = tmp_path / "video.bin"
        src.write_bytes(data)
        res = f(video_handle=open(src, "rb"), arg2=160).get(timeout=60)
        assert set(res) == {"results_file1", "results_file2", "res_var"}
        assert res["res_var"] == 1600
        assert res["results_file1"].read() == data
        with open(functions.__file__, "rb") as own:
            assert res["results_file2"].read() == own.read()
        assert res["results_file1"].mode == "rb"
        # The result files live in the client's cache, not at the user's path.
        assert str(tmp_path / "clientdb") in os.path.abspath(res["results_file1"].name)
        for v in res.values():
            if hasattr(v, "close"):
                v.close()
        assert len(records(record, "analyze")) == 1
    finally:
        app.background_server.shutdown()


def test_repeated_call_is_served_from_cache_then_from_broker(network, tmp_path, record):
    app = client(network, tmp_path)
    try:
        slow = register(app, functions.p2prpc_slow)
        first = slow(seconds=0.1, tag="cache").get(timeout=60)
        t = time.time()
        again = slow(seconds=0.1, tag="cache")
        assert again.done()
        assert again.get(timeout=5) == first
        assert time.time() - t < 0.5
    finally:
        app.background_server.shutdown()
    # A new client with an empty cache gets the broker's finished record: no re-run.
    app2 = client(network, tmp_path, name="other-cache")
    try:
        slow2 = register(app2, functions.p2prpc_slow)
        assert slow2(seconds=0.1, tag="cache").get(timeout=30) == first
    finally:
        app2.background_server.shutdown()
    assert len(records(record, "slow")) == 1


def test_identical_concurrent_calls_run_once(network, tmp_path, record):
    app = client(network, tmp_path)
    try:
        slow = register(app, functions.p2prpc_slow)
        futures = [slow(seconds=0.5, tag="same") for _ in range(4)]
        results = [f.get(timeout=60) for f in futures]
        assert all(r == results[0] for r in results)
        assert len(records(record, "slow")) == 1
    finally:
        app.background_server.shutdown()


def test_progress_is_reported(network, tmp_path):
    app = client(network, tmp_path)
    try:
        slow = register(app, functions.p2prpc_slow)
        fut = slow(seconds=4.0, tag="progress")
        seen = 0.0
        deadline = time.time() + 30
        while not fut.done() and time.time() < deadline:
            seen = max(seen, fut.progress)
            if 0 < seen < 100:
                break
            time.sleep(0.1)
        assert 0 < seen < 100
        fut.get(timeout=60)
        assert fut.progress == 100
    finally:
        app.background_server.shutdown()


def test_remote_error_carries_type_message_and_traceback(network, tmp_path):
    app = client(network, tmp_path)
    try:
        fail = register(app, functions.p2prpc_fail)
        with pytest.raises(errors.ClientFunctionError) as info:
            fail(message="boom 42").get(timeout=60)
        e = info.value
        assert e.remote_type == "ValueError"
        assert "boom 42" in e.remote_message
        assert "p2prpc_fail" in e.remote_traceback and "raise ValueError" in e.remote_traceback
    finally:
        app.background_server.shutdown()


def test_terminate_kills_the_function_then_restart_runs_again(network, tmp_path, record):
    app = client(network, tmp_path)
    try:
        forever = register(app, functions.p2prpc_forever)
        fut = forever(tag="t1")
        pid_file = os.path.join(record, "forever.pid")
        deadline = time.time() + 30
        while not os.path.exists(pid_file) and time.time() < deadline:
            time.sleep(0.05)
        pid = int(open(pid_file).read())
        assert pid_alive(pid)
        t = time.time()
        fut.terminate()
        with pytest.raises(errors.ClientCallTerminated):
            fut.get(timeout=30)
        while pid_alive(pid) and time.time() - t < 5:
            time.sleep(0.05)
        assert not pid_alive(pid), "the function's process outlived terminate"
        assert time.time() - t < 2 + 3  # heartbeat interval + kill
        os.unlink(pid_file)
        fut.restart()
        deadline = time.time() + 30
        while not os.path.exists(pid_file) and time.time() < deadline:
            time.sleep(0.05)
        assert os.path.exists(pid_file), "restart did not run the call again"
        fut.terminate()
        with pytest.raises(errors.ClientCallTerminated):
            fut.get(timeout=30)
    finally:
        app.background_server.shutdown()


def test_delete_removes_call_but_not_user_files(network, tmp_path, record):
    app = client(network, tmp_path)
    try:
        f = register(app, functions.p2prpc_analyze_large_file)
        src = tmp_path / "mine.bin"
        src.write_bytes(b"user data")
        fut = f(video_handle=open(src, "rb"), arg2=1)
        res = fut.get(timeout=60)
        for v in res.values():
            if hasattr(v, "close"):
                v.close()
        fut.delete()
        assert src.read_bytes() == b"user data"
        # Deleted everywhere: calling again runs the function again.
        res = f(video_handle=open(src, "rb"), arg2=1).get(timeout=60)
        for v in res.values():
            if hasattr(v, "close"):
                v.close()
        assert len(records(record, "analyze")) == 2
    finally:
        app.background_server.shutdown()


def test_no_broker_reachable(tmp_path):
    discovery = write_discovery(tmp_path, "127.0.0.1:9")
    app = create_p2p_client_app(discovery, password=PASSWORD, cache_path=str(tmp_path / "c"),
                                no_broker_timeout=2.0)
    try:
        slow = register(app, functions.p2prpc_slow)
        t = time.time()
        with pytest.raises(errors.ClientNoBrokerFound) as info:
            slow(seconds=0.1, tag="x").get(timeout=30)
        assert time.time() - t < 10
        assert "127.0.0.1:9" in str(info.value)
    finally:
        app.background_server.shutdown()


def test_wrong_password_is_an_authentication_error(network, tmp_path):
    app = client(network, tmp_path, password="not the password", no_broker_timeout=3.0)
    try:
        slow = register(app, functions.p2prpc_slow)
        t = time.time()
        with pytest.raises(errors.AuthenticationError):
            slow(seconds=0.1, tag="auth").get(timeout=30)
        assert time.time() - t < 10
    finally:
        app.background_server.shutdown()


def test_two_workers_share_the_load(tmp_path, record):
    env = {"P2PRPC_TEST_RECORD": record}
    broker = start_broker(tmp_path, extra=["--no-execute"], env=env)
    discovery = write_discovery(tmp_path, broker.address)
    workers = [start_worker(tmp_path, discovery, name="w%d" % i, env=env) for i in range(2)]
    app = create_p2p_client_app(discovery, cache_path=str(tmp_path / "c"))
    try:
        slow = register(app, functions.p2prpc_slow)
        futures = [slow(seconds=0.6, tag="load%d" % i) for i in range(6)]
        worker_pids = {f.get(timeout=60)["worker"] for f in futures}
        assert len(worker_pids) == 2
    finally:
        app.background_server.shutdown()
        for w in workers:
            w.stop()
        broker.stop()


def test_broker_executes_calls_itself(tmp_path, record):
    env = {"P2PRPC_TEST_RECORD": record}
    broker = start_broker(tmp_path, extra=["--execute"], env=env)
    discovery = write_discovery(tmp_path, broker.address)
    app = create_p2p_client_app(discovery, cache_path=str(tmp_path / "c"))
    try:
        slow = register(app, functions.p2prpc_slow)
        res = slow(seconds=0.1, tag="self").get(timeout=60)
        assert res["worker"] == broker.proc.pid
    finally:
        app.background_server.shutdown()
        broker.stop()


def test_version_mismatch_names_both_versions(tmp_path, write_module):
    other = write_module('''
        def p2prpc_slow(seconds: float, tag: str) -> {"pid": int, "worker": int}:
            return {"pid": 0, "worker": 1}  # another source: another version
    ''', name="other_functions.py")
    broker = start_broker(tmp_path, function_file=str(other), extra=["--no-execute"])
    discovery = write_discovery(tmp_path, broker.address)
    app = create_p2p_client_app(discovery, cache_path=str(tmp_path / "c"), no_broker_timeout=3)
    try:
        slow = register(app, functions.p2prpc_slow)
        with pytest.raises(errors.FunctionVersionMismatch) as info:
            slow(seconds=0.1, tag="v").get(timeout=30)
        from p2prpc._spec import read_function
        mine = read_function(functions.p2prpc_slow).version
        theirs = read_function(__import__("importlib").import_module("p2prpc._spec")
                               .read_module_functions(str(other))[0].func).version
        assert mine in str(info.value) and theirs in str(info.value)
    finally:
        app.background_server.shutdown()
        broker.stop()


def test_worker_with_another_version_is_told_both_versions(tmp_path, write_module):
    other = write_module('''
        def p2prpc_slow(seconds: float, tag: str) -> {"pid": int, "worker": int}:
            return {"pid": 0, "worker": 2}  # another source: another version
    ''', name="other_worker_functions.py")
    broker = start_broker(tmp_path, extra=["--no-execute"])
    discovery = write_discovery(tmp_path, broker.address)
    worker = start_worker(tmp_path, discovery, function_file=str(other))
    try:
        from p2prpc._spec import read_module_functions
        theirs = read_module_functions(str(other))[0].version
        mine = read_function(functions.p2prpc_slow).version
        deadline = time.time() + 20
        while time.time() < deadline and theirs not in worker.log():
            time.sleep(0.1)
        log = worker.log()
        assert "p2prpc_slow" in log and theirs in log and mine in log, log
    finally:
        worker.stop()
        broker.stop()


def test_client_fails_over_to_the_next_broker_of_its_discovery_file(tmp_path, record):
    env = {"P2PRPC_TEST_RECORD": record}
    broker = start_broker(tmp_path, extra=["--execute"], env=env)
    # The first address answers nothing; the client moves on to the second.
    discovery = write_discovery(tmp_path, "127.0.0.1:9", broker.address)
    app = create_p2p_client_app(discovery, cache_path=str(tmp_path / "c"), no_broker_timeout=10)
    try:
        slow = register(app, functions.p2prpc_slow)
        t = time.time()
        assert slow(seconds=0.05, tag="failover").get(timeout=30)["worker"] == broker.proc.pid
        assert time.time() - t < 10
    finally:
        app.background_server.shutdown()
        broker.stop()
