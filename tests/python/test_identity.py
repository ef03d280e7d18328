"""Call identity and file hashing (csrc/hash.c, csrc/ident.c via p2prpc._core).

The engine's encoding is checked against an independent implementation of
docs/IDENTITY.md written here with hashlib, on the document's fixed vectors
and on random calls (hypothesis).
"""
import enum
import hashlib
import math
import os
import pathlib
import re
import struct
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2prpc import _core
from p2prpc.errors import InvalidInputError, NotFoundError, StorageError

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "IDENTITY.md"
VERSION = "0123456789abcdef" * 4


# ---- the independent reference encoder (docs/IDENTITY.md, encoding v1) ----

def _str(b: bytes) -> bytes:
    return len(b).to_bytes(8, "big") + b


def ref_encode(function, version_hex, args):
    """args: (name, tag, value); for tag 'F' the value is the file's content."""
    out = b"p2prpc.call.v1\x00" + _str(function.encode("utf-8"))
    out += bytes.fromhex(version_hex) + len(args).to_bytes(4, "big")
    for name, tag, value in args:
        out += _str(name.encode("utf-8")) + tag.encode("ascii")
        if tag == "i":
            mag = abs(value)
            mb = mag.to_bytes((mag.bit_length() + 7) // 8, "big")
            out += bytes([1 if value < 0 else 0]) + len(mb).to_bytes(8, "big") + mb
        elif tag == "f":
            out += struct.pack(">d", value)
        elif tag == "b":
            out += bytes([1 if value else 0])
        elif tag == "s":
            out += _str(value.encode("utf-8"))
        elif tag == "F":
            out += hashlib.sha256(value).digest()
        else:
            raise AssertionError(tag)
    return out


def ref_id(function, version_hex, args):
    return hashlib.sha256(ref_encode(function, version_hex, args)).hexdigest()


# The vectors of docs/IDENTITY.md: name -> (function, args, id). 'F' values
# are file contents.
VECTORS = {
    "noargs": ("noargs", [], "04e64cb2b3dbf1f60a8a46947380d732267c2042908322cf3692a1f5e8c037f1"),
    "add": (
        "add",
        [("a", "i", 1), ("b", "i", -300)],
        "42ff8a7d05950c985103e93afaf0d0dfdc9f69ccf7aac3f37e8c6293b5d24982",
    ),
    "mixed": (
        "mixed",
        [
            ("n", "i", 2**70),
            ("neg", "i", -(2**64)),
            ("z", "i", 0),
            ("x", "f", -0.0),
            ("p", "f", 0.1),
            ("flag", "b", True),
            ("text", "s", "h\u00e9llo \u2713\x00end"),
            ("empty", "s", ""),
            ("data", "F", b"abc"),
        ],
        "773bafec9e9d8494d840a2ed05c7e686f979d9ceac313d38f8662b82ea2418cd",
    ),
    "x_int_1": ("x", [("v", "i", 1)], "4927dd27cbbdab9c102473bd3ee659b4359894d3d00ac02f3cfe021e4168a038"),
    "x_float_1": ("x", [("v", "f", 1.0)], "4fa8d032cd7347607916ca216a019e107fe9a0d64fabcd3aa45ea4e7ad2c85bd"),
    "x_bool_true": ("x", [("v", "b", True)], "626560f83d2886fd843ff6dce0a99e5b882fed031e93269cf13b550cd9097212"),
    "x_str_1": ("x", [("v", "s", "1")], "d8add43fc1141572fd9cfb0db62915c843c043032322a8f34c3baa4cb9eaea1c"),
    "x_float_0": ("x", [("v", "f", 0.0)], "2e0f47c35f03670b1c2b11de753f50eae2f5d58e3fee2437a3418dfdc28c8627"),
    "x_float_neg0": ("x", [("v", "f", -0.0)], "ec9fe9df35a8fa83cdf9a525ac0cd45960351ef8273426aa5e659076a8b65565"),
    "x_int_2_64": ("x", [("v", "i", 2**64)], "2275c3408ff13895f8f75217c86a8fc113e3576e39a5bd7acda2652c76c5745e"),
}

ADD_ENCODING_HEX = (
    "7032707270632e63616c6c2e763100"
    "0000000000000003" "616464"
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    "00000002"
    "0000000000000001" "61" "69" "00" "0000000000000001" "01"
    "0000000000000001" "62" "69" "01" "0000000000000002" "012c"
)


def core_id(function, args, tmp_path, version=VERSION):
    """The engine's id, writing each 'F' content to a file passed by path."""
    raw = []
    for k, (name, tag, value) in enumerate(args):
        if tag == "F":
            p = tmp_path / ("arg%d.bin" % k)
            p.write_bytes(value)
            value = str(p)
        raw.append((name, tag, value))
    return _core.call_identifier_raw(function, version, raw)


# ---- fixed vectors ----

@pytest.mark.parametrize("key", sorted(VECTORS))
def test_vectors_reference_engine_and_doc_agree(key, tmp_path):
    function, args, expected = VECTORS[key]
    assert ref_id(function, VERSION, args) == expected
    assert core_id(function, args, tmp_path) == expected
    assert expected in DOC.read_text(encoding="utf-8")


def test_doc_shows_the_encoding_of_add():
    assert ref_encode("add", VERSION, VECTORS["add"][1]).hex() == ADD_ENCODING_HEX
    # The doc's field-by-field block: hex on the left, a note after a wide gap.
    doc = DOC.read_text(encoding="utf-8")
    block = doc.split("field by field:", 1)[1].split("```")[1]
    hex_in_doc = "".join(
        re.split(r"\s{3,}", line.strip())[0].replace(" ", "") for line in block.splitlines() if line.strip()
    )
    assert hex_in_doc == ADD_ENCODING_HEX


def test_id_is_lowercase_hex_and_version_case_does_not_matter():
    a = _core.call_identifier_raw("noargs", VERSION.upper(), [])
    assert a == VECTORS["noargs"][2]
    assert len(a) == 64 and a == a.lower()


# ---- property: engine == reference on random calls ----

_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
_name = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
    min_size=1,
    max_size=20,
)
_value = st.one_of(
    st.tuples(st.just("i"), st.integers()),
    st.tuples(st.just("i"), st.integers(min_value=-(2**300), max_value=2**300)),
    st.tuples(st.just("f"), st.floats(allow_nan=True, allow_infinity=True)),
    st.tuples(st.just("b"), st.booleans()),
    st.tuples(st.just("s"), _text),
)


