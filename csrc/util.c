/*
 * util.c - hex, UTF-8 validity, clocks and JSON string escaping (util.h).
 */
#include "util.h"

#include <string.h>
#include <time.h>

/* ---- hex ---------------------------------------------------------------- */

void prpc_hex_encode(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

int prpc_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int prpc_hex_decode(const char *hex, size_t hex_len, uint8_t *out, size_t out_len,
                    prpc_error_t *err)
{
    if (hex_len != 2 * out_len)
        return prpc_error_set(err, PRPC_EINVAL, "hex: expected %zu hex digits, got %zu",
                              2 * out_len, hex_len);
    for (size_t i = 0; i < out_len; i++) {
        int hi = prpc_hex_digit(hex[2 * i]), lo = prpc_hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            size_t bad = hi < 0 ? 2 * i : 2 * i + 1;
            return prpc_error_set(err, PRPC_EINVAL,
                                  "hex: character %zu (0x%02x) is not a hex digit", bad,
                                  (unsigned char)hex[bad]);
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static int lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

int prpc_valid_hex(const char *s, size_t n)
{
    if (s == NULL)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!lower_hex(s[i]))
            return 0;
    return s[n] == '\0';
}

int prpc_check_hex(const char *s, size_t len, size_t max, const char *field, prpc_error_t *err)
{
    size_t n;
    if (s == NULL)
        return prpc_error_set(err, PRPC_EINVAL, "%s is missing", field);
    n = strnlen(s, max + 1);
    if (n > max)
        return prpc_error_set(err, PRPC_EINVAL, "%s is longer than %zu characters", field, max);
    if (n == 0 || (len != 0 && n != len))
        return prpc_error_set(err, PRPC_EINVAL, "%s must be %zu lowercase hex characters, got %zu",
                              field, len != 0 ? len : max, n);
    for (size_t i = 0; i < n; i++)
        if (!lower_hex(s[i]))
            return prpc_error_set(err, PRPC_EINVAL,
                                  "%s must be lowercase hex, got \"%.*s\" (bad character at %zu)",
                                  field, (int)n, s, i);
    return 0;
}

/* ---- UTF-8 -------------------------------------------------------------- */

size_t prpc_utf8_invalid_at(const void *data, size_t len)
{
    const uint8_t *s = data;
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        uint8_t lo = 0x80, hi = 0xbf;
        size_t need, k;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else {
            return i;
        }
        if (len - i - 1 < need)
            return i;
        for (k = 1; k <= need; k++) {
            uint8_t b = s[i + k];
            if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf))
                return i;
        }
        i += need + 1;
    }
    return len;
}

/* ---- clocks ------------------------------------------------------------- */

int64_t prpc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t prpc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t prpc_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- JSON text ---------------------------------------------------------- */

/* The escape of byte c (at most 6 bytes into esc), 0 when it stands as is. */
static size_t escape_byte(unsigned char c, char esc[6])
{
    static const char hex[] = "0123456789abcdef";
    switch (c) {
    case '"': esc[0] = '\\', esc[1] = '"'; return 2;
    case '\\': esc[0] = '\\', esc[1] = '\\'; return 2;
    case '\n': esc[0] = '\\', esc[1] = 'n'; return 2;
    case '\r': esc[0] = '\\', esc[1] = 'r'; return 2;
    case '\t': esc[0] = '\\', esc[1] = 't'; return 2;
    default:
        if (c >= 0x20)
            return 0;
        memcpy(esc, "\\u00", 4);
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        return 6;
    }
}

size_t prpc_json_escape(char *out, size_t cap, const char *s, size_t len, size_t *consumed)
{
    size_t o = 0, i = 0, bad;
    if (cap == 0) {
        if (consumed != NULL)
            *consumed = 0;
        return 0;
    }
    bad = prpc_utf8_invalid_at(s, len);
    for (; i < len; i++) {
        char esc[6];
        size_t n;
        if (i == bad) {
            esc[0] = '?';
            n = 1;
            bad = i + 1 + prpc_utf8_invalid_at(s + i + 1, len - i - 1);
        } else {
            n = escape_byte((unsigned char)s[i], esc);
            if (n == 0) {
                esc[0] = s[i];
                n = 1;
            }
        }
        if (o + n > cap - 1)
            break;
        memcpy(out + o, esc, n);
        o += n;
    }
    out[o] = '\0';
    if (consumed != NULL)
        *consumed = i;
    return o;
}

size_t prpc_json_escaped_len(const char *s, size_t len)
{
    size_t total = 0;
    for (size_t i = 0; i < len; i++) {
        char esc[6];
        size_t n = escape_byte((unsigned char)s[i], esc);
        total += n ? n : 1; /* a byte that is not UTF-8 becomes one '?' */
    }
    return total;
}

int prpc_json_depth(const char *p, size_t n)
{
    int depth = 0, deepest = 0, in_string = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > deepest)
                deepest = depth;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return deepest;
}
