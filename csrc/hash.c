/*
 * hash.c - SHA-256 over OpenSSL's SHA256_CTX (whose block code picks SHA-NI
 * or AVX at run time), two digests of the same bytes in one pass with the SHA
 * extensions, and whole-file hashing with pread() in bounded chunks. See
 * hash.h.
 */
/* SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP, but
 * EVP hides the state that prpc_sha256_update2 advances. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "hash.h"
#include "fault.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HASH_PAIR_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

int prpc_sha256_init(prpc_sha256_t *h, prpc_error_t *err)
{
    h->ctx = malloc(sizeof(SHA256_CTX));
    if (h->ctx == NULL)
        return prpc_error_set(err, PRPC_ENOMEM, "sha256: out of memory for a digest context");
    SHA256_Init(h->ctx); /* only fails on a NULL context */
    return 0;
}

int prpc_sha256_update(prpc_sha256_t *h, const void *data, size_t len, prpc_error_t *err)
{
    if (h->ctx == NULL)
        return prpc_error_set(err, PRPC_ESTATE, "sha256: update on a released context");
    if (len > 0)
        SHA256_Update(h->ctx, data, len);
    return 0;
}

int prpc_sha256_final(prpc_sha256_t *h, uint8_t out[PRPC_SHA256_LEN], prpc_error_t *err)
{
    if (h->ctx == NULL)
        return prpc_error_set(err, PRPC_ESTATE, "sha256: final on a released context");
    SHA256_Final(out, h->ctx);
    return 0;
}

int prpc_sha256_copy(prpc_sha256_t *dst, const prpc_sha256_t *src, prpc_error_t *err)
{
    dst->ctx = NULL;
    if (src->ctx == NULL)
        return prpc_error_set(err, PRPC_ESTATE, "sha256: copy of a released context");
    dst->ctx = malloc(sizeof(SHA256_CTX));
    if (dst->ctx == NULL)
        return prpc_error_set(err, PRPC_ENOMEM, "sha256: out of memory for a digest context");
    memcpy(dst->ctx, src->ctx, sizeof(SHA256_CTX));
    return 0;
}

void prpc_sha256_cleanup(prpc_sha256_t *h)
{
    if (h == NULL || h->ctx == NULL)
        return;
    OPENSSL_cleanse(h->ctx, sizeof(SHA256_CTX));
    free(h->ctx);
    h->ctx = NULL;
}

#ifdef HASH_PAIR_X86
static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define HASH_SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))

/* The SHA instructions keep the state as two vectors, ABEF and CDGH. */
HASH_SHA_TARGET static void pair_load(const uint32_t h[8], __m128i *abef, __m128i *cdgh)
{
    __m128i dcba = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)h), 0xB1);
    __m128i hgfe = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(h + 4)), 0x1B);
    *abef = _mm_alignr_epi8(dcba, hgfe, 8);
    *cdgh = _mm_blend_epi16(hgfe, dcba, 0xF0);
}

HASH_SHA_TARGET static void pair_store(uint32_t h[8], __m128i abef, __m128i cdgh)
{
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)h, _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)(h + 4), _mm_alignr_epi8(dchg, feba, 8));
}

/* Advance two states over the same n 64-byte blocks. The message schedule is
 * shared (same bytes); each step issues both streams' rounds back to back so
 * that one stream's round runs while the other's waits on its latency. */
HASH_SHA_TARGET static void pair_blocks(uint32_t ha[8], uint32_t hb[8], const uint8_t *p,
                                        size_t n)
{
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i a0, a1, b0, b1;
    pair_load(ha, &a0, &a1);
    pair_load(hb, &b0, &b1);
    while (n-- > 0) {
        __m128i sa0 = a0, sa1 = a1, sb0 = b0, sb1 = b1, w[4];
        for (int i = 0; i < 4; i++)
            w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), swap);
        for (int i = 0; i < 16; i++) {
            __m128i k = _mm_loadu_si128((const __m128i *)(sha256_k + 4 * i));
            __m128i m = _mm_add_epi32(w[i & 3], k);
            a1 = _mm_sha256rnds2_epu32(a1, a0, m);
            b1 = _mm_sha256rnds2_epu32(b1, b0, m);
            m = _mm_shuffle_epi32(m, 0x0E);
            a0 = _mm_sha256rnds2_epu32(a0, a1, m);
            b0 = _mm_sha256rnds2_epu32(b0, b1, m);
            if (i < 12) {
                /* w[i+4] = s1(w[i+2]) + w[i-7] + s0(w[i+1]) + w[i], four at a time */
                __m128i t = _mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]);
                t = _mm_add_epi32(t, _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4));
                w[i & 3] = _mm_sha256msg2_epu32(t, w[(i + 3) & 3]);
            }
        }
        a0 = _mm_add_epi32(a0, sa0);
        a1 = _mm_add_epi32(a1, sa1);
        b0 = _mm_add_epi32(b0, sb0);
        b1 = _mm_add_epi32(b1, sb1);
        p += 64;
    }
    pair_store(ha, a0, a1);
    pair_store(hb, b0, b1);
}

