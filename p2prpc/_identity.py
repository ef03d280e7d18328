"""Call identity on the Python side: turns a function and its bound arguments
into the engine's call id (docs/IDENTITY.md, computed by
_core.call_identifier_raw) and into the file digests an upload needs.

A file argument is named by the SHA-256 of its whole content, read from its
fd from offset 0 with the position left where the caller had it. The client
needs each file's SHA-256 twice (for the id and to name the blob it uploads),
so prepare_call() hashes every file once and hands both out. A file unchanged
since it was last hashed is not read again: its SHA-256 comes from the
content-hash index (_hashindex.py) of the client's cache_path.
"""
import os
from typing import Dict, NamedTuple, Optional, Union

from . import _core
from ._hashindex import HashIndex, default_index, open_index
from ._spec import FunctionSpec, read_function

__all__ = ["call_identifier", "spec_of", "FileDigest", "PreparedCall", "file_digests",
           "prepare_call"]

# The engine's argument tags (docs/IDENTITY.md). A file goes as "H", its
# SHA-256 (64 hex) computed here, so it is hashed once for the id and the upload.
_TAGS = {"int": "i", "float": "f", "bool": "b", "str": "s"}
_DIGEST_TAG = "H"


class FileDigest(NamedTuple):
    """A file argument as it goes on the wire: its content's SHA-256 (hex), its
    size in bytes, the base name it was opened under (metadata) and its fd;
    chunks: the digest of each upload chunk when the file was hashed just now
    (b"" when its hash came from the content-hash index), so the upload need
    not hash them again."""

    sha: str
    size: int
    filename: str
    fd: int
    chunks: bytes = b""


class PreparedCall(NamedTuple):
    """A call ready to send: its id, the spec, the bound arguments and, per
    file argument, its digest."""

    call_id: str
    spec: FunctionSpec
    bound: Dict[str, object]
    files: Dict[str, FileDigest]


def spec_of(fn) -> FunctionSpec:
    """The spec of a p2prpc_ function, or of a function returned by
    register_p2p_func() (which carries the spec of the function it wraps)."""
    spec = getattr(fn, "p2p_spec", None)
    if isinstance(spec, FunctionSpec):
        return spec
    return read_function(fn)


def call_identifier(fn, **kwargs) -> str:
    """The call id (64 lowercase hex) of calling fn with these keyword
    arguments: what the client, the broker and the cache all name the call by.
    Raises ClientP2PFunctionInvalidArguments when the arguments do not fit the
    declaration, P2PFunctionDeclarationError when fn is not a p2prpc function."""
    spec = spec_of(fn)
    bound = spec.bind((), kwargs)
    return prepare_call(spec, bound).call_id


IndexArg = Union[HashIndex, str, "os.PathLike[str]", bool, None]


def _index_of(index: IndexArg) -> Optional[HashIndex]:
    if index is None or index is True:
        return default_index()
    if index is False:
        return None
    if isinstance(index, HashIndex):
        return index
    return open_index(index)


def file_digests(spec: FunctionSpec, bound: Dict[str, object],
                 index: IndexArg = None) -> Dict[str, FileDigest]:
    """{argument name: FileDigest} for every file argument, each hashed once.
    index: the content-hash index to consult and update: a HashIndex, a
    client's cache_path (its index file), None for the default cache_path's,
    False to hash every file without one."""
    idx = _index_of(index)
    out = {}
    for a in spec.args:
        if a.kind != "file":
            continue
        f = bound[a.name]
        fd = f.fileno()
        if idx is not None:
            sha, size, chunks = idx.sha256_fd_chunks(fd)
        else:
            sha, size, chunks = _core.sha256_fd_chunks(fd)
        name = getattr(f, "name", "")
        filename = os.path.basename(name) if isinstance(name, str) else ""
        out[a.name] = FileDigest(sha, size, filename, fd, chunks)
    return out


def prepare_call(spec: FunctionSpec, bound: Dict[str, object],
                 files: Optional[Dict[str, FileDigest]] = None,
                 index: IndexArg = None) -> PreparedCall:
    """Hash the file arguments (unless `files` already holds the digest of
    every one) and compute the call id. `bound` is the output of spec.bind(); index as
    for file_digests()."""
    if files is None:
        files = file_digests(spec, bound, index)
    raw = []
    for a in spec.args:
        if a.kind == "file":
            raw.append((a.name, _DIGEST_TAG, files[a.name].sha))
        else:
            raw.append((a.name, _TAGS[a.kind], bound[a.name]))
    call_id = _core.call_identifier_raw(spec.name, spec.version, raw)
    return PreparedCall(call_id, spec, bound, files)
