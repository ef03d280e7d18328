"""Type stubs for p2prpc._core, the C engine (csrc/). Each subsystem's
bindings add their section below."""
import os
from typing import Dict, List, Literal, Optional, Tuple, Union

__version__: str  # the version the engine was built as (csrc/version.h); p2prpc.__version__
# (csrc/py_module.c) True in a test build (P2PRPC_TEST_BUILD=1): P2PRPC_FAULTS is honoured
# (csrc/fault.h). A release build refuses to import while P2PRPC_FAULTS is set.
fault_injection: bool

# errors (csrc/error_map.h, the one table; csrc/py_module.c)
# Each row: (name, code, http_status, primary, class name in p2prpc.errors, default message).
ERRORS: Tuple[Tuple[str, int, int, int, str, str], ...]

def code_for_http_status(status: int, /) -> str:
    """The engine code name an HTTP status means in an answer carrying no code of its own."""

# hashing and identity
# (csrc/py_hash.c; the encoding is specified in docs/IDENTITY.md)

_StrPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
_FileRef = Union[int, _StrPath]  # an open fd (hashed from offset 0, position kept) or a path
_IdentTag = Literal["i", "f", "b", "s", "F", "H"]  # H: a file given by its SHA-256 hex
_IdentArg = Tuple[str, _IdentTag, Union[int, float, bool, str, _FileRef]]

def sha256_file(file: _FileRef, /) -> str:
    """SHA-256 (64 lowercase hex) of a file's whole content; GIL released."""
    ...

def sha256_fd_chunks(fd: int, /) -> Tuple[str, int, bytes]:
    """(SHA-256 hex, size, the 32-byte digest of each upload chunk) of an open fd in one pass;
    the digests are b"" for a file of too many chunks. GIL released."""
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

# transport
# (csrc/py_httpc.c over csrc/httpc.h; csrc/py_worker.c over csrc/worker.h and csrc/gpu.h)

from typing import Callable, Dict, Optional, Sequence

class Connection:
    """One keep-alive connection to one broker ("host:port", "http://host:port" or
    "https://host:port"). With key, requests are signed and every JSON answer must carry
    the broker's signature for that request (else AuthenticationError). ca: a PEM file of
    the CA(s) trusted for https instead of the system store; the certificate and host
    name are always verified (a failure is ConnectionFailed naming "certificate verify
    failed"). Every network call releases the GIL; one thread uses it at a time."""

    def __init__(
        self,
        base_url: str,
        key: Optional[bytes] = None,
        connect_timeout_ms: int = 2000,
        ca: Optional[_StrPath] = None,
    ) -> None: ...
    @property
    def base_url(self) -> str: ...
    def request(
        self, method: str, path: str, body: Optional[bytes] = None, timeout_ms: int = 30000
    ) -> Tuple[int, bytes]:
        """(status, body). 401, or with a key an answer not signed for this request, raises
        AuthenticationError; transport and TLS failures raise ConnectionFailed or
        EngineTimeoutError; answers over 4 MiB LimitExceeded."""
        ...
    def upload_blob(self, fd: int, sha: str, size: int, until: Optional[int] = None,
                    chunk_digests: Optional[bytes] = None) -> bool:
        """Make the broker hold blob sha (the first size bytes of fd): dedup, resume, chunks.
        With until: return False once the broker has synced >= until bytes of it (not
        committed; a call naming it may be submitted, then call again to finish).
        chunk_digests: from sha256_fd_chunks(fd), so the chunks are not hashed again."""
        ...
    def download_blob(self, sha: str, blob_dir: _StrPath) -> str:
        """Fetch blob sha into blob_dir (resumed, verified) unless held; returns its path."""
        ...
    def close(self) -> None: ...

def derive_key(password: str) -> bytes:
    """The 32-byte network key of a password (PBKDF2-HMAC-SHA256; slow, GIL released)."""
    ...

RETRY_STATUSES: Tuple[int, ...]  # answers that say the broker failed, not refused

def retryable_status(status: int, /) -> bool:
    """Whether an HTTP answer is worth another try (500, 502, 503, 504): the worker's rule."""
    ...

def backoff_ms(attempt: int, first_ms: int, max_ms: int, u: float) -> int:
    """The wait before another try after `attempt` failures in a row: first_ms doubled per
    failure up to max_ms, drawn in its upper half by u in [0, 1). The worker's policy."""
    ...