static int pair_supported(void)
{
    static atomic_int known = -1; /* every thread that races here computes the same */
    int k = atomic_load_explicit(&known, memory_order_relaxed);
    unsigned a, b, c, d;
    if (k < 0) {
        int sha = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29)) != 0;
        int sse = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_1) && (c & bit_SSSE3);
        k = sha && sse;
        atomic_store_explicit(&known, k, memory_order_relaxed);
    }
    return k;
}

/* Count n bytes of whole blocks into the context's 64-bit bit length. */
static void pair_count(SHA256_CTX *c, size_t n)
{
    uint64_t bits = ((uint64_t)c->Nh << 32 | c->Nl) + ((uint64_t)n << 3);
    c->Nl = (SHA_LONG)bits;
    c->Nh = (SHA_LONG)(bits >> 32);
}
#endif

int prpc_sha256_pair_accelerated(void)
{
#ifdef HASH_PAIR_X86
    return pair_supported();
#else
    return 0;
#endif
}

int prpc_sha256_update2(prpc_sha256_t *a, prpc_sha256_t *b, const void *data, size_t len,
                        prpc_error_t *err)
{
    const uint8_t *p = data;
    if (a->ctx == NULL || b->ctx == NULL)
        return prpc_error_set(err, PRPC_ESTATE, "sha256: update on a released context");
#ifdef HASH_PAIR_X86
    if (pair_supported() && a->ctx->num == b->ctx->num && len >= 64) {
        size_t head = a->ctx->num == 0 ? 0 : 64 - a->ctx->num, blocks;
        SHA256_Update(a->ctx, p, head); /* both now start a block */
        SHA256_Update(b->ctx, p, head);
        p += head;
        len -= head;
        blocks = len / 64;
        pair_blocks(a->ctx->h, b->ctx->h, p, blocks);
        pair_count(a->ctx, blocks * 64);
        pair_count(b->ctx, blocks * 64);
        p += blocks * 64;
        len -= blocks * 64;
    }
#endif
    if (len > 0) {
        SHA256_Update(a->ctx, p, len);
        SHA256_Update(b->ctx, p, len);
    }
    return 0;
}

int prpc_sha256(const void *data, size_t len, uint8_t out[PRPC_SHA256_LEN], prpc_error_t *err)
{
    prpc_sha256_t h = {NULL};
    int rc = prpc_sha256_init(&h, err);
    if (rc == 0)
        rc = prpc_sha256_update(&h, data, len, err);
    if (rc == 0)
        rc = prpc_sha256_final(&h, out, err);
    prpc_sha256_cleanup(&h);
    return rc;
}

void prpc_chunk_digests_cleanup(prpc_chunk_digests_t *cd)
{
    if (cd == NULL)
        return;
    free(cd->d);
    cd->d = NULL;
    cd->n = 0;
}

/* Close the piece digest cur into cd (growing it); on no room or no memory
 * stop keeping pieces: cd->n = 0 and cd->chunk = 0 (the caller puts chunk
 * back at the end). *cur is released either way. */
static void piece_done(prpc_chunk_digests_t *cd, size_t *cap, prpc_sha256_t *cur)
{
    if (cd->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        void *grown = ncap <= PRPC_CHUNK_DIGESTS_MAX ? realloc(cd->d, ncap * sizeof(*cd->d))
                                                      : NULL;
        if (grown == NULL) {
            prpc_chunk_digests_cleanup(cd);
            prpc_sha256_cleanup(cur);
            cd->chunk = 0;
            *cap = 0;
            return;
        }
        cd->d = grown;
        *cap = ncap;
    }
    prpc_sha256_final(cur, cd->d[cd->n++], NULL);
    prpc_sha256_cleanup(cur);
}

