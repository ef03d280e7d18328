"""The broker's wire API (docs/API.md), route by route, over raw HTTP.

Each test starts an in-process _core.Broker on a free loopback port and talks
to it with broker_client.BrokerClient (http.client, keep-alive, requests
signed in pure Python). Every error path checks the status, the engine code
in the JSON error body, and that the message names what was wrong.
"""
import hashlib
import json
import os
import socket
import struct
import threading
import time

import pytest

from broker_client import BrokerClient, auth_headers, derive_key
from p2prpc import _core
from p2prpc._wire import decode_entries, decode_int, encode_int
from p2prpc.errors import AlreadyExistsError, InvalidInputError, P2PRPCError

V_ALL = "ab" * 32
V_SMALL = "cd" * 32
ALL_ARGS = [("n", "int"), ("x", "float"), ("b", "bool"), ("s", "str"), ("f", "file")]
ALL_RETURNS = [("total", "int"), ("ratio", "float"), ("ok", "bool"), ("text", "str"),
               ("out", "file")]


def decls(pairs):
    return [{"name": n, "kind": k} for n, k in pairs]


FUNCTIONS = [
    {"name": "p2prpc_all", "version": V_ALL, "args": decls(ALL_ARGS),
     "returns": decls(ALL_RETURNS)},
    {"name": "p2prpc_small", "version": V_SMALL, "args": decls([("n", "int")]),
     "returns": decls([("m", "int")])},
]
SMALL = [{"name": "p2prpc_small", "version": V_SMALL}]
CHUNK_MAX = 8 * 1024 * 1024


# ---- fixtures and helpers ---------------------------------------------------

def start_broker(tmp_path, **kw):
    b = _core.Broker(json.dumps(FUNCTIONS), str(tmp_path / "data"), **kw)
    b.start()
    return b


@pytest.fixture
def make_broker(tmp_path):
    """Factory: a started broker (keywords go to _core.Broker); stopped at teardown."""
    started = []

    def make(**kw):
        b = start_broker(tmp_path, **kw)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def make_client():
    """Factory: a BrokerClient to a broker; closed at teardown."""
    opened = []

    def make(broker, key=None):
        c = BrokerClient(broker.port, key=key)
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def broker(make_broker):
    return make_broker(lease_ms=30000, heartbeat_ms=700)


@pytest.fixture
def client(broker, make_client):
    return make_client(broker)


def assert_error(reply, status, code, *needles):
    """reply is status with {"error": {"code": code, ...}} whose message holds every needle."""
    assert reply.status == status, reply
    got_code, message = reply.error
    assert got_code == code, reply
    for needle in needles:
        assert str(needle) in message, (needle, message)
    return message


def small_call(n):
    """A submit body for p2prpc_small(n)."""
    return {"id": _core.call_identifier_raw("p2prpc_small", V_SMALL, [("n", "i", n)]),
            "function": "p2prpc_small", "version": V_SMALL,
            "args": [{"name": "n", "kind": "int", "value": encode_int(n)}]}


def float_hex(x):
    return struct.pack(">d", x).hex()


def all_call(client, tmp_path, n=7, x=1.5, b=True, s="héllo", data=b"file bytes\n"):
    """Upload data and build a submit body for p2prpc_all; (body, blob sha)."""
    sha = client.upload(data)
    path = tmp_path / ("arg-%s" % sha[:12])
    path.write_bytes(data)
    call_id = _core.call_identifier_raw(
        "p2prpc_all", V_ALL, [("n", "i", n), ("x", "f", x), ("b", "b", b), ("s", "s", s),
                              ("f", "F", str(path))])
    args = [
        {"name": "n", "kind": "int", "value": encode_int(n)},
        {"name": "x", "kind": "float", "value": float_hex(x)},
        {"name": "b", "kind": "bool", "value": b},
        {"name": "s", "kind": "str", "value": s},
        {"name": "f", "kind": "file", "blob": sha, "size": len(data), "filename": "in.bin"},
    ]
    return {"id": call_id, "function": "p2prpc_all", "version": V_ALL, "args": args}, sha


def submit(client, body):
    r = client.post("/v1/calls", body)
    assert r.status == 200, r
    return r.json()["call"]


def lease(client, functions=SMALL, wait_ms=0, worker="w1"):
    return client.post("/v1/leases", {"worker": worker, "functions": functions, "wait_ms": wait_ms})


def take_lease(client, functions=SMALL, worker="w1"):
    r = lease(client, functions, worker=worker)
    assert r.status == 200, r
    return r.json()


def get_call(client, call_id, query=""):
    return client.get("/v1/calls/%s%s" % (call_id, query))


def chunk_put(client, sha, offset, data, chunk_sha=None):
    """PUT one chunk of blob sha at offset, with its X-P2PRPC-Chunk-Sha256 (or chunk_sha)."""
    return client.put("/v1/blobs/%s?offset=%d" % (sha, offset), data, headers={
        "X-P2PRPC-Chunk-Sha256": chunk_sha or hashlib.sha256(data).hexdigest()})


def blob_file(data_dir, sha):
    return data_dir / "blobs" / sha[:2] / sha[2:]


def all_outputs(sha, size, total="3"):
    return [
        {"name": "total", "kind": "int", "value": total},
        {"name": "ratio", "kind": "float", "value": float_hex(0.25)},
        {"name": "ok", "kind": "bool", "value": False},
        {"name": "text", "kind": "str", "value": "done"},
        {"name": "out", "kind": "file", "blob": sha, "size": size, "filename": "out.txt"},
    ]


class Background:
    """Run fn in a thread; .result is its return value, .done_at the monotonic time it ended."""

    def __init__(self, fn):
        self.result = None
        self.error = None
        self.done_at = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as e:  # reported by join()
            self.error = e
        self.done_at = time.monotonic()

    def join(self, timeout=10):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the background request never returned"
        if self.error is not None:
            raise self.error
        return self.result


def parked(broker, make_client, method, path, body=None):
    """Start one request on its own connection and give it time to park."""
    c = make_client(broker)
    bg = Background(lambda: c.request(method, path, body))
    time.sleep(0.25)
    assert bg.done_at is None, "the long-poll answered at once: %r" % (bg.result,)
    return bg


# ---- broker routes ----------------------------------------------------------

def test_health_functions_nodes(broker, client):
    r = client.get("/v1/health")
    assert r.status == 200 and r.json() == {"ok": True, "node": "broker",
                                            "version": _core.__version__}
    assert r.headers["content-type"].startswith("application/json")
    r = client.get("/v1/functions")
    assert r.status == 200
    assert r.json() == {"functions": FUNCTIONS}
    r = client.get("/v1/nodes")
    assert r.status == 200 and r.json() == {"nodes": ["127.0.0.1:%d" % broker.port]}
    assert_error(client.get("/v1/nowhere"), 404, "ENOTFOUND", "no such route")
    assert_error(client.get("/elsewhere"), 404, "ENOTFOUND", "no such route")


def test_nodes_advertise(make_broker, make_client):
    b = make_broker(advertise="broker.example:9000")
    assert make_client(b).get("/v1/nodes").json() == {"nodes": ["broker.example:9000"]}


def test_stats(client):
    submit(client, small_call(1))
    submit(client, small_call(2))
    take_lease(client)
    r = client.get("/v1/functions/p2prpc_small/stats")
    assert r.status == 200
    assert r.json() == {"function": "p2prpc_small", "queued": 1, "leased": 1, "done": 0,
                        "failed": 0, "terminated": 0}
    assert client.get("/v1/functions/p2prpc_all/stats").json()["queued"] == 0
    assert_error(client.get("/v1/functions/p2prpc_nope/stats"), 404, "ENOTFOUND", "p2prpc_nope")


