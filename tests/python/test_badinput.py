"""Malformed input over raw sockets against an in-process _core.Broker.

Each case sends bytes no well-behaved client would send and checks the answer:
a 4xx (with the engine's JSON error body where the broker itself answered), or
a closed connection where HTTP leaves no other answer (a body cut short). After
every case the broker still serves a normal request, nothing was written
outside its data directory, and 200 bad requests do not make the process grow
without bound. Cases marked xfail are known bugs, reported to the owner of the
code; they turn into failures (strict) once fixed, so the mark is removed then.
"""
import hashlib
import json
import os
import socket

import pytest

from p2prpc import _core

V_SMALL = "cd" * 32
FUNCTIONS = [{"name": "p2prpc_small", "version": V_SMALL, "args": [{"name": "n", "kind": "int"}],
              "returns": [{"name": "m", "kind": "int"}]}]
LEASE = {"worker": "w", "functions": [{"name": "p2prpc_small", "version": V_SMALL}], "wait_ms": 0}
CHUNK_LIMIT = 8 * 1024 * 1024 + 64 * 1024  # PRPC_BLOB_CHUNK + 64 KiB (broker.c)
ID = "ab" * 32


@pytest.fixture
def broker(tmp_path):
    b = _core.Broker(json.dumps(FUNCTIONS), str(tmp_path / "data"))
    b.start()
    yield b
    b.stop()


def raw(port, data, shut=True, timeout=5.0):
    """Send data on a fresh connection (then close our sending side when shut)
    and read until the broker closes or goes quiet; the bytes received."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(timeout)
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the broker answered and closed before reading it all (413, 400)
    if shut:
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        if not shut:
            pass
        else:
            raise AssertionError("the broker neither answered nor closed: %r" % out[:300])
    finally:
        s.close()
    return out


def responses(data):
    """Split raw answers into [(status, headers, body)]."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, "truncated answer: %r" % data[:300]
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"HTTP/1.1 "), lines[0]
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode("latin-1")
        n = int(headers.get("content-length", "0"))
        out.append((int(lines[0].split()[1]), headers, rest[:n]))
        data = rest[n:]
    return out


def one(data):
    got = responses(data)
    assert len(got) == 1, got
    return got[0]


def http(method, path, body=b"", headers=(), host=True):
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(path, str):
        path = path.encode("latin-1")
    lines = [method.encode() + b" " + path + b" HTTP/1.1"]
    if host:
        lines.append(b"Host: t")
    lines += [h if isinstance(h, bytes) else h.encode("latin-1") for h in headers]
    if body or method in ("POST", "PUT"):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def assert_engine_error(resp, status, code, *needles):
    """An answer of the broker itself: status, {"error": {"code", "message"}}, valid UTF-8."""
    got_status, headers, body = resp
    assert got_status == status, resp
    assert headers["content-type"] == "application/json", resp
    err = json.loads(body.decode("utf-8"))["error"]
    assert err["code"] == code, resp
    for n in needles:
        assert n in err["message"], (n, err["message"])


def assert_serves(port):
    status, _, body = one(raw(port, http("GET", "/v1/functions")))
    assert status == 200
    assert json.loads(body)["functions"][0]["name"] == "p2prpc_small"


def files_under(root):
    found = set()
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(d, name), root))
    return found


def assert_only_data_dir(tmp_path):
    """The broker wrote nothing next to its data directory."""
    assert sorted(os.listdir(tmp_path)) == ["data"], os.listdir(tmp_path)
    for rel in files_under(tmp_path / "data"):
        assert not rel.startswith(".."), rel
        top = rel.split(os.sep)[0]
        assert top == "blobs" or top.startswith("broker.db"), rel


# ---- bodies and lengths -------------------------------------------------------

def test_truncated_body_closes_without_acting(broker, tmp_path):
    body = json.dumps(LEASE).encode()
    got = raw(broker.port, http("POST", "/v1/leases", body)[:-10])
    assert got == b""  # the body never completed: HTTP has no answer but closing
    assert_serves(broker.port)
    assert_only_data_dir(tmp_path)


