"""The whole p2prpc exception tree. Every error p2prpc raises is a P2PRPCError.

The seed's names are kept where they fit (ClientNoBrokerFound,
ClientFunctionError, ClientFutureTimeoutError, ClientP2PFunctionInvalidArguments).
Errors coming out of the C engine are mapped by code by the one binding
function in csrc/py_module.c. The codes, their HTTP statuses and the class each
maps to are defined once, in csrc/error_map.h; the engine exports that table as
p2prpc._core.ERRORS and ENGINE_ERRORS below is built from it.
"""

__all__ = [
    "P2PRPCError",
    "P2PFunctionDeclarationError",
    "P2PFunctionResultError",
    "ClientP2PFunctionInvalidArguments",
    "ClientNoBrokerFound",
    "ClientFunctionError",
    "ClientFutureTimeoutError",
    "ClientCallTerminated",
    "ClientCallDeleted",
    "ClientCallFailed",
    "AuthenticationError",
    "UnsignedAnswerError",
    "FunctionVersionMismatch",
    "InvalidInputError",
    "StorageError",
    "DiskFullError",
    "NotFoundError",
    "CorruptDataError",
    "NotSupportedError",
    "StateError",
    "AlreadyExistsError",
    "EngineTimeoutError",
    "ConnectionFailed",
    "ProtocolError",
    "LimitExceeded",
    "OutOfMemoryError",
    "ENGINE_ERRORS",
    "HTTP_STATUS",
    "error_for_answer",
]


class P2PRPCError(Exception):
    """Base of every error raised by p2prpc."""


class P2PFunctionDeclarationError(P2PRPCError, TypeError):
    """A p2prpc_ function breaks a declaration rule (its name, an argument's
    annotation, the return annotation, a reserved argument name). Raised by
    register_p2p_func() and every other reader of a function; the message names
    the function, the argument and the rule."""


class P2PFunctionResultError(P2PFunctionDeclarationError):
    """The function returned a value that breaks its declared result: not a
    dict, a missing or extra key, or a value of the wrong type. The message
    names the function and the key."""


class ClientP2PFunctionInvalidArguments(P2PRPCError, TypeError):
    """A call passed arguments that do not match the declaration: positional
    arguments, a missing or unknown name, a value of the wrong type, or a file
    not opened for binary reading. The message names the argument."""


class ClientNoBrokerFound(P2PRPCError, ConnectionError):
    """No broker of the discovery file answered within the configured time."""


class ClientFunctionError(P2PRPCError):
    """The remote function raised. Carries the remote exception's type name
    (remote_type), message (remote_message) and traceback text (remote_traceback)."""

    def __init__(self, message, remote_type="", remote_message="", remote_traceback=""):
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class ClientFutureTimeoutError(P2PRPCError, TimeoutError):
    """future.get(timeout) ran out of time before the result arrived."""


class ClientCallTerminated(P2PRPCError):
    """The call was terminated (future.terminate() or another client) before it finished."""


class ClientCallDeleted(P2PRPCError):
    """The call's stored data was deleted (future.delete()) while someone waited for it."""


class ClientCallFailed(P2PRPCError):
    """The network gave up on the call (e.g. too many lapsed leases); the message says why."""


class AuthenticationError(P2PRPCError):
    """A broker refused our credentials (wrong password), or answered without them."""


class UnsignedAnswerError(AuthenticationError):
    """An answer did not come from a holder of the network password: it carries
    no signature, or one that does not match the request (engine code
    EUNSIGNED). A wrong broker address, a broker started with another
    password (or none), or someone in between."""


class FunctionVersionMismatch(P2PRPCError):
    """Client, broker and worker disagree on a function's version (the SHA-256 of
    its source); the message names both versions."""


class InvalidInputError(P2PRPCError, ValueError):
    """The engine was given malformed input (engine code EINVAL)."""


class StorageError(P2PRPCError, OSError):
    """Reading or writing the store or a blob failed (engine code EIO)."""


class DiskFullError(StorageError):
    """The disk filled up; nothing partial was kept (engine code ENOSPC)."""


class NotFoundError(P2PRPCError, LookupError):
    """No such call, blob, lease or file (engine code ENOTFOUND)."""


class CorruptDataError(P2PRPCError):
    """Stored data failed a check: a blob's hash, a database's schema or integrity
    (engine code ECORRUPT). The message names the file or blob."""


class NotSupportedError(P2PRPCError):
    """A feature or backend that this build does not include (engine code ENOTSUP)."""


class StateError(P2PRPCError):
    """The operation is not allowed in the call's current state, e.g. a result
    pushed under a lapsed lease (engine code ESTATE)."""


class AlreadyExistsError(P2PRPCError):
    """Something that must be new already exists (engine code EEXIST)."""


class EngineTimeoutError(P2PRPCError, TimeoutError):
    """An engine wait or transfer ran out of time (engine code ETIMEDOUT)."""


class ConnectionFailed(P2PRPCError, ConnectionError):
    """A peer could not be reached (engine code ECONN)."""


class ProtocolError(P2PRPCError):
    """A peer answered something p2prpc cannot understand (engine code EPROTO)."""


class LimitExceeded(P2PRPCError):
    """A configured limit was exceeded (engine code ELIMIT); the message names it."""


class OutOfMemoryError(P2PRPCError, MemoryError):
    """The engine could not allocate memory (engine code ENOMEM)."""


def _table():
    """ENGINE_ERRORS and HTTP_STATUS, built once from the engine's table
    (csrc/error_map.h through p2prpc._core.ERRORS). Read on first use, not at
    import: p2prpc._core looks up the classes above in this module as it loads,
    so this module must load without it."""
    built = globals().get("_built")
    if built is None:
        from . import _core

        built = ({row[0]: globals()[row[4]] for row in _core.ERRORS},
                 {row[0]: row[2] for row in _core.ERRORS})
        globals()["_built"] = built
    return built


def __getattr__(name):
    # ENGINE_ERRORS: engine code name ("EINVAL") -> exception class;
    # HTTP_STATUS: engine code name -> the HTTP status a broker answers with.
    if name == "ENGINE_ERRORS":
        return _table()[0]
    if name == "HTTP_STATUS":
        return _table()[1]
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def error_for_answer(status, code):
    """The exception class for a failed answer: by the engine code it carries
    (`code`, e.g. "ENOTFOUND"), else by what its HTTP status means
    (csrc/error_map.h's primary code of that status). Never by message text."""
    from . import _core

    engine_errors = _table()[0]
    cls = engine_errors.get(code)
    if cls is None:
        cls = engine_errors[_core.code_for_http_status(status)]
    return cls
