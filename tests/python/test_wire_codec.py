"""The one wire codec (csrc/wire.c through p2prpc._wire), document by document:

- every document type: random valid documents encode -> decode -> equal, and
  the canonical bytes are a fixed point;
- a real broker's answers decode to what it sent, and encoding them again
  gives the broker's bytes exactly (so the encoders the broker will use are
  the ones it uses today);
- malformed variants (bad hex, a lease id no broker issues, a bad checkpoint
  key, wrong kinds, counts beyond the limits) are refused with an error that
  names the field.
"""
import hashlib
import importlib
import json
import pkgutil
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_client import BrokerClient
from p2prpc import _client, _core, _wire
from p2prpc._wire import decode, encode, encode_float, encode_int
from p2prpc.errors import InvalidInputError, LimitExceeded, ProtocolError

V_SMALL = "cd" * 32
V_OUT = "ef" * 32
FUNCTIONS = [
    {"name": "p2prpc_small", "version": V_SMALL, "args": [{"name": "n", "kind": "int"}],
     "returns": [{"name": "m", "kind": "int"}]},
    {"name": "p2prpc_out", "version": V_OUT,
     "args": [{"name": "s", "kind": "str"}],
     "returns": [{"name": "x", "kind": "float"}, {"name": "ok", "kind": "bool"},
                 {"name": "f", "kind": "file"}]},
]

# ---- valid documents --------------------------------------------------------

HEX64 = st.text("0123456789abcdef", min_size=64, max_size=64)
HEX32 = st.text("0123456789abcdef", min_size=32, max_size=32)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               min_size=1, max_size=20)
KEY = st.from_regex(r"[A-Za-z0-9._-]{1,128}", fullmatch=True)
INT = st.integers(min_value=-(2**63), max_value=2**63 - 1)
COUNT = st.integers(min_value=0, max_value=2**62)
SIZE = st.integers(min_value=0, max_value=2**53)
PROGRESS3 = st.integers(0, 800).map(lambda i: i / 8)  # exact in 3 decimals
PROGRESS2 = st.integers(0, 400).map(lambda i: i / 4)  # exact in 2 decimals
STATE = st.sampled_from(["queued", "leased", "done", "failed", "terminated"])
KIND = st.sampled_from(_wire.KINDS)


def _entry(name):
    return st.one_of(
        st.integers().map(lambda n: {"name": name, "kind": "int", "value": encode_int(n)}),
        st.floats().map(lambda x: {"name": name, "kind": "float", "value": encode_float(x)}),
        st.booleans().map(lambda b: {"name": name, "kind": "bool", "value": b}),
        TEXT.map(lambda s: {"name": name, "kind": "str", "value": s}),
        st.tuples(HEX64, SIZE, TEXT).map(lambda t: {"name": name, "kind": "file", "blob": t[0],
                                                    "size": t[1], "filename": t[2]}),
    )


ENTRIES = st.lists(NAME, max_size=4, unique=True).flatmap(
    lambda names: st.tuples(*[_entry(n) for n in names]).map(list))
ERROR_CODE = st.fixed_dictionaries({"code": TEXT, "message": TEXT})
ERROR_RECORD = st.fixed_dictionaries({}, optional={"type": TEXT, "message": TEXT,
                                                   "traceback": TEXT})
CALL = st.fixed_dictionaries(
    {"id": HEX64, "function": NAME, "version": HEX64, "state": STATE},
    optional={"progress": PROGRESS3, "attempts": INT, "created_ms": INT, "updated_ms": INT,
              "finished_ms": INT, "terminate_requested": st.booleans(),
              "outputs": st.none() | ENTRIES, "error": st.none() | ERROR_RECORD,
              "args": ENTRIES, "arriving_outputs": ENTRIES})
SUBMIT = st.fixed_dictionaries({"id": HEX64, "function": NAME, "version": HEX64,
                                "args": ENTRIES})
BATCH_ENTRY = st.one_of(st.fixed_dictionaries({"created": st.booleans(), "call": CALL}),
                        st.fixed_dictionaries({"error": ERROR_CODE}))