def test_absurd_content_length_refused_before_the_body(broker):
    sha = "ab" * 32
    for length in (CHUNK_LIMIT + 1, 2 ** 63, 2 ** 63 - 1):
        req = (b"PUT /v1/blobs/%s?offset=0 HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
               % (sha.encode(), length))
        # No body is sent: the answer must come from the headers alone.
        status, headers, _ = one(raw(broker.port, req))
        assert status == 413
        assert headers["connection"] == "close"
    for bad in (b"-1", b"18446744073709551617", b"12abc", b""):
        status, _, _ = one(raw(broker.port, b"POST /v1/calls HTTP/1.1\r\nHost: t\r\n"
                                            b"Content-Length: " + bad + b"\r\n\r\n{}"))
        assert status == 400, bad
    assert_serves(broker.port)


def test_metadata_body_over_its_limit(broker):
    resp = one(raw(broker.port, http("POST", "/v1/calls", b" " * (1024 * 1024 + 1))))
    assert_engine_error(resp, 413, "ELIMIT", "exceeds the metadata limit of 1048576")
    assert_serves(broker.port)


@pytest.mark.xfail(strict=True, reason="h2o 2.2.5 takes the first of two differing "
                   "Content-Length headers and keeps the connection: the rest of the body is "
                   "read as a second request (request smuggling). h2o consumes Content-Length "
                   "before any handler runs, so the broker cannot see the second header; "
                   "documented in SECURITY.md (put a proxy that normalises requests in front "
                   "of a broker exposed to untrusted networks)")
def test_conflicting_content_lengths_do_not_smuggle(broker):
    smuggled = http("GET", "/v1/nodes")
    req = (b"POST /v1/calls HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: %d\r\n"
           b"\r\n{}" % (2 + len(smuggled))) + smuggled
    got = responses(raw(broker.port, req))
    assert 400 <= got[0][0] < 500
    assert len(got) == 1, "the smuggled request was answered: %r" % got


def test_content_length_with_chunked_uses_chunked(broker):
    req = (b"POST /v1/calls HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert_engine_error(one(raw(broker.port, req)), 400, "EINVAL", "the body is empty")
    assert_serves(broker.port)


# ---- JSON ---------------------------------------------------------------------

def test_json_nested_too_deep_names_the_limit(broker):
    body = b'{"worker": "w", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    resp = one(raw(broker.port, http("POST", "/v1/leases", body)))
    assert_engine_error(resp, 413, "ELIMIT", "nested 5001 deep", "--max-depth")
    assert_serves(broker.port)


@pytest.mark.parametrize("body,needle", [
    (b'{"worker": "w\xff"}', "invalid JSON"),                     # raw bytes not UTF-8
    (b'{"worker": "w\\ud800"}', "invalid JSON"),                  # a lone surrogate
    (b'{"worker": ', "invalid JSON"),
    (b'{"worker": "w"} trailing', "invalid JSON"),
    (b"", "the body is empty"),
])
def test_bad_json(broker, body, needle):
    assert_engine_error(one(raw(broker.port, http("POST", "/v1/leases", body))), 400, "EINVAL",
                        needle)
    assert_serves(broker.port)


def test_unknown_fields_are_ignored(broker):
    """Documented in SECURITY.md: unknown fields are accepted and ignored, never stored."""
    body = dict(LEASE, surprise={"nested": [1, 2, {"deep": True}]}, wait_ms=0)
    status, _, _ = one(raw(broker.port, http("POST", "/v1/leases", json.dumps(body))))
    assert status == 204


@pytest.mark.parametrize("body,status,code,needle", [
    ({"worker": 5, "functions": []}, 400, "EINVAL", "needs \"worker\""),
    ({"worker": "w", "functions": "p2prpc_small"}, 400, "EINVAL", "\"functions\""),
    ({"worker": "w", "functions": [{"name": 1, "version": V_SMALL}]}, 400, "EINVAL",
     "needs a name and a version"),
    ({"worker": "w", "functions": [{"name": "p2prpc_small", "version": "ab" * 32}]}, 409,
     "EVERSION", "the worker has version"),
])
def test_lease_wrong_types(broker, body, status, code, needle):
    resp = one(raw(broker.port, http("POST", "/v1/leases", json.dumps(body))))
    assert_engine_error(resp, status, code, needle)


def test_wrong_type_wait_ms_means_no_wait(broker):
    body = dict(LEASE, wait_ms="60000")
    status, _, _ = one(raw(broker.port, http("POST", "/v1/leases", json.dumps(body)), timeout=3))
    assert status == 204  # answered at once: a string is not a number of milliseconds


@pytest.mark.parametrize("body,needle", [
    ({"id": ID, "function": "p2prpc_small", "version": V_SMALL, "args": "n=1"}, "must be an array"),
    ({"id": ID, "function": "p2prpc_small", "version": V_SMALL,
      "args": [{"name": "n", "kind": "int", "value": 1}]}, "decimal integer string"),
    ({"id": ID, "function": ["p2prpc_small"], "version": V_SMALL, "args": []}, "submit needs"),
    ({"id": ID.upper(), "function": "p2prpc_small", "version": V_SMALL, "args": []},
     "submit needs"),
])
def test_submit_wrong_types(broker, body, needle):
    assert_engine_error(one(raw(broker.port, http("POST", "/v1/calls", json.dumps(body)))), 400,
                        "EINVAL", needle)


# ---- names: ../, NUL, invalid UTF-8 ---------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/calls/../../../../etc/passwd"),
    ("GET", "/v1/calls/" + "../" * 21 + "x"),
    ("GET", "/v1/calls/%2e%2e%2f%2e%2e%2f" + "a" * 52),
    ("GET", "/v1/calls/%00" + "ab" * 32),
    ("DELETE", "/v1/calls/" + "ab" * 31 + "%00%00"),
    ("GET", "/v1/blobs/../../broker.db"),
    ("GET", "/v1/blobs/" + "ab" * 31 + "%2e%2e%2f%2e"),
    ("PUT", "/v1/blobs/" + "AB" * 32 + "?offset=0"),
    ("GET", "/v1/functions/..%2f..%2fetc%2fpasswd/stats"),
    ("GET", "/v1/functions/p2prpc_small%00/stats"),
    ("GET", "/v1/functions/%2e%2e/stats"),
    ("POST", "/v1/leases/" + "../" * 11 + "/heartbeat"),
    ("POST", "/v1/leases/" + "zz" * 16 + "/result"),
])
def test_names_with_dotdot_or_nul(broker, tmp_path, method, path):
    resp = one(raw(broker.port, http(method, path, b"{}" if method in ("POST", "PUT") else b"")))
    assert resp[0] in (400, 404, 405), resp
    code = json.loads(resp[2].decode("utf-8"))["error"]["code"]
    assert code in ("EINVAL", "ENOTFOUND"), resp
    assert_serves(broker.port)
    assert_only_data_dir(tmp_path)


