"""The declaration parser: reads an annotated p2prpc_ function into a FunctionSpec.

Every part of p2prpc (register_p2p_func, the broker, the worker and its executor,
code generation) reads a function through read_function(), so the rules of
docs/DECLARING.md are enforced in exactly one place. A spec also checks a call's
arguments (FunctionSpec.bind) and the function's return value
(FunctionSpec.check_outputs) against the declaration.

Thread safety: read_function() may race on the per-function cache; both readers
compute the same spec, so the race is harmless.
"""
from __future__ import annotations

import collections.abc
import hashlib
import importlib.machinery
import importlib.util
import inspect
import io
import itertools
import marshal
import os
import re
import stat
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import (
    ClientP2PFunctionInvalidArguments,
    P2PFunctionDeclarationError,
    P2PFunctionResultError,
)

__all__ = [
    "KINDS",
    "RESERVED_ARG_NAMES",
    "ArgSpec",
    "FunctionSpec",
    "read_function",
    "read_module_functions",
]

KINDS = ("int", "float", "bool", "str", "file")

PREFIX = "p2prpc_"

# Names the seed's engine kept for itself in a call's record; refused as
# argument names so that old and new stores never confuse the two.
RESERVED_ARG_NAMES = ("identifier", "nodes", "timestamp")

# Names travel in JSON, URLs and store keys: ASCII, bounded, no leading "_".
NAME_MAX = 128
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")

_SCALAR_KINDS = {int: "int", float: "float", bool: "bool", str: "str"}
_FILE_TYPES = (
    io.IOBase,
    io.RawIOBase,
    io.BufferedIOBase,
    io.BufferedReader,
    io.FileIO,
    typing.BinaryIO,
)
_ALLOWED = "int, float, bool, str or a binary file (io.IOBase, typing.BinaryIO, typing.IO[bytes])"

_CACHE_ATTR = "_p2prpc_spec"
_module_counter = itertools.count(1)


class _Bad(Exception):
    """Internal: a value does not fit its kind; the text says why."""


@dataclass(frozen=True)
class ArgSpec:
    """One declared argument or result key: its name and its kind (one of KINDS)."""

    name: str
    kind: str


@dataclass(frozen=True)
class FunctionSpec:
    """What p2prpc knows of a p2prpc_ function. Build it with read_function()."""

    name: str
    args: Tuple[ArgSpec, ...]  # declaration order
    returns: Tuple[ArgSpec, ...]  # declared result keys, declaration order
    version: str  # SHA-256 hex of the source text, see _function_version
    module_file: Optional[str]  # absolute path of the defining file, when known
    func: Callable = field(compare=False, repr=False)

    def bind(self, args: tuple, kwargs: dict) -> Dict[str, Any]:
        """Check a call's arguments against the declaration.

        Returns {name: value} in declaration order, each scalar normalized to
        its exact builtin type (an IntEnum member becomes a plain int). File
        values are returned as given; the caller keeps ownership.
        Raises ClientP2PFunctionInvalidArguments naming the argument for:
        positional arguments, missing or unexpected names, a value of the
        wrong type (bool is not int, int is not float), a str that is not
        valid Unicode, a file not opened for binary reading.
        """
        usage = "%s(%s)" % (self.name, ", ".join(a.name + "=..." for a in self.args))
        if args:
            raise ClientP2PFunctionInvalidArguments(
                "%s() takes keyword arguments only, got %d positional argument%s; call it as %s"
                % (self.name, len(args), "" if len(args) == 1 else "s", usage)
            )
        problem = _name_set_problem([a.name for a in self.args], list(kwargs), "argument")
        if problem:
            raise ClientP2PFunctionInvalidArguments(
                "%s(): %s; a call passes exactly %s" % (self.name, problem, usage)
            )
        bound = {}
        for a in self.args:
            try:
                bound[a.name] = _check_value(a.kind, kwargs[a.name], for_output=False)
            except _Bad as e:
                raise ClientP2PFunctionInvalidArguments(
                    "%s(): argument %r: %s" % (self.name, a.name, e)
                ) from None
        return bound

    def check_outputs(self, result) -> Dict[str, Any]:
        """Check the function's return value against the declared result keys.

        `result` must be a mapping with exactly the declared keys, each value of
        its kind. A file value is either a file object opened for binary
        reading (as for arguments) or a path (str or os.PathLike) of an existing
        regular file. Returns {key: value} in declaration order where every file
        value is a binary file object: the ones given are passed through, paths
        are opened with open(path, "rb") and the caller must close them.
        Raises P2PFunctionDeclarationError naming the function and the key: the
        function broke its own declaration.
        """
        if not isinstance(result, collections.abc.Mapping):
            raise P2PFunctionResultError(
                "function %r returned %s, but its declaration promises a dict with keys %s"
                % (self.name, _type_name(result), _quoted([r.name for r in self.returns]))
            )
        problem = _name_set_problem([r.name for r in self.returns], list(result), "result key")
        if problem:
            raise P2PFunctionResultError(
                "function %r returned a dict that breaks its declaration: %s; declared keys are %s"
                % (self.name, problem, _quoted([r.name for r in self.returns]))
            )
        checked = {}
        for r in self.returns:
            try:
                checked[r.name] = _check_value(r.kind, result[r.name], for_output=True)
            except _Bad as e:
                raise P2PFunctionResultError(
                    "function %r returned a bad value for result key %r: %s"
                    % (self.name, r.name, e)
                ) from None
        opened = []
        kinds = {r.name: r.kind for r in self.returns}
        try:
            for key, value in checked.items():
                if kinds[key] == "file" and isinstance(value, (str, os.PathLike)):
                    checked[key] = open(value, "rb")
                    opened.append(checked[key])
        except OSError as e:
            for f in opened:
                f.close()
            raise P2PFunctionResultError(
                "function %r returned a bad value for result key %r: cannot open %r: %s"
                % (self.name, key, os.fspath(value), e.strerror or e)
            ) from None
        return checked

    def to_json(self) -> dict:
        """The spec as it goes on the wire (GET /v1/functions)."""
        return {
            "name": self.name,
            "version": self.version,
            "args": [{"name": a.name, "kind": a.kind} for a in self.args],
            "returns": [{"name": r.name, "kind": r.kind} for r in self.returns],
        }


