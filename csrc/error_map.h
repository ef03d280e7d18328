/*
 * error_map.h - the one definition of the engine's error codes.
 *
 * Every list of errors is generated from PRPC_ERROR_MAP, the way libuv keeps
 * UV_ERRNO_MAP: the PRPC_E* enum (common.h), the stable names
 * (prpc_strerror), the HTTP status a broker answers with and its reverse
 * (error.c), and the table p2prpc._core exports as ERRORS, from which the
 * Python layer maps each code to its exception class (p2prpc/errors.py).
 * Adding a code here is the whole change; tests check every code has a
 * class, a status and a name, both ways.
 *
 * X(name, value, http_status, primary, python_class, default_message)
 *   name      the code without its PRPC_ prefix; its text is the wire name
 *             of the error ({"error": {"code": "EINVAL", ...}}).
 *   value     negative and stable: Python and peers see the name, tests the value.
 *   status    what a broker answers when a request fails with this code.
 *   primary   1 for the one code an HTTP status means when an answer carries
 *             no code of its own (another server, a proxy); several codes
 *             share a status, exactly one of them is its primary.
 *   class     the exception class in p2prpc.errors.
 */
#ifndef PRPC_ERROR_MAP_H
#define PRPC_ERROR_MAP_H

#define PRPC_ERROR_MAP(X)                                                                      \
    X(EINVAL, -1, 400, 1, "InvalidInputError", "bad argument or malformed input")             \
    X(ENOMEM, -2, 500, 0, "OutOfMemoryError", "allocation failed")                            \
    X(EIO, -3, 500, 0, "StorageError", "read, write or fsync failed")                         \
    X(ENOTFOUND, -4, 404, 1, "NotFoundError", "no such call, blob, lease or file")            \
    X(ECORRUPT, -5, 400, 0, "CorruptDataError", "stored data failed a check")                 \
    X(ENOTSUP, -6, 500, 0, "NotSupportedError", "feature or backend not built in")            \
    X(ESTATE, -7, 409, 1, "StateError", "not allowed in the current state")                   \
    X(EEXIST, -8, 409, 0, "AlreadyExistsError", "already exists")                             \
    X(ETIMEDOUT, -9, 500, 0, "EngineTimeoutError", "a wait or a transfer ran out of time")    \
    X(EAUTH, -10, 401, 1, "AuthenticationError", "authentication refused")                    \
    X(ECONN, -11, 500, 0, "ConnectionFailed", "could not reach the peer")                     \
    X(ENOSPC, -12, 507, 1, "DiskFullError", "disk full")                                      \
    X(EPROTO, -13, 500, 0, "ProtocolError", "the peer answered something we cannot understand") \
    X(EVERSION, -14, 409, 0, "FunctionVersionMismatch", "function versions disagree")         \
    X(ELIMIT, -15, 413, 1, "LimitExceeded", "a configured limit was exceeded")                \
    X(EUNSIGNED, -16, 502, 0, "UnsignedAnswerError",                                          \
      "an answer is not signed by a holder of the password")

#endif