# ---- submit -----------------------------------------------------------------

def test_submit_created_then_same_call(client):
    body = small_call(41)
    r = client.post("/v1/calls", body)
    assert r.status == 200, r
    first = r.json()
    assert first["created"] is True
    call = first["call"]
    assert call["id"] == body["id"] and call["function"] == "p2prpc_small"
    assert call["version"] == V_SMALL and call["state"] == "queued"
    assert call["attempts"] == 0 and call["progress"] == 0
    assert call["outputs"] is None and call["error"] is None and call["finished_ms"] == 0
    assert abs(call["created_ms"] - time.time() * 1000) < 5000
    again = client.post("/v1/calls", body).json()
    assert again["created"] is False
    assert again["call"] == call
    assert get_call(client, body["id"]).json() == {"call": call}


def test_submit_every_kind(client, tmp_path):
    body, sha = all_call(client, tmp_path, n=-123456789012345678901234567890, x=-0.0, b=False,
                         s="tab\t\"quote\" ünï", data=b"\x00\x01binary")
    call = submit(client, body)
    assert call["id"] == body["id"]
    got = take_lease(client, [{"name": "p2prpc_all", "version": V_ALL}])
    assert got["call"]["args"] == body["args"]
    values = decode_entries(got["call"]["args"], ALL_ARGS)
    assert values["n"] == -123456789012345678901234567890
    assert struct.pack(">d", values["x"]) == struct.pack(">d", -0.0)
    assert values["f"].blob == sha and values["f"].size == 8


def test_submit_id_function_version_checks(client):
    body = small_call(5)
    wrong = dict(body, id="0" * 64)
    assert_error(client.post("/v1/calls", wrong), 400, "EINVAL", "0" * 64, body["id"])
    assert_error(client.post("/v1/calls", dict(body, function="p2prpc_nope")), 404,
                 "ENOTFOUND", "p2prpc_nope")
    assert_error(client.post("/v1/calls", dict(body, version=V_ALL)), 409, "EVERSION",
                 V_ALL, V_SMALL)
    for field, value in [("id", "xyz"), ("id", None), ("version", "ab"), ("function", 3)]:
        bad = dict(body)
        if value is None:
            del bad[field]
        else:
            bad[field] = value
        assert_error(client.post("/v1/calls", bad), 400, "EINVAL", '"%s"' % field)
    no_args = dict(body)
    del no_args["args"]
    assert_error(client.post("/v1/calls", no_args), 400, "EINVAL", '"args"')
    assert_error(client.post("/v1/calls", dict(body, args={"n": "5"})), 400, "EINVAL",
                 "must be an array")


def test_submit_arg_shape(client, tmp_path):
    body, _ = all_call(client, tmp_path)
    args = body["args"]

    def post(new_args):
        return client.post("/v1/calls", dict(body, args=new_args))

    assert_error(post(args[:4]), 400, "EINVAL", "4 given, 5 declared")
    assert_error(post(args + [{"name": "g", "kind": "int", "value": "1"}]), 400, "EINVAL",
                 "more than the 5 declared")
    assert_error(post([args[1], args[0]] + args[2:]), 400, "EINVAL", '"n"', '"x"',
                 "declaration order")
    assert_error(post([dict(args[0], name="m")] + args[1:]), 400, "EINVAL", '"n"', '"m"')
    assert_error(post(["n"] + args[1:]), 400, "EINVAL", "entry 0 is not an object")
    assert_error(post([dict(args[0], kind="str")] + args[1:]), 400, "EINVAL",
                 '"n" is declared int', "str")
    assert_error(post(args[:2] + [dict(args[2], kind="int")] + args[3:]), 400, "EINVAL",
                 '"b" is declared bool', "int")
    no_kind = dict(args[3])
    del no_kind["kind"]
    assert_error(post(args[:3] + [no_kind] + args[4:]), 400, "EINVAL", '"s" is declared str')


@pytest.mark.parametrize("value", ["01", "-0", "1.5", "", "-", "+1", " 1", "1e3", "0x10",
                                   "12a", 12, None, True])
def test_submit_int_not_canonical_decimal(client, value):
    body = small_call(1)
    entry = {"name": "n", "kind": "int"}
    if value is not None:
        entry["value"] = value
    body["args"] = [entry]
    assert_error(client.post("/v1/calls", body), 400, "EINVAL", '"n"', "decimal integer")


def test_submit_huge_int_identity(client):
    digits = "9" + "".join(str(i % 10) for i in range(9999))  # 10,000 digits
    for text in (digits, "-" + digits):
        n = decode_int(text)
        body = {"id": _core.call_identifier_raw("p2prpc_small", V_SMALL, [("n", "i", n)]),
                "function": "p2prpc_small", "version": V_SMALL,
                "args": [{"name": "n", "kind": "int", "value": text}]}
        call = submit(client, body)
        assert call["id"] == body["id"]
    got = take_lease(client)
    assert got["call"]["args"][0]["value"] == digits
    # off by one in the last digit: another call, so the id no longer matches
    body["args"][0]["value"] = "-" + digits[:-1] + str((int(digits[-1]) + 1) % 10)
    assert_error(client.post("/v1/calls", body), 400, "EINVAL", body["id"])


@pytest.mark.parametrize("value", ["3ff000000000000", "3ff00000000000000", "zzzzzzzzzzzzzzzz",
                                   "", 1.0, True, None])
def test_submit_float_not_bits(client, tmp_path, value):
    body, _ = all_call(client, tmp_path)
    if value is None:
        del body["args"][1]["value"]
    else:
        body["args"][1]["value"] = value
    assert_error(client.post("/v1/calls", body), 400, "EINVAL", '"x"', "16 hex digits")


def test_submit_float_bits_reach_the_worker_canonical(client, tmp_path):
    """Whatever spelling of a float the broker accepts, a worker must be able to decode
    what it hands out (workers decode strictly: _wire.decode_entries)."""
    body, _ = all_call(client, tmp_path, x=1.0)
    body["args"][1]["value"] = "3FF0000000000000"
    r = client.post("/v1/calls", body)
    if r.status == 200:
        got = take_lease(client, [{"name": "p2prpc_all", "version": V_ALL}])
        assert decode_entries(got["call"]["args"], ALL_ARGS)["x"] == 1.0
    else:
        assert_error(r, 400, "EINVAL", '"x"')


@pytest.mark.parametrize("value", ["true", 1, 0, None, "false"])
def test_submit_bool_not_bool(client, tmp_path, value):
    body, _ = all_call(client, tmp_path)
    if value is None:
        del body["args"][2]["value"]
    else:
        body["args"][2]["value"] = value
    assert_error(client.post("/v1/calls", body), 400, "EINVAL", '"b"', "true or false")


@pytest.mark.parametrize("value", [5, True, None, 1.5])
def test_submit_str_not_string(client, tmp_path, value):
    body, _ = all_call(client, tmp_path)
    if value is None:
        del body["args"][3]["value"]
    else:
        body["args"][3]["value"] = value
    assert_error(client.post("/v1/calls", body), 400, "EINVAL", '"s"', "must be a string")