def read_function(fn) -> FunctionSpec:
    """Read fn's declaration into a FunctionSpec, enforcing docs/DECLARING.md.

    The spec is cached on the function object, so reading it again is cheap and
    returns the same spec. Raises P2PFunctionDeclarationError naming the
    function, the argument (or result key) and the rule that was broken.
    """
    cached = getattr(fn, "__dict__", {}).get(_CACHE_ATTR)
    # functools.wraps copies __dict__, so a wrapper would inherit its target's spec.
    if cached is not None and cached.func is fn:
        return cached
    spec = _read(fn)
    try:
        setattr(fn, _CACHE_ATTR, spec)
    except AttributeError:
        pass
    return spec


def read_module_functions(path_or_module) -> List[FunctionSpec]:
    """Read every top-level p2prpc_ function defined in a file or module.

    A path is imported afresh under a unique module name, like running it as a
    script: its directory is put on sys.path (and left there, so the
    functions' own imports keep working when they run later). Returns the
    specs in definition order. Raises P2PFunctionDeclarationError naming the
    file when it cannot be read, has a syntax error (with the line) or defines
    no p2prpc_ function, and for any function that breaks a rule.
    """
    if isinstance(path_or_module, (str, os.PathLike)):
        module = _import_path(os.path.abspath(os.fspath(path_or_module)))
    elif inspect.ismodule(path_or_module):
        module = path_or_module
    else:
        raise TypeError(
            "read_module_functions() takes a path or a module, got %s" % _type_name(path_or_module)
        )
    where = getattr(module, "__file__", None) or module.__name__
    found = []
    for name, obj in list(vars(module).items()):
        if (
            name.startswith(PREFIX)
            and inspect.isfunction(obj)
            and obj.__module__ == module.__name__
            and obj.__qualname__ == name
        ):
            found.append(obj)
    if not found:
        raise P2PFunctionDeclarationError(
            "%s defines no function whose name starts with %r; declare at least one, e.g. "
            "def p2prpc_work(path: io.IOBase, n: int) -> {\"out\": io.IOBase}" % (where, PREFIX)
        )
    found.sort(key=lambda f: f.__code__.co_firstlineno)
    return [read_function(f) for f in found]


