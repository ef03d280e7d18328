/*
 * json.c - the growable text buffer (json.h); escaping is util.c's.
 */
#include "json.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int reserve(prpc_buf_t *b, size_t extra)
{
    size_t limit = b->limit ? b->limit : PRPC_JSON_MAX;
    size_t need, ncap;
    char *p;
    if (b->failed)
        return -1;
    if (extra > limit || b->len + extra + 1 > limit) {
        b->failed = PRPC_ELIMIT;
        return -1;
    }
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    ncap = b->cap ? b->cap : 256;
    while (ncap < need)
        ncap *= 2;
    if (ncap > limit)
        ncap = limit;
    p = realloc(b->data, ncap);
    if (p == NULL) {
        b->failed = PRPC_ENOMEM;
        return -1;
    }
    b->data = p;
    b->cap = ncap;
    return 0;
}

int prpc_buf_append(prpc_buf_t *b, const char *s, size_t len)
{
    if (reserve(b, len) != 0)
        return b->failed;
    memcpy(b->data + b->len, s, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int prpc_buf_puts(prpc_buf_t *b, const char *s)
{
    return prpc_buf_append(b, s, strlen(s));
}

int prpc_buf_printf(prpc_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    char small[256];
    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return b->failed = PRPC_EINVAL;
    if ((size_t)n < sizeof(small))
        return prpc_buf_append(b, small, (size_t)n);
    if (reserve(b, (size_t)n) != 0)
        return b->failed;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int prpc_buf_json_str(prpc_buf_t *b, const char *s, size_t len)
{
    size_t n = prpc_json_escaped_len(s, len);
    if (n > SIZE_MAX - 3 || reserve(b, n + 2) != 0)
        return b->failed ? b->failed : (b->failed = PRPC_ELIMIT);
    b->data[b->len] = '"';
    prpc_json_escape(b->data + b->len + 1, n + 1, s, len, NULL);
    b->data[b->len + 1 + n] = '"';
    b->len += n + 2;
    b->data[b->len] = '\0';
    return 0;
}

char *prpc_buf_take(prpc_buf_t *b, size_t *len, prpc_error_t *err)
{
    char *out = NULL;
    if (b->failed) {
        prpc_error_set(err, b->failed,
                       b->failed == PRPC_ELIMIT   ? "JSON text exceeds its size limit"
                       : b->failed == PRPC_EINVAL ? "a value could not be formatted as JSON text"
                                                  : "out of memory writing JSON");
        prpc_buf_cleanup(b);
        return NULL;
    }
    if (b->data == NULL && prpc_buf_append(b, "", 0) != 0) {
        prpc_error_set(err, PRPC_ENOMEM, "out of memory writing JSON");
        prpc_buf_cleanup(b);
        return NULL;
    }
    out = b->data;
    if (len != NULL)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return out;
}

void prpc_buf_cleanup(prpc_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}