def test_submit_file_arg_checks(client, tmp_path):
    body, sha = all_call(client, tmp_path)
    missing = hashlib.sha256(b"never uploaded").hexdigest()
    bad = json.loads(json.dumps(body))
    bad["args"][4]["blob"] = missing
    r = client.post("/v1/calls", bad)
    # docs/API.md says 409; the engine maps ENOTFOUND to 404. Either way: ENOTFOUND.
    assert r.status in (404, 409), r
    assert_error(r, r.status, "ENOTFOUND", missing, '"f"')
    for field, value in [("blob", "ABC"), ("blob", None), ("size", None), ("size", -1),
                         ("size", "8")]:
        bad = json.loads(json.dumps(body))
        if value is None:
            del bad["args"][4][field]
        else:
            bad["args"][4][field] = value
        assert_error(client.post("/v1/calls", bad), 400, "EINVAL", '"f"', '"blob"', '"size"')
    bad = json.loads(json.dumps(body))
    bad["args"][4]["size"] += 1  # held, but not of that size
    r = client.post("/v1/calls", bad)
    assert r.status in (404, 409)
    assert_error(r, r.status, "ENOTFOUND", sha)
    # A blob still arriving is accepted (cut-through: tests/python/test_cut_through.py),
    # but not one of which the broker already has more bytes than the call says.
    partial = b"uploaded but never committed"
    partial_sha = hashlib.sha256(partial).hexdigest()
    assert chunk_put(client, partial_sha, 0, partial).status == 200
    bad = json.loads(json.dumps(body))
    bad["args"][4].update(blob=partial_sha, size=len(partial) - 1)
    r = client.post("/v1/calls", bad)
    assert r.status in (404, 409)
    assert_error(r, r.status, "ENOTFOUND", partial_sha)
    assert submit(client, body)["id"] == body["id"]


@pytest.mark.parametrize("payload,needle", [
    (b"{", "invalid JSON"),
    (b"{\"id\": ", "invalid JSON"),
    (b"not json", "invalid JSON"),
    (b"", "empty"),
    (b"[1, 2]", '"id"'),
    (b"42", "invalid JSON"),
    (b"\"text\"", "invalid JSON"),
    (b"null", "invalid JSON"),
])
def test_submit_bad_body(client, payload, needle):
    assert_error(client.post("/v1/calls", payload), 400, "EINVAL", needle)


def test_submit_body_over_limit(client):
    body = small_call(1)
    body["pad"] = "x" * (1 << 20)
    assert_error(client.post("/v1/calls", body), 413, "ELIMIT", "exceeds the metadata limit",
                 str(1 << 20))
    assert submit(client, small_call(1))["state"] == "queued"  # the connection still works


# ---- calls: read, long-poll, terminate, restart, delete ---------------------

def test_get_call_errors(client):
    assert_error(get_call(client, "0" * 64), 404, "ENOTFOUND", "0" * 64)
    assert_error(get_call(client, "G" * 64), 400, "EINVAL", "64 lowercase hex")
    assert_error(client.post("/v1/calls/%s/explode" % ("0" * 64)), 405, "EINVAL",
                 "no such operation")
    for op in ("terminate", "restart"):
        assert_error(client.post("/v1/calls/%s/%s" % ("1" * 64, op)), 404, "ENOTFOUND", "1" * 64)
    assert_error(client.delete("/v1/calls/" + "2" * 64), 404, "ENOTFOUND", "2" * 64)


def test_long_poll_waits_then_answers(client):
    call = submit(client, small_call(3))
    t0 = time.monotonic()
    r = get_call(client, call["id"], "?wait_ms=500&since=%d" % call["updated_ms"])
    waited = time.monotonic() - t0
    assert r.status == 200 and r.json()["call"] == call
    assert 0.45 <= waited < 0.8, waited  # the broker counts whole ms on its own clock
    t0 = time.monotonic()
    r = get_call(client, call["id"], "?wait_ms=5000&since=%d" % (call["updated_ms"] - 1))
    assert time.monotonic() - t0 < 0.1 and r.json()["call"] == call
    t0 = time.monotonic()
    r = get_call(client, call["id"], "?wait_ms=5000")  # no since: nothing to compare with
    assert time.monotonic() - t0 < 0.1 and r.status == 200


def test_long_poll_woken_by_heartbeat_result_and_delete(broker, client, make_client):
    call = submit(client, small_call(4))
    got = take_lease(client)
    lease_id = got["lease"]["id"]
    since = get_call(client, call["id"]).json()["call"]["updated_ms"]
    assert since == got["call"]["updated_ms"]
    path = "/v1/calls/%s?wait_ms=5000&since=%d" % (call["id"], since)

    bg = parked(broker, make_client, "GET", path)
    r = client.post("/v1/leases/%s/heartbeat" % lease_id, {"call_id": call["id"], "progress": 40})
    acted = time.monotonic()
    assert r.status == 200, r
    seen = bg.join().json()["call"]
    assert bg.done_at - acted < 0.1, bg.done_at - acted
    assert seen["progress"] == 40 and seen["state"] == "leased"

    path = "/v1/calls/%s?wait_ms=5000&since=%d" % (call["id"], seen["updated_ms"])
    bg = parked(broker, make_client, "GET", path)
    r = client.post("/v1/leases/%s/result" % lease_id,
                    {"call_id": call["id"], "state": "done",
                     "outputs": [{"name": "m", "kind": "int", "value": "8"}]})
    acted = time.monotonic()
    assert r.status == 200, r
    seen = bg.join().json()["call"]
    assert bg.done_at - acted < 0.1
    assert seen["state"] == "done" and seen["outputs"][0]["value"] == "8"
    # terminal: answers at once whatever since says
    t0 = time.monotonic()
    r = get_call(client, call["id"], "?wait_ms=5000&since=%d" % seen["updated_ms"])
    assert r.status == 200 and time.monotonic() - t0 < 0.1

    other = submit(client, small_call(5))
    bg = parked(broker, make_client, "GET",
                "/v1/calls/%s?wait_ms=5000&since=%d" % (other["id"], other["updated_ms"]))
    r = client.delete("/v1/calls/" + other["id"])
    acted = time.monotonic()
    assert r.status == 200 and r.json() == {"deleted": True}
    assert_error(bg.join(), 404, "ENOTFOUND", other["id"])
    assert bg.done_at - acted < 0.1
    assert_error(get_call(client, other["id"]), 404, "ENOTFOUND", other["id"])
    assert_error(client.delete("/v1/calls/" + other["id"]), 404, "ENOTFOUND", other["id"])
    # the deleted call may be submitted again, as new
    again = client.post("/v1/calls", small_call(5)).json()
    assert again["created"] is True and again["call"]["state"] == "queued"


