"""p2prpc._spec: the declaration rules (docs/DECLARING.md), call-time checks,
result checks, function versions and reading the functions of a file."""
import enum
import functools
import hashlib
import inspect
import io
import json
import marshal
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from p2prpc._spec import (
    KINDS,
    ArgSpec,
    FunctionSpec,
    read_function,
    read_module_functions,
)
from p2prpc.errors import ClientP2PFunctionInvalidArguments, P2PFunctionDeclarationError

REPO = Path(__file__).resolve().parents[2]


# The seed README's example, verbatim.
def p2prpc_analyze_large_file(video_handle: io.IOBase, arg2: int) -> {"results_file1": io.IOBase,
                                                               "results_file2": io.IOBase,
                                                               "res_var": int}:
    video_handle.close()
    return {"results_file1": open(video_handle.name, 'rb'),
            "results_file2": open(__file__, 'rb'),
            "res_var": 10 * arg2}


SEED_SOURCE = '''\
import io

def p2prpc_analyze_large_file(video_handle: io.IOBase, arg2: int) -> {"results_file1": io.IOBase,
                                                               "results_file2": io.IOBase,
                                                               "res_var": int}:
    video_handle.close()
    return {"results_file1": open(video_handle.name, 'rb'),
            "results_file2": open(__file__, 'rb'),
            "res_var": 10 * arg2}
'''

SEED_JSON_SHAPE = {
    "name": "p2prpc_analyze_large_file",
    "args": [{"name": "video_handle", "kind": "file"}, {"name": "arg2", "kind": "int"}],
    "returns": [
        {"name": "results_file1", "kind": "file"},
        {"name": "results_file2", "kind": "file"},
        {"name": "res_var", "kind": "int"},
    ],
}


def declaration_error(fn):
    with pytest.raises(P2PFunctionDeclarationError) as info:
        read_function(fn)
    return str(info.value)


def arg_fn(annotation):
    """A fresh function whose one argument `a` carries `annotation`."""

    def p2prpc_f(a: annotation) -> {"out": int}:
        return {"out": 1}

    return p2prpc_f


def ret_fn(annotation):
    """A fresh function whose return annotation is `annotation`."""

    def p2prpc_g(x: int) -> annotation:
        return {}

    return p2prpc_g


# ---------------------------------------------------------------- the seed


def test_seed_example_reads_into_its_spec():
    spec = read_function(p2prpc_analyze_large_file)
    assert spec.name == "p2prpc_analyze_large_file"
    assert spec.args == (ArgSpec("video_handle", "file"), ArgSpec("arg2", "int"))
    assert spec.returns == (
        ArgSpec("results_file1", "file"),
        ArgSpec("results_file2", "file"),
        ArgSpec("res_var", "int"),
    )
    source = inspect.getsource(p2prpc_analyze_large_file).encode("utf-8")
    assert spec.version == hashlib.sha256(source).hexdigest()
    assert spec.module_file == os.path.abspath(__file__)
    assert spec.func is p2prpc_analyze_large_file
    assert spec.to_json() == dict(SEED_JSON_SHAPE, version=spec.version)
    json.dumps(spec.to_json())  # goes on the wire as is
    assert KINDS == ("int", "float", "bool", "str", "file")


def test_seed_example_runs_through_bind_and_check_outputs(rb_file):
    spec = read_function(p2prpc_analyze_large_file)
    video = rb_file(b"video bytes")
    bound = spec.bind((), {"arg2": 160, "video_handle": video})
    assert list(bound) == ["video_handle", "arg2"]
    out = spec.check_outputs(spec.func(**bound))
    try:
        assert list(out) == ["results_file1", "results_file2", "res_var"]
        assert out["res_var"] == 1600
        assert out["results_file1"].read() == b"video bytes"
        assert out["results_file2"].read() == Path(__file__).read_bytes()
    finally:
        out["results_file1"].close()
        out["results_file2"].close()