/* Feed buf (n bytes read at off) to the whole-file digest h (may be NULL:
 * pieces only) and, when cd keeps pieces, to the piece digest cur, closing
 * pieces at their ends. */
static int feed_pieces(prpc_sha256_t *h, prpc_chunk_digests_t *cd, size_t *cap,
                       prpc_sha256_t *cur, const uint8_t *buf, size_t n, uint64_t off,
                       prpc_error_t *err)
{
    size_t k = 0;
    while (k < n) {
        size_t m = n - k;
        int rc;
        if (cd == NULL || cd->chunk == 0 || (cur->ctx == NULL && (off + k) % cd->chunk != 0))
            return h != NULL ? prpc_sha256_update(h, buf + k, m, err) : 0; /* no pieces kept */
        if (cur->ctx == NULL && prpc_sha256_init(cur, NULL) != 0) {
            prpc_chunk_digests_cleanup(cd);
            cd->chunk = 0;
            continue; /* the rest goes to h alone */
        }
        if (m > cd->chunk - (off + k) % cd->chunk)
            m = cd->chunk - (off + k) % cd->chunk;
        rc = h != NULL ? prpc_sha256_update2(h, cur, buf + k, m, err)
                       : prpc_sha256_update(cur, buf + k, m, err);
        if (rc != 0)
            return rc;
        k += m;
        if ((off + k) % cd->chunk == 0)
            piece_done(cd, cap, cur);
    }
    return 0;
}

/* Hash fd from offset 0 (and its pieces into cd, when not NULL); `what`
 * names the file in errors ("fd 5", "file 'x'"). */
static int hash_fd_named(int fd, const char *what, uint8_t out[PRPC_SHA256_LEN], uint64_t *size_out,
                         prpc_chunk_digests_t *cd, prpc_error_t *err)
{
    prpc_sha256_t h = {NULL}, cur = {NULL};
    uint8_t *buf = NULL;
    uint64_t off = 0;
    size_t cap = 0;
    int rc;

    if (cd != NULL) {
        cd->n = 0;
        cd->d = NULL;
        if (cd->chunk % 64 != 0)
            cd->chunk = 0; /* pieces that split blocks are of no use to an uploader */
    }
    buf = malloc(PRPC_HASH_CHUNK);
    if (buf == NULL) {
        rc =
            prpc_error_set(err, PRPC_ENOMEM, "hashing %s: out of memory for the read buffer", what);
        goto out;
    }
    rc = prpc_sha256_init(&h, err);
    if (rc < 0)
        goto out;
    /* Advisory only: on a pipe or an odd file system it fails, and pread()
     * below reports anything that really matters. */
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    for (;;) {
        ssize_t n = pread(fd, buf, PRPC_HASH_CHUNK, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = prpc_error_errno(err, errno, "hashing %s at offset %llu", what,
                                  (unsigned long long)off);
            goto out;
        }
        if (n == 0)
            break;
        rc = feed_pieces(&h, cd, &cap, &cur, buf, (size_t)n, off, err);
        if (rc < 0)
            goto out;
        off += (uint64_t)n;
    }
    if (cur.ctx != NULL)
        piece_done(cd, &cap, &cur); /* the short last piece */
    rc = prpc_sha256_final(&h, out, err);
    if (rc == 0 && size_out != NULL)
        *size_out = off;
out:
    if (rc != 0)
        prpc_chunk_digests_cleanup(cd);
    prpc_sha256_cleanup(&h);
    prpc_sha256_cleanup(&cur);
    free(buf);
    return rc;
}

int prpc_hash_fd(int fd, uint8_t out[PRPC_SHA256_LEN], uint64_t *size_out, prpc_error_t *err)
{
    char what[32];
    if (fd < 0)
        return prpc_error_set(err, PRPC_EINVAL, "hashing fd %d: not a file descriptor", fd);
    snprintf(what, sizeof(what), "fd %d", fd);
    return hash_fd_named(fd, what, out, size_out, NULL, err);
}