def test_submit_and_wait_answers_when_the_call_ends(broker, client, make_client):
    body = small_call(40)
    # Nobody works on it: the wait runs out and the answer is the queued record.
    t0 = time.monotonic()
    r = client.post("/v1/calls?wait_ms=300", body)
    waited = time.monotonic() - t0
    assert r.status == 200, r
    assert r.json()["created"] is True and r.json()["call"]["state"] == "queued"
    assert 0.3 <= waited < 0.6, waited
    # The same call again, waiting: a lease and a heartbeat do not answer it, the result does.
    bg = parked(broker, make_client, "POST", "/v1/calls?wait_ms=5000", body)
    got = take_lease(client)
    lease_id = got["lease"]["id"]
    assert client.post("/v1/leases/%s/heartbeat" % lease_id,
                       {"call_id": body["id"], "progress": 50}).status == 200
    time.sleep(0.2)
    assert bg.done_at is None, "answered before the call ended: %r" % (bg.result,)
    r = client.post("/v1/leases/%s/result" % lease_id,
                    {"call_id": body["id"], "state": "done",
                     "outputs": [{"name": "m", "kind": "int", "value": "80"}]})
    acted = time.monotonic()
    assert r.status == 200, r
    seen = bg.join().json()
    assert bg.done_at - acted < 0.1
    assert seen["created"] is False and seen["call"]["state"] == "done"
    assert seen["call"]["outputs"][0]["value"] == "80"
    # Ended already: answered at once.
    t0 = time.monotonic()
    r = client.post("/v1/calls?wait_ms=5000", body)
    assert r.status == 200 and r.json()["call"]["state"] == "done"
    assert time.monotonic() - t0 < 0.1
    # A refused submit is refused at once, waiting or not.
    bad = dict(small_call(41), version="0" * 64)
    t0 = time.monotonic()
    assert_error(client.post("/v1/calls?wait_ms=5000", bad), 409, "EVERSION")
    assert time.monotonic() - t0 < 0.1
    # A deleted call ends the wait with 404.
    other = small_call(42)
    bg = parked(broker, make_client, "POST", "/v1/calls?wait_ms=5000", other)
    assert client.delete("/v1/calls/" + other["id"]).status == 200
    assert_error(bg.join(), 404, "ENOTFOUND", other["id"])


def test_terminate_queued_and_restart(client):
    call = submit(client, small_call(6))
    r = client.post("/v1/calls/%s/terminate" % call["id"])
    assert r.status == 200, r
    t = r.json()["call"]
    assert t["state"] == "terminated" and t["finished_ms"] > 0
    assert lease(client).status == 204  # nothing left to run
    r = client.post("/v1/calls/%s/restart" % call["id"])
    assert r.status == 200
    back = r.json()["call"]
    assert back["state"] == "queued" and back["finished_ms"] == 0
    assert back["outputs"] is None and back["error"] is None and back["attempts"] == 0
    got = take_lease(client)
    assert got["call"]["id"] == call["id"] and got["call"]["attempts"] == 1


def test_restart_or_delete_a_leased_call(client):
    call = submit(client, small_call(16))
    lease_id = take_lease(client)["lease"]["id"]
    r = client.post("/v1/calls/%s/restart" % call["id"])
    assert r.status == 200 and r.json()["call"]["state"] == "queued"
    # the old lease is void: its heartbeat and result are refused, the call runs again
    assert_error(client.post("/v1/leases/%s/heartbeat" % lease_id,
                             {"call_id": call["id"], "progress": 5}), 409, "ESTATE", lease_id,
                 "queued")
    assert_error(client.post("/v1/leases/%s/result" % lease_id,
                             {"call_id": call["id"], "state": "done",
                              "outputs": [{"name": "m", "kind": "int", "value": "1"}]}),
                 409, "ESTATE", lease_id)
    again = take_lease(client)
    assert again["call"]["id"] == call["id"] and again["lease"]["id"] != lease_id
    assert client.delete("/v1/calls/" + call["id"]).status == 200
    r = client.post("/v1/leases/%s/heartbeat" % again["lease"]["id"],
                    {"call_id": call["id"], "progress": 5})
    assert_error(r, 404, "ENOTFOUND", call["id"])
    r = client.post("/v1/leases/%s/result" % again["lease"]["id"],
                    {"call_id": call["id"], "state": "failed", "error": {"type": "E"}})
    assert_error(r, 404, "ENOTFOUND", call["id"])


def test_terminate_a_finished_call_changes_nothing(client):
    call = submit(client, small_call(17))
    lease_id = take_lease(client)["lease"]["id"]
    done = client.post("/v1/leases/%s/result" % lease_id,
                       {"call_id": call["id"], "state": "done",
                        "outputs": [{"name": "m", "kind": "int", "value": "34"}]}).json()["call"]
    r = client.post("/v1/calls/%s/terminate" % call["id"])
    assert r.status == 200 and r.json()["call"] == done


def test_restart_clears_outputs(client):
    call = submit(client, small_call(7))
    got = take_lease(client)
    r = client.post("/v1/leases/%s/result" % got["lease"]["id"],
                    {"call_id": call["id"], "state": "done",
                     "outputs": [{"name": "m", "kind": "int", "value": "14"}]})
    assert r.json()["call"]["state"] == "done"
    r = client.post("/v1/calls/%s/restart" % call["id"])
    back = r.json()["call"]
    assert back["state"] == "queued" and back["outputs"] is None and back["progress"] == 0
    assert take_lease(client)["call"]["id"] == call["id"]


# ---- leases -----------------------------------------------------------------

def test_lease_waits_then_204(client):
    t0 = time.monotonic()
    r = lease(client, wait_ms=400)
    waited = time.monotonic() - t0
    assert r.status == 204 and r.body == b""
    assert 0.4 <= waited < 0.7, waited
    t0 = time.monotonic()
    assert lease(client, wait_ms=0).status == 204
    assert time.monotonic() - t0 < 0.1
    # a function this broker does not serve is no error: there is just no work for it
    assert lease(client, [{"name": "p2prpc_other", "version": V_SMALL}]).status == 204


def test_lease_woken_by_submit(broker, client, make_client):
    bg = parked(broker, make_client, "POST", "/v1/leases",
                {"worker": "w9", "functions": SMALL, "wait_ms": 5000})
    body = small_call(8)
    r = client.post("/v1/calls", body)
    acted = time.monotonic()
    assert r.status == 200
    got = bg.join()
    assert bg.done_at - acted < 0.1, bg.done_at - acted
    assert got.status == 200, got
    answer = got.json()
    assert answer["lease"]["call_id"] == body["id"]
    assert answer["call"]["args"] == body["args"]
    # readers learn the lease
    assert get_call(client, body["id"]).json()["call"]["state"] == "leased"


def test_lease_answer(client, tmp_path):
    body, _ = all_call(client, tmp_path)
    submit(client, body)
    submit(client, small_call(9))
    before = time.time() * 1000
    got = take_lease(client, SMALL + [{"name": "p2prpc_all", "version": V_ALL}], worker="gpu-1")
    lease_ = got["lease"]
    assert len(lease_["id"]) == 32 and all(c in "0123456789abcdef" for c in lease_["id"])
    assert lease_["call_id"] == body["id"]  # the oldest queued call first
    assert lease_["heartbeat_ms"] == 700
    assert before + 29000 < lease_["deadline_ms"] < time.time() * 1000 + 31000
    call = got["call"]
    assert call["state"] == "leased" and call["attempts"] == 1
    assert call["args"] == body["args"]
    second = take_lease(client, SMALL)
    assert second["lease"]["id"] != lease_["id"]
    assert lease(client, SMALL + [{"name": "p2prpc_all", "version": V_ALL}]).status == 204


def test_lease_version_mismatch(client):
    submit(client, small_call(10))
    r = lease(client, [{"name": "p2prpc_small", "version": V_ALL}])
    assert_error(r, 409, "EVERSION", "p2prpc_small", V_ALL, V_SMALL)