GPU = st.fixed_dictionaries({}, optional={"index": INT, "name": TEXT, "uuid": TEXT,
                                          "total_bytes": INT, "free_bytes": INT})
FUNCTION_REF = st.fixed_dictionaries({"name": TEXT, "version": TEXT})
LEASE_HEAD = st.fixed_dictionaries({"id": HEX32, "call_id": HEX64},
                                   optional={"deadline_ms": INT, "heartbeat_ms": INT})
CHECKPOINT_ENTRY = st.fixed_dictionaries({"key": KEY, "blob": HEX64, "size": SIZE})
DECL = st.fixed_dictionaries({"name": NAME, "kind": KIND})
FUNCTION = st.fixed_dictionaries({"name": NAME, "version": HEX64,
                                  "args": st.lists(DECL, max_size=3),
                                  "returns": st.lists(DECL, max_size=3)})
METRICS = st.fixed_dictionaries({name: COUNT for name in (
    "requests", "bytes_received", "chunks_received", "chunks_refused", "blobs_committed",
    "bytes_served", "bytes_followed", "bytes_followed_from_memory", "corrupt_blobs_dropped",
    "calls_submitted", "leases_granted", "results_accepted", "results_refused",
    "auth_refused")})

DOCS = {
    "error": st.fixed_dictionaries({"error": ERROR_CODE}),
    "error_code": ERROR_CODE,
    "error_record": ERROR_RECORD,
    "call": CALL,
    "submit": SUBMIT,
    "submitted": st.fixed_dictionaries({"created": st.booleans(), "call": CALL}),
    "batch": st.fixed_dictionaries({"calls": st.lists(SUBMIT, min_size=1, max_size=3)}),
    "batch_entry": BATCH_ENTRY,
    "batch_answer": st.fixed_dictionaries({"results": st.lists(BATCH_ENTRY, max_size=3)}),
    "wait": st.fixed_dictionaries({"ids": st.lists(HEX64, min_size=1, max_size=5)},
                                  optional={"wait_ms": st.integers(0, 60000)}),
    "wait_answer": st.fixed_dictionaries({"calls": st.lists(CALL, max_size=2),
                                          "missing": st.lists(HEX64, max_size=3)}),
    "call_answer": st.fixed_dictionaries({"call": CALL}),
    "deleted": st.fixed_dictionaries({"deleted": st.booleans()}),
    "function_ref": FUNCTION_REF,
    "gpu": GPU,
    "lease_request": st.fixed_dictionaries(
        {"worker": NAME, "functions": st.lists(FUNCTION_REF, min_size=1, max_size=3)},
        optional={"wait_ms": INT, "gpus": st.lists(GPU, max_size=2)}),
    "lease_head": LEASE_HEAD,
    "checkpoint_entry": CHECKPOINT_ENTRY,
    "lease": st.fixed_dictionaries(
        {"lease": LEASE_HEAD, "call": CALL},
        optional={"checkpoints": st.lists(CHECKPOINT_ENTRY, max_size=3)}),
    "heartbeat": st.fixed_dictionaries({"call_id": HEX64, "progress": PROGRESS2}),
    "heartbeat_answer": st.fixed_dictionaries({"terminate": st.booleans()},
                                              optional={"deadline_ms": INT}),
    "checkpoint": st.fixed_dictionaries({"call_id": HEX64, "key": KEY, "blob": HEX64,
                                         "size": SIZE}),
    "outputs": st.fixed_dictionaries({"call_id": HEX64, "outputs": ENTRIES}),
    "outputs_answer": st.fixed_dictionaries({"call_id": HEX64}),
    "result": st.one_of(
        st.fixed_dictionaries({"call_id": HEX64, "state": st.just("done"), "outputs": ENTRIES},
                              optional={"error": st.none() | ERROR_RECORD}),
        st.fixed_dictionaries({"call_id": HEX64, "state": st.sampled_from(["failed",
                                                                           "terminated"])},
                              optional={"outputs": ENTRIES,
                                        "error": st.none() | ERROR_RECORD})),
    "partial": st.fixed_dictionaries({"partial": SIZE}),
    "committed": st.fixed_dictionaries({"size": SIZE}),
    "health": st.fixed_dictionaries({"ok": st.booleans(), "node": TEXT, "version": TEXT}),
    "decl": DECL,
    "function": FUNCTION,
    "functions": st.fixed_dictionaries({"functions": st.lists(FUNCTION, min_size=1,
                                                              max_size=2)}),
    "stats": st.fixed_dictionaries({"function": NAME, "queued": COUNT, "leased": COUNT,
                                    "done": COUNT, "failed": COUNT, "terminated": COUNT}),
    "nodes": st.fixed_dictionaries({"nodes": st.lists(TEXT, min_size=1, max_size=4)}),
    "metrics": METRICS,
}