def _import_path(path: str):
    if not os.path.isfile(path):
        raise P2PFunctionDeclarationError(
            "cannot read p2prpc functions from %s: no such file" % path
        )
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    modname = "_p2prpc_user_%d_%s" % (next(_module_counter), stem)
    loader = importlib.machinery.SourceFileLoader(modname, path)
    mspec = importlib.util.spec_from_file_location(modname, path, loader=loader)
    module = importlib.util.module_from_spec(mspec)
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[modname] = module
    try:
        loader.exec_module(module)
    except SyntaxError as e:
        del sys.modules[modname]
        raise P2PFunctionDeclarationError(
            "cannot read p2prpc functions from %s: syntax error in %s, line %s: %s"
            % (path, e.filename or path, e.lineno, e.msg)
        ) from None
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def _read(fn) -> FunctionSpec:
    name = getattr(fn, "__name__", None)
    if not inspect.isfunction(fn):
        raise P2PFunctionDeclarationError(
            "%r is a %s, not a function: p2prpc functions are plain def functions"
            % (name or fn, _type_name(fn))
        )
    if not name.startswith(PREFIX) or len(name) == len(PREFIX):
        raise P2PFunctionDeclarationError(
            "function %r: the name must start with %r (e.g. %s%s)" % (name, PREFIX, PREFIX, name)
        )
    if len(name) > NAME_MAX or not _NAME_RE.match(name):
        raise P2PFunctionDeclarationError(
            "function %r: the name must be ASCII letters, digits and '_', at most %d characters"
            % (name, NAME_MAX)
        )
    if (
        inspect.iscoroutinefunction(fn)
        or inspect.isasyncgenfunction(fn)
        or inspect.isgeneratorfunction(fn)
    ):
        raise P2PFunctionDeclarationError(
            "function %r: async and generator functions are not supported; the function must "
            "return its result dict" % name
        )

    annotations = dict(getattr(fn, "__annotations__", None) or {})
    args = []
    for p in inspect.signature(fn, follow_wrapped=False).parameters.values():
        args.append(ArgSpec(p.name, _read_param(fn, p, annotations)))
    if "return" not in annotations:
        raise P2PFunctionDeclarationError(
            "function %r: the return annotation is missing; declare the result keys, e.g. "
            "-> {\"out\": io.IOBase, \"count\": int}" % name
        )
    returns = _read_returns(fn, _resolve(fn, annotations["return"], "the return annotation"))
    return FunctionSpec(
        name=name,
        args=tuple(args),
        returns=returns,
        version=_function_version(fn),
        module_file=_module_file(fn),
        func=fn,
    )


def _read_param(fn, p: inspect.Parameter, annotations: dict) -> str:
    where = "function %r, argument %r" % (fn.__name__, p.name)
    if p.kind is p.VAR_POSITIONAL or p.kind is p.VAR_KEYWORD:
        raise P2PFunctionDeclarationError(
            "%s: %s%s is not allowed; a call passes exactly the declared arguments, by keyword"
            % (where, "*" if p.kind is p.VAR_POSITIONAL else "**", p.name)
        )
    if p.kind is p.POSITIONAL_ONLY:
        raise P2PFunctionDeclarationError(
            "%s: positional-only arguments (before '/') are not allowed; calls pass every "
            "argument by keyword" % where
        )
    if p.name in RESERVED_ARG_NAMES:
        raise P2PFunctionDeclarationError(
            "%s: the name is reserved by p2prpc (reserved: %s, and names starting with %r or '_')"
            % (where, ", ".join(RESERVED_ARG_NAMES), PREFIX)
        )
    if p.name.startswith(PREFIX) or p.name.startswith("_"):
        raise P2PFunctionDeclarationError(
            "%s: names starting with %r or '_' are reserved by p2prpc" % (where, PREFIX)
        )
    if len(p.name) > NAME_MAX or not _NAME_RE.match(p.name):
        raise P2PFunctionDeclarationError(
            "%s: an argument name must be ASCII letters, digits and '_', at most %d characters"
            % (where, NAME_MAX)
        )
    if p.default is not p.empty:
        raise P2PFunctionDeclarationError(
            "%s: default values are not allowed; every call passes every argument, so that "
            "the call's identity is its full argument set" % where
        )
    if p.name not in annotations:
        raise P2PFunctionDeclarationError(
            "%s: the annotation is missing; annotate it with %s" % (where, _ALLOWED)
        )
    hint = _resolve(fn, annotations[p.name], "argument %r" % p.name)
    kind = _kind_of(hint)
    if kind is None:
        raise P2PFunctionDeclarationError(
            "%s: the annotation %s is not supported; an argument must be %s"
            % (where, _hint_name(hint), _ALLOWED)
        )
    return kind