/* The pieces' digests of a file, read on a thread of their own beside the
 * whole file's pass. */
typedef struct pieces_job {
    int fd;
    prpc_chunk_digests_t *cd;
    uint64_t size; /* bytes the pass saw */
} pieces_job_t;

static void *pieces_main(void *arg)
{
    pieces_job_t *j = arg;
    prpc_sha256_t cur = {NULL};
    size_t cap = 0;
    uint8_t *buf = malloc(PRPC_HASH_CHUNK);
    j->size = 0;
    while (buf != NULL && j->cd->chunk > 0) {
        ssize_t n = pread(j->fd, buf, PRPC_HASH_CHUNK, (off_t)j->size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n < 0)
                j->cd->chunk = 0; /* the whole file's pass reports the error */
            break;
        }
        if (feed_pieces(NULL, j->cd, &cap, &cur, buf, (size_t)n, j->size, NULL) != 0)
            j->cd->chunk = 0;
        j->size += (uint64_t)n;
    }
    if (cur.ctx != NULL && j->cd->chunk > 0)
        piece_done(j->cd, &cap, &cur);
    if (buf == NULL || j->cd->chunk == 0)
        prpc_chunk_digests_cleanup(j->cd);
    prpc_sha256_cleanup(&cur);
    free(buf);
    return NULL;
}

int prpc_hash_fd_chunks(int fd, uint8_t out[PRPC_SHA256_LEN], uint64_t *size_out,
                        prpc_chunk_digests_t *cd, prpc_error_t *err)
{
    char what[32];
    pieces_job_t job;
    pthread_t t;
    uint64_t size = 0;
    size_t chunk = cd->chunk;
    int rc;
    cd->n = 0;
    cd->d = NULL;
    if (fd < 0)
        return prpc_error_set(err, PRPC_EINVAL, "hashing fd %d: not a file descriptor", fd);
    snprintf(what, sizeof(what), "fd %d", fd);
    if (chunk == 0 || chunk % 64 != 0) {
        rc = hash_fd_named(fd, what, out, size_out, cd, err); /* keeps no pieces */
        cd->chunk = chunk;
        return rc;
    }
    /* Two threads, each one digest of every byte, take about the time of
     * one pass; on one thread the two digests take about 1.5 passes even
     * interleaved. Naming a file is on its caller's critical path, and the
     * cores are otherwise idle then. */
    job.fd = fd;
    job.cd = cd;
    if (prpc_fault("hash_one_thread", NULL) ||
        pthread_create(&t, NULL, pieces_main, &job) != 0) {
        rc = hash_fd_named(fd, what, out, size_out, cd, err); /* both digests, one thread */
        cd->chunk = chunk;
        return rc;
    }
    rc = hash_fd_named(fd, what, out, &size, NULL, err);
    pthread_join(t, NULL);
    cd->chunk = chunk;
    if (rc != 0 || job.size != size)
        prpc_chunk_digests_cleanup(cd); /* failed, or the file changed between the passes */
    if (rc == 0 && size_out != NULL)
        *size_out = size;
    return rc;
}

int prpc_hash_path(const char *path, uint8_t out[PRPC_SHA256_LEN], uint64_t *size_out,
                   prpc_error_t *err)
{
    char what[PRPC_ERROR_MSG_MAX / 2];
    struct stat st;
    int fd = -1, rc;

    if (path == NULL || path[0] == '\0')
        return prpc_error_set(err, PRPC_EINVAL, "hashing file: empty path");
    snprintf(what, sizeof(what), "file '%s'", path);
    /* O_NONBLOCK so a FIFO given by mistake fails in pread() (ESPIPE) instead
     * of blocking open() until a writer shows up; no effect on regular files. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        rc = prpc_error_errno(err, errno, "hashing %s", what);
        goto out;
    }
    if (fstat(fd, &st) < 0) {
        rc = prpc_error_errno(err, errno, "hashing %s", what);
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = prpc_error_set(err, PRPC_EINVAL, "hashing %s: is a directory, not a file", what);
        goto out;
    }
    rc = hash_fd_named(fd, what, out, size_out, NULL, err);
out:
    if (fd >= 0)
        close(fd);
    return rc;
}
