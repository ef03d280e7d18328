"""The wire (docs/API.md) on the Python side: typed values, and every
document through the engine's one codec (csrc/wire.c, reached through _core).
The rules (what a call id, a lease id, a checkpoint key, an int's or a float's
text is; which fields a document needs) and the documents' bytes are the
engine's; this module converts between them and Python values.

Typed values ("Typed values" in docs/API.md):

Arguments and outputs travel as a JSON array of entries in declaration order,
one per value: ``{"name", "kind", "value"}`` for int (decimal string, any
size), float (the 16 hex digits of its IEEE-754 bits, big-endian, so every
value including -0.0, inf and each NaN payload comes back bit for bit), bool
and str; ``{"name", "kind": "file", "blob", "size", "filename"}`` for a file.
Between a worker's engine and its executor, file entries carry a local
``"path"`` instead (the engine downloads and uploads the blobs).

Decoding is strict: an entry that is not exactly what encoding would produce
raises ProtocolError naming the entry and what was wrong, so a confused peer
is caught at the edge instead of deep inside a user's function.

Documents: encode(doc, obj) checks a Python object as document `doc` (one of
DOCUMENTS) and returns its canonical bytes, refusing a broken rule with
InvalidInputError naming the field; decode(doc, body) checks an answer and
returns it as Python objects, refusing with ProtocolError. The encode_* and
decode_* helpers below name the documents a client sends and reads.

Limits the engine enforces are exported here under their engine names
(WAIT_MAX_MS, BATCH_MAX, BLOB_CHUNK, ...), and so is the retry policy the
worker follows (RETRY_STATUSES, backoff_s).
"""
import json
import random
import struct
from typing import NamedTuple

from . import _core
from .errors import ProtocolError

__all__ = [
    "KINDS",
    "DOCUMENTS",
    "BlobRef",
    "encode_int",
    "decode_int",
    "encode_float",
    "decode_float",
    "encode_entry",
    "decode_entry",
    "encode_entries",
    "decode_entries",
    "encode",
    "decode",
    "encode_submit",
    "encode_batch",
    "encode_wait",
    "decode_call",
    "decode_call_answer",
    "decode_submitted",
    "decode_batch_answer",
    "decode_wait_answer",
    "decode_functions",
    "decode_health",
    "decode_error",
    "error_fields",
    "valid_call_id",
    "valid_lease_id",
    "check_checkpoint_key",
    "path_call",
    "path_poll_call",
    "path_submit",
    "path_lease",
    "path_leases",
    "backoff_s",
    "RETRY_STATUSES",
    "WAIT_MAX_MS",
    "BATCH_MAX",
    "META_MAX",
    "BLOB_CHUNK",
    "BLOB_UPLOAD_CHUNK",
    "CHECKPOINT_KEY_MAX",
    "CHECKPOINTS_MAX",
]

KINDS = ("int", "float", "bool", "str", "file")
DOCUMENTS = _core.wire_documents()

# The engine's limits (csrc/wire.h, blob.h, store.h), never copied by hand.
WAIT_MAX_MS = _core.WAIT_MAX_MS  # the longest long-poll a broker grants (wait_ms)
BATCH_MAX = _core.BATCH_MAX  # calls of one batch submit, ids of one wait
META_MAX = _core.META_MAX  # bytes of a JSON body
BLOB_CHUNK = _core.BLOB_CHUNK  # the largest upload chunk: a broker's first synced chunk
BLOB_UPLOAD_CHUNK = _core.BLOB_UPLOAD_CHUNK  # what the engine's uploaders send
CHECKPOINT_KEY_MAX = _core.CHECKPOINT_KEY_MAX
CHECKPOINTS_MAX = _core.CHECKPOINTS_MAX
RETRY_STATUSES = _core.RETRY_STATUSES  # answers that say the broker failed, not refused

valid_call_id = _core.valid_call_id  # 64 lowercase hex: call ids, blob names, versions
valid_lease_id = _core.valid_lease_id  # 32 lowercase hex, as brokers issue them
path_call = _core.wire_path_call
path_poll_call = _core.wire_path_poll_call
path_submit = _core.wire_path_submit
path_lease = _core.wire_path_lease
path_leases = _core.wire_path_leases

# CPython refuses str(int) / int(str) past 4300 digits (CVE-2020-10735) unless
# the process-wide limit is raised. The wire promises any size, so large
# values are converted in halves below this many digits instead.
_DEC_CHUNK = 3000


class BlobRef(NamedTuple):
    """A file on the wire: the SHA-256 of its content, its size and the name
    the user gave it (metadata only, never a path on disk)."""

    blob: str
    size: int
    filename: str


def encode_int(n: int) -> str:
    """Decimal text of an int of any size."""
    if type(n) is not int:
        raise TypeError("encode_int expects an int, got %s" % type(n).__name__)
    if n < 0:
        return "-" + _dec(-n)
    return _dec(n)