def test_seed_example_file_reads_the_same(write_module):
    specs = read_module_functions(write_module(SEED_SOURCE))
    assert [s.to_json() for s in specs] == [dict(SEED_JSON_SHAPE, version=specs[0].version)]
    # Same source text, same version: the version is the source, not where it lives.
    in_file = SEED_SOURCE.split("\n", 2)[2].encode("utf-8")
    assert specs[0].version == hashlib.sha256(in_file).hexdigest()


def test_examples_function_py_is_valid():
    path = REPO / "examples" / "function.py"
    assert path.exists(), path
    specs = read_module_functions(path)
    assert "p2prpc_analyze_large_file" in [s.name for s in specs]


# ---------------------------------------------------------------- the name


def test_name_without_prefix_is_refused():
    def analyze(x: int) -> {"out": int}:
        return {"out": x}

    msg = declaration_error(analyze)
    assert "'analyze'" in msg and "must start with 'p2prpc_'" in msg


def test_name_that_is_only_the_prefix_is_refused():
    ns = {}
    exec('def p2prpc_(x: int) -> {"out": int}:\n    return {"out": x}\n', ns)
    msg = declaration_error(ns["p2prpc_"])
    assert "'p2prpc_'" in msg and "must start with" in msg


def test_non_ascii_name_is_refused():
    ns = {}
    exec('def p2prpc_größe(x: int) -> {"out": int}:\n    return {"out": x}\n', ns)
    msg = declaration_error(ns["p2prpc_größe"])
    assert "p2prpc_größe" in msg and "ASCII" in msg


def test_non_functions_are_refused():
    class p2prpc_Thing:
        pass

    msg = declaration_error(p2prpc_Thing)
    assert "p2prpc_Thing" in msg and "not a function" in msg
    assert "not a function" in declaration_error(len)


def test_async_and_generator_functions_are_refused():
    async def p2prpc_co(x: int) -> {"out": int}:
        return {"out": x}

    def p2prpc_gen(x: int) -> {"out": int}:
        yield {"out": x}

    for fn in (p2prpc_co, p2prpc_gen):
        msg = declaration_error(fn)
        assert fn.__name__ in msg and "async and generator functions" in msg


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "annotation, kind",
    [
        (int, "int"),
        (float, "float"),
        (bool, "bool"),
        (str, "str"),
        (io.IOBase, "file"),
        (io.BufferedReader, "file"),
        (io.RawIOBase, "file"),
        (io.BufferedIOBase, "file"),
        (io.FileIO, "file"),
        (typing.BinaryIO, "file"),
        (typing.IO[bytes], "file"),
        (typing.Annotated[int, "count"], "int"),
    ],
)
def test_supported_argument_annotations(annotation, kind):
    assert read_function(arg_fn(annotation)).args == (ArgSpec("a", kind),)


@pytest.mark.parametrize(
    "annotation, shown",
    [
        (list, "list"),
        (bytes, "bytes"),
        (dict, "dict"),
        (typing.Optional[int], "typing.Optional[int]"),
        (typing.List[int], "typing.List[int]"),
        (io.TextIOWrapper, "TextIOWrapper"),
        (typing.TextIO, "typing.TextIO"),
        (typing.IO[str], "typing.IO[str]"),
        (typing.IO, "typing.IO"),
        (typing.Any, "typing.Any"),
        (None, "None"),
    ],
)
def test_unsupported_argument_annotations_are_refused(annotation, shown):
    msg = declaration_error(arg_fn(annotation))
    assert "'p2prpc_f'" in msg and "argument 'a'" in msg
    assert "annotation " in msg and shown in msg and "is not supported" in msg
    assert "int, float, bool, str or a binary file" in msg


def test_missing_argument_annotation_is_refused():
    def p2prpc_f(a: int, b) -> {"out": int}:
        return {"out": a}

    msg = declaration_error(p2prpc_f)
    assert "'p2prpc_f'" in msg and "argument 'b'" in msg and "annotation is missing" in msg