def _read_returns(fn, hint) -> Tuple[ArgSpec, ...]:
    where = "function %r, return annotation" % fn.__name__
    if isinstance(hint, dict):
        items = list(hint.items())
    elif _is_typeddict(hint):
        if hint.__optional_keys__:
            raise P2PFunctionDeclarationError(
                "%s: TypedDict %s has optional keys %s; every result key must be required"
                % (where, hint.__name__, _quoted(sorted(hint.__optional_keys__)))
            )
        try:
            items = list(typing.get_type_hints(hint).items())
        except Exception as e:
            raise P2PFunctionDeclarationError(
                "%s: cannot resolve the annotations of TypedDict %s (%s: %s)"
                % (where, hint.__name__, type(e).__name__, e)
            ) from None
    else:
        extra = ""
        if hint is dict or typing.get_origin(hint) in (dict, collections.abc.Mapping):
            extra = " (%s does not name the result keys)" % _hint_name(hint)
        raise P2PFunctionDeclarationError(
            "%s: %s is not supported%s; declare the result as a dict literal such as "
            "-> {\"out\": io.IOBase, \"count\": int} or as a typing.TypedDict subclass"
            % (where, _hint_name(hint), extra)
        )
    if not items:
        raise P2PFunctionDeclarationError(
            "%s: the result declares no keys; a function must return at least one value" % where
        )
    returns = []
    for key, value in items:
        if not isinstance(key, str) or not key:
            raise P2PFunctionDeclarationError(
                "%s: result key %r must be a non-empty str" % (where, key)
            )
        if len(key) > NAME_MAX or not _NAME_RE.match(key):
            raise P2PFunctionDeclarationError(
                "%s: result key %r must start with an ASCII letter and hold only ASCII letters, "
                "digits and '_', at most %d characters" % (where, key, NAME_MAX)
            )
        value = _resolve(fn, value, "result key %r" % key)
        kind = _kind_of(value)
        if kind is None:
            raise P2PFunctionDeclarationError(
                "%s: result key %r has type %s, which is not supported; a result value must be %s"
                % (where, key, _hint_name(value), _ALLOWED)
            )
        returns.append(ArgSpec(key, kind))
    return tuple(returns)


def _resolve(fn, hint, what: str):
    """Evaluate a string annotation (PEP 563) in the function's module globals."""
    if not isinstance(hint, str):
        return hint
    try:
        return eval(hint, fn.__globals__)
    except Exception as e:
        raise P2PFunctionDeclarationError(
            "function %r, %s: cannot resolve the string annotation %r (%s: %s); string "
            "annotations are evaluated in the module's globals, so every name they use must "
            "be defined or imported at module level"
            % (fn.__name__, what, hint, type(e).__name__, e)
        ) from None


def _kind_of(hint) -> Optional[str]:
    if typing.get_origin(hint) is typing.Annotated:
        hint = hint.__origin__
    if isinstance(hint, type) and hint in _SCALAR_KINDS:
        return _SCALAR_KINDS[hint]
    if any(hint is t for t in _FILE_TYPES):
        return "file"
    if typing.get_origin(hint) is typing.IO and typing.get_args(hint) == (bytes,):
        return "file"
    return None


def _is_typeddict(hint) -> bool:
    # typing.is_typeddict only exists from 3.10; these attributes mark every
    # TypedDict class (typing's and typing_extensions').
    return (
        isinstance(hint, type)
        and issubclass(hint, dict)
        and hasattr(hint, "__total__")
        and hasattr(hint, "__optional_keys__")
    )


def _function_version(fn) -> str:
    """SHA-256 hex of the source text (utf-8); without source, of the marshalled code."""
    try:
        data = inspect.getsource(fn).encode("utf-8")
    except (OSError, TypeError):
        data = marshal.dumps(fn.__code__)
    return hashlib.sha256(data).hexdigest()


def _module_file(fn) -> Optional[str]:
    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        return None
    return os.path.abspath(path) if path else None


