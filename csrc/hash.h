/*
 * hash.h - SHA-256 for the engine: a streaming context over OpenSSL's EVP,
 * hex helpers, and whole-file hashing by fd or by path.
 *
 * Everything that names content in p2prpc (call ids, blobs, chunks, function
 * versions) is a SHA-256, so this is the lowest layer above common.h.
 *
 * Thread safety: no shared state. A prpc_sha256_t is used by one thread at a
 * time; different contexts and the file functions may run concurrently.
 */
#ifndef PRPC_HASH_H
#define PRPC_HASH_H

#include "common.h"

#include <stdint.h>

#define PRPC_SHA256_LEN 32     /* raw digest bytes */
#define PRPC_SHA256_HEX_LEN 64 /* lowercase hex digits, without the NUL */

/* Bytes read per pread() while hashing a file: large enough to amortise the
 * system call, small enough to stay in L2 while it is hashed. A file is
 * never held in memory whole. */
#define PRPC_HASH_CHUNK ((size_t)1 << 20)

/* A streaming SHA-256. Caller storage: prpc_sha256_init() fills it,
 * prpc_sha256_cleanup() releases it. */
typedef struct prpc_sha256 {
    struct evp_md_ctx_st *ctx; /* OpenSSL digest context, owned; NULL when released */
} prpc_sha256_t;

/* Start a digest. Returns 0, or PRPC_ENOMEM/PRPC_EIO (OpenSSL refused) with h
 * left released, so prpc_sha256_cleanup(h) is always safe afterwards. */
int prpc_sha256_init(prpc_sha256_t *h, prpc_error_t *err);

/* Feed len bytes (len 0 is fine, data may then be NULL). Returns 0 or PRPC_EIO. */
int prpc_sha256_update(prpc_sha256_t *h, const void *data, size_t len, prpc_error_t *err);

/* Write the digest of everything fed since init into out. The context is then
 * spent: call prpc_sha256_init() again to reuse it. Returns 0 or PRPC_EIO. */
int prpc_sha256_final(prpc_sha256_t *h, uint8_t out[PRPC_SHA256_LEN], prpc_error_t *err);

/* Release the context (safe on a released or zeroed one, and more than once). */
void prpc_sha256_cleanup(prpc_sha256_t *h);

/* One-shot digest of a memory buffer. Returns 0 or a PRPC_E* code. */
int prpc_sha256(const void *data, size_t len, uint8_t out[PRPC_SHA256_LEN], prpc_error_t *err);

/* Write len bytes as 2*len lowercase hex digits plus a NUL into out, which
 * must hold 2*len + 1 bytes. */
void prpc_hex_encode(const uint8_t *in, size_t len, char *out);

/* Decode exactly 2*out_len hex digits (either case) from hex[0..hex_len) into
 * out. Returns 0, or PRPC_EINVAL when hex_len != 2*out_len or a character is
 * not a hex digit; out is then unspecified. */
/* The value of one hex digit (either case), or -1. */
int prpc_hex_digit(int c);

int prpc_hex_decode(const char *hex, size_t hex_len, uint8_t *out, size_t out_len,
                    prpc_error_t *err);

/* SHA-256 of the whole content of the open file fd, from offset 0 to its end,
 * read with pread() in PRPC_HASH_CHUNK pieces: the fd's file position is never
 * moved, so the caller may hash an fd it is also reading. size_out (may be
 * NULL) receives the number of bytes hashed. Hints the kernel with
 * POSIX_FADV_SEQUENTIAL. Blocks on disk I/O; call without the GIL.
 * Errors: PRPC_EINVAL for a negative fd; otherwise errno mapped by
 * prpc_error_errno (PRPC_EIO for EBADF, EISDIR, ESPIPE...), the message
 * naming the fd. */
int prpc_hash_fd(int fd, uint8_t out[PRPC_SHA256_LEN], uint64_t *size_out, prpc_error_t *err);

/* The same for a path: opened read-only, hashed, closed. Errors name the path;
 * a missing file is PRPC_ENOTFOUND, a directory PRPC_EINVAL. */
int prpc_hash_path(const char *path, uint8_t out[PRPC_SHA256_LEN], uint64_t *size_out,
                   prpc_error_t *err);

#endif
