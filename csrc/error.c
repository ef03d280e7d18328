/*
 * error.c - the error record of common.h.
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

const char *prpc_strerror(int code)
{
    static const char *const names[] = {
        "OK",       "EINVAL", "ENOMEM", "EIO",   "ENOTFOUND", "ECORRUPT", "ENOTSUP", "ESTATE",
        "EEXIST",   "ETIMEDOUT", "EAUTH", "ECONN", "ENOSPC",  "EPROTO",   "EVERSION", "ELIMIT",
    };
    int i = -code;
    if (i < 0 || (size_t)i >= PRPC_ARRAY_LEN(names))
        return "EUNKNOWN";
    return names[i];
}