@settings(max_examples=300, deadline=None)
@given(
    function=_name,
    version=st.binary(min_size=32, max_size=32).map(bytes.hex),
    args=st.lists(st.tuples(_name, _value), max_size=8),
)
def test_engine_matches_reference(function, version, args):
    call = [(name, tag, value) for name, (tag, value) in args]
    assert _core.call_identifier_raw(function, version, call) == ref_id(function, version, call)


@settings(max_examples=100, deadline=None)
@given(bits=st.integers(min_value=0, max_value=2**64 - 1))
def test_any_float_bit_pattern_matches_reference(bits):
    (f,) = struct.unpack(">d", bits.to_bytes(8, "big"))
    got = _core.call_identifier_raw("x", VERSION, [("v", "f", f)])
    assert got == ref_id("x", VERSION, [("v", "f", f)])


# ---- what makes calls different or the same ----

def test_one_float_true_and_string_one_never_collide():
    ids = {
        _core.call_identifier_raw("x", VERSION, [("v", tag, value)])
        for tag, value in [("i", 1), ("f", 1.0), ("b", True), ("s", "1")]
    }
    assert len(ids) == 4


def test_signed_zero_and_nan_payloads_differ():
    def fid(f):
        return _core.call_identifier_raw("x", VERSION, [("v", "f", f)])

    assert fid(0.0) != fid(-0.0)
    quiet = struct.unpack(">d", bytes.fromhex("7ff8000000000000"))[0]
    payload = struct.unpack(">d", bytes.fromhex("7ff8000000000001"))[0]
    assert math.isnan(quiet) and math.isnan(payload)
    assert fid(quiet) != fid(payload)
    assert fid(quiet) == fid(struct.unpack(">d", bytes.fromhex("7ff8000000000000"))[0])


