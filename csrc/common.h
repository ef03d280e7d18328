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

#include "error_map.h"

/* Error codes, generated from error_map.h (the one list). Stable: the
 * Python binding maps each to an exception class by its name. */
#define PRPC_ERROR_ENUM(name, value, status, primary, pyclass, msg) PRPC_##name = value,
enum {
    PRPC_OK = 0,
    PRPC_ERROR_MAP(PRPC_ERROR_ENUM)
};
#undef PRPC_ERROR_ENUM

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

/* Short stable name of a code, e.g. "EINVAL"; "EUNKNOWN" for a code not in
 * error_map.h. The name is what the wire carries. */
const char *prpc_strerror(int code);

/* The code named name (e.g. "EINVAL"), or 0 when no code has that name. */
int prpc_error_code_by_name(const char *name);

/* The HTTP status a broker answers with for code (500 for a code not in
 * error_map.h). */
int prpc_error_http_status(int code);

/* The code an HTTP status means in an answer that carries no code of its own:
 * the status's primary code in error_map.h, EAUTH for 403, else EPROTO. */
int prpc_error_from_http_status(long status);

/* One row of error_map.h, for the binding that exports the table. */
typedef struct prpc_error_info {
    const char *name;      /* "EINVAL" */
    int code;              /* PRPC_EINVAL */
    int http_status;       /* 400 */
    int primary;           /* 1: the code its status means on its own */
    const char *py_class;  /* "InvalidInputError", in p2prpc.errors */
    const char *message;   /* default words when an error carries none */
} prpc_error_info_t;

/* The rows of error_map.h in order; *n receives their count. Static storage. */
const prpc_error_info_t *prpc_error_table(size_t *n);

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