@pytest.mark.parametrize("payload,needle", [
    ({}, '"worker"'),
    ({"worker": "w", "wait_ms": 0}, '"functions"'),
    ({"worker": "", "functions": SMALL}, '"worker"'),
    ({"worker": 5, "functions": SMALL}, '"worker"'),
    ({"worker": "w", "functions": "p2prpc_small"}, '"functions"'),
    ({"worker": "w", "functions": []}, "1 to"),
    ({"worker": "w", "functions": [{"name": "p2prpc_small"}]}, "a name and a version"),
    ({"worker": "w", "functions": ["p2prpc_small"]}, "a name and a version"),
    ({"worker": "w" * 1000, "functions": SMALL}, '"worker"'),
    (b"{worker", "invalid JSON"),
    (b"", "empty"),
])
def test_lease_bad_body(client, payload, needle):
    assert_error(client.post("/v1/leases", payload), 400, "EINVAL", needle)


def test_lease_unknown_path(client):
    assert_error(client.post("/v1/leases/%s/explode" % ("a" * 32), {}), 404, "ENOTFOUND",
                 "no such operation")
    assert_error(client.post("/v1/leases/%s/heartbeat" % ("Z" * 32), {}), 400, "EINVAL",
                 "32 lowercase hex")


def test_heartbeat(client):
    call = submit(client, small_call(11))
    got = take_lease(client)
    lease_id = got["lease"]["id"]
    hb = "/v1/leases/%s/heartbeat" % lease_id
    time.sleep(0.05)
    r = client.post(hb, {"call_id": call["id"], "progress": 12.5})
    assert r.status == 200, r
    answer = r.json()
    assert answer["terminate"] is False
    assert answer["deadline_ms"] > got["lease"]["deadline_ms"]
    seen = get_call(client, call["id"]).json()["call"]
    assert seen["progress"] == 12.5 and seen["state"] == "leased"
    # a lease that is not this call's
    other = "f" * 32
    assert_error(client.post("/v1/leases/%s/heartbeat" % other,
                             {"call_id": call["id"], "progress": 1}), 409, "ESTATE", other)
    assert_error(client.post(hb, {"call_id": "e" * 64, "progress": 1}), 404, "ENOTFOUND",
                 "e" * 64)
    # a terminate order rides back on the next heartbeat
    r = client.post("/v1/calls/%s/terminate" % call["id"])
    assert r.status == 200 and r.json()["call"]["state"] == "leased"
    r = client.post(hb, {"call_id": call["id"], "progress": 13})
    assert r.status == 200 and r.json()["terminate"] is True
    r = client.post("/v1/leases/%s/result" % lease_id,
                    {"call_id": call["id"], "state": "terminated"})
    assert r.status == 200, r
    assert r.json()["call"]["state"] == "terminated"
    assert_error(client.post(hb, {"call_id": call["id"], "progress": 14}), 409, "ESTATE",
                 lease_id, "terminated")


@pytest.mark.parametrize("payload,needles", [
    pytest.param({"progress": 5}, ['"call_id"'], id="no-call-id"),
    pytest.param({"call_id": "x", "progress": 5}, ['"call_id"'], id="bad-call-id"),
    pytest.param({"call_id": None, "progress": 101}, ['"progress"', "0..100"], id="over-100"),
    pytest.param({"call_id": None, "progress": -1}, ['"progress"', "0..100"], id="negative"),
    pytest.param({"call_id": None, "progress": "50"}, ['"progress"'], id="progress-string"),
    pytest.param({"call_id": None, "progress": None}, ['"progress"'], id="no-progress"),
    pytest.param(b"{", ["invalid JSON"], id="invalid-json"),
    pytest.param(b"", ["empty"], id="empty"),
])
def test_heartbeat_bad_body(client, payload, needles):
    """(call_id None: the leased call's id; progress None: left out.)"""
    call = submit(client, small_call(11))
    lease_id = take_lease(client)["lease"]["id"]
    if isinstance(payload, dict):
        payload = {k: v for k, v in payload.items() if k != "progress" or v is not None}
        if "call_id" in payload and payload["call_id"] is None:
            payload["call_id"] = call["id"]
    r = client.post("/v1/leases/%s/heartbeat" % lease_id, payload)
    assert_error(r, 400, "EINVAL", *needles)
    assert get_call(client, call["id"]).json()["call"]["progress"] == 0


def test_heartbeat_keeps_a_short_lease(make_broker, make_client):
    b = make_broker(lease_ms=300)
    c = make_client(b)
    call = submit(c, small_call(12))
    lease_id = take_lease(c)["lease"]["id"]
    for i in range(8):  # 0.8 s: well past the 300 ms lease
        time.sleep(0.1)
        r = c.post("/v1/leases/%s/heartbeat" % lease_id, {"call_id": call["id"], "progress": i})
        assert r.status == 200, r
    seen = get_call(c, call["id"]).json()["call"]
    assert seen["state"] == "leased" and seen["attempts"] == 1


def test_stale_lease_is_requeued(make_broker, make_client):
    b = make_broker(lease_ms=300, max_attempts=5)
    c = make_client(b)
    call = submit(c, small_call(13))
    first = take_lease(c, worker="slow")["lease"]["id"]
    t0 = time.monotonic()
    r = lease(c, wait_ms=3000, worker="fast")
    assert r.status == 200, r
    assert 0.2 < time.monotonic() - t0 < 1.5
    second = r.json()
    assert second["lease"]["id"] != first and second["call"]["id"] == call["id"]
    assert second["call"]["attempts"] == 2
    assert_error(c.post("/v1/leases/%s/heartbeat" % first, {"call_id": call["id"], "progress": 1}),
                 409, "ESTATE", first, "fast")
    assert_error(c.post("/v1/leases/%s/result" % first,
                        {"call_id": call["id"], "state": "done",
                         "outputs": [{"name": "m", "kind": "int", "value": "1"}]}),
                 409, "ESTATE", first)
    r = c.post("/v1/leases/%s/heartbeat" % second["lease"]["id"],
               {"call_id": call["id"], "progress": 3})
    assert r.status == 200


def test_max_attempts_fails_the_call(make_broker, make_client):
    b = make_broker(lease_ms=200, max_attempts=2)
    c = make_client(b)
    call = submit(c, small_call(14))
    take_lease(c, worker="a")
    r = lease(c, wait_ms=3000, worker="b")
    assert r.status == 200 and r.json()["call"]["attempts"] == 2
    deadline = time.monotonic() + 3
    while True:
        seen = get_call(c, call["id"], "?wait_ms=1000&since=%d" % r.json()["call"]["updated_ms"])
        seen = seen.json()["call"]
        if seen["state"] != "leased" or time.monotonic() > deadline:
            break
    assert seen["state"] == "failed", seen
    assert seen["error"]["type"] == "p2prpc.LeaseExpired"
    assert "2" in seen["error"]["message"] and "b" in seen["error"]["message"]
    assert seen["finished_ms"] > 0
    assert lease(c).status == 204


