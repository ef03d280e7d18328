"""Write the checked-in seed corpora of the libFuzzer targets (tests/fuzz/corpus/<target>/).

Deterministic: running it again rewrites the same files. Needs the installed
package (for the call ids): run it with the project's venv from outside the
source tree, e.g. `cd /tmp && /path/to/.venv/bin/python /path/to/tests/fuzz/make_seeds.py`.
Seeds are small valid and near-valid inputs; crashing inputs never go here
(they go to tests/fuzz/crashes/<target>/ until the bug is fixed).
"""
import hashlib
import hmac
import json
import os
import struct

from p2prpc import _core

HERE = os.path.dirname(os.path.abspath(__file__))
V_ALL = "ab" * 32
V_SMALL = "cd" * 32
V_FILES = "0123456789abcdef" * 4
KEY = b"0123456789abcdef0123456789abcde\0"  # the C targets' key (a 31-char literal + NUL)
NOW_MS = 1700000000000


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def decls(pairs):
    return [{"name": n, "kind": k} for n, k in pairs]


def held_file():
    """Bytes whose SHA-256 starts with 0-7 (the fuzz harness 'holds' those blobs)."""
    i = 0
    while True:
        data = b"seed file %d\n" % i
        if hashlib.sha256(data).hexdigest()[0] in "01234567":
            return data
        i += 1


def functions_seeds():
    t = "fuzz_functions"
    all_kinds = [{"name": "p2prpc_all", "version": V_ALL,
                  "args": decls([("n", "int"), ("x", "float"), ("b", "bool"), ("s", "str"),
                                 ("f", "file")]),
                  "returns": decls([("total", "int"), ("out", "file")])}]
    write(t, "all_kinds.json", json.dumps(all_kinds))
    write(t, "two.json", json.dumps([
        {"name": "a", "version": V_ALL, "args": [], "returns": []},
        {"name": "b\u00e9\"q", "version": V_SMALL, "args": decls([("n", "int")]),
         "returns": decls([("m", "str")])}]))
    write(t, "twice.json", json.dumps([{"name": "a", "version": V_ALL, "args": [], "returns": []}] * 2))
    write(t, "bad_kind.json", json.dumps([{"name": "a", "version": "ABAB",
                                           "args": decls([("n", "complex")]), "returns": {}}]))
    write(t, "empty.json", "[]")
    write(t, "object.json", json.dumps({"0": {"name": "x", "version": V_ALL, "args": [],
                                              "returns": []}}))
    write(t, "long_name.json", json.dumps([{"name": "n" * 128, "version": V_ALL, "args": [],
                                            "returns": []}]))


def float_hex(x):
    return struct.pack(">d", x).hex()


def submit_seeds(tmp):
    t = "fuzz_wire_submit"
    data = held_file()
    path = os.path.join(tmp, "seed.bin")
    with open(path, "wb") as f:
        f.write(data)
    sha = hashlib.sha256(data).hexdigest()
    cid = _core.call_identifier_raw("p2prpc_all", V_ALL, [
        ("n", "i", -12345678901234567890), ("x", "f", 1.5), ("b", "b", True),
        ("s", "s", "h\u00e9llo"), ("f", "F", path)])
    args = [{"name": "n", "kind": "int", "value": "-12345678901234567890"},
            {"name": "x", "kind": "float", "value": float_hex(1.5)},
            {"name": "b", "kind": "bool", "value": True},
            {"name": "s", "kind": "str", "value": "h\u00e9llo"},
            {"name": "f", "kind": "file", "blob": sha, "size": len(data), "filename": "v.mp4"}]
    good = {"id": cid, "function": "p2prpc_all", "version": V_ALL, "args": args}
    write(t, "all_kinds.json", json.dumps(good))
    small = {"id": _core.call_identifier_raw("p2prpc_small", V_SMALL, [("n", "i", 7)]),
             "function": "p2prpc_small", "version": V_SMALL,
             "args": [{"name": "n", "kind": "int", "value": "7"}]}
    write(t, "small.json", json.dumps(small))
    none = {"id": _core.call_identifier_raw("p2prpc_none", "f" * 64, []),
            "function": "p2prpc_none", "version": "f" * 64, "args": []}
    write(t, "no_args.json", json.dumps(none))
    write(t, "wrong_id.json", json.dumps(dict(small, id="0" * 64)))
    write(t, "leading_zero.json", json.dumps(dict(small, args=[{"name": "n", "kind": "int",
                                                               "value": "007"}])))
    write(t, "version.json", json.dumps(dict(small, version="ef" * 32)))
    write(t, "unknown_fn.json", json.dumps(dict(small, function="../etc/passwd")))
    missing = dict(good, args=args[:4] + [dict(args[4], blob="f" + sha[1:])])
    write(t, "blob_not_held.json", json.dumps(missing))
    write(t, "extra_arg.json", json.dumps(dict(small, args=small["args"] * 2)))
    write(t, "bool_as_str.json", json.dumps(dict(good, args=args[:2] + [
        {"name": "b", "kind": "bool", "value": "true"}] + args[3:])))
    write(t, "unknown_field.json", json.dumps(dict(small, extra={"nested": [1, 2, 3]})))
    write(t, "not_object.json", "[1, 2, 3]")