def _dec(n: int) -> str:
    if n.bit_length() <= _DEC_CHUNK * 3:  # < 10**2709: well under the CPython limit
        return str(n)
    k = (n.bit_length() * 3 // 10) // 2  # about half the digits
    hi, lo = divmod(n, 10**k)
    return _dec(hi) + _dec(lo).rjust(k, "0")


def decode_int(text: str) -> int:
    """The int a decimal text names; ProtocolError unless it is exactly what
    encode_int would write (no sign '+', spaces, underscores or leading zeros)."""
    if not _core.valid_int_text(text):
        raise ProtocolError("not a canonical decimal integer: %.80r" % (text,))
    if text[0] == "-":
        return -_undec(text[1:])
    return _undec(text)


def _undec(digits: str) -> int:
    if len(digits) <= _DEC_CHUNK:
        return int(digits)
    k = len(digits) // 2
    return _undec(digits[:-k]) * 10**k + _undec(digits[-k:])


def encode_float(x: float) -> str:
    """The 16 lowercase hex digits of x's IEEE-754 binary64 bits, big-endian."""
    if type(x) is not float:
        raise TypeError("encode_float expects a float, got %s" % type(x).__name__)
    return struct.pack(">d", x).hex()


def decode_float(text: str) -> float:
    """The float whose bits the 16 hex digits spell; ProtocolError otherwise."""
    if not _core.valid_float_text(text):
        raise ProtocolError("not 16 lowercase hex digits of a float: %.80r" % (text,))
    return struct.unpack(">d", bytes.fromhex(text))[0]


def encode_entry(name: str, kind: str, value) -> dict:
    """One typed entry. For kind "file" the value is a BlobRef (wire form) or
    a str path (the worker-local form, entry ``{"name","kind","path"}``)."""
    if kind == "int":
        return {"name": name, "kind": kind, "value": encode_int(value)}
    if kind == "float":
        return {"name": name, "kind": kind, "value": encode_float(value)}
    if kind == "bool":
        if type(value) is not bool:
            raise TypeError("%s: a bool value expected, got %s" % (name, type(value).__name__))
        return {"name": name, "kind": kind, "value": value}
    if kind == "str":
        if type(value) is not str:
            raise TypeError("%s: a str value expected, got %s" % (name, type(value).__name__))
        return {"name": name, "kind": kind, "value": value}
    if kind == "file":
        if isinstance(value, BlobRef):
            return {"name": name, "kind": kind, "blob": value.blob, "size": value.size,
                    "filename": value.filename}
        if isinstance(value, str):
            return {"name": name, "kind": kind, "path": value}
        raise TypeError("%s: a file entry needs a BlobRef or a path, got %s"
                        % (name, type(value).__name__))
    raise ValueError("%s: unknown kind %r (kinds: %s)" % (name, kind, ", ".join(KINDS)))


def decode_entry(entry) -> tuple:
    """(name, kind, value) of one entry. A file entry's value is a BlobRef, or
    its local path (str) when the entry carries "path" instead of "blob"."""
    if not isinstance(entry, dict):
        raise ProtocolError("a typed entry must be an object, got %.80r" % (entry,))
    name, kind = entry.get("name"), entry.get("kind")
    if not isinstance(name, str) or not name:
        raise ProtocolError("typed entry without a name: %.200r" % (entry,))
    where = "entry %r" % name
    if kind == "file":
        if "path" in entry:
            path = entry["path"]
            if not isinstance(path, str) or not path:
                raise ProtocolError("%s: file path must be a non-empty string" % where)
            return name, kind, path
        blob, size, filename = entry.get("blob"), entry.get("size"), entry.get("filename", "")
        if not _core.valid_call_id(blob):
            raise ProtocolError("%s: blob must be 64 lowercase hex digits, got %.80r" % (where, blob))
        if type(size) is not int or size < 0:
            raise ProtocolError("%s: size must be a non-negative integer, got %.80r" % (where, size))
        if not isinstance(filename, str):
            raise ProtocolError("%s: filename must be a string" % where)
        return name, kind, BlobRef(blob, size, filename)
    if kind not in KINDS:
        raise ProtocolError("%s: unknown kind %.40r (kinds: %s)" % (where, kind, ", ".join(KINDS)))
    if "value" not in entry:
        raise ProtocolError("%s: no value" % where)
    value = entry["value"]
    try:
        if kind == "int":
            return name, kind, decode_int(value)
        if kind == "float":
            return name, kind, decode_float(value)
    except ProtocolError as e:
        raise ProtocolError("%s: %s" % (where, e)) from None
    if kind == "bool" and type(value) is not bool:
        raise ProtocolError("%s: a bool value must be true or false, got %.80r" % (where, value))
    if kind == "str" and not isinstance(value, str):
        raise ProtocolError("%s: a str value must be a string, got %.80r" % (where, value))
    return name, kind, value


def encode_entries(items) -> list:
    """Entries of an iterable of (name, kind, value), in that order."""
    return [encode_entry(name, kind, value) for name, kind, value in items]


def decode_entries(entries, expected=None) -> dict:
    """{name: value} of an entry array, in its order. When `expected` is given
    (a sequence of (name, kind) in declaration order), the entries must be
    exactly those names with those kinds in that order."""
    if not isinstance(entries, list):
        raise ProtocolError("typed entries must be an array, got %.80r" % (entries,))
    out = {}
    for entry in entries:
        name, kind, value = decode_entry(entry)
        if name in out:
            raise ProtocolError("entry %r appears twice" % name)
        out[name] = (kind, value)
    if expected is not None:
        want = [(n, k) for n, k in expected]
        got = [(n, kv[0]) for n, kv in out.items()]
        if got != want:
            raise ProtocolError(
                "entries do not match the declaration: got %s, declared %s"
                % (_describe(got), _describe(want))
            )
    return {name: value for name, (kind, value) in out.items()}


def _describe(pairs) -> str:
    return "(" + ", ".join("%s: %s" % p for p in pairs) + ")"


# -- documents ------------------------------------------------------------------


def _json_bytes(obj) -> bytes:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, str):
        return obj.encode("utf-8")
    return json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")


