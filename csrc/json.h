/*
 * json.h - a growable text buffer and the JSON writing the wire needs.
 * Reading JSON is libbson's job (bson_new_from_json); strings are escaped by
 * util.h's prpc_json_escape, the one escaping rule.
 *
 * A buffer has a hard cap; appends past it fail with PRPC_ELIMIT and leave
 * the buffer as it was before the failing append.
 */
#ifndef PRPC_JSON_H
#define PRPC_JSON_H

#include "common.h"

#define PRPC_JSON_MAX (64u * 1024 * 1024) /* default cap of a buffer, bytes */

typedef struct prpc_buf {
    char *data; /* NUL-terminated when not NULL; owned */
    size_t len;
    size_t cap;   /* allocated */
    size_t limit; /* hard cap; 0 = PRPC_JSON_MAX */
    int failed;   /* an append failed; prpc_buf_take reports it */
} prpc_buf_t;

#define PRPC_BUF_INIT {NULL, 0, 0, 0, 0}

int prpc_buf_append(prpc_buf_t *b, const char *s, size_t len);
int prpc_buf_puts(prpc_buf_t *b, const char *s);
int prpc_buf_printf(prpc_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s (len bytes) as a quoted JSON string (prpc_json_escape). */
int prpc_buf_json_str(prpc_buf_t *b, const char *s, size_t len);
/* Hand out the text (caller frees); NULL and PRPC_ENOMEM/ELIMIT in err when an
 * append failed. The buffer is reset either way. */
char *prpc_buf_take(prpc_buf_t *b, size_t *len, prpc_error_t *err);
void prpc_buf_cleanup(prpc_buf_t *b);

#endif