def test_var_positional_and_var_keyword_are_refused():
    def p2prpc_f(a: int, *rest: int) -> {"out": int}:
        return {"out": a}

    def p2prpc_g(a: int, **extra: int) -> {"out": int}:
        return {"out": a}

    msg = declaration_error(p2prpc_f)
    assert "'p2prpc_f'" in msg and "argument 'rest'" in msg and "*rest is not allowed" in msg
    msg = declaration_error(p2prpc_g)
    assert "'p2prpc_g'" in msg and "argument 'extra'" in msg and "**extra is not allowed" in msg


def test_positional_only_arguments_are_refused():
    def p2prpc_f(a: int, /, b: int) -> {"out": int}:
        return {"out": a}

    msg = declaration_error(p2prpc_f)
    assert "'p2prpc_f'" in msg and "argument 'a'" in msg and "positional-only" in msg


def test_keyword_only_arguments_are_accepted_in_order():
    def p2prpc_f(a: int, *, b: str, c: float) -> {"out": int}:
        return {"out": a}

    assert [a.name for a in read_function(p2prpc_f).args] == ["a", "b", "c"]


def test_default_values_are_refused():
    def p2prpc_f(a: int, b: int = 3) -> {"out": int}:
        return {"out": a}

    msg = declaration_error(p2prpc_f)
    assert "'p2prpc_f'" in msg and "argument 'b'" in msg and "default values are not allowed" in msg


@pytest.mark.parametrize("name", ["identifier", "nodes", "timestamp", "p2prpc_id", "_private"])
def test_reserved_argument_names_are_refused(name):
    ns = {}
    exec('def p2prpc_f(%s: int) -> {"out": int}:\n    return {"out": 1}\n' % name, ns)
    msg = declaration_error(ns["p2prpc_f"])
    assert "'p2prpc_f'" in msg and "argument %r" % name in msg and "reserved" in msg


def test_non_ascii_argument_name_is_refused():
    ns = {}
    exec('def p2prpc_f(größe: int) -> {"out": int}:\n    return {"out": 1}\n', ns)
    msg = declaration_error(ns["p2prpc_f"])
    assert "argument 'größe'" in msg and "ASCII" in msg


def test_several_file_arguments_and_no_arguments():
    def p2prpc_f(
        a: io.IOBase, b: typing.BinaryIO, n: int, c: io.BufferedReader
    ) -> {"o": io.IOBase}:
        return {"o": a}

    def p2prpc_g() -> {"o": int}:
        return {"o": 1}

    assert [(a.name, a.kind) for a in read_function(p2prpc_f).args] == [
        ("a", "file"), ("b", "file"), ("n", "int"), ("c", "file")
    ]
    assert read_function(p2prpc_g).args == ()


# ---------------------------------------------------------------- the result


class Result(typing.TypedDict):
    video: io.IOBase
    score: float
    ok: bool


class PartialResult(typing.TypedDict, total=False):
    video: io.IOBase


def test_typeddict_return_keeps_declaration_order():
    def p2prpc_f(x: int) -> Result:
        return {"video": None, "score": 0.0, "ok": True}

    assert read_function(p2prpc_f).returns == (
        ArgSpec("video", "file"), ArgSpec("score", "float"), ArgSpec("ok", "bool")
    )


def test_typeddict_with_optional_keys_is_refused():
    msg = declaration_error(ret_fn(PartialResult))
    assert "'p2prpc_g'" in msg and "return annotation" in msg
    assert "'video'" in msg and "every result key must be required" in msg


def test_missing_return_annotation_is_refused():
    def p2prpc_f(x: int):
        return {"out": x}

    msg = declaration_error(p2prpc_f)
    assert "'p2prpc_f'" in msg and "return annotation is missing" in msg