def test_query_params_that_are_not_numbers(broker):
    sha = hashlib.sha256(b"x").hexdigest()
    chunk = {"X-P2PRPC-Chunk-Sha256: " + sha}
    for q in ("offset=abc", "offset=-1", "offset=", "offset=%00", "offset=1e3", "nothing=0"):
        resp = one(raw(broker.port, http("PUT", "/v1/blobs/%s?%s" % (sha, q), b"x", chunk)))
        assert_engine_error(resp, 400, "EINVAL", "?offset=N")
    for q in ("size=abc", "size=-5", "size="):
        resp = one(raw(broker.port, http("POST", "/v1/blobs/%s/commit?%s" % (sha, q))))
        assert_engine_error(resp, 400, "EINVAL", "commit needs ?size=N")


def test_query_param_with_nul_is_refused(broker):
    sha = hashlib.sha256(b"x").hexdigest()
    resp = one(raw(broker.port, http("PUT", "/v1/blobs/%s?offset=0%%00junk" % sha, b"x",
                                     ["X-P2PRPC-Chunk-Sha256: " + sha])))
    assert resp[0] == 400, resp


def test_blob_name_with_nul_is_not_an_alias(broker):
    data = b"blob bytes"
    sha = hashlib.sha256(data).hexdigest()
    put = http("PUT", "/v1/blobs/%s?offset=0" % sha, data,
               ["X-P2PRPC-Chunk-Sha256: " + sha])
    assert one(raw(broker.port, put))[0] == 200
    assert one(raw(broker.port, http("POST", "/v1/blobs/%s/commit?size=%d" % (sha, len(data)))))[0] == 200
    resp = one(raw(broker.port, http("GET", "/v1/blobs/%s%%00" % sha)))
    assert 400 <= resp[0] < 500, resp