def _check_value(kind: str, value, for_output: bool):
    """The value normalized for its kind, or _Bad saying what is wrong."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise _Bad("expected bool, got %s" % _type_name(value))
        return value
    if kind == "int":
        if isinstance(value, bool):
            raise _Bad(
                "expected int, got bool %r; a bool is not an int here (the call's identity "
                "encodes the type, so True and 1 are different calls)" % value
            )
        if not isinstance(value, int):
            raise _Bad("expected int, got %s" % _type_name(value))
        return int(value)
    if kind == "float":
        if isinstance(value, (bool, int)):
            raise _Bad(
                "expected float, got %s %r; an int is not accepted for a float (the call's "
                "identity encodes the type): pass %d.0" % (_type_name(value), value, int(value))
            )
        if not isinstance(value, float):
            raise _Bad("expected float, got %s" % _type_name(value))
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise _Bad("expected str, got %s" % _type_name(value))
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise _Bad(
                "the str is not valid Unicode (%s at position %d)" % (e.reason, e.start)
            ) from None
        return str.__str__(value)
    if for_output and isinstance(value, (str, os.PathLike)):
        return _check_path(value)
    _check_binary_file(value, for_output)
    return value


def _check_path(value):
    path = os.fspath(value)
    if isinstance(path, bytes):
        raise _Bad("expected a file or a str path, got a bytes path %r" % path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise _Bad("the path %r cannot be read: %s" % (path, e.strerror or e)) from None
    if not stat.S_ISREG(st.st_mode):
        raise _Bad("the path %r is not a regular file" % path)
    return value


def _check_binary_file(f, for_output: bool) -> None:
    how = "a file opened with open(path, 'rb')" + (" or a path to one" if for_output else "")
    if isinstance(f, (str, bytes, os.PathLike)):
        raise _Bad(
            "expected %s, got %s %r; pass the open file, not its name" % (how, _type_name(f), f)
        )
    if not all(hasattr(f, attr) for attr in ("read", "fileno", "closed")):
        raise _Bad("expected %s, got %s" % (how, _type_name(f)))
    if f.closed:
        raise _Bad("the file is closed; pass %s" % how)
    try:
        fd = f.fileno()
    except (OSError, ValueError):
        raise _Bad(
            "%s has no file descriptor (fileno() failed), so in-memory files such as "
            "io.BytesIO are not accepted; pass %s" % (_type_name(f), how)
        ) from None
    mode = getattr(f, "mode", None)
    if not isinstance(mode, str):
        raise _Bad(
            "%s does not say how it was opened (no str mode); pass %s" % (_type_name(f), how)
        )
    if "b" not in mode:
        raise _Bad("the file is opened in text mode %r; pass %s" % (mode, how))
    readable = getattr(f, "readable", None)
    if ("r" not in mode and "+" not in mode) or (readable is not None and not readable()):
        raise _Bad("the file is opened for writing (mode %r), not reading; pass %s" % (mode, how))
    try:
        st = os.fstat(fd)
    except OSError as e:
        raise _Bad("cannot stat the file: %s" % (e.strerror or e)) from None
    if not stat.S_ISREG(st.st_mode):
        raise _Bad(
            "the file is not a regular file (pipes, sockets and devices cannot be hashed and "
            "sent again); pass %s" % how
        )


def _name_set_problem(declared: List[str], given: List[str], word: str) -> str:
    """'missing argument 'a'; unexpected argument 'b'' or '' when the sets match."""
    declared_set = set(declared)
    missing = [n for n in declared if n not in given]
    unexpected = [n for n in given if n not in declared_set]
    parts = []
    if missing:
        parts.append("missing %s%s %s" % (word, "" if len(missing) == 1 else "s", _quoted(missing)))
    if unexpected:
        parts.append(
            "unexpected %s%s %s" % (word, "" if len(unexpected) == 1 else "s", _quoted(unexpected))
        )
    return "; ".join(parts)


def _quoted(names) -> str:
    return ", ".join(repr(n) for n in names)


def _type_name(value) -> str:
    return _hint_name(type(value))


def _hint_name(hint) -> str:
    if not isinstance(hint, type):
        return repr(hint)
    if hint.__module__ == "builtins":
        return hint.__qualname__
    return "%s.%s" % (hint.__module__, hint.__qualname__)