@pytest.mark.parametrize(
    "annotation, words",
    [
        (None, "None is not supported"),
        (int, "int is not supported"),
        (dict, "dict does not name the result keys"),
        (typing.Dict[str, int], "does not name the result keys"),
        (dict[str, int], "does not name the result keys"),
        ({}, "declares no keys"),
        ({1: int}, "result key 1 must be a non-empty str"),
        ({"": int}, "result key '' must be a non-empty str"),
        ({"a-b": int}, "result key 'a-b' must start with an ASCII letter"),
        ({"_x": int}, "result key '_x' must start with an ASCII letter"),
        ({"ok": int, "bad": list}, "result key 'bad' has type list, which is not supported"),
        ({"bad": typing.Optional[str]}, "result key 'bad' has type typing.Optional[str]"),
    ],
)
def test_bad_return_annotations_are_refused(annotation, words):
    msg = declaration_error(ret_fn(annotation))
    assert "'p2prpc_g'" in msg and "return annotation" in msg and words in msg


def test_string_values_inside_a_dict_literal_resolve():
    assert read_function(ret_fn({"f": "io.IOBase", "n": "int"})).returns == (
        ArgSpec("f", "file"), ArgSpec("n", "int")
    )


# ---------------------------------------------------------------- string annotations


def test_future_annotations_resolve(write_module):
    path = write_module(
        """\
        from __future__ import annotations

        import io
        import typing


        class Out(typing.TypedDict):
            clip: typing.BinaryIO
            label: str


        def p2prpc_literal(video_handle: io.IOBase, arg2: int) -> {"results_file1": io.IOBase,
                                                                 "res_var": int}:
            return {}


        def p2prpc_typed(clip: typing.IO[bytes], threshold: float, strict: bool) -> Out:
            return {}
        """
    )
    literal, typed = read_module_functions(path)
    assert isinstance(typed.func.__annotations__["clip"], str)  # really PEP 563
    assert literal.args == (ArgSpec("video_handle", "file"), ArgSpec("arg2", "int"))
    assert literal.returns == (ArgSpec("results_file1", "file"), ArgSpec("res_var", "int"))
    assert typed.args == (
        ArgSpec("clip", "file"), ArgSpec("threshold", "float"), ArgSpec("strict", "bool")
    )
    assert typed.returns == (ArgSpec("clip", "file"), ArgSpec("label", "str"))


def test_unresolvable_string_annotation_is_refused(write_module):
    path = write_module(
        """\
        from __future__ import annotations


        def p2prpc_f(video: Video, n: int) -> {"out": int}:
            return {"out": n}
        """
    )
    with pytest.raises(P2PFunctionDeclarationError) as info:
        read_module_functions(path)
    msg = str(info.value)
    assert "'p2prpc_f'" in msg and "argument 'video'" in msg
    assert "cannot resolve the string annotation 'Video'" in msg and "NameError" in msg


def test_unresolvable_string_return_annotation_is_refused():
    msg = declaration_error(ret_fn('{"out": Missing}'))
    assert "'p2prpc_g'" in msg and "return annotation" in msg
    assert "cannot resolve the string annotation" in msg and "Missing" in msg


# ---------------------------------------------------------------- caching


def test_spec_is_cached_per_function_object():
    def p2prpc_f(x: int) -> {"out": int}:
        return {"out": x}

    spec = read_function(p2prpc_f)
    assert read_function(p2prpc_f) is spec

    @functools.wraps(p2prpc_f)
    def wrapper(**kwargs):
        return p2prpc_f(**kwargs)

    # The wrapper copied p2prpc_f's __dict__ (and so the cached spec): it must not reuse it.
    msg = declaration_error(wrapper)
    assert "argument 'kwargs'" in msg and "**kwargs is not allowed" in msg


def test_specs_compare_by_content_not_function_object():
    a, b = arg_fn(int), arg_fn(int)
    assert read_function(a) == read_function(b)
    assert hash(read_function(a)) == hash(read_function(b))
    assert read_function(a) != read_function(arg_fn(float))
    assert isinstance(read_function(a), FunctionSpec)


