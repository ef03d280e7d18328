"""Slow clients cannot starve the broker.

60 connections trickle bytes at the broker (a real `p2prpc broker` process):
half send their request headers one byte per 100 ms (slowloris), half send
complete headers and then a body one byte per 100 ms. Meanwhile a real call
goes end to end (client -> broker -> worker process -> broker -> client) and
must finish in under 5 s, and GET /v1/health must stay fast. The broker is one
event loop (h2o), so a connection that has not finished its request costs a
socket and a buffer, not a thread.
"""
import json
import os
import socket
import threading
import time

import pytest

from e2e import functions
from e2e.nodes import start_broker, start_worker, write_discovery
from p2prpc.p2p_client import create_p2p_client_app

SLOW_CLIENTS = 60
TRICKLE_S = 0.1


class Trickler:
    """One thread driving many slow connections, a byte each per TRICKLE_S."""

    def __init__(self, host, port, n):
        self.socks = []
        self.sent = 0
        self.closed_by_broker = 0
        self.stop = threading.Event()
        for i in range(n):
            s = socket.create_connection((host, port), timeout=5)
            if i % 2 == 0:  # slowloris: the headers never end
                payload = ("GET /v1/health HTTP/1.1\r\nHost: slow\r\nX-Slow-%d: %s\r\n"
                           % (i, "z" * 4000)).encode()
            else:  # a slow body on complete headers
                body = json.dumps({"worker": "slow", "functions": [], "pad": "z" * 4000})
                payload = ("POST /v1/leases HTTP/1.1\r\nHost: slow\r\nContent-Type: "
                           "application/json\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(body), body)).encode()
                head = payload.index(b"\r\n\r\n") + 4
                s.sendall(payload[:head])  # headers at once, then the body crawls
                payload = payload[head:]
            self.socks.append([s, payload])
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(TRICKLE_S):
            for entry in self.socks:
                s, payload = entry
                if s is None or not payload:
                    continue
                try:
                    s.send(payload[:1])
                    entry[1] = payload[1:]
                    self.sent += 1
                except OSError:
                    entry[0] = None
                    self.closed_by_broker += 1

    def close(self):
        self.stop.set()
        self.thread.join()
        for s, _ in self.socks:
            if s is not None:
                s.close()


def timed_health(address):
    host, port = address.rsplit(":", 1)
    t = time.time()
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    return time.time() - t


@pytest.fixture
def network(tmp_path):
    record = tmp_path / "record"
    record.mkdir()
    env = {"P2PRPC_TEST_RECORD": str(record)}
    broker = start_broker(tmp_path, extra=["--no-execute"], env=env)
    discovery = write_discovery(tmp_path, broker.address)
    worker = start_worker(tmp_path, discovery, env=env)
    yield broker, discovery
    worker.stop()
    broker.stop()


def test_60_slow_clients_do_not_stop_a_real_call(network, tmp_path):
    broker, discovery = network
    host, port = broker.address.rsplit(":", 1)
    app = create_p2p_client_app(discovery, cache_path=str(tmp_path / "client"))
    slow = None
    try:
        f = app.register_p2p_func()(functions.p2prpc_slow)
        # A first call brings everything up (worker registered, connections open).
        f(seconds=0.05, tag="warm-up").get(timeout=60)
        slow = Trickler(host, int(port), SLOW_CLIENTS)
        time.sleep(1.0)  # every slow client is connected and trickling
        t = time.time()
        res = f(seconds=0.2, tag="under-siege").get(timeout=30)
        took = time.time() - t
        assert set(res) == {"pid", "worker"}
        assert took < 5.0, "the call took %.2f s with %d slow clients" % (took, SLOW_CLIENTS)
        assert timed_health(broker.address) < 1.0
        # They were really slow clients, still connected and still sending.
        assert slow.closed_by_broker == 0
        assert slow.sent >= SLOW_CLIENTS * 5
        assert broker.proc.poll() is None
    finally:
        if slow is not None:
            slow.close()
        app.background_server.shutdown()
    assert timed_health(broker.address) < 1.0