def test_result_done_checks_outputs(client, tmp_path):
    body, _ = all_call(client, tmp_path)
    submit(client, body)
    got = take_lease(client, [{"name": "p2prpc_all", "version": V_ALL}])
    res = "/v1/leases/%s/result" % got["lease"]["id"]
    out_data = b"the output\n"
    out_sha = hashlib.sha256(out_data).hexdigest()
    outputs = all_outputs(out_sha, len(out_data))

    def post(new_outputs, **extra):
        return client.post(res, dict({"call_id": body["id"], "state": "done",
                                      "outputs": new_outputs}, **extra))

    r = post(outputs)
    assert r.status in (404, 409), r  # docs/API.md says 409; either way ENOTFOUND
    assert_error(r, r.status, "ENOTFOUND", out_sha, '"out"')
    client.upload(out_data)
    assert_error(post(outputs[:4]), 400, "EINVAL", "4 given, 5 declared")
    assert_error(post(outputs + [outputs[0]]), 400, "EINVAL", "more than the 5 declared")
    assert_error(post([dict(outputs[0], name="sum")] + outputs[1:]), 400, "EINVAL",
                 '"total"', '"sum"')
    assert_error(post([dict(outputs[0], kind="float")] + outputs[1:]), 400, "EINVAL",
                 '"total" is declared int')
    assert_error(post([dict(outputs[0], value="1.5")] + outputs[1:]), 400, "EINVAL",
                 '"total"', "decimal integer")
    assert_error(post(outputs[:2] + [dict(outputs[2], value="no")] + outputs[3:]), 400,
                 "EINVAL", '"ok"')
    assert_error(post({"total": 1}), 400, "EINVAL", "must be an array")
    no_outputs = {"call_id": body["id"], "state": "done"}
    assert_error(client.post(res, no_outputs), 400, "EINVAL", '"outputs"')
    assert_error(post(outputs, state="finished"), 400, "EINVAL", "done, failed or terminated")
    assert_error(client.post(res, {"state": "done", "outputs": outputs}), 400, "EINVAL",
                 '"call_id"')
    assert_error(client.post(res, b"{]"), 400, "EINVAL", "invalid JSON")
    assert get_call(client, body["id"]).json()["call"]["state"] == "leased"

    r = post(outputs)
    assert r.status == 200, r
    call = r.json()["call"]
    assert call["state"] == "done" and call["progress"] == 100 and call["finished_ms"] > 0
    assert call["outputs"] == outputs and call["error"] is None
    values = decode_entries(call["outputs"], ALL_RETURNS)
    assert values["ratio"] == 0.25 and values["out"].blob == out_sha
    again = post(outputs)  # the same result, retried: accepted again
    assert again.status == 200 and again.json()["call"]["outputs"] == outputs
    assert_error(client.post(res, {"call_id": body["id"], "state": "failed",
                                   "error": {"type": "X", "message": "m", "traceback": ""}}),
                 409, "ESTATE", "done", "failed")
    # the output blob is downloadable
    assert client.get("/v1/blobs/" + out_sha).body == out_data


def test_result_failed_carries_the_error(client):
    call = submit(client, small_call(15))
    lease_id = take_lease(client)["lease"]["id"]
    error = {"type": "ValueError", "message": "bad n: 15",
             "traceback": "Traceback (most recent call last):\n  ...\nValueError: bad n: 15\n"}
    r = client.post("/v1/leases/%s/result" % lease_id,
                    {"call_id": call["id"], "state": "failed", "error": error})
    assert r.status == 200, r
    seen = get_call(client, call["id"]).json()["call"]
    assert seen["state"] == "failed" and seen["error"] == error and seen["outputs"] is None
    assert client.post("/v1/leases/%s/result" % lease_id,
                       {"call_id": call["id"], "state": "failed", "error": error}).status == 200
    stats = client.get("/v1/functions/p2prpc_small/stats").json()
    assert stats["failed"] == 1 and stats["queued"] == 0


# ---- blobs ------------------------------------------------------------------

def test_blob_upload_resume_and_download(client):
    data = os.urandom(300000)
    sha = hashlib.sha256(data).hexdigest()
    r = client.head("/v1/blobs/" + sha)
    assert r.status == 404 and r.headers["x-p2prpc-partial"] == "0"
    r = chunk_put(client, sha, 0, data[:100000])
    assert r.status == 200 and r.json() == {"partial": 100000}
    r = client.head("/v1/blobs/" + sha)
    assert r.status == 404 and r.headers["x-p2prpc-partial"] == "100000"
    assert_error(chunk_put(client, sha, 0, data[:100000]), 409, "ESTATE", "offset 0", "100000")
    assert_error(chunk_put(client, sha, 200000, data[200000:]), 409, "ESTATE", "offset 200000",
                 "100000")
    assert_error(chunk_put(client, sha, 100000, data[100000:200000], "0" * 64), 400, "ECORRUPT",
                 "offset 100000", sha)
    r = client.put("/v1/blobs/%s?offset=100000" % sha, data[100000:200000])
    assert_error(r, 400, "EINVAL", "X-P2PRPC-Chunk-Sha256")
    r = client.put("/v1/blobs/%s" % sha, data[100000:200000], headers={
        "X-P2PRPC-Chunk-Sha256": hashlib.sha256(data[100000:200000]).hexdigest()})
    assert_error(r, 400, "EINVAL", "offset")
    assert client.head("/v1/blobs/" + sha).headers["x-p2prpc-partial"] == "100000"
    assert chunk_put(client, sha, 100000, data[100000:200000]).json() == {"partial": 200000}
    assert chunk_put(client, sha, 200000, data[200000:]).json() == {"partial": 300000}
    r = client.post("/v1/blobs/%s/commit?size=300000" % sha)
    assert r.status == 200 and r.json() == {"size": 300000}
    r = client.head("/v1/blobs/" + sha)
    assert r.status == 200 and r.headers["content-length"] == "300000"
    assert client.post("/v1/blobs/%s/commit?size=300000" % sha).status == 200  # idempotent
    r = chunk_put(client, sha, 0, data[:10])  # already whole: nothing to write
    assert r.status == 200 and r.json()["partial"] == 300000
    r = client.get("/v1/blobs/" + sha)
    assert r.status == 200 and r.body == data


def test_blob_range(client):
    data = os.urandom(5000)
    sha = client.upload(data)
    for spec, want in [("bytes=1000-1999", data[1000:2000]), ("bytes=4990-", data[4990:]),
                       ("bytes=-10", data[-10:])]:
        r = client.get("/v1/blobs/" + sha, headers={"Range": spec})
        assert (r.status, len(r.body)) == (206, len(want)), spec
        assert r.body == want
        assert r.headers["content-range"].startswith("bytes ")


def test_blob_commit_failures_drop_the_partial(client):
    data = b"some content to commit"
    sha = hashlib.sha256(data).hexdigest()
    chunk_put(client, sha, 0, data)
    assert_error(client.post("/v1/blobs/%s/commit?size=5" % sha), 400, "ECORRUPT", sha,
                 "dropped")
    assert client.head("/v1/blobs/" + sha).headers["x-p2prpc-partial"] == "0"
    wrong = b"other content, same length!"[:len(data)]
    chunk_put(client, sha, 0, wrong)
    assert_error(client.post("/v1/blobs/%s/commit?size=%d" % (sha, len(data))), 400, "ECORRUPT",
                 sha, hashlib.sha256(wrong).hexdigest())
    r = client.head("/v1/blobs/" + sha)
    assert r.status == 404 and r.headers["x-p2prpc-partial"] == "0"
    assert_error(client.post("/v1/blobs/%s/commit?size=%d" % (sha, len(data))), 404, "ENOTFOUND",
                 sha)
    assert_error(client.post("/v1/blobs/%s/commit" % sha), 400, "EINVAL", "size")
    assert client.upload(data) == sha


