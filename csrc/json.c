/*
 * json.c - the growable text buffer and JSON string escaping (json.h).
 */
#include "json.h"

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
    static const char hex[] = "0123456789abcdef";
    size_t start = b->len;
    if (prpc_buf_append(b, "\"", 1) != 0)
        return b->failed;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        size_t n = 0;
        switch (c) {
        case '"': n = 2, esc[0] = '\\', esc[1] = '"'; break;
        case '\\': n = 2, esc[0] = '\\', esc[1] = '\\'; break;
        case '\n': n = 2, esc[0] = '\\', esc[1] = 'n'; break;
        case '\r': n = 2, esc[0] = '\\', esc[1] = 'r'; break;
        case '\t': n = 2, esc[0] = '\\', esc[1] = 't'; break;
        default:
            if (c < 0x20) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                n = 6;
            }
        }
        if (n == 0 ? prpc_buf_append(b, (const char *)&s[i], 1) : prpc_buf_append(b, esc, n)) {
            if (b->data != NULL && start < b->cap) {
                b->len = start;
                b->data[start] = '\0';
            }
            return b->failed;
        }
    }
    if (prpc_buf_append(b, "\"", 1) != 0) {
        if (b->data != NULL && start < b->cap) {
            b->len = start;
            b->data[start] = '\0';
        }
        return b->failed;
    }
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
