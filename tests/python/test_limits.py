"""The broker's configurable limits (--max-body, --max-connections,
--max-leases-per-worker, --request-timeout): each refused request gets a
clear status and a JSON body naming the limit, and the broker keeps serving."""
import json
import socket
import time

from broker_client import BrokerClient
from p2prpc import _core
from test_broker import FUNCTIONS, SMALL, assert_error, small_call


def start(tmp_path, **kw):
    b = _core.Broker(json.dumps(FUNCTIONS), str(tmp_path / "data"), **kw)
    b.start()
    return b


def test_max_body(tmp_path):
    b = start(tmp_path, max_body=1000)
    try:
        c = BrokerClient(b.port)
        body = dict(small_call(1), padding="x" * 2000)
        assert_error(c.post("/v1/calls", body), 413, "ELIMIT", "1000", "--max-body")
        assert c.post("/v1/calls", small_call(1)).status == 200
        c.close()
    finally:
        b.stop()


def test_max_connections(tmp_path):
    b = start(tmp_path, max_connections=3)
    held = []
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", b.port))
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
            assert b"200" in s.recv(4096)
            held.append(s)
        extra = socket.create_connection(("127.0.0.1", b.port))
        extra.settimeout(5)
        answer = b""
        while True:
            chunk = extra.recv(4096)
            if not chunk:
                break
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503")
        err = json.loads(body)["error"]
        assert err["code"] == "ELIMIT" and "--max-connections" in err["message"]
        # One closes: a new connection is served again.
        held.pop().close()
        time.sleep(0.2)
        c = BrokerClient(b.port)
        assert c.get("/v1/health").status == 200
        c.close()
    finally:
        for s in held:
            s.close()
        b.stop()


def test_max_leases_per_worker(tmp_path):
    b = start(tmp_path, max_leases_per_worker=1)
    try:
        c = BrokerClient(b.port)
        c.post("/v1/calls", small_call(1))
        c.post("/v1/calls", small_call(2))
        first = c.post("/v1/leases", {"worker": "w", "functions": SMALL})
        assert first.status == 200
        assert_error(c.post("/v1/leases", {"worker": "w", "functions": SMALL}), 429, "ELIMIT",
                     "worker w", "--max-leases-per-worker")
        assert c.post("/v1/leases", {"worker": "v", "functions": SMALL}).status == 200
        c.close()
    finally:
        b.stop()


def test_request_timeout_cuts_a_slow_client(tmp_path):
    b = start(tmp_path, request_timeout_ms=500)
    try:
        s = socket.create_connection(("127.0.0.1", b.port))
        s.settimeout(5)
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: t\r\n")  # never finishes its headers
        t = time.monotonic()
        got = s.recv(4096)  # the broker closes it (h2o may say 408 first)
        took = time.monotonic() - t
        assert got == b"" or got.startswith(b"HTTP/1.1 4"), got
        assert 0.3 < took < 3.0, took
        s.close()
        c = BrokerClient(b.port)
        assert c.get("/v1/health").status == 200
        c.close()
    finally:
        b.stop()


def test_negative_limits_are_refused(tmp_path):
    import pytest
    with pytest.raises(ValueError, match="must not be negative"):
        _core.Broker(json.dumps(FUNCTIONS), str(tmp_path / "d"), max_connections=-1)


def raw_answer(port, request):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    s.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 10:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def test_max_headers_and_header_bytes(tmp_path):
    b = start(tmp_path, max_headers=10, max_header_bytes=2000)
    try:
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(20))
        head, body = raw_answer(b.port, b"GET /v1/health HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n")
        assert head.startswith(b"HTTP/1.1 431"), head
        err = json.loads(body)["error"]
        assert err["code"] == "ELIMIT" and "--max-headers" in err["message"]
        big = b"X-Big: " + b"a" * 3000 + b"\r\n"
        head, body = raw_answer(b.port, b"GET /v1/health HTTP/1.1\r\nHost: t\r\n" + big + b"\r\n")
        assert head.startswith(b"HTTP/1.1 431"), head
        assert "--max-header-bytes" in json.loads(body)["error"]["message"]
        c = BrokerClient(b.port)
        assert c.get("/v1/health").status == 200
        c.close()
    finally:
        b.stop()