@pytest.mark.parametrize("n", [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 2**64 - 1, -(2**1000), 10**100])
def test_huge_ints(n):
    assert _core.call_identifier_raw("x", VERSION, [("v", "i", n)]) == ref_id("x", VERSION, [("v", "i", n)])
    assert _core.call_identifier_raw("x", VERSION, [("v", "i", n)]) != _core.call_identifier_raw(
        "x", VERSION, [("v", "i", n + 1)]
    )


def test_int_subclass_is_its_value():
    class Color(enum.IntEnum):
        RED = 2**80

    class Lying(int):
        def __abs__(self):
            return 0

        def bit_length(self):
            return 1

    plain = _core.call_identifier_raw("x", VERSION, [("v", "i", 2**80)])
    assert _core.call_identifier_raw("x", VERSION, [("v", "i", Color.RED)]) == plain
    assert _core.call_identifier_raw("x", VERSION, [("v", "i", Lying(-(2**80)))]) == ref_id(
        "x", VERSION, [("v", "i", -(2**80))]
    )


def test_argument_names_order_and_version_matter():
    base = _core.call_identifier_raw("add", VERSION, [("a", "i", 1), ("b", "i", 2)])
    assert base != _core.call_identifier_raw("add", VERSION, [("b", "i", 2), ("a", "i", 1)])
    assert base != _core.call_identifier_raw("add", VERSION, [("a", "i", 1), ("c", "i", 2)])
    assert base != _core.call_identifier_raw("add", "1" + VERSION[1:], [("a", "i", 1), ("b", "i", 2)])
    assert base != _core.call_identifier_raw("adds", VERSION, [("a", "i", 1), ("b", "i", 2)])
    # tuple of args is accepted like a list
    assert base == _core.call_identifier_raw("add", VERSION, (("a", "i", 1), ("b", "i", 2)))


# ---- files: the content decides, never the path ----

def test_file_content_not_path_decides(tmp_path):
    one, two = tmp_path / "one.bin", tmp_path / "sub" / "two.dat"
    two.parent.mkdir()
    one.write_bytes(b"same content")
    two.write_bytes(b"same content")
    by_str = _core.call_identifier_raw("f", VERSION, [("data", "F", str(one))])
    assert by_str == ref_id("f", VERSION, [("data", "F", b"same content")])
    assert _core.call_identifier_raw("f", VERSION, [("data", "F", two)]) == by_str  # PathLike
    assert _core.call_identifier_raw("f", VERSION, [("data", "F", os.fsencode(two))]) == by_str
    with open(two, "rb") as fh:
        fh.seek(5)
        assert _core.call_identifier_raw("f", VERSION, [("data", "F", fh.fileno())]) == by_str
        assert fh.tell() == 5
    one.write_bytes(b"other content")
    assert _core.call_identifier_raw("f", VERSION, [("data", "F", one)]) != by_str


def test_file_arg_matches_sha256_of_content(tmp_path):
    p = tmp_path / "big.bin"
    data = os.urandom(3 * 1024 * 1024 + 5)
    p.write_bytes(data)
    assert _core.call_identifier_raw("f", VERSION, [("d", "F", p)]) == ref_id("f", VERSION, [("d", "F", data)])


# ---- sha256_file ----

def test_sha256_file_matches_hashlib(tmp_path):
    p = tmp_path / "data.bin"
    data = os.urandom(5 * 1024 * 1024 + 3)
    p.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert _core.sha256_file(str(p)) == want
    assert _core.sha256_file(p) == want
    assert _core.sha256_file(bytes(p)) == want
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert _core.sha256_file(empty) == hashlib.sha256(b"").hexdigest()