# ---------------------------------------------------------------- bind()


def p2prpc_typed(f: io.IOBase, n: int, x: float, b: bool, s: str) -> {"out": int}:
    return {"out": n}


@pytest.fixture
def typed_call(rb_file):
    """A valid set of keyword arguments for p2prpc_typed."""
    return {"f": rb_file(b"abc"), "n": 7, "x": 0.5, "b": False, "s": "text"}


def bind_error(args=(), **kwargs):
    with pytest.raises(ClientP2PFunctionInvalidArguments) as info:
        read_function(p2prpc_typed).bind(args, kwargs)
    return str(info.value)


def test_bind_returns_values_in_declaration_order(typed_call):
    spec = read_function(p2prpc_typed)
    reordered = dict(reversed(list(typed_call.items())))
    bound = spec.bind((), reordered)
    assert list(bound) == ["f", "n", "x", "b", "s"]
    assert bound == typed_call


def test_bind_normalizes_subclasses_to_exact_builtin_types(typed_call):
    class Level(enum.IntEnum):
        HIGH = 3

    class Name(str):
        pass

    bound = read_function(p2prpc_typed).bind((), dict(typed_call, n=Level.HIGH, s=Name("x")))
    assert type(bound["n"]) is int and bound["n"] == 3
    assert type(bound["s"]) is str and bound["s"] == "x"


def test_bind_refuses_positional_arguments(typed_call):
    msg = bind_error((typed_call["f"],), **{k: v for k, v in typed_call.items() if k != "f"})
    assert "p2prpc_typed() takes keyword arguments only" in msg
    assert "1 positional argument" in msg and "f=..., n=..., x=..., b=..., s=..." in msg


def test_bind_lists_missing_and_unexpected_names(typed_call):
    del typed_call["n"], typed_call["s"]
    msg = bind_error(**typed_call, count=3)
    assert "p2prpc_typed()" in msg
    assert "missing arguments 'n', 's'" in msg and "unexpected argument 'count'" in msg
    missing_only = {k: v for k, v in typed_call.items() if k != "x"}
    msg = bind_error(**dict(missing_only, n=1, s=""))
    assert "missing argument 'x'" in msg and "unexpected" not in msg


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("n", True, "expected int, got bool True; a bool is not an int here"),
        ("n", 1.0, "expected int, got float"),
        ("n", "1", "expected int, got str"),
        ("x", 3, "expected float, got int 3; an int is not accepted for a float"),
        ("x", False, "expected float, got bool False"),
        ("x", "0.5", "expected float, got str"),
        ("b", 1, "expected bool, got int"),
        ("b", None, "expected bool, got NoneType"),
        ("s", b"text", "expected str, got bytes"),
        ("s", 5, "expected str, got int"),
        ("s", "bad \ud800", "not valid Unicode"),
    ],
)
def test_bind_refuses_values_of_the_wrong_type(typed_call, name, value, words):
    msg = bind_error(**dict(typed_call, **{name: value}))
    assert "p2prpc_typed()" in msg and "argument %r" % name in msg and words in msg


def test_bind_refuses_a_text_mode_file(typed_call, rb_file):
    msg = bind_error(**dict(typed_call, f=rb_file(b"abc", mode="r")))
    assert "argument 'f'" in msg and "text mode 'r'" in msg and "open(path, 'rb')" in msg


def test_bind_refuses_a_write_mode_file(typed_call, rb_file):
    for mode in ("wb", "ab"):
        msg = bind_error(**dict(typed_call, f=rb_file(b"abc", mode=mode)))
        assert "argument 'f'" in msg and "opened for writing (mode %r)" % mode in msg


def test_bind_accepts_read_write_binary_files(typed_call, rb_file):
    f = rb_file(b"abc", mode="r+b")
    assert read_function(p2prpc_typed).bind((), dict(typed_call, f=f))["f"] is f