def test_every_document_has_a_strategy():
    assert sorted(DOCS) == sorted(_wire.DOCUMENTS)


@pytest.mark.parametrize("doc", sorted(DOCS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(doc, data):
    obj = data.draw(DOCS[doc])
    body = encode(doc, obj)
    assert decode(doc, body) == obj
    # The canonical text is a fixed point, whatever order the fields came in.
    assert encode(doc, dict(reversed(list(obj.items())))) == body
    assert encode(doc, decode(doc, body)) == body


# ---- the broker's own answers ------------------------------------------------

@pytest.fixture
def broker(make_broker):
    return make_broker()


def assert_broker_bytes(doc, reply, status=200):
    """The broker's answer decodes to what it says, and the codec writes its
    very bytes."""
    assert reply.status == status, reply
    assert decode(doc, reply.body) == reply.json()
    assert encode(doc, reply.json()) == reply.body


def small_submit(n):
    return {"id": _core.call_identifier_raw("p2prpc_small", V_SMALL, [("n", "i", n)]),
            "function": "p2prpc_small", "version": V_SMALL,
            "args": _wire.encode_entries([("n", "int", n)])}


def test_the_brokers_answers_decode_and_encode_to_its_bytes(broker, client, tmp_path):
    assert_broker_bytes("health", client.get("/v1/health"))
    assert_broker_bytes("functions", client.get("/v1/functions"))
    assert_broker_bytes("stats", client.get("/v1/functions/p2prpc_small/stats"))
    assert_broker_bytes("nodes", client.get("/v1/nodes"))
    assert_broker_bytes("error", client.get("/v1/calls/" + "0" * 64), 404)
    assert_broker_bytes("error", client.post("/v1/calls", b"{\"id\": 5}"), 400)

    # A submit made by the codec is one the broker takes.
    one = small_submit(7)
    r = client.post("/v1/calls", _wire.encode_submit(one["id"], one["function"],
                                                     one["version"], one["args"]))
    assert_broker_bytes("submitted", r)
    assert _wire.decode_submitted(r.body)["call"]["id"] == one["id"]
    bad = dict(small_submit(8), version="00" * 32)
    r = client.post("/v1/calls/batch", _wire.encode_batch([small_submit(9), bad]))
    assert_broker_bytes("batch_answer", r)
    results = _wire.decode_batch_answer(r.body)
    assert results[0]["created"] is True and results[1]["error"]["code"] == "EVERSION"
    r = client.post("/v1/calls/wait", _wire.encode_wait([one["id"], "f" * 64], 0))
    assert_broker_bytes("wait_answer", r)
    assert _wire.decode_wait_answer(r.body) == ([], ["f" * 64])
    assert_broker_bytes("call_answer", client.get(_wire.path_call(one["id"])))

    # A worker's round: lease, heartbeat, checkpoint, outputs, result.
    r = client.post("/v1/leases", encode("lease_request", {
        "worker": "w1", "wait_ms": 0,
        "functions": [{"name": "p2prpc_small", "version": V_SMALL}]}))
    assert_broker_bytes("lease", r)
    lease = decode("lease", r.body)
    lease_id, call_id = lease["lease"]["id"], lease["lease"]["call_id"]
    assert _wire.valid_lease_id(lease_id) and lease["checkpoints"] == []
    r = client.post(_wire.path_lease(lease_id, "heartbeat"),
                    encode("heartbeat", {"call_id": call_id, "progress": 12.5}))
    assert_broker_bytes("heartbeat_answer", r)
    data = b"checkpoint bytes"
    sha = hashlib.sha256(data).hexdigest()
    r = client.put("/v1/blobs/%s?offset=0" % sha, data,
                   headers={"X-P2PRPC-Chunk-Sha256": sha})
    assert_broker_bytes("partial", r)
    assert_broker_bytes("committed", client.post("/v1/blobs/%s/commit?size=%d" % (sha, len(data))))
    r = client.post(_wire.path_lease(lease_id, "checkpoints"), encode("checkpoint", {
        "call_id": call_id, "key": "epoch", "blob": sha, "size": len(data)}))
    assert_broker_bytes("checkpoint", r)
    r = client.post(_wire.path_lease(lease_id, "outputs"), encode("outputs", {
        "call_id": call_id, "outputs": _wire.encode_entries([("m", "int", 1)])}))
    assert_broker_bytes("outputs_answer", r)
    r = client.get(_wire.path_poll_call(call_id, 0, -1))
    assert_broker_bytes("call_answer", r)
    assert _wire.decode_call_answer(r.body)["arriving_outputs"][0]["value"] == "1"
    r = client.post(_wire.path_lease(lease_id, "result"), encode("result", {
        "call_id": call_id, "state": "failed",
        "error": {"type": "ValueError", "message": "n\nwas \"bad\"", "traceback": "tb"}}))
    assert_broker_bytes("call_answer", r)
    assert _wire.decode_call_answer(r.body)["error"]["message"] == "n\nwas \"bad\""
    r = client.post("/v1/calls/wait", _wire.encode_wait([call_id], 0))
    assert_broker_bytes("wait_answer", r)
    assert_broker_bytes("deleted", client.delete(_wire.path_call(call_id)))
    assert_broker_bytes("metrics", client.get("/v1/metrics"))


def test_a_lease_with_checkpoints_and_a_done_result(broker, client):
    one = small_submit(11)
    assert client.post("/v1/calls", _wire.encode_submit(**{
        "call_id": one["id"], "function": one["function"], "version": one["version"],
        "args": one["args"]})).status == 200
    body = encode("lease_request", {"worker": "w2", "functions": [
        {"name": "p2prpc_small", "version": V_SMALL}]})
    lease = decode("lease", client.post("/v1/leases", body).body)
    data = b"saved"
    sha = client.upload(data)
    path = _wire.path_lease(lease["lease"]["id"], "checkpoints")
    assert client.post(path, encode("checkpoint", {"call_id": one["id"], "key": "k.1",
                                                   "blob": sha, "size": 5})).status == 200
    # The lease lapses only by time; a worker asking again with the same
    # request id would get it back. Here: finish it, done with outputs.
    r = client.post(_wire.path_lease(lease["lease"]["id"], "result"), encode("result", {
        "call_id": one["id"], "state": "done",
        "outputs": _wire.encode_entries([("m", "int", -3)])}))
    assert_broker_bytes("call_answer", r)
    call = _wire.decode_call_answer(r.body)
    assert call["state"] == "done"
    assert _wire.decode_entries(call["outputs"], expected=[("m", "int")]) == {"m": -3}


# ---- malformed documents: refused, naming the field --------------------------

CID = "c0" * 32
LID = "1ea5" * 8


def _lease(lease_id=LID, key="epoch", blob="0a" * 32):
    return {"lease": {"id": lease_id, "call_id": CID, "deadline_ms": 1, "heartbeat_ms": 100},
            "call": {"id": CID, "function": "f", "version": V_SMALL, "state": "leased",
                     "args": []},
            "checkpoints": [{"key": key, "blob": blob, "size": 1}]}


MALFORMED = [
    # bad hex
    ("heartbeat", {"call_id": CID.upper(), "progress": 1},
     '"call_id" must be 64 lowercase hex digits'),
    ("wait", {"ids": [CID, CID[:-1]]}, '"ids[1]" must be a call id'),
    ("checkpoint", {"call_id": CID, "key": "k", "blob": "x" * 64, "size": 1},
     '"blob" must be 64 lowercase hex digits'),
    ("submit", {"id": CID, "function": "f", "version": "ab", "args": []},
     '"version" must be 64 lowercase hex digits'),
    # lease ids a broker never issues
    ("lease", _lease(lease_id="lease_1"), '"lease.id" must be a lease id (32 lowercase hex'),
    ("lease", _lease(lease_id=LID.upper()), '"lease.id" must be a lease id'),
    ("lease", _lease(lease_id=CID), '"lease.id" must be a lease id'),
    # checkpoint keys
    ("lease", _lease(key="a/b"),
     '"checkpoints[0].key": checkpoint key "a/b" has a character outside [A-Za-z0-9._-]'),
    ("checkpoint", {"call_id": CID, "key": "k" * 129, "blob": "0a" * 32, "size": 1},
     "is longer than 128 bytes"),
    ("checkpoint", {"call_id": CID, "key": "", "blob": "0a" * 32, "size": 1},
     "checkpoint key is empty"),
    # wrong kinds
    ("heartbeat", {"call_id": CID, "progress": "50"}, '"progress" must be a number from 0 to 100'),
    ("heartbeat_answer", {"terminate": "yes"}, '"terminate" must be true or false'),
    ("call_answer", {"call": []}, '"call" must be an object'),
    ("call_answer", {"call": {"id": CID, "function": "f", "version": V_SMALL,
                              "state": "running"}},
     '"call.state" must be queued, leased, done, failed or terminated'),
    ("result", {"call_id": CID, "state": "done"}, 'a done result needs "outputs"'),
    ("outputs", {"call_id": CID, "outputs": [{"name": "n", "kind": "int", "value": 5}]},
     'outputs of outputs: "n" must be a decimal integer string'),
    ("outputs", {"call_id": CID, "outputs": [{"name": "x", "kind": "float", "value": "1.5"}]},
     '"x" must be the 16 hex digits of a float'),
    ("submit", {"id": CID, "function": "f", "version": V_SMALL,
                "args": [{"name": "f", "kind": "file", "blob": "0a" * 32, "size": -1}]},
     'args of submit: file "f" needs "blob" (64 hex) and "size"'),
    ("lease_request", {"worker": "", "functions": [{"name": "f", "version": "v"}]},
     '"worker" must be a name'),
    ("lease_request", {"worker": "w", "functions": [{"name": "f"}]},
     'each function of a lease request needs a name and a version: '
     '"functions[0].version" is missing'),
    ("partial", {"partial": 1.5}, '"partial" must be a byte count'),
    ("stats", {"function": "f", "queued": 1, "leased": 1, "done": 1, "failed": 1},
     '"terminated" is missing'),
]


@pytest.mark.parametrize("doc, obj, words", MALFORMED)
def test_malformed_documents_are_refused_naming_the_field(doc, obj, words):
    with pytest.raises(InvalidInputError) as sent:
        encode(doc, obj)
    assert words in str(sent.value)
    with pytest.raises(ProtocolError) as read:
        decode(doc, json.dumps(obj).encode())
    assert words in str(read.value)


def test_counts_beyond_the_limits_are_limit_errors():
    with pytest.raises(LimitExceeded, match=r'"ids" must hold 1 to 1000 entries, got 1001'):
        _wire.encode_wait([CID] * 1001, 0)
    with pytest.raises(LimitExceeded, match=r'"calls" must hold 1 to 1000 entries, got 0'):
        _wire.encode_batch([])


def test_a_body_that_is_not_a_document():
    with pytest.raises(ProtocolError, match="invalid JSON"):
        decode("call_answer", b'{"call": ')
    with pytest.raises(ProtocolError, match="the body is empty"):
        decode("deleted", b"")
    with pytest.raises(ValueError, match="no document named 'nonsense'"):
        _core.wire_canonical("nonsense", b"{}")
    assert _wire.error_fields(b"<html>") == ("", "<html>")
    assert _wire.error_fields(b'{"error": {"code": "EINVAL", "message": "m"}}') == ("EINVAL", "m")


# ---- rules, paths and limits: the engine's, exported -------------------------

def test_id_rules_and_paths():
    assert _wire.valid_call_id(CID) and not _wire.valid_call_id(CID.upper())
    assert _wire.valid_lease_id(LID)
    for foreign in ("lease_1", "L" * 32, LID + "0", "", None, 5):
        assert not _wire.valid_lease_id(foreign)
    assert not _wire.valid_call_id(CID[:63] + "\x00")
    _wire.check_checkpoint_key("epoch-1.pt")
    with pytest.raises(ValueError, match="checkpoint key 'a b' is not 1 to 128 characters"):
        _wire.check_checkpoint_key("a b")
    assert _wire.path_call(CID, "restart") == "/v1/calls/%s/restart" % CID
    assert _wire.path_poll_call(CID, 60000, 5, unseen=True) == \
        "/v1/calls/%s?wait_ms=60000&since=5&arriving=0" % CID
    assert _wire.path_submit(250) == "/v1/calls?wait_ms=250"
    assert _wire.path_leases(LID) == "/v1/leases?request=" + LID
    with pytest.raises(InvalidInputError, match="a lease id is 32 lowercase hex digits"):
        _wire.path_lease("../../x", "result")
    with pytest.raises(InvalidInputError, match="no operation \"explode\" on a call"):
        _wire.path_call(CID, "explode")


def test_limits_and_retry_policy_come_from_the_engine():
    assert (_wire.WAIT_MAX_MS, _wire.BATCH_MAX) == (60000, 1000)
    assert _wire.BLOB_CHUNK == 8 << 20 and _wire.BLOB_UPLOAD_CHUNK == 4 << 20
    assert (_wire.CHECKPOINT_KEY_MAX, _wire.CHECKPOINTS_MAX) == (128, 64)
    assert _wire.RETRY_STATUSES == (500, 502, 503, 504)
    assert all(_core.retryable_status(s) == (s in _wire.RETRY_STATUSES) for s in range(100, 600))
    # Doubling from the first wait up to the cap, drawn in the upper half.
    assert [_core.backoff_ms(a, 200, 10000, 0.0) for a in (1, 2, 3, 7, 30)] == \
        [100, 200, 400, 5000, 5000]
    assert _core.backoff_ms(1, 200, 10000, 0.999999) == 199
    assert 0.05 <= _wire.backoff_s(1, 0.1, 2.0) < 0.1
    # Whatever the client still copies by hand agrees with the engine (a name
    # the client no longer has is one it reads from _wire instead).
    copies = {"LONG_POLL_MS": _wire.WAIT_MAX_MS, "WAIT_BATCH": _wire.BATCH_MAX,
              "CUT_THROUGH_BYTES": _wire.BLOB_CHUNK, "RETRY_STATUSES": _wire.RETRY_STATUSES}
    for name, engine in copies.items():
        value = _client_constant(name)
        assert value is None or (tuple(value) if name == "RETRY_STATUSES" else value) == engine
    assert (_client_constant("SUBMIT_BATCH") or 0) <= _wire.BATCH_MAX


def _client_constant(name):
    """name as the client module (or package, and its modules) defines it."""
    modules = [_client] + [importlib.import_module("%s.%s" % (_client.__name__, m.name))
                           for m in pkgutil.iter_modules(getattr(_client, "__path__", []))]
    for m in modules:
        if hasattr(m, name):
            return getattr(m, name)
    return None


def test_typed_value_rules_are_the_engines():
    assert _core.valid_int_text("-12") and not _core.valid_int_text("-0")
    assert _core.valid_int_text("1" * _core.INT_DIGITS_MAX)
    assert not _core.valid_int_text("1" * (_core.INT_DIGITS_MAX + 1))
    with pytest.raises(ProtocolError, match="decimal integer"):
        _wire.decode_int("1" * (_core.INT_DIGITS_MAX + 1))
    assert _core.valid_float_text(struct.pack(">d", 1.5).hex())
    assert not _core.valid_float_text("3FF8000000000000")
