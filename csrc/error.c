/*
 * error.c - the error record of common.h and the tables generated from
 * error_map.h.
 */
#include "common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int prpc_error_set(prpc_error_t *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
    }
    return code;
}

int prpc_error_errno(prpc_error_t *err, int errnum, const char *fmt, ...)
{
    int code = PRPC_EIO;
    if (errnum == ENOSPC || errnum == EDQUOT)
        code = PRPC_ENOSPC;
    else if (errnum == ENOENT)
        code = PRPC_ENOTFOUND;
    else if (errnum == ENOMEM)
        code = PRPC_ENOMEM;
    if (err != NULL) {
        va_list ap;
        size_t n;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        n = strlen(err->message);
        if (n < sizeof(err->message))
            snprintf(err->message + n, sizeof(err->message) - n, ": %s", strerror(errnum));
    }
    return code;
}

void prpc_error_clear(prpc_error_t *err)
{
    if (err != NULL) {
        err->code = 0;
        err->message[0] = '\0';
    }
}

#define PRPC_ERROR_ROW(name, value, status, primary, pyclass, msg) \
    {#name, value, status, primary, pyclass, msg},
static const prpc_error_info_t error_table[] = {PRPC_ERROR_MAP(PRPC_ERROR_ROW)};
#undef PRPC_ERROR_ROW

const prpc_error_info_t *prpc_error_table(size_t *n)
{
    *n = PRPC_ARRAY_LEN(error_table);
    return error_table;
}

/* The row of code, or NULL. Codes run -1, -2, ... in table order; the loop
 * does not rely on it. */
static const prpc_error_info_t *row_of(int code)
{
    for (size_t i = 0; i < PRPC_ARRAY_LEN(error_table); i++)
        if (error_table[i].code == code)
            return &error_table[i];
    return NULL;
}

const char *prpc_strerror(int code)
{
    const prpc_error_info_t *r;
    if (code == PRPC_OK)
        return "OK";
    r = row_of(code);
    return r != NULL ? r->name : "EUNKNOWN";
}

int prpc_error_code_by_name(const char *name)
{
    for (size_t i = 0; name != NULL && i < PRPC_ARRAY_LEN(error_table); i++)
        if (strcmp(error_table[i].name, name) == 0)
            return error_table[i].code;
    return 0;
}

int prpc_error_http_status(int code)
{
    const prpc_error_info_t *r = row_of(code);
    return r != NULL ? r->http_status : 500;
}

int prpc_error_from_http_status(long status)
{
    /* 403 is not ours to send, but a proxy in front of a broker may. */
    if (status == 403)
        return PRPC_EAUTH;
    for (size_t i = 0; i < PRPC_ARRAY_LEN(error_table); i++)
        if (error_table[i].primary && error_table[i].http_status == status)
            return error_table[i].code;
    return PRPC_EPROTO;
}
