/*
 * hash.c - SHA-256 over OpenSSL EVP (which picks SHA-NI/AVX code paths at run
 * time) and whole-file hashing with pread() in bounded chunks. See hash.h.
 */
#include "hash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

int prpc_sha256_init(prpc_sha256_t *h, prpc_error_t *err)
{
    h->ctx = EVP_MD_CTX_new();
    if (h->ctx == NULL)
        return prpc_error_set(err, PRPC_ENOMEM, "sha256: out of memory for a digest context");
    if (EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        prpc_sha256_cleanup(h);
        return prpc_error_set(err, PRPC_EIO, "sha256: OpenSSL refused to start a digest");
    }
    return 0;
}

int prpc_sha256_update(prpc_sha256_t *h, const void *data, size_t len, prpc_error_t *err)
{
    if (h->ctx == NULL)
        return prpc_error_set(err, PRPC_ESTATE, "sha256: update on a released context");
    if (len == 0)
        return 0;
    if (EVP_DigestUpdate(h->ctx, data, len) != 1)
        return prpc_error_set(err, PRPC_EIO, "sha256: OpenSSL digest update failed");
    return 0;
}

int prpc_sha256_final(prpc_sha256_t *h, uint8_t out[PRPC_SHA256_LEN], prpc_error_t *err)
{
    unsigned int n = 0;
    if (h->ctx == NULL)
        return prpc_error_set(err, PRPC_ESTATE, "sha256: final on a released context");
    if (EVP_DigestFinal_ex(h->ctx, out, &n) != 1 || n != PRPC_SHA256_LEN)
        return prpc_error_set(err, PRPC_EIO, "sha256: OpenSSL digest final failed");
    return 0;
}

void prpc_sha256_cleanup(prpc_sha256_t *h)
{
    if (h == NULL)
        return;
    EVP_MD_CTX_free(h->ctx);
    h->ctx = NULL;
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

/* Hash fd from offset 0; `what` names the file in errors ("fd 5", "file 'x'"). */
static int hash_fd_named(int fd, const char *what, uint8_t out[PRPC_SHA256_LEN], uint64_t *size_out,
                         prpc_error_t *err)
{
    prpc_sha256_t h = {NULL};
    uint8_t *buf = NULL;
    uint64_t off = 0;
    int rc;

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
        rc = prpc_sha256_update(&h, buf, (size_t)n, err);
        if (rc < 0)
            goto out;
        off += (uint64_t)n;
    }
    rc = prpc_sha256_final(&h, out, err);
    if (rc == 0 && size_out != NULL)
        *size_out = off;
out:
    prpc_sha256_cleanup(&h);
    free(buf);
    return rc;
}

int prpc_hash_fd(int fd, uint8_t out[PRPC_SHA256_LEN], uint64_t *size_out, prpc_error_t *err)
{
    char what[32];
    if (fd < 0)
        return prpc_error_set(err, PRPC_EINVAL, "hashing fd %d: not a file descriptor", fd);
    snprintf(what, sizeof(what), "fd %d", fd);
    return hash_fd_named(fd, what, out, size_out, err);
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
    rc = hash_fd_named(fd, what, out, size_out, err);
out:
    if (fd >= 0)
        close(fd);
    return rc;
}
