/*
 * util.h - the small helpers every engine file needs, each defined once:
 * hex, UTF-8 validity, clocks, JSON string escaping.
 *
 * Nothing here knows a domain word (call, blob, lease): the rules built on
 * these helpers (what a call id or a lease id is) live in wire.h.
 *
 * Thread safety: every function is reentrant and keeps no state.
 */
#ifndef PRPC_UTIL_H
#define PRPC_UTIL_H

#include "common.h"

#include <stddef.h>
#include <stdint.h>

/* ---- hex ---------------------------------------------------------------- */

/* Write len bytes as 2*len lowercase hex digits plus a NUL into out, which
 * must hold 2*len + 1 bytes. */
void prpc_hex_encode(const uint8_t *in, size_t len, char *out);

/* The value of one hex digit (either case), or -1. */
int prpc_hex_digit(int c);

/* Decode exactly 2*out_len hex digits (either case) from hex[0..hex_len) into
 * out. Returns 0, or PRPC_EINVAL when hex_len != 2*out_len or a character is
 * not a hex digit; out is then unspecified. */
int prpc_hex_decode(const char *hex, size_t hex_len, uint8_t *out, size_t out_len,
                    prpc_error_t *err);

/* 1 when s is exactly n lowercase hex digits (NULL is not). */
int prpc_valid_hex(const char *s, size_t n);

/* The same rule with an error that names `field`: PRPC_EINVAL when s is
 * NULL ("missing"), longer than max, not len long (len 0: any length from 1
 * to max), or holds a character that is not a lowercase hex digit. */
int prpc_check_hex(const char *s, size_t len, size_t max, const char *field, prpc_error_t *err);

/* ---- UTF-8 -------------------------------------------------------------- */

/* Offset of the first byte of s[0..len) that is not well-formed UTF-8
 * (Unicode table 3-7: no overlong forms, no surrogates, nothing above
 * U+10FFFF), or len when all of it is. */
size_t prpc_utf8_invalid_at(const void *s, size_t len);

/* ---- clocks ------------------------------------------------------------- */

/* Wall-clock time (CLOCK_REALTIME): what is stored, signed and compared with
 * other machines. */
int64_t prpc_now_ms(void);
int64_t prpc_now_ns(void);

/* CLOCK_MONOTONIC, for timeouts and intervals within this process. */
int64_t prpc_mono_ms(void);

/* ---- JSON text ---------------------------------------------------------- */

/* Write s[0..len) into out as the inside of a JSON string (no quotes): '"'
 * and '\\' escaped, \n \r \t as such, other bytes below 0x20 as \u00XX, and
 * each byte that is not well-formed UTF-8 as '?' (JSON text is UTF-8). Writes
 * at most cap - 1 bytes and a NUL (cap > 0), never half an escape; returns
 * the bytes written. *consumed (may be NULL) gets the bytes of s taken. */
size_t prpc_json_escape(char *out, size_t cap, const char *s, size_t len, size_t *consumed);

/* The bytes prpc_json_escape writes for the whole of s, without the NUL. */
size_t prpc_json_escaped_len(const char *s, size_t len);

/* The deepest nesting of [ and { in the JSON text p[0..n) (strings skipped),
 * so a parser's recursion can be bounded before it starts. */
int prpc_json_depth(const char *p, size_t n);

#endif
