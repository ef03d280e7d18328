"""A Connection with a key trusts only answers the broker signed for its own
request (docs/API.md "Authentication"): against a real _core.Broker, and
through a small man-in-the-middle proxy on loopback that alters, strips or
replays answers.
"""
import hashlib
import json
import os
import socket
import threading

import pytest

from p2prpc import _core
from p2prpc.errors import AuthenticationError

V = "cd" * 32
FUNCTIONS = [{"name": "p2prpc_sig", "version": V, "args": [{"name": "n", "kind": "int"}],
              "returns": [{"name": "m", "kind": "int"}]}]
NOT_SIGNED = "the broker's answer is not signed by a holder of the password"


@pytest.fixture(scope="module")
def key():
    return _core.derive_key("signed answers password")


def _read_message(f, is_response, head_request=False):
    """One HTTP/1.1 message from a buffered socket file: (start line, header
    lines, body), or None at EOF. Bodies are Content-Length framed (the broker
    and libcurl's small requests never chunk)."""
    start = f.readline()
    if not start:
        return None
    headers = []
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        headers.append(line)
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    status = int(start.split()[1]) if is_response else 0
    if head_request or status in (204, 304) or 100 <= status < 200:
        length = 0
    return start, headers, f.read(length) if length else b""


class Proxy:
    """Forwards each client connection to the broker; `mode` says what it does
    to answers that have a body: "pass", "flip" (one byte of the body),
    "strip" (the X-P2PRPC-Signature header), or "replay" (the first answer
    with a body, sent again for every later request)."""

    def __init__(self, upstream_port, mode="pass"):
        self.upstream_port = upstream_port
        self.mode = mode
        self.saved = None
        self.altered = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _alter(self, start, headers, body):
        if not body or self.mode == "pass":
            return start, headers, body
        self.altered += 1
        if self.mode == "flip":
            i = len(body) // 2
            body = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1:]
        elif self.mode == "strip":
            headers = [h for h in headers if not h.lower().startswith(b"x-p2prpc-signature:")]
        elif self.mode == "replay":
            if self.saved is None:
                self.saved = (start, headers, body)
                self.altered -= 1
            else:
                return self.saved
        return start, headers, body

    def _serve(self, client):
        up = socket.create_connection(("127.0.0.1", self.upstream_port))
        self.conns.append(up)
        cf, uf = client.makefile("rb"), up.makefile("rb")
        try:
            while True:
                req = _read_message(cf, False)
                if req is None:
                    return
                start, headers, body = req
                up.sendall(start + b"".join(headers) + b"\r\n" + body)
                resp = _read_message(uf, True, head_request=start.startswith(b"HEAD "))
                if resp is None:
                    return
                start, headers, body = self._alter(*resp)
                client.sendall(start + b"".join(headers) + b"\r\n" + body)
        except OSError:
            pass
        finally:
            client.close()
            up.close()

    def close(self):
        self.sock.close()
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture
def make_proxy():
    made = []

    def make(port, mode):
        p = Proxy(port, mode)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_a_real_broker_signs_every_json_answer(make_broker, key, tmp_path):
    b = make_broker(key=key)
    c = _core.Connection("127.0.0.1:%d" % b.port, key=key)
    status, body = c.request("GET", "/v1/health")
    assert (status, json.loads(body)["ok"]) == (200, True)
    status, body = c.request("GET", "/v1/functions")
    assert status == 200 and json.loads(body)["functions"][0]["name"] == "p2prpc_sig"
    # Error answers are signed too, and come back as statuses, not exceptions.
    status, body = c.request("GET", "/v1/calls/" + "0" * 64)
    assert status == 404 and json.loads(body)["error"]["code"] == "ENOTFOUND"
    # An empty answer (204: no work for this worker) is signed as well.
    lease = json.dumps({"worker": "w1", "functions": [{"name": "p2prpc_sig", "version": V}],
                        "wait_ms": 0}).encode()
    status, body = c.request("POST", "/v1/leases", lease)
    assert (status, body) == (204, b"")
    # Blob answers: HEAD (unsigned, allowed), PUT and commit (signed), GET (hash-checked).
    data = os.urandom(100000)
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "f.bin").write_bytes(data)
    with open(tmp_path / "f.bin", "rb") as f:
        c.upload_blob(f.fileno(), sha, len(data))
    with open(c.download_blob(sha, str(tmp_path / "blobs")), "rb") as f:
        assert f.read() == data
    c.close()


def test_the_proxy_itself_changes_nothing(make_broker, make_proxy, key):
    b = make_broker(key=key)
    p = make_proxy(b.port, "pass")
    c = _core.Connection("127.0.0.1:%d" % p.port, key=key)
    for _ in range(3):
        status, body = c.request("GET", "/v1/functions")
        assert status == 200 and b"p2prpc_sig" in body


def test_one_altered_byte_is_refused(make_broker, make_proxy, key):
    b = make_broker(key=key)
    p = make_proxy(b.port, "flip")
    c = _core.Connection("127.0.0.1:%d" % p.port, key=key)
    with pytest.raises(AuthenticationError) as e:
        c.request("GET", "/v1/functions")
    assert NOT_SIGNED in str(e.value)
    assert "/v1/functions: HTTP 200 whose X-P2PRPC-Signature does not match" in str(e.value)
    assert p.altered == 1


def test_an_unsigned_answer_is_refused(make_broker, make_proxy, key):
    b = make_broker(key=key)
    p = make_proxy(b.port, "strip")
    c = _core.Connection("127.0.0.1:%d" % p.port, key=key)
    with pytest.raises(AuthenticationError,
                       match="HTTP 200 without X-P2PRPC-Signature") as e:
        c.request("GET", "/v1/health")
    assert NOT_SIGNED in str(e.value)


def test_a_replayed_answer_is_refused(make_broker, make_proxy, key):
    b = make_broker(key=key)
    p = make_proxy(b.port, "replay")
    c = _core.Connection("127.0.0.1:%d" % p.port, key=key)
    status, first = c.request("GET", "/v1/functions")
    assert status == 200
    # The same bytes and a genuine signature, but for the first request's nonce.
    with pytest.raises(AuthenticationError, match="does not match this request") as e:
        c.request("GET", "/v1/functions")
    assert NOT_SIGNED in str(e.value)
    assert p.altered == 1


def test_a_broker_without_the_password_cannot_answer(make_broker, key):
    # An open broker (or an impostor) does not sign: its answers are refused,
    # even a health check.
    b = make_broker()
    c = _core.Connection("127.0.0.1:%d" % b.port, key=key)
    with pytest.raises(AuthenticationError, match="without X-P2PRPC-Signature") as e:
        c.request("GET", "/v1/health")
    assert NOT_SIGNED in str(e.value)
    # Without a key the same broker is fine.
    status, _ = _core.Connection("127.0.0.1:%d" % b.port).request("GET", "/v1/health")
    assert status == 200


def test_a_wrong_password_is_the_brokers_refusal(make_broker, key):
    b = make_broker(key=key)
    c = _core.Connection("127.0.0.1:%d" % b.port, key=_core.derive_key("not the password"))
    with pytest.raises(AuthenticationError) as e:
        c.request("GET", "/v1/functions")
    assert NOT_SIGNED not in str(e.value)
    assert "/v1/functions refused" in str(e.value)
    assert "wrong password" in str(e.value)  # the broker's own words