def test_bind_refuses_a_closed_file(typed_call, rb_file):
    f = rb_file(b"abc")
    f.close()
    msg = bind_error(**dict(typed_call, f=f))
    assert "argument 'f'" in msg and "the file is closed" in msg


def test_bind_refuses_non_files(typed_call, tmp_path):
    msg = bind_error(**dict(typed_call, f=io.BytesIO(b"abc")))
    assert "argument 'f'" in msg and "io.BytesIO are not accepted" in msg
    msg = bind_error(**dict(typed_call, f=str(tmp_path / "x.bin")))
    assert "argument 'f'" in msg and "got str" in msg and "pass the open file, not its name" in msg
    msg = bind_error(**dict(typed_call, f=42))
    assert "argument 'f'" in msg and "expected a file opened with open(path, 'rb'), got int" in msg


def test_bind_refuses_a_pipe(typed_call):
    r, w = os.pipe()
    with open(r, "rb") as pipe, open(w, "wb"):
        msg = bind_error(**dict(typed_call, f=pipe))
    assert "argument 'f'" in msg and "not a regular file" in msg


# ---------------------------------------------------------------- check_outputs()


def p2prpc_outputs(x: int) -> {"blob": io.IOBase, "count": int}:
    return {}


def outputs_error(result):
    with pytest.raises(P2PFunctionDeclarationError) as info:
        read_function(p2prpc_outputs).check_outputs(result)
    msg = str(info.value)
    assert "'p2prpc_outputs'" in msg
    return msg


def test_check_outputs_accepts_files_and_paths(rb_file, tmp_path):
    spec = read_function(p2prpc_outputs)
    f = rb_file(b"one")
    out = spec.check_outputs({"count": 2, "blob": f})
    assert list(out) == ["blob", "count"] and out["blob"] is f
    (tmp_path / "result.bin").write_bytes(b"two")
    for path in (str(tmp_path / "result.bin"), tmp_path / "result.bin"):
        out = spec.check_outputs({"blob": path, "count": 2})
        with out["blob"] as opened:
            assert opened.mode == "rb" and opened.read() == b"two"


def test_check_outputs_refuses_a_non_dict():
    msg = outputs_error([("blob", None)])
    assert "returned list" in msg and "'blob', 'count'" in msg


def test_check_outputs_refuses_missing_and_extra_keys(rb_file):
    msg = outputs_error({"blob": rb_file(), "extra": 1})
    assert "missing result key 'count'" in msg and "unexpected result key 'extra'" in msg


@pytest.mark.parametrize(
    "result, words",
    [
        ({"count": True}, "result key 'count': expected int, got bool True"),
        ({"count": "2"}, "result key 'count': expected int, got str"),
        ({"blob": 5}, "result key 'blob': expected a file opened with open(path, 'rb') or a path"),
        ({"blob": "/nonexistent/p2prpc/x"}, "result key 'blob': the path '/nonexistent/p2prpc/x'"),
        ({"blob": "/"}, "result key 'blob': the path '/' is not a regular file"),
        ({"blob": io.BytesIO(b"x")}, "result key 'blob'"),
    ],
)
def test_check_outputs_refuses_bad_values(rb_file, result, words):
    full = {"blob": rb_file(), "count": 1}
    full.update(result)
    assert words in outputs_error(full)


def test_check_outputs_refuses_a_write_mode_file(rb_file):
    msg = outputs_error({"blob": rb_file(mode="wb"), "count": 1})
    assert "result key 'blob'" in msg and "opened for writing" in msg


# ---------------------------------------------------------------- versions


VERSION_SCRIPT = """\
import sys
from p2prpc._spec import read_module_functions
print(",".join(s.version for s in read_module_functions(sys.argv[1])))
"""


def version_in_subprocess(path, seed):
    env = dict(os.environ, PYTHONHASHSEED=str(seed))
    done = subprocess.run(
        [sys.executable, "-c", VERSION_SCRIPT, str(path)],
        cwd=str(path.parent), env=env, capture_output=True, text=True, check=True,
    )
    return done.stdout.strip()


