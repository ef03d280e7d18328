/*
 * ident.h - the call identifier: SHA-256 over the canonical, typed encoding
 * of (function name, function version, each argument by name in declaration
 * order). Same id means same call, so a repeated call can be answered from a
 * cache and identical concurrent calls run once. The byte format ("encoding
 * v1") is specified, with test vectors, in docs/IDENTITY.md; changing a
 * single byte of it changes every id, so it only ever gains a new version.
 *
 * Usage: prpc_ident_new() with the argument count, one prpc_ident_add_*()
 * per argument in declaration order, prpc_ident_finish(), prpc_ident_free().
 * The encoding is streamed into the digest: a builder holds no copy of the
 * arguments, so strings and files of any size cost constant memory.
 *
 * Errors: a rejected add (bad name, invalid UTF-8, a file that cannot be
 * read, one argument too many) returns PRPC_EINVAL (or the file's error)
 * and leaves the builder as it was, so the message can be reported and the
 * builder freed; messages name the function and the argument. Once a digest
 * operation itself fails, or after prpc_ident_finish(), every call returns
 * PRPC_ESTATE.
 *
 * Thread safety: a builder is used by one thread at a time; builders are
 * independent. Nothing here touches Python; callers release the GIL.
 */
#ifndef PRPC_IDENT_H
#define PRPC_IDENT_H

#include "common.h"
#include "hash.h"

#include <stdint.h>

#define PRPC_IDENT_MAGIC "p2prpc.call.v1" /* followed by one 0x00 byte in the encoding */

/* Argument tags: one byte in the encoding, and the tags the binding accepts. */
#define PRPC_IDENT_TAG_INT 'i'
#define PRPC_IDENT_TAG_FLOAT 'f'
#define PRPC_IDENT_TAG_BOOL 'b'
#define PRPC_IDENT_TAG_STR 's'
#define PRPC_IDENT_TAG_FILE 'F'

typedef struct prpc_ident prpc_ident_t;

/* Start the id of a call to `function` (non-empty UTF-8, NUL-terminated) at
 * `version_hex` (exactly 64 hex digits, either case: the SHA-256 of the
 * function's source) with exactly argc arguments to follow. Returns a new
 * builder, or NULL with err filled (PRPC_EINVAL naming the bad name or
 * version, PRPC_ENOMEM). Free with prpc_ident_free(). */
prpc_ident_t *prpc_ident_new(const char *function, const char *version_hex, uint32_t argc,
                             prpc_error_t *err);

/* Every add takes the argument's name: non-empty UTF-8, NUL-terminated,
 * borrowed for the duration of the call only. */

/* An integer of any size as sign and big-endian magnitude (len bytes, may be
 * 0 for zero; leading zero bytes are ignored, so the encoding is minimal
 * whatever the caller passes). `negative` is ignored when the magnitude is
 * zero: there is one zero. */
int prpc_ident_add_int(prpc_ident_t *id, const char *name, int negative, const uint8_t *magnitude,
                       size_t len, prpc_error_t *err);

#ifdef PRPC_UNITTEST
/* An integer that fits in int64_t; encodes as prpc_ident_add_int. For tests/c
 * only (-DPRPC_UNITTEST): the engine's integers arrive as magnitudes. */
int prpc_ident_add_int64(prpc_ident_t *id, const char *name, int64_t value, prpc_error_t *err);
#endif

/* A binary64 float by its exact bit pattern: -0.0 and 0.0 differ, each NaN
 * payload is its own value. */
int prpc_ident_add_float(prpc_ident_t *id, const char *name, double value, prpc_error_t *err);

/* A boolean: any non-zero value encodes as 1. */
int prpc_ident_add_bool(prpc_ident_t *id, const char *name, int value, prpc_error_t *err);

/* A string of len bytes of UTF-8 (may contain NUL). Invalid UTF-8, including
 * encoded surrogates and overlong forms, is PRPC_EINVAL naming the argument. */
int prpc_ident_add_str(prpc_ident_t *id, const char *name, const char *utf8, size_t len,
                       prpc_error_t *err);

/* A file by the SHA-256 of its whole content (never its name or path). */
int prpc_ident_add_file_sha256(prpc_ident_t *id, const char *name,
                               const uint8_t sha[PRPC_SHA256_LEN], prpc_error_t *err);

/* The same, hashing the open fd from offset 0 (position untouched) or the
 * file at path first; blocks on disk I/O. Hashing errors are those of
 * prpc_hash_fd()/prpc_hash_path(), prefixed with the argument's name. */
int prpc_ident_add_file_fd(prpc_ident_t *id, const char *name, int fd, prpc_error_t *err);
int prpc_ident_add_file_path(prpc_ident_t *id, const char *name, const char *path,
                             prpc_error_t *err);

/* Write the call id (64 lowercase hex digits and a NUL) into out_hex.
 * PRPC_EINVAL when fewer arguments than argc were added. The builder is
 * spent afterwards (only prpc_ident_free() remains). */
int prpc_ident_finish(prpc_ident_t *id, char out_hex[PRPC_SHA256_HEX_LEN + 1], prpc_error_t *err);

/* Release a builder; NULL is fine. */
void prpc_ident_free(prpc_ident_t *id);

#endif
