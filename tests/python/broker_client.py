"""A raw HTTP/1.1 client of the broker's wire API (docs/API.md), for tests.

It shares nothing with the engine: requests are signed here in pure Python
(hashlib, hmac) from the "Authentication" section of docs/API.md, so a test
that passes through it also checks the engine's signature format. Every
part of a signature can be overridden, to build the wrong ones on purpose.
"""
import hashlib
import hmac
import http.client
import json
import os
import time

KDF_SALT = b"p2prpc.v1"
KDF_ITERATIONS = 200000


def derive_key(password):
    """The network key of a password: PBKDF2-HMAC-SHA256, salt "p2prpc.v1", 200,000 rounds."""
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), KDF_SALT, KDF_ITERATIONS, 32)


def signature(key, method, path_and_query, time_ms, nonce, body):
    """hex HMAC-SHA256(key, METHOD \\n PATH?QUERY \\n TIME \\n NONCE \\n hex SHA-256(body))."""
    text = "\n".join(
        [method, path_and_query, str(time_ms), nonce, hashlib.sha256(body).hexdigest()]
    )
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def auth_headers(key, method, path_and_query, body=b"", time_ms=None, nonce=None):
    """The three X-P2PRPC-* headers that sign one request."""
    time_ms = int(time.time() * 1000) if time_ms is None else time_ms
    nonce = os.urandom(16).hex() if nonce is None else nonce
    return {
        "X-P2PRPC-Time": str(time_ms),
        "X-P2PRPC-Nonce": nonce,
        "X-P2PRPC-Signature": signature(key, method, path_and_query, time_ms, nonce, body),
    }


class Reply:
    """One answer: status, headers (names lowercased), raw body."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    @property
    def error(self):
        """(code, message) of an error answer's {"error": {...}} body."""
        e = self.json()["error"]
        return e["code"], e["message"]

    def __repr__(self):
        return "Reply(%d, %.300r)" % (self.status, self.body)


class BrokerClient:
    """One keep-alive connection to a broker on loopback; one thread at a time."""

    def __init__(self, port, key=None, timeout=15.0, host="127.0.0.1"):
        self.key = key
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, sign=None, signed_path=None,
                signed_body=None, time_ms=None, key=None):
        """Send one request and read its answer.

        body: bytes, str, or any other value sent as JSON. sign: default is
        to sign when the client has a key; signed_path / signed_body / time_ms
        / key replace what the signature covers, to forge bad ones."""
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            data = json.dumps(body).encode("utf-8")
        hdrs = {}
        if data and not isinstance(body, bytes):
            hdrs["Content-Type"] = "application/json"
        key = key if key is not None else self.key
        if (sign is None and key is not None) or sign:
            hdrs.update(
                auth_headers(key, method, signed_path if signed_path is not None else path,
                             signed_body if signed_body is not None else data, time_ms)
            )
        hdrs.update(headers or {})
        # http.client sends no Content-Length for an empty body on GET/HEAD/DELETE.
        self.conn.request(method, path, body=data if data or method in ("POST", "PUT") else None,
                          headers=hdrs)
        resp = self.conn.getresponse()
        payload = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def head(self, path, **kw):
        return self.request("HEAD", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def upload(self, data, chunk=None):
        """PUT data in chunks (each with its X-P2PRPC-Chunk-Sha256) and commit it; its sha."""
        sha = hashlib.sha256(data).hexdigest()
        chunk = chunk or max(len(data), 1)
        offset = 0
        while True:
            part = data[offset:offset + chunk]
            r = self.put("/v1/blobs/%s?offset=%d" % (sha, offset), part,
                         headers={"X-P2PRPC-Chunk-Sha256": hashlib.sha256(part).hexdigest()})
            if r.status != 200:
                raise AssertionError("chunk upload failed: %r" % r)
            offset += len(part)
            if offset >= len(data):
                break
        r = self.post("/v1/blobs/%s/commit?size=%d" % (sha, len(data)))
        if r.status != 200:
            raise AssertionError("commit failed: %r" % r)
        return sha

    def close(self):
        self.conn.close()