def test_version_is_stable_across_processes(write_module):
    path = write_module(SEED_SOURCE)
    here = read_module_functions(path)[0].version
    assert version_in_subprocess(path, 1) == here
    assert version_in_subprocess(path, 2) == here


def test_version_changes_when_the_source_changes(write_module):
    before = read_module_functions(write_module(SEED_SOURCE, "a/function.py"))[0]
    changed = SEED_SOURCE.replace("10 * arg2", "11 * arg2")
    after = read_module_functions(write_module(changed, "b/function.py"))[0]
    assert before.version != after.version
    assert before.to_json()["args"] == after.to_json()["args"]


def test_version_falls_back_to_the_code_object_without_source():
    ns = {}
    code = compile('def p2prpc_f(x: int) -> {"out": int}:\n    return {"out": x}\n',
                   "<no source>", "exec")
    exec(code, ns)
    spec = read_function(ns["p2prpc_f"])
    assert spec.version == hashlib.sha256(marshal.dumps(ns["p2prpc_f"].__code__)).hexdigest()
    assert spec.module_file is None


# ---------------------------------------------------------------- read_module_functions()


def test_read_module_functions_in_definition_order(write_module):
    write_module(
        """\
        def p2prpc_imported(x: int) -> {"out": int}:
            return {"out": x}
        """,
        "helper_mod.py",
    )
    path = write_module(
        """\
        import io
        from helper_mod import p2prpc_imported


        def p2prpc_zeta(clip: io.IOBase, n: int) -> {"frames": io.IOBase}:
            return {"frames": clip}


        def helper(x):
            return x


        def p2prpc_alpha(text: str) -> {"length": int}:
            return {"length": len(text)}


        p2prpc_limit = 3
        """
    )
    specs = read_module_functions(str(path))
    assert [s.name for s in specs] == ["p2prpc_zeta", "p2prpc_alpha"]
    assert all(s.module_file == str(path) for s in specs)
    # Imported fresh: the functions really live in the file that was named.
    assert specs[1].func(text="abc") == {"length": 3}


def test_read_module_functions_accepts_a_module():
    specs = read_module_functions(sys.modules[__name__])
    names = [s.name for s in specs]
    assert names == ["p2prpc_analyze_large_file", "p2prpc_typed", "p2prpc_outputs"]


def test_read_module_functions_refuses_a_file_without_functions(write_module):
    path = write_module("def analyze(x: int) -> dict:\n    return {}\n")
    with pytest.raises(P2PFunctionDeclarationError) as info:
        read_module_functions(path)
    assert str(path) in str(info.value) and "defines no function" in str(info.value)


def test_read_module_functions_reports_a_syntax_error_with_its_line(write_module):
    path = write_module("import io\n\ndef p2prpc_f(x: int) -> {'out': int}\n    return {}\n")
    with pytest.raises(P2PFunctionDeclarationError) as info:
        read_module_functions(path)
    msg = str(info.value)
    assert str(path) in msg and "line 3" in msg and "syntax error" in msg


def test_read_module_functions_refuses_a_missing_file(tmp_path):
    with pytest.raises(P2PFunctionDeclarationError) as info:
        read_module_functions(tmp_path / "nope.py")
    assert str(tmp_path / "nope.py") in str(info.value) and "no such file" in str(info.value)


def test_read_module_functions_reports_a_bad_function(write_module):
    path = write_module(
        """\
        def p2prpc_good(x: int) -> {"out": int}:
            return {"out": x}


        def p2prpc_bad(nodes: int) -> {"out": int}:
            return {"out": nodes}
        """
    )
    with pytest.raises(P2PFunctionDeclarationError) as info:
        read_module_functions(path)
    assert "'p2prpc_bad'" in str(info.value) and "argument 'nodes'" in str(info.value)