def test_sha256_file_fd_hashes_from_start_and_keeps_position(tmp_path):
    p = tmp_path / "data.bin"
    data = os.urandom(2 * 1024 * 1024 + 1)
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    try:
        os.lseek(fd, 12345, os.SEEK_SET)
        assert _core.sha256_file(fd) == hashlib.sha256(data).hexdigest()
        assert os.lseek(fd, 0, os.SEEK_CUR) == 12345
    finally:
        os.close(fd)


def test_sha256_file_errors(tmp_path):
    missing = tmp_path / "nope" / "missing.bin"
    with pytest.raises(NotFoundError, match=r"hashing file '.*missing\.bin'.*No such file"):
        _core.sha256_file(missing)
    with pytest.raises(InvalidInputError, match="is a directory"):
        _core.sha256_file(tmp_path)
    with pytest.raises(InvalidInputError, match="fd -1"):
        _core.sha256_file(-1)
    r, w = os.pipe()
    os.close(w)
    os.close(r)
    with pytest.raises(StorageError, match=r"fd %d .*Bad file descriptor" % r):
        _core.sha256_file(r)
    with pytest.raises(TypeError, match=r"sha256_file: file must be an int fd, str, bytes or os.PathLike, not float"):
        _core.sha256_file(1.5)
    with pytest.raises(TypeError, match="not bool"):
        _core.sha256_file(True)
    with pytest.raises(ValueError):
        _core.sha256_file("a\x00b")
    with pytest.raises(InvalidInputError, match="empty path"):
        _core.sha256_file("")


def test_sha256_file_non_utf8_path_in_message(tmp_path):
    bad = os.fsencode(tmp_path) + b"/missing-\xff.bin"
    with pytest.raises(NotFoundError, match=r"missing-\?\.bin"):
        _core.sha256_file(bad)


def test_sha256_file_releases_the_gil(tmp_path):
    """No clock: a switch interval of an hour means a thread waiting for the GIL
    gets it only when the holder lets go of it by itself. The main thread holds
    it from releasing the gate on, and only sha256_file stands between that and
    the check, so the waiting thread can have run only if sha256_file released
    the GIL. Each call is one chance for the OS to schedule it; a build that
    holds the GIL fails on every call."""
    p = tmp_path / "big.bin"
    p.write_bytes(os.urandom(8 << 20))
    gate, ran = threading.Lock(), []
    gate.acquire()

    def waiter():
        with gate:
            ran.append(True)

    t = threading.Thread(target=waiter)
    old = sys.getswitchinterval()
    sys.setswitchinterval(3600.0)
    try:
        t.start()
        gate.release()  # the waiter wakes, but needs the GIL that this thread holds
        calls = 0
        while not ran and calls < 200:
            _core.sha256_file(p)
            calls += 1
        assert ran, "no other thread ran during %d sha256_file calls: the GIL is held" % calls
    finally:
        sys.setswitchinterval(old)
        t.join()


# ---- call_identifier_raw errors ----

@pytest.mark.parametrize(
    "tag,value,expect",
    [
        ("i", True, "must be int, not bool"),
        ("i", 1.0, "must be int, not float"),
        ("i", "1", "must be int, not str"),
        ("f", 1, "must be float, not int"),
        ("f", True, "must be float, not bool"),
        ("b", 1, "must be bool, not int"),
        ("s", b"1", "must be str, not bytes"),
        ("F", 1.5, "must be an int fd, str, bytes or os.PathLike, not float"),
        ("F", False, "must be an int fd, str, bytes or os.PathLike, not bool"),
    ],
)
def test_value_must_match_its_tag(tag, value, expect):
    with pytest.raises(TypeError, match=r"argument 'count' \(tag '%s'\) %s" % (tag, expect)):
        _core.call_identifier_raw("f", VERSION, [("count", tag, value)])