def sign(method, path, time_ms, nonce, body_hex):
    text = "\n".join([method, path, str(time_ms), nonce, body_hex]).encode()
    return hmac.new(KEY, text, hashlib.sha256).hexdigest()


def auth_seeds():
    t = "fuzz_auth"
    empty = hashlib.sha256(b"").hexdigest()
    nonce = "0123456789abcdef0123456789abcdef"
    path = "/v1/calls?wait_ms=100"

    def rec(i, dt=0, step=0):
        return bytes([i >> 8 & 0xff, i & 0xff, dt & 0xff, step])

    fields = ["POST", path, str(NOW_MS), nonce, empty, sign("POST", path, NOW_MS, nonce, empty)]
    write(t, "raw_valid", b"\x00" + "\n".join(fields).encode())
    write(t, "raw_stale", b"\x00" + "\n".join(fields[:2] + [str(NOW_MS - 400000)] + fields[3:]).encode())
    write(t, "signed", b"\x01" + "\n".join(fields[:5] + [""]).encode())
    write(t, "tampered_time", bytes([2 + 3 * 2]) + "\n".join(fields[:5] + [""]).encode())
    write(t, "missing_headers", b"\x00GET\n/v1/nodes")
    # The replay cache: a replay, one inside and one after the window, a malformed nonce.
    tail = rec(1) + rec(1) + rec(2, 0, 200) + rec(1) + rec(0xffff)
    write(t, "nonces", b"\x01" + "\n".join(fields[:5] + [""]).encode() + b"\n" + tail)
    # More live nonces than the cap (512): ELIMIT, then the window passes.
    flood = b"".join(rec(i) for i in range(520)) + rec(600, 0, 255) + rec(601)
    write(t, "nonce_flood", b"\x00GET\n/\n1\n\n\n\n" + flood)


def chunk_seeds():
    t = "fuzz_chunks"

    def op(o, n, a=0, b=0):
        return bytes([o, n, a, b])

    # blob 5 is 485 bytes: three chunks (b*3 bytes each), commit, verify.
    write(t, "upload_commit", op(0, 5, 0, 60) + op(0, 5, 0, 60) + op(0, 5, 0, 42) +
          op(1, 5, 0) + op(4, 5) + op(1, 5, 0))
    write(t, "wrong_offset_hash", op(0, 7, 1, 10) + op(0, 7, 4, 10) + op(0, 7, 12, 10) +
          op(0, 7, 16, 10) + op(1, 7, 0))
    write(t, "resume_after_reopen", op(0, 9, 0, 100) + op(6, 9) + op(0, 9, 8, 200) +
          op(1, 9, 0) + op(2, 9))
    write(t, "download_path", op(3, 11, 0, 200) + op(3, 11, 0, 200) + op(1, 11, 0) +
          op(3, 12, 1, 10) + op(1, 12, 1))
    write(t, "import", op(5, 13, 0) + op(5, 14, 1) + op(5, 15, 2) + op(0, 13, 0, 5) +
          op(1, 13, 0))
    write(t, "bad_names", b"".join(op(i % 7, 48 + i, i, 1) for i in range(16)))
    write(t, "empty_blob", op(0, 0, 0, 0) + op(1, 0, 0) + op(1, 0, 2))