class Worker:
    """The worker loop on engine threads. run(job_json) -> result_json blocks until the
    call finished; cancel(call_id) asks a running call to stop; log(level, message)."""

    def __init__(
        self,
        brokers: Sequence[str],
        functions: Sequence[Tuple[str, str]],
        data_dir: _StrPath,
        run: Callable[[str], str],
        cancel: Callable[[str], None],
        key: Optional[bytes] = None,
        name: Optional[str] = None,
        concurrency: int = 1,
        lease_wait_ms: int = 20000,
        log: Optional[Callable[[int, str], None]] = None,
        connect_timeout_ms: int = 5000,
        ca: Optional[str] = None,
        cache_max_bytes: int = 0,
    ) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None:
        """Stop polling, let running calls finish and report, join (GIL released)."""
        ...
    def save_checkpoint(self, call_id: str, key: str, path: Union[str, "os.PathLike[str]"]) -> None:
        """Store the file at path as the running call's checkpoint `key` on the broker
        (blob upload, then the checkpoint record under the call's lease)."""
    def report_progress(self, call_id: str, pct: float) -> bool:
        """Progress (0..100) for the call's next heartbeat; False when it is not running."""
        ...

def gpu_probe() -> List[Dict[str, Union[int, str, bool]]]:
    """GPUs via NVML or the CUDA driver (dlopen'd): index, name, uuid, total_bytes,
    free_bytes, free_known, source. [] when there is no GPU or driver."""
    ...

# broker
class Broker:
    """A broker node serving docs/API.md on an engine thread."""

    def __init__(
        self,
        functions_json: str,
        data_dir: str,
        host: str = "127.0.0.1",
        port: int = 0,
        key: Optional[bytes] = None,
        lease_ms: int = 30000,
        heartbeat_ms: int = 2000,
        max_attempts: int = 3,
        synchronous: Optional[str] = None,
        store_uri: Optional[str] = None,
        advertise: Optional[str] = None,
        expire_ms: int = 0,
        insecure: bool = False,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        peers: Optional[List[str]] = None,
        max_body: int = 0,
        request_timeout_ms: int = 0,
        max_connections: int = 0,
        max_leases_per_worker: int = 0,
        max_headers: int = 0,
        max_header_bytes: int = 0,
        max_depth: int = 0,
        upload_stall_ms: int = 0,
    ) -> None: ...
    @property
    def port(self) -> int: ...
    def start(self) -> None: ...
    def stop(self) -> None:
        """Answer parked long-polls (503), stop serving, close the store. Idempotent."""

# the wire
# (csrc/py_wire.c over csrc/wire.h: every document of docs/API.md, the id rules, the paths)

WAIT_MAX_MS: int  # the longest long-poll a broker grants (wait_ms)
BATCH_MAX: int  # calls of one batch submit, ids of one wait
META_MAX: int  # bytes of a JSON body
NAME_MAX: int  # bytes of a function, argument or result name
ARGS_MAX: int  # arguments or results of one function
FUNCTIONS_MAX: int  # functions one broker serves
INT_DIGITS_MAX: int  # decimal digits of an int value
FILENAME_MAX: int  # bytes of a file's name kept
CALL_ID_HEX: int  # hex digits of a call id, blob name or version
LEASE_ID_HEX: int  # hex digits of a lease id
CHECKPOINT_KEY_MAX: int  # bytes of a checkpoint key
CHECKPOINTS_MAX: int  # checkpoint keys of one call
BLOB_CHUNK: int  # the largest upload chunk
BLOB_UPLOAD_CHUNK: int  # the chunk the engine's uploaders send

def wire_documents() -> Tuple[str, ...]:
    """The names of the documents wire_canonical knows ("call", "lease", "submit", ...)."""
    ...

def wire_canonical(doc: str, body: bytes, answer: bool = False) -> bytes:
    """Check the JSON body as document doc and return its canonical text (its fields in the
    document's order, unknown ones left out). A broken rule raises InvalidInputError (or
    ProtocolError with answer=True) naming the field; a count beyond a limit LimitExceeded."""
    ...

def valid_call_id(s: object, /) -> bool: ...
def valid_lease_id(s: object, /) -> bool: ...
def valid_checkpoint_key(s: object, /) -> bool: ...
def valid_int_text(s: object, /) -> bool: ...
def valid_float_text(s: object, /) -> bool: ...
def wire_path_call(call_id: str, op: Optional[str] = None) -> str: ...
def wire_path_poll_call(call_id: str, wait_ms: int, since: int, unseen: bool = False) -> str: ...
def wire_path_submit(wait_ms: int = 0) -> str: ...
def wire_path_lease(lease_id: str, op: str) -> str: ...
def wire_path_leases(request_id: Optional[str] = None) -> str: ...
