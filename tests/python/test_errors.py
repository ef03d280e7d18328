"""p2prpc.errors: the exception tree and its mapping from engine codes."""
import re
from pathlib import Path

import pytest

import p2prpc
from p2prpc import errors

ERROR_MAP_H = Path(__file__).resolve().parents[2] / "csrc" / "error_map.h"
NOT_CLASSES = ("ENGINE_ERRORS", "HTTP_STATUS", "error_for_answer")
CLASS_NAMES = [n for n in errors.__all__ if n not in NOT_CLASSES]


def engine_codes():
    """{name: value} of the codes declared in csrc/error_map.h, read as text so
    that the test does not trust the binding it checks."""
    text = ERROR_MAP_H.read_text(encoding="utf-8")
    found = re.finditer(r"\bX\((E[A-Z]+),\s*(-\d+),", text)
    codes = {m.group(1): int(m.group(2)) for m in found}
    assert len(codes) >= 16, "could not parse the error codes of %s" % ERROR_MAP_H
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
        assert issubclass(cls, errors.P2PRPCError), name
        assert cls.__name__ in errors.__all__, name


def test_core_table_is_the_header_table():
    from p2prpc import _core
    assert {row[0]: row[1] for row in _core.ERRORS} == engine_codes()


def test_every_code_one_class_and_one_status_both_ways():
    from p2prpc import _core
    rows = _core.ERRORS
    classes = [errors.ENGINE_ERRORS[row[0]] for row in rows]
    # one class per code, and from the class back to its code
    assert len(set(classes)) == len(rows)
    by_class = {cls: row[0] for cls, row in zip(classes, rows)}
    for row in rows:
        name, _value, status, primary, class_name, _msg = row
        cls = errors.ENGINE_ERRORS[name]
        assert cls.__name__ == class_name
        assert by_class[cls] == name
        # one status per code, and from the status back to a code of that status
        assert errors.HTTP_STATUS[name] == status
        assert 400 <= status <= 599
        back = _core.code_for_http_status(status)
        if any(r[3] and r[2] == status for r in rows):
            assert errors.HTTP_STATUS[back] == status, (name, status, back)
        else:  # a status no code owns means the peer said something we do not know
            assert back == "EPROTO"
        if primary:
            assert back == name
        # an answer names its class by its code, whatever its status
        assert errors.error_for_answer(599, name) is cls
        assert errors.error_for_answer(status, "") is errors.ENGINE_ERRORS[back]
    statuses = [row[2] for row in rows if row[3]]
    assert len(statuses) == len(set(statuses)), "two primary codes share a status"
    # an answer with no code we know is judged by its status alone
    assert errors.error_for_answer(418, "ENOPE") is errors.ProtocolError
    assert errors.error_for_answer(403, None) is errors.AuthenticationError


def test_engine_error_raises_its_class_with_default_words():
    # A file that is not there: the engine's ENOTFOUND reaches Python as
    # NotFoundError through the binding's table, not through message text.
    from p2prpc import _core
    with pytest.raises(errors.NotFoundError):
        _core.sha256_file("/nonexistent/p2prpc-test-file")


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


def test_api_doc_table_is_the_engine_table():
    # docs/API.md lists the codes for readers; it must say what the engine does.
    from p2prpc import _core
    api = (Path(__file__).resolve().parents[2] / "docs" / "API.md").read_text(encoding="utf-8")
    documented = re.findall(r"^\| `(E[A-Z]+)` \| (\d+) \| `(\w+)` \| (.+) \|$", api, re.M)
    assert documented == [(r[0], str(r[2]), r[4], r[5]) for r in _core.ERRORS]