def http(method, path, body=b"", headers=()):
    if isinstance(body, str):
        body = body.encode()
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: fuzz"] + list(headers)
    if body or method in ("POST", "PUT"):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def router_seeds():
    t = "fuzz_router"
    small = {"id": _core.call_identifier_raw("p2prpc_small", V_SMALL, [("n", "i", 7)]),
             "function": "p2prpc_small", "version": V_SMALL,
             "args": [{"name": "n", "kind": "int", "value": "7"}]}
    cid = small["id"]
    chunk = b"hello blob"
    sha = hashlib.sha256(chunk).hexdigest()
    write(t, "health", http("GET", "/v1/health"))
    write(t, "functions", http("GET", "/v1/functions"))
    write(t, "stats", http("GET", "/v1/functions/p2prpc_small/stats"))
    write(t, "metrics_nodes", http("GET", "/v1/metrics") + http("GET", "/v1/nodes"))
    write(t, "submit_get", http("POST", "/v1/calls", json.dumps(small)) +
          http("GET", "/v1/calls/%s?wait_ms=0&since=-1" % cid))
    write(t, "terminate_restart_delete", http("POST", "/v1/calls/%s/terminate" % cid) +
          http("POST", "/v1/calls/%s/restart" % cid) + http("DELETE", "/v1/calls/%s" % cid))
    write(t, "lease", http("POST", "/v1/leases", json.dumps(
        {"worker": "w", "functions": [{"name": "p2prpc_small", "version": V_SMALL}],
         "wait_ms": 0})))
    lease = "ab" * 16
    write(t, "heartbeat", http("POST", "/v1/leases/%s/heartbeat" % lease,
                               json.dumps({"call_id": cid, "progress": 50})))
    write(t, "result", http("POST", "/v1/leases/%s/result" % lease, json.dumps(
        {"call_id": cid, "state": "done", "outputs": [{"name": "m", "kind": "int",
                                                       "value": "1"}]})))
    write(t, "blob_put_commit_get", http(
        "PUT", "/v1/blobs/%s?offset=0" % sha, chunk,
        ["X-P2PRPC-Chunk-Sha256: %s" % hashlib.sha256(chunk).hexdigest()]) +
        http("POST", "/v1/blobs/%s/commit?size=%d" % (sha, len(chunk))) +
        http("HEAD", "/v1/blobs/%s" % sha) + http("GET", "/v1/blobs/%s" % sha, headers=[
            "Range: bytes=2-5"]))
    write(t, "blob_put", http("PUT", "/v1/blobs/%s?offset=0" % sha, chunk) +
          http("HEAD", "/v1/blobs/%s" % sha))
    body = b""
    path = "/v1/nodes"
    nonce = "0123456789abcdef0123456789abcdef"
    sig = sign("GET", path, NOW_MS, nonce, hashlib.sha256(body).hexdigest())
    write(t, "signed_stale", http("GET", path, headers=[
        "X-P2PRPC-Time: %d" % NOW_MS, "X-P2PRPC-Nonce: " + nonce, "X-P2PRPC-Signature: " + sig]))
    write(t, "conflicting_length", b"POST /v1/calls HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
          b"Content-Length: 50\r\n\r\n{\"a\":1}")
    write(t, "chunked", b"POST /v1/leases HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
          b"5\r\n{\"wor\r\n0\r\n\r\n")
    write(t, "h2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    write(t, "h2c_upgrade", http("GET", "/v1/health", headers=[
        "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQAAP__"]))
    write(t, "nul_dotdot", http("GET", "/v1/functions/..%2f..%2fetc%00/stats") +
          http("GET", "/v1/blobs/../../../../etc/passwd"))
    write(t, "absurd_length", b"PUT /v1/blobs/" + sha.encode() + b"?offset=0 HTTP/1.1\r\n"
          b"Host: a\r\nContent-Length: 9223372036854775808\r\n\r\nxx")


def main():
    import tempfile
    functions_seeds()
    with tempfile.TemporaryDirectory() as tmp:
        submit_seeds(tmp)
    auth_seeds()
    chunk_seeds()
    router_seeds()


if __name__ == "__main__":
    main()
