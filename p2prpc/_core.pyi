"""Type stubs for p2prpc._core, the C engine (csrc/). Each subsystem's
bindings add their section below."""
import os
from typing import List, Literal, Tuple, Union

# hashing and identity
# (csrc/py_hash.c; the encoding is specified in docs/IDENTITY.md)

_StrPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
_FileRef = Union[int, _StrPath]  # an open fd (hashed from offset 0, position kept) or a path
_IdentTag = Literal["i", "f", "b", "s", "F"]
_IdentArg = Tuple[str, _IdentTag, Union[int, float, bool, str, _FileRef]]

def sha256_file(file: _FileRef, /) -> str:
    """SHA-256 (64 lowercase hex) of a file's whole content; GIL released."""
    ...

def call_identifier_raw(
    function: str,
    version: str,
    args: Union[List[_IdentArg], Tuple[_IdentArg, ...]],
) -> str:
    """Call id (64 lowercase hex) of (function, version, args) under encoding v1.

    args: (name, tag, value) in declaration order; tag 'i' int, 'f' float,
    'b' bool, 's' str, 'F' file (int fd or path, hashed by content)."""
    ...
