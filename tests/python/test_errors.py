"""p2prpc.errors: the exception tree and its mapping from engine codes."""
import re
from pathlib import Path

import pytest

import p2prpc
from p2prpc import errors

COMMON_H = Path(__file__).resolve().parents[2] / "csrc" / "common.h"
CLASS_NAMES = [n for n in errors.__all__ if n != "ENGINE_ERRORS"]


def engine_codes():
    """{name: value} of the PRPC_E* codes declared in csrc/common.h."""
    text = COMMON_H.read_text(encoding="utf-8")
    found = re.finditer(r"\bPRPC_(E[A-Z]+)\s*=\s*(-\d+)", text)
    codes = {m.group(1): int(m.group(2)) for m in found}
    assert len(codes) >= 15, "could not parse the error codes of %s" % COMMON_H
    return codes


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_every_exported_class_is_a_documented_p2prpc_error(name):
    cls = getattr(errors, name)
    assert isinstance(cls, type) and issubclass(cls, errors.P2PRPCError)
    assert len(cls.__dict__.get("__doc__") or "") > 20, "%s needs its own docstring" % name
    assert getattr(p2prpc, name) is cls  # re-exported by the package


def test_engine_errors_cover_every_engine_code():
    codes = engine_codes()
    assert set(errors.ENGINE_ERRORS) == set(codes)
    assert len(set(codes.values())) == len(codes), "two engine codes share a value"
    for name, cls in errors.ENGINE_ERRORS.items():
        assert issubclass(cls, errors.P2PRPCError) or cls is MemoryError, name
        if cls is not MemoryError:
            assert cls.__name__ in errors.__all__, name


def test_typed_errors_keep_their_builtin_bases():
    # Callers may catch the builtin family: a wrong argument is a TypeError,
    # an unreachable broker a ConnectionError, a timeout a TimeoutError.
    assert issubclass(errors.P2PFunctionDeclarationError, TypeError)
    assert issubclass(errors.ClientP2PFunctionInvalidArguments, TypeError)
    assert issubclass(errors.ClientNoBrokerFound, ConnectionError)
    assert issubclass(errors.ClientFutureTimeoutError, TimeoutError)
    assert issubclass(errors.DiskFullError, errors.StorageError)


def test_client_function_error_carries_the_remote_details():
    e = errors.ClientFunctionError("p2prpc_f raised", "ValueError", "bad", "Traceback...")
    assert str(e) == "p2prpc_f raised"
    remote = (e.remote_type, e.remote_message, e.remote_traceback)
    assert remote == ("ValueError", "bad", "Traceback...")
