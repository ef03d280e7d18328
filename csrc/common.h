/*
 * common.h - the prelude every engine file includes: error codes, the error
 * record, and the few macros shared by all subsystems.
 *
 * The one way to fail: engine functions return int, 0 on success or a
 * negative PRPC_E* code; an optional prpc_error_t carries the words.
 * Pointer-returning functions return NULL and fill the error. The engine lives
 * inside someone's Python process, so it never calls abort() or exit().
 */
#ifndef PRPC_COMMON_H
#define PRPC_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Error codes. Stable: the Python binding maps each to an exception class. */
enum {
    PRPC_OK = 0,
    PRPC_EINVAL = -1,    /* bad argument or malformed input */
    PRPC_ENOMEM = -2,    /* allocation failed */
    PRPC_EIO = -3,       /* read/write/fsync failed; errno text in message */
    PRPC_ENOTFOUND = -4, /* no such call, blob, lease or file */
    PRPC_ECORRUPT = -5,  /* stored data failed a check (hash, schema, integrity) */
    PRPC_ENOTSUP = -6,   /* feature or backend not built in */
    PRPC_ESTATE = -7,    /* operation not allowed in the current state (stale lease...) */
    PRPC_EEXIST = -8,    /* already exists */
    PRPC_ETIMEDOUT = -9, /* a wait or a transfer ran out of time */
    PRPC_EAUTH = -10,    /* authentication refused */
    PRPC_ECONN = -11,    /* could not reach the peer */
    PRPC_ENOSPC = -12,   /* disk full */
    PRPC_EPROTO = -13,   /* the peer answered something we cannot understand */
    PRPC_EVERSION = -14, /* function versions disagree */
    PRPC_ELIMIT = -15,   /* a configured limit was exceeded */
};

#define PRPC_ERROR_MSG_MAX 512

typedef struct prpc_error {
    int code;                         /* one of PRPC_E*, 0 when no error */
    char message[PRPC_ERROR_MSG_MAX]; /* human readable, names what was wrong */
} prpc_error_t;

/* Fill err (which may be NULL) and return code, so callers can write
 * `return prpc_error_set(err, PRPC_EINVAL, "...", ...);`. */
int prpc_error_set(prpc_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like prpc_error_set but appends strerror(errnum) and maps ENOSPC/ENOENT. */
int prpc_error_errno(prpc_error_t *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clear err (may be NULL). */
void prpc_error_clear(prpc_error_t *err);

/* Short stable name of a code, e.g. "EINVAL". */
const char *prpc_strerror(int code);

/* Statics stay reachable from tests/c when built with -DPRPC_UNITTEST. */
#ifdef PRPC_UNITTEST
#define PRPC_STATIC
#else
#define PRPC_STATIC static
#endif

#define PRPC_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define PRPC_UNUSED(x) ((void)(x))

/* The error type a worker records on a call whose file argument never arrived
 * whole at the broker (its upload was abandoned): the function never ran, so
 * the broker queues the call again when it is submitted again. */
#define PRPC_ARGUMENT_MISSING "p2prpc.ArgumentMissing"

#endif
