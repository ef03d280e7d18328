"""Brokers learn of each other through GET /v1/nodes, and forget dead ones."""
import json
import time

import pytest

from p2prpc import _core

FUNCTIONS = json.dumps([{"name": "p2prpc_f", "version": "ab" * 32, "args": [],
                         "returns": [{"name": "r", "kind": "int"}]}])


def nodes_of(port):
    c = _core.Connection("127.0.0.1:%d" % port)
    status, body = c.request("GET", "/v1/nodes")
    c.close()
    assert status == 200
    return json.loads(body)["nodes"]


def wait_for(pred, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def start(tmp_path, name, peers=None):
    b = _core.Broker(FUNCTIONS, str(tmp_path / name), peers=peers)
    b.start()
    return b


def test_a_chain_of_peers_is_learned_by_every_broker(tmp_path):
    a = start(tmp_path, "a")
    b = start(tmp_path, "b", peers=["127.0.0.1:%d" % a.port])
    c = start(tmp_path, "c", peers=["127.0.0.1:%d" % b.port])
    try:
        everyone = {"127.0.0.1:%d" % x.port for x in (a, b, c)}
        for x in (a, b, c):
            assert wait_for(lambda: set(nodes_of(x.port)) == everyone), nodes_of(x.port)
            assert nodes_of(x.port)[0] == "127.0.0.1:%d" % x.port  # itself first
    finally:
        for x in (c, b, a):
            x.stop()


def test_a_dead_broker_is_no_longer_listed(tmp_path):
    a = start(tmp_path, "a")
    b = start(tmp_path, "b", peers=["127.0.0.1:%d" % a.port])
    a_addr = "127.0.0.1:%d" % a.port
    try:
        assert wait_for(lambda: a_addr in nodes_of(b.port))
        a.stop()
        # Listed only while it answers; the configured peer is kept and retried.
        assert wait_for(lambda: a_addr not in nodes_of(b.port), timeout=15)
    finally:
        b.stop()
        a.stop()


def test_bad_peer_addresses_are_refused(tmp_path):
    with pytest.raises(Exception) as info:
        _core.Broker(FUNCTIONS, str(tmp_path / "x"), peers=["no spaces allowed:1"])
    assert "no spaces allowed" in str(info.value)
    with pytest.raises(TypeError):
        _core.Broker(FUNCTIONS, str(tmp_path / "y"), peers=[5])
