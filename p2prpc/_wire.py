"""Typed values on the wire (docs/API.md, "Typed values").

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
"""
import re
import struct
from typing import NamedTuple

from .errors import ProtocolError

__all__ = [
    "KINDS",
    "BlobRef",
    "encode_int",
    "decode_int",
    "encode_float",
    "decode_float",
    "encode_entry",
    "decode_entry",
    "encode_entries",
    "decode_entries",
]

KINDS = ("int", "float", "bool", "str", "file")

_INT_RE = re.compile(r"(0|-?[1-9][0-9]*)\Z")
_FLOAT_RE = re.compile(r"[0-9a-f]{16}\Z")
_SHA_RE = re.compile(r"[0-9a-f]{64}\Z")

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
    if not isinstance(text, str) or not _INT_RE.match(text):
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
    if not isinstance(text, str) or not _FLOAT_RE.match(text):
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
        if not isinstance(blob, str) or not _SHA_RE.match(blob):
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
