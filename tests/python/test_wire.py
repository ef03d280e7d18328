"""Typed values on the wire: exact round trips and strict decoding."""
import json
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2prpc._wire import (
    BlobRef,
    decode_entries,
    decode_entry,
    decode_float,
    decode_int,
    encode_entries,
    encode_entry,
    encode_float,
    encode_int,
)
from p2prpc.errors import ProtocolError

SHA = "ab" * 32


def through_json(entry):
    return json.loads(json.dumps(entry))


@given(st.integers())
def test_int_round_trip(n):
    entry = encode_entry("n", "int", n)
    assert entry["value"] == str(n)
    assert decode_entry(through_json(entry)) == ("n", "int", n)


@given(st.integers(min_value=0, max_value=10**40), st.integers(min_value=2000, max_value=30000))
def test_int_beyond_cpython_digit_limit(low, digits):
    # Python refuses str()/int() past 4300 digits by default; the wire must not.
    n = -(10 ** digits + low)
    text = encode_int(n)
    assert len(text) == digits + 2
    assert text.startswith("-1") and text.endswith(str(low))
    assert decode_int(text) == n


def test_int_examples():
    assert encode_int(-123456789012345678901234567890) == "-123456789012345678901234567890"
    assert decode_int("0") == 0
    assert decode_int("-7") == -7


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_float_round_trip_is_bit_exact(x):
    entry = through_json(encode_entry("x", "float", x))
    name, kind, y = decode_entry(entry)
    assert struct.pack(">d", y) == struct.pack(">d", x)


def test_float_examples_and_nan_payload():
    assert encode_float(1.0) == "3ff0000000000000"
    assert encode_float(-0.0) == "8000000000000000"
    weird_nan = struct.unpack(">d", bytes.fromhex("7ff8000000000123"))[0]
    assert math.isnan(weird_nan)
    assert encode_float(weird_nan) == "7ff8000000000123"
    assert struct.pack(">d", decode_float("7ff8000000000123")).hex() == "7ff8000000000123"


@given(st.booleans(), st.text())
def test_bool_and_str_round_trip(b, s):
    assert decode_entry(through_json(encode_entry("b", "bool", b))) == ("b", "bool", b)
    assert decode_entry(through_json(encode_entry("s", "str", s))) == ("s", "str", s)


@given(st.from_regex(r"[0-9a-f]{64}", fullmatch=True), st.integers(min_value=0, max_value=2**63),
       st.text())
def test_file_round_trip(sha, size, filename):
    entry = encode_entry("f", "file", BlobRef(sha, size, filename))
    assert entry == {"name": "f", "kind": "file", "blob": sha, "size": size, "filename": filename}
    assert decode_entry(through_json(entry)) == ("f", "file", BlobRef(sha, size, filename))


def test_worker_local_file_entry_carries_path():
    entry = encode_entry("f", "file", "/tmp/x/in.bin")
    assert entry == {"name": "f", "kind": "file", "path": "/tmp/x/in.bin"}
    assert decode_entry(entry) == ("f", "file", "/tmp/x/in.bin")


values = st.one_of(
    st.tuples(st.just("int"), st.integers()),
    st.tuples(st.just("float"), st.floats(allow_nan=False)),
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("str"), st.text()),
)


@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), values, max_size=6))
def test_entries_keep_declaration_order(args):
    items = [(name, kind, value) for name, (kind, value) in args.items()]
    entries = through_json(encode_entries(items))
    decoded = decode_entries(entries, expected=[(n, k) for n, k, _ in items])
    assert list(decoded) == list(args)
    assert decoded == {n: v for n, (k, v) in args.items()}


@pytest.mark.parametrize("text", ["+5", "-0", " 5", "5 ", "1_000", "007", "-0x1", "", "1.0", "-", 5, None])
def test_int_decoding_is_strict(text):
    with pytest.raises(ProtocolError, match="decimal integer"):
        decode_int(text)


@pytest.mark.parametrize("text", ["3FF0000000000000", "3ff000000000000", "3ff00000000000000", "zz" * 8, 1.0])
def test_float_decoding_is_strict(text):
    with pytest.raises(ProtocolError, match="16 lowercase hex digits"):
        decode_float(text)


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"name": "n", "kind": "int", "value": 5}, "entry 'n'.*decimal integer"),
        ({"name": "x", "kind": "float", "value": "1.5"}, "entry 'x'.*16 lowercase hex"),
        ({"name": "b", "kind": "bool", "value": 1}, "entry 'b'.*true or false"),
        ({"name": "s", "kind": "str", "value": 3}, "entry 's'.*must be a string"),
        ({"name": "s", "kind": "str"}, "entry 's': no value"),
        ({"name": "c", "kind": "complex", "value": "1"}, "entry 'c': unknown kind 'complex'"),
        ({"kind": "int", "value": "1"}, "without a name"),
        ({"name": "f", "kind": "file", "blob": "AB" * 32, "size": 1}, "entry 'f': blob must be 64"),
        ({"name": "f", "kind": "file", "blob": SHA, "size": -1}, "entry 'f': size must be"),
        ({"name": "f", "kind": "file", "blob": SHA, "size": True}, "entry 'f': size must be"),
        ({"name": "f", "kind": "file", "blob": SHA, "size": 1, "filename": 3}, "entry 'f': filename"),
        ({"name": "f", "kind": "file", "path": ""}, "entry 'f': file path"),
        (["n", "int", "1"], "must be an object"),
    ],
)
def test_bad_entries_name_what_is_wrong(entry, words):
    with pytest.raises(ProtocolError, match=words):
        decode_entry(entry)


def test_entries_must_match_the_declaration():
    entries = encode_entries([("a", "int", 1), ("b", "str", "x")])
    with pytest.raises(ProtocolError, match=r"got \(a: int, b: str\), declared \(b: str, a: int\)"):
        decode_entries(entries, expected=[("b", "str"), ("a", "int")])
    with pytest.raises(ProtocolError, match=r"declared \(a: int, b: float\)"):
        decode_entries(entries, expected=[("a", "int"), ("b", "float")])
    with pytest.raises(ProtocolError, match="'a' appears twice"):
        decode_entries(entries + [entries[0]])
    with pytest.raises(ProtocolError, match="must be an array"):
        decode_entries({"a": 1})


@pytest.mark.parametrize(
    "kind, value, words",
    [("int", True, "expects an int"), ("int", 1.0, "expects an int"), ("float", 1, "expects a float"),
     ("bool", 0, "a bool value"), ("str", b"x", "a str value"), ("file", 3, "BlobRef or a path")],
)
def test_encoding_refuses_wrong_python_types(kind, value, words):
    with pytest.raises(TypeError, match=words):
        encode_entry("v", kind, value)
    with pytest.raises(ValueError, match="unknown kind 'tuple'"):
        encode_entry("v", "tuple", ())