def encode(doc: str, obj) -> bytes:
    """The canonical bytes of `obj` (a dict, or its JSON text) as document
    `doc`. A broken rule raises InvalidInputError naming the field (or
    LimitExceeded for a count beyond a limit); unknown fields are left out."""
    return _core.wire_canonical(doc, _json_bytes(obj))


def decode(doc: str, body):
    """The answer `body` (JSON bytes) checked as document `doc`, as Python
    objects in canonical form. A broken rule raises ProtocolError naming the
    field."""
    return json.loads(_core.wire_canonical(doc, _json_bytes(body), answer=True))


def encode_submit(call_id: str, function: str, version: str, args: list) -> bytes:
    """POST /v1/calls: args are typed entries (encode_entries)."""
    return encode("submit", {"id": call_id, "function": function, "version": version,
                             "args": args})


def encode_batch(submits: list) -> bytes:
    """POST /v1/calls/batch: submits are {"id", "function", "version", "args"}."""
    return encode("batch", {"calls": submits})


def encode_wait(ids: list, wait_ms: int) -> bytes:
    """POST /v1/calls/wait."""
    return encode("wait", {"ids": ids, "wait_ms": wait_ms})


def decode_call(body) -> dict:
    """A CALL record."""
    return decode("call", body)


def decode_call_answer(body) -> dict:
    """{"call": CALL} (GET /v1/calls/{id}, terminate, restart, result): the CALL."""
    return decode("call_answer", body)["call"]


def decode_submitted(body) -> dict:
    """{"created", "call"}: a POST /v1/calls answer."""
    return decode("submitted", body)


def decode_batch_answer(body) -> list:
    """The "results" of a POST /v1/calls/batch answer: {"created", "call"} or
    {"error": {"code", "message"}} each."""
    return decode("batch_answer", body)["results"]


def decode_wait_answer(body) -> tuple:
    """(calls, missing) of a POST /v1/calls/wait answer."""
    answer = decode("wait_answer", body)
    return answer["calls"], answer["missing"]


def decode_functions(body) -> list:
    """The functions a broker serves (GET /v1/functions)."""
    return decode("functions", body)["functions"]


def decode_health(body) -> dict:
    """GET /v1/health."""
    return decode("health", body)


def decode_error(body) -> tuple:
    """(code, message) of an error answer; ProtocolError when it is not one."""
    err = decode("error", body)["error"]
    return err["code"], err["message"]


def error_fields(body) -> tuple:
    """(code, message) of an error answer, or ("", the start of the body) when
    it is not one: for reporting whatever came back."""
    try:
        return decode_error(body or b"")
    except ProtocolError:
        return "", (body or b"")[:200].decode("utf-8", "replace")


def check_checkpoint_key(key) -> None:
    """ValueError unless key is a checkpoint key (the engine's rule: 1 to
    CHECKPOINT_KEY_MAX characters of [A-Za-z0-9._-])."""
    if not _core.valid_checkpoint_key(key):
        raise ValueError("checkpoint key %r is not 1 to %d characters of [A-Za-z0-9._-]"
                         % (key, CHECKPOINT_KEY_MAX))


def backoff_s(attempt: int, first_s: float, max_s: float) -> float:
    """Seconds to wait before another try after `attempt` failures in a row:
    first_s doubled per failure up to max_s, drawn in its upper half (the
    engine's policy, the one the worker follows)."""
    return _core.backoff_ms(attempt, int(first_s * 1000), int(max_s * 1000),
                            random.random()) / 1000.0