def test_invalid_utf8_in_path_answers_valid_json(broker):
    resp = one(raw(broker.port, http("GET", b"/v1/functions/\xff\xfe/stats")))
    assert resp[0] == 404
    json.loads(resp[2].decode("utf-8"))


def test_invalid_utf8_in_path_is_404(broker):
    resp = one(raw(broker.port, http("GET", b"/v1/functions/\xff\xfe/stats")))
    assert resp[0] == 404 and b"ENOTFOUND" in resp[2]
    assert_serves(broker.port)


# ---- headers, protocol ----------------------------------------------------------

def test_header_flood_refused(broker):
    many = [b"X-Flood-%d: v" % i for i in range(200)]
    status, headers, _ = one(raw(broker.port, http("GET", "/v1/health", headers=many)))
    assert status == 400 and headers["connection"] == "close"
    huge = [b"X-Huge: " + b"a" * (2 * 1024 * 1024)]
    status, _, _ = one(raw(broker.port, http("GET", "/v1/health", headers=huge)))
    assert status == 400
    assert_serves(broker.port)


def test_header_never_terminated_is_cut_off(broker):
    # 8 MiB of one header line without an end: refused long before it is all read.
    got = raw(broker.port, b"GET /v1/health HTTP/1.1\r\nX-Endless: " + b"a" * (8 << 20))
    assert one(got)[0] == 400
    assert_serves(broker.port)


def test_http2_preface_refused(broker):
    status, headers, _ = one(raw(broker.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
    assert status == 400 and headers["connection"] == "close"
    assert_serves(broker.port)


def test_h2c_upgrade_not_taken(broker):
    req = http("GET", "/v1/health", headers=["Connection: Upgrade, HTTP2-Settings",
                                             "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQAAP__"])
    status, headers, body = one(raw(broker.port, req))
    assert status == 200 and json.loads(body)["ok"] is True  # plain HTTP/1.1, no 101
    assert headers.get("upgrade") is None


def test_garbage_request_line(broker):
    for junk in (b"GARBAGE\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64,
                 b"GET /v1/health\x00 HTTP/1.1\r\nHost: t\r\n\r\n"):
        got = raw(broker.port, junk)
        assert got == b"" or one(got)[0] == 400, got[:200]
    assert_serves(broker.port)


def test_pipelined_requests_answered_in_order(broker):
    reqs = (http("GET", "/v1/health") + http("POST", "/v1/leases", b"{bad") +
            http("GET", "/v1/nodes") + http("GET", "/v1/nope"))
    got = responses(raw(broker.port, reqs))
    assert [g[0] for g in got] == [200, 400, 200, 404]
    assert json.loads(got[2][2])["nodes"]


# ---- the broker stays well -------------------------------------------------------

def vm_rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


BAD_REQUESTS = [
    http("POST", "/v1/calls", b"{bad json"),
    http("POST", "/v1/calls", json.dumps({"id": ID, "function": "nope", "version": V_SMALL,
                                          "args": []})),
    http("POST", "/v1/leases", json.dumps({"worker": "w", "functions": "x"})),
    http("GET", "/v1/calls/" + "zz" * 32),
    http("GET", "/v1/functions/" + "x" * 400 + "/stats"),
    http("PUT", "/v1/blobs/" + "ab" * 32 + "?offset=5", b"x" * 1000,
         ["X-P2PRPC-Chunk-Sha256: " + "00" * 32]),
    http("POST", "/v1/blobs/" + "ab" * 32 + "/commit?size=1"),
    http("POST", "/v1/calls", b" " * (1024 * 1024 + 10)),
    b"GARBAGE\r\n\r\n",
    http("GET", "/v1/health", headers=[b"X-F%d: v" % i for i in range(150)]),
]


def test_200_bad_requests_do_not_grow_the_process(broker, tmp_path):
    for req in BAD_REQUESTS * 5:  # warm up allocator caches and h2o's pools
        raw(broker.port, req)
    before = vm_rss_kib()
    for req in BAD_REQUESTS * 20:
        got = raw(broker.port, req)
        assert 400 <= one(got)[0] < 500, got[:200]
    grown = vm_rss_kib() - before
    assert grown < 24 * 1024, "VmRSS grew by %d KiB over 200 bad requests" % grown
    assert_serves(broker.port)
    assert_only_data_dir(tmp_path)
