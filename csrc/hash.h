/*
 * hash.h - SHA-256 for the engine: a streaming context over OpenSSL,
 * and whole-file hashing by fd or by path.
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
 * prpc_sha256_cleanup() releases it. Over OpenSSL's SHA256_CTX (its SHA-NI /
 * AVX code for one stream), whose state prpc_sha256_update2 also advances. */
typedef struct prpc_sha256 {
    struct SHA256state_st *ctx; /* owned; NULL when released */
} prpc_sha256_t;

/* Start a digest. Returns 0, or PRPC_ENOMEM with h left released, so
 * prpc_sha256_cleanup(h) is always safe afterwards. */
int prpc_sha256_init(prpc_sha256_t *h, prpc_error_t *err);

/* Feed len bytes (len 0 is fine, data may then be NULL). Returns 0, or
 * PRPC_ESTATE on a released context. */
int prpc_sha256_update(prpc_sha256_t *h, const void *data, size_t len, prpc_error_t *err);

/* Feed the same len bytes to two digests (a chunk's own hash and the running
 * hash of the blob it belongs to, or a file's hash and its chunk's). On CPUs
 * with the SHA extensions both are advanced in one pass, the two streams'
 * rounds interleaved: about 1.5x the speed of two passes, since one stream
 * leaves the SHA units idle waiting on its own previous round. Elsewhere, or
 * when the two are not at the same offset within a 64-byte block, it is two
 * ordinary updates. a and b must be distinct. Returns 0 or PRPC_ESTATE. */
int prpc_sha256_update2(prpc_sha256_t *a, prpc_sha256_t *b, const void *data, size_t len,
                        prpc_error_t *err);

/* Start dst as a copy of src's state (dst must be released). Returns 0, or
 * PRPC_ENOMEM / PRPC_ESTATE (src released) with dst left released. */
int prpc_sha256_copy(prpc_sha256_t *dst, const prpc_sha256_t *src, prpc_error_t *err);

/* 1 when prpc_sha256_update2 uses the interleaved SHA-extension code here. */
int prpc_sha256_pair_accelerated(void);

/* Write the digest of everything fed since init into out. The context is then
 * spent: call prpc_sha256_init() again to reuse it. Returns 0 or PRPC_ESTATE. */
int prpc_sha256_final(prpc_sha256_t *h, uint8_t out[PRPC_SHA256_LEN], prpc_error_t *err);

/* Release the context (safe on a released or zeroed one, and more than once). */
void prpc_sha256_cleanup(prpc_sha256_t *h);

/* One-shot digest of a memory buffer. Returns 0 or a PRPC_E* code. */
int prpc_sha256(const void *data, size_t len, uint8_t out[PRPC_SHA256_LEN], prpc_error_t *err);

/* SHA-256 of the whole content of the open file fd, from offset 0 to its end,
 * read with pread() in PRPC_HASH_CHUNK pieces: the fd's file position is never
 * moved, so the caller may hash an fd it is also reading. size_out (may be
 * NULL) receives the number of bytes hashed. Hints the kernel with
 * POSIX_FADV_SEQUENTIAL. Blocks on disk I/O; call without the GIL.
 * Errors: PRPC_EINVAL for a negative fd; otherwise errno mapped by
 * prpc_error_errno (PRPC_EIO for EBADF, EISDIR, ESPIPE...), the message
 * naming the fd. */
int prpc_hash_fd(int fd, uint8_t out[PRPC_SHA256_LEN], uint64_t *size_out, prpc_error_t *err);

/* The SHA-256 of each `chunk`-byte piece of a file (the last may be
 * shorter), as an uploader sends it: digested while the whole file is named,
 * so an upload that follows need not hash its chunks again. */
typedef struct prpc_chunk_digests {
    size_t chunk;                   /* bytes per piece, a multiple of 64 */
    size_t n;                       /* pieces digested; 0: none kept */
    uint8_t (*d)[PRPC_SHA256_LEN];  /* n digests, owned */
} prpc_chunk_digests_t;

/* Pieces beyond this many are not kept (the whole is still hashed): 2 MiB
 * of digests, a 256 GiB file in 4 MiB chunks. */
#define PRPC_CHUNK_DIGESTS_MAX 65536

/* prpc_hash_fd, and cd (chunk set by the caller, the rest filled here) gets
 * the digest of each piece, computed on a second thread reading beside the
 * whole file's pass (so the call takes about one pass's time; without a
 * thread, both digests go in one interleaved pass). A file with more than
 * PRPC_CHUNK_DIGESTS_MAX pieces, a chunk that is not a multiple of 64, no
 * memory for them, or a file that changed between the two reads leaves
 * cd->n = 0 and is not an error. */
int prpc_hash_fd_chunks(int fd, uint8_t out[PRPC_SHA256_LEN], uint64_t *size_out,
                        prpc_chunk_digests_t *cd, prpc_error_t *err);

/* Release cd's digests (safe on a zeroed or released one). */
void prpc_chunk_digests_cleanup(prpc_chunk_digests_t *cd);

/* The same for a path: opened read-only, hashed, closed. Errors name the path;
 * a missing file is PRPC_ENOTFOUND, a directory PRPC_EINVAL. */
int prpc_hash_path(const char *path, uint8_t out[PRPC_SHA256_LEN], uint64_t *size_out,
                   prpc_error_t *err);

#endif