def test_blob_names_and_methods(client):
    missing = hashlib.sha256(b"absent").hexdigest()
    assert_error(client.get("/v1/blobs/" + missing), 404, "ENOTFOUND", "blob")
    for bad in ("A" * 64, "g" * 64):
        assert_error(client.get("/v1/blobs/" + bad), 400, "EINVAL", "64 lowercase hex")
        assert client.head("/v1/blobs/" + bad).status == 400
        assert_error(chunk_put(client, bad, 0, b"x"), 400, "EINVAL", "64 lowercase hex")
    assert_error(client.delete("/v1/blobs/" + missing), 405, "EINVAL", "not allowed")


def test_blob_empty(client):
    sha = hashlib.sha256(b"").hexdigest()
    r = chunk_put(client, sha, 0, b"")
    assert r.status == 200 and r.json() == {"partial": 0}
    r = client.post("/v1/blobs/%s/commit?size=0" % sha)
    assert r.status == 200 and r.json() == {"size": 0}
    r = client.head("/v1/blobs/" + sha)
    assert r.status == 200 and r.headers["content-length"] == "0"
    r = client.get("/v1/blobs/" + sha)
    assert r.status == 200 and r.body == b""


def test_blob_chunk_limits(client):
    big = b"\0" * (CHUNK_MAX + 1)
    sha = hashlib.sha256(big).hexdigest()
    assert_error(chunk_put(client, sha, 0, big), 413, "ELIMIT", str(CHUNK_MAX + 1), str(CHUNK_MAX))
    assert client.head("/v1/blobs/" + sha).headers["x-p2prpc-partial"] == "0"
    whole = b"\0" * CHUNK_MAX  # exactly the limit is fine
    r = chunk_put(client, hashlib.sha256(whole).hexdigest(), 0, whole)
    assert r.status == 200 and r.json() == {"partial": CHUNK_MAX}
    huge = b"\0" * (CHUNK_MAX + 64 * 1024 + 1)  # past what the server reads at all
    huge_sha = hashlib.sha256(huge).hexdigest()
    try:
        status = chunk_put(client, huge_sha, 0, huge).status
    except (BrokenPipeError, ConnectionResetError):
        status = None  # the connection was closed before the body was read: also a refusal
    assert status in (413, None)
    client.close()  # reconnects on the next request
    r = client.head("/v1/blobs/" + huge_sha)
    assert r.status == 404 and r.headers["x-p2prpc-partial"] == "0"


# ---- authentication ---------------------------------------------------------

PASSWORD_KEY = None


def network_key():
    global PASSWORD_KEY
    if PASSWORD_KEY is None:
        PASSWORD_KEY = _core.derive_key("pw")
    return PASSWORD_KEY


def test_key_derivation_matches_the_spec():
    assert network_key() == derive_key("pw")
    assert len(network_key()) == 32


def signed_routes(call_id, lease_id, sha):
    return [
        ("GET", "/v1/functions", None),
        ("GET", "/v1/functions/p2prpc_small/stats", None),
        ("GET", "/v1/nodes", None),
        ("POST", "/v1/calls", small_call(99)),
        ("GET", "/v1/calls/%s?wait_ms=0" % call_id, None),
        ("POST", "/v1/calls/%s/terminate" % call_id, None),
        ("POST", "/v1/calls/%s/restart" % call_id, None),
        ("DELETE", "/v1/calls/%s" % call_id, None),
        ("POST", "/v1/leases", {"worker": "w", "functions": SMALL, "wait_ms": 0}),
        ("POST", "/v1/leases/%s/heartbeat" % lease_id, {"call_id": call_id, "progress": 1}),
        ("POST", "/v1/leases/%s/result" % lease_id,
         {"call_id": call_id, "state": "failed", "error": {"type": "E"}}),
        ("HEAD", "/v1/blobs/%s" % sha, None),
        ("PUT", "/v1/blobs/%s?offset=0" % sha, b"abc"),
        ("POST", "/v1/blobs/%s/commit?size=3" % sha, None),
        ("GET", "/v1/blobs/%s" % sha, None),
        ("GET", "/v1/metrics", None),
        ("POST", "/v1/calls/batch", {"calls": [small_call(98)]}),
        ("POST", "/v1/calls/wait", {"ids": [call_id], "wait_ms": 0}),
        ("POST", "/v1/leases/%s/checkpoints" % lease_id,
         {"call_id": call_id, "key": "k", "blob": sha, "size": 3}),
    ]


def test_auth_refuses_every_route(make_broker, make_client):
    key = network_key()
    b = make_broker(key=key)
    good = make_client(b, key=key)
    call = submit(good, small_call(20))
    lease_id = take_lease(good)["lease"]["id"]
    sha = hashlib.sha256(b"abc").hexdigest()
    plain = make_client(b)
    wrong_key = derive_key("not pw")
    old = int(time.time() * 1000) - 6 * 60 * 1000
    for method, path, body in signed_routes(call["id"], lease_id, sha):
        data = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
        chunk = {"X-P2PRPC-Chunk-Sha256": hashlib.sha256(data).hexdigest()}
        other_method = "POST" if method == "GET" else "GET"
        attempts = {
            "unsigned": {},
            "wrong password": auth_headers(wrong_key, method, path, data),
            "tampered body": auth_headers(key, method, path, data + b" "),
            "tampered query": auth_headers(key, method,
                                           path + ("&x=1" if "?" in path else "?x=1"), data),
            "other method": auth_headers(key, other_method, path, data),
            "old timestamp": auth_headers(key, method, path, data, time_ms=old),
            "future timestamp": auth_headers(key, method, path, data,
                                             time_ms=int(time.time() * 1000) + 6 * 60 * 1000),
            "short nonce": dict(auth_headers(key, method, path, data),
                                **{"X-P2PRPC-Nonce": "abc"}),
            "no time": {k: v for k, v in auth_headers(key, method, path, data).items()
                        if k != "X-P2PRPC-Time"},
        }
        for what, signed in attempts.items():
            r = plain.request(method, path, body, headers=dict(chunk, **signed), sign=False)
            assert r.status == 401, (method, path, what, r)
            if method != "HEAD":
                code, message = r.error
                assert code == "EAUTH", (method, path, what, r)
                assert "authentication" in message
                if "X-P2PRPC-Signature" in signed:
                    assert signed["X-P2PRPC-Signature"] not in message
                assert key.hex() not in message
    r = plain.get("/v1/nodes")
    assert "not signed" in r.error[1]
    r = plain.get("/v1/nodes", key=wrong_key)
    assert "wrong password or tampered" in r.error[1]
    r = plain.get("/v1/nodes", key=key, time_ms=old)
    assert "timestamp" in r.error[1]
    # nothing was changed by the refused requests
    seen = good.get("/v1/calls/" + call["id"]).json()["call"]
    assert seen["state"] == "leased" and seen["progress"] == 0
    assert good.head("/v1/blobs/" + sha).headers["x-p2prpc-partial"] == "0"


def test_auth_refuses_a_replayed_request_on_every_route(make_broker, make_client):
    key = network_key()
    b = make_broker(key=key)
    good = make_client(b, key=key)
    call = submit(good, small_call(22))
    lease_id = take_lease(good)["lease"]["id"]
    sha = hashlib.sha256(b"abc").hexdigest()
    plain = make_client(b)
    for method, path, body in signed_routes(call["id"], lease_id, sha):
        data = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
        headers = dict(auth_headers(key, method, path, data),
                       **{"X-P2PRPC-Chunk-Sha256": hashlib.sha256(data).hexdigest()})
        first = plain.request(method, path, body, headers=headers, sign=False)
        assert first.status != 401, (method, path, first)
        again = plain.request(method, path, body, headers=headers, sign=False)
        assert again.status == 401, (method, path, again)
        if method != "HEAD":
            code, message = again.error
            assert code == "EAUTH" and "replayed" in message, (method, path, message)