def test_malformed_args():
    with pytest.raises(ValueError, match=r"argument 'a': unknown tag 'x'"):
        _core.call_identifier_raw("f", VERSION, [("a", "x", 1)])
    with pytest.raises(ValueError, match=r"unknown tag 'ii'"):
        _core.call_identifier_raw("f", VERSION, [("a", "ii", 1)])
    with pytest.raises(TypeError, match=r"args\[1\] must be a \(name, tag, value\) tuple"):
        _core.call_identifier_raw("f", VERSION, [("a", "i", 1), ("b", "i")])
    with pytest.raises(TypeError, match=r"args\[0\]: name must be str, not int"):
        _core.call_identifier_raw("f", VERSION, [(1, "i", 1)])
    with pytest.raises(TypeError, match=r"args must be a list or tuple"):
        _core.call_identifier_raw("f", VERSION, iter([]))
    with pytest.raises(TypeError):
        _core.call_identifier_raw("f", VERSION.encode(), [])


def test_engine_refusals_name_what_was_wrong(tmp_path):
    with pytest.raises(InvalidInputError, match=r"call 'f': version must be 64 hex digits.*got 3"):
        _core.call_identifier_raw("f", "abc", [])
    with pytest.raises(InvalidInputError, match=r"version must be 64 hex digits.*not a hex digit"):
        _core.call_identifier_raw("f", "g" + VERSION[1:], [])
    with pytest.raises(InvalidInputError, match="version contains a NUL"):
        _core.call_identifier_raw("f", VERSION + "\x00", [])
    with pytest.raises(InvalidInputError, match="empty function name"):
        _core.call_identifier_raw("", VERSION, [])
    with pytest.raises(InvalidInputError, match="function name contains a NUL"):
        _core.call_identifier_raw("f\x00g", VERSION, [])
    with pytest.raises(InvalidInputError, match="function name is not valid UTF-8"):
        _core.call_identifier_raw("f\udcff", VERSION, [])
    with pytest.raises(InvalidInputError, match=r"call 'f': argument 2 has an empty name"):
        _core.call_identifier_raw("f", VERSION, [("a", "i", 1), ("", "i", 1)])
    with pytest.raises(InvalidInputError, match=r"the name of args\[0\] contains a NUL"):
        _core.call_identifier_raw("f", VERSION, [("a\x00", "i", 1)])
    with pytest.raises(InvalidInputError, match=r"the name of argument 1 is not valid UTF-8"):
        _core.call_identifier_raw("f", VERSION, [("a\ud800", "i", 1)])
    with pytest.raises(InvalidInputError, match=r"call 'f': argument 'text': string is not valid UTF-8"):
        _core.call_identifier_raw("f", VERSION, [("text", "s", "ok\udc80")])
    missing = tmp_path / "gone.bin"
    with pytest.raises(NotFoundError, match=r"call 'f': argument 'data': hashing file '.*gone\.bin'"):
        _core.call_identifier_raw("f", VERSION, [("data", "F", missing)])
    with pytest.raises(InvalidInputError, match=r"argument 'data': hashing fd -3"):
        _core.call_identifier_raw("f", VERSION, [("data", "F", -3)])
    with pytest.raises(OverflowError, match=r"argument 'data' \(tag 'F'\): fd .* out of range"):
        _core.call_identifier_raw("f", VERSION, [("data", "F", 2**40)])


def test_args_list_mutated_during_the_call_is_safe(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    args = []

    class Sneaky:
        def __fspath__(self):
            args.clear()  # the binding must not walk the live list
            return str(p)

    args.extend([("data", "F", Sneaky()), ("n", "i", 1)])
    got = _core.call_identifier_raw("f", VERSION, args)
    assert got == ref_id("f", VERSION, [("data", "F", b"abc"), ("n", "i", 1)])


def test_strings_with_nul_are_values_not_terminators():
    a = _core.call_identifier_raw("f", VERSION, [("s", "s", "a\x00b")])
    b = _core.call_identifier_raw("f", VERSION, [("s", "s", "a")])
    assert a != b
    assert a == ref_id("f", VERSION, [("s", "s", "a\x00b")])