def test_auth_accepts_signed_requests(make_broker, make_client):
    key = network_key()
    b = make_broker(key=key)
    plain = make_client(b)
    r = plain.get("/v1/health")
    assert r.status == 200 and r.json()["ok"] is True
    c = make_client(b, key=key)
    assert c.get("/v1/functions").status == 200
    assert c.get("/v1/nodes").status == 200
    sha = c.upload(b"abc")  # PUT and commit, signed
    assert c.head("/v1/blobs/" + sha).status == 200
    assert c.get("/v1/blobs/" + sha).body == b"abc"
    call = submit(c, small_call(21))
    assert c.get("/v1/calls/%s?wait_ms=0" % call["id"]).status == 200
    got = take_lease(c)
    lease_id = got["lease"]["id"]
    assert c.post("/v1/leases/%s/heartbeat" % lease_id,
                  {"call_id": call["id"], "progress": 2}).status == 200
    r = c.post("/v1/leases/%s/result" % lease_id,
               {"call_id": call["id"], "state": "done",
                "outputs": [{"name": "m", "kind": "int", "value": "42"}]})
    assert r.status == 200, r
    assert c.get("/v1/functions/p2prpc_small/stats").json()["done"] == 1
    assert c.post("/v1/calls/%s/restart" % call["id"]).status == 200
    assert c.post("/v1/calls/%s/terminate" % call["id"]).status == 200
    assert c.delete("/v1/calls/" + call["id"]).status == 200
    # the engine's own client signs the same way
    conn = _core.Connection("127.0.0.1:%d" % b.port, key=key)
    try:
        status, body = conn.request("GET", "/v1/functions")
        assert status == 200 and json.loads(body) == {"functions": FUNCTIONS}
    finally:
        conn.close()


# ---- retention --------------------------------------------------------------

def test_retention_removes_finished_calls_and_their_blobs(make_broker, make_client, tmp_path):
    b = make_broker(expire_ms=500)
    c = make_client(b)
    data_dir = tmp_path / "data"
    body, in_sha = all_call(c, tmp_path, data=b"input of the finished call")
    submit(c, body)
    got = take_lease(c, [{"name": "p2prpc_all", "version": V_ALL}])
    out_data = b"output of the finished call"
    out_sha = c.upload(out_data)
    r = c.post("/v1/leases/%s/result" % got["lease"]["id"],
               {"call_id": body["id"], "state": "done",
                "outputs": all_outputs(out_sha, len(out_data))})
    assert r.status == 200, r
    live_body, live_sha = all_call(c, tmp_path, n=8, data=b"input of the queued call")
    live = submit(c, live_body)
    assert blob_file(data_dir, in_sha).exists() and blob_file(data_dir, out_sha).exists()
    t0 = time.monotonic()
    while get_call(c, body["id"]).status == 200:
        assert time.monotonic() - t0 < 2.5, "the finished call was not expired"
        time.sleep(0.05)
    assert_error(get_call(c, body["id"]), 404, "ENOTFOUND", body["id"])
    while blob_file(data_dir, in_sha).exists() or blob_file(data_dir, out_sha).exists():
        assert time.monotonic() - t0 < 2.5, "the blobs of the expired call were kept"
        time.sleep(0.05)
    assert c.head("/v1/blobs/" + out_sha).status == 404
    time.sleep(max(0.0, 1.2 - (time.monotonic() - t0)))  # a few retention passes
    seen = get_call(c, live["id"])
    assert seen.status == 200 and seen.json()["call"]["state"] == "queued"
    assert blob_file(data_dir, live_sha).exists()
    assert c.head("/v1/blobs/" + live_sha).status == 200


# ---- binding, configuration, stop ------------------------------------------

def test_public_address_needs_a_password(tmp_path):
    with pytest.raises(InvalidInputError, match="set a password"):
        _core.Broker(json.dumps(FUNCTIONS), str(tmp_path / "data"), host="0.0.0.0")
    b = _core.Broker(json.dumps(FUNCTIONS), str(tmp_path / "data"), host="0.0.0.0",
                     insecure=True)
    try:
        b.start()
        assert b.port > 0
        c = BrokerClient(b.port)
        assert c.get("/v1/health").status == 200
        c.close()
    finally:
        b.stop()
    b = _core.Broker(json.dumps(FUNCTIONS), str(tmp_path / "data2"), host="0.0.0.0",
                     key=network_key())
    b.stop()


def test_port_in_use(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        with pytest.raises(P2PRPCError, match="127.0.0.1:%d" % port) as info:
            _core.Broker(json.dumps(FUNCTIONS), str(tmp_path / "data"), port=port)
        assert isinstance(info.value, AlreadyExistsError)
        assert "in use" in str(info.value)
    finally:
        s.close()


def bad_function(**change):
    f = dict(FUNCTIONS[1], **change)
    return [{k: v for k, v in f.items() if v is not None}]


@pytest.mark.parametrize("functions_json,needle", [
    ("not json", "invalid JSON"),
    ("", "empty"),
    ("[]", "got 0"),
    (json.dumps(bad_function(version=None)), "64-hex version"),
    (json.dumps(bad_function(version="12")), "64-hex version"),
    (json.dumps(bad_function(name="")), "needs a name"),
    (json.dumps(bad_function(args=[{"name": "n", "kind": "complex"}])), "kind"),
    (json.dumps(bad_function(args=[{"name": "n"}])), "kind"),
    (json.dumps(bad_function(returns=None)), '"returns"'),
    (json.dumps(bad_function(args="n")), "must be an array"),
    (json.dumps(FUNCTIONS + [FUNCTIONS[1]]), "p2prpc_small is declared twice"),
    (json.dumps([5]), "entry 0 is not an object"),
])
def test_bad_functions_json(tmp_path, functions_json, needle):
    with pytest.raises(InvalidInputError) as info:
        _core.Broker(functions_json, str(tmp_path / "data"))
    assert needle in str(info.value)


def test_bad_functions_name_the_function(tmp_path):
    with pytest.raises(InvalidInputError, match="p2prpc_small.*args"):
        _core.Broker(json.dumps(bad_function(args=[{"name": "n", "kind": "complex"}])),
                     str(tmp_path / "data"))


def test_stop_twice_and_parked_requests_get_503(tmp_path):
    b = start_broker(tmp_path)
    call = submit(BrokerClient(b.port), small_call(30))
    getter = BrokerClient(b.port)
    leaser = BrokerClient(b.port)
    bg_get = Background(lambda: getter.get(
        "/v1/calls/%s?wait_ms=30000&since=%d" % (call["id"], call["updated_ms"])))
    bg_lease = Background(lambda: lease(leaser, [{"name": "p2prpc_all", "version": V_ALL}],
                                        wait_ms=30000))
    time.sleep(0.3)
    assert bg_get.done_at is None and bg_lease.done_at is None
    t0 = time.monotonic()
    b.stop()
    for bg in (bg_get, bg_lease):
        r = bg.join(timeout=5)
        assert bg.done_at - t0 < 1.0, bg.done_at - t0
        assert_error(r, 503, "ECONN", "shutting down")
    b.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        b.port
    with pytest.raises(ConnectionError):
        BrokerClient(getter.conn.port, timeout=1).get("/v1/health")
    getter.close()
    leaser.close()
