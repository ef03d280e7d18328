/*
 * ident.c - the call identifier: encoding v1 (docs/IDENTITY.md) streamed
 * into a SHA-256. See ident.h for the contract.
 *
 * Every add validates everything first and only then feeds the digest, which
 * is what lets a rejected add leave the builder untouched.
 */
#include "ident.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* Bytes of the function name kept for error messages (cut on a character
 * boundary); the digest always sees the whole name. */
#define IDENT_LABEL_MAX 128

enum { IDENT_OPEN, IDENT_FINISHED, IDENT_BROKEN };

struct prpc_ident {
    prpc_sha256_t h;                    /* digest of the encoding so far */
    uint32_t argc;                      /* arguments announced to prpc_ident_new */
    uint32_t added;                     /* arguments added so far */
    int state;                          /* IDENT_OPEN until finished or a digest failure */
    char function[IDENT_LABEL_MAX + 1]; /* the function's name, for messages */
};

static void put_u64be(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

/* Feed the digest; a failure here leaves the encoding half-written, so the
 * builder can never produce an id again. */
static int feed(prpc_ident_t *id, const void *data, size_t len, prpc_error_t *err)
{
    int rc = prpc_sha256_update(&id->h, data, len, err);
    if (rc < 0)
        id->state = IDENT_BROKEN;
    return rc;
}

/* str(x) of the encoding: u64 big-endian byte length, then the bytes. */
static int feed_str(prpc_ident_t *id, const void *s, size_t len, prpc_error_t *err)
{
    uint8_t n[8];
    int rc;
    put_u64be(n, (uint64_t)len);
    rc = feed(id, n, sizeof(n), err);
    if (rc == 0)
        rc = feed(id, s, len, err);
    return rc;
}

static int check_open(prpc_ident_t *id, prpc_error_t *err)
{
    if (id == NULL)
        return prpc_error_set(err, PRPC_EINVAL, "call id: no builder");
    if (id->state == IDENT_FINISHED)
        return prpc_error_set(err, PRPC_ESTATE, "call '%s': id already finished", id->function);
    if (id->state == IDENT_BROKEN)
        return prpc_error_set(err, PRPC_ESTATE,
                              "call '%s': builder unusable after a digest failure", id->function);
    return 0;
}

/* Everything an add must check before it may touch the digest. */
static int check_arg(prpc_ident_t *id, const char *name, prpc_error_t *err)
{
    size_t len, bad;
    int rc = check_open(id, err);
    if (rc < 0)
        return rc;
    if (name == NULL || name[0] == '\0')
        return prpc_error_set(err, PRPC_EINVAL, "call '%s': argument %u has an empty name",
                              id->function, id->added + 1);
    len = strlen(name);
    bad = prpc_utf8_invalid_at(name, len);
    if (bad != len)
        return prpc_error_set(err, PRPC_EINVAL,
                              "call '%s': the name of argument %u is not valid UTF-8 (byte %zu)",
                              id->function, id->added + 1, bad);
    if (id->added >= id->argc)
        return prpc_error_set(err, PRPC_EINVAL,
                              "call '%s': argument '%s' is one more than the %u declared",
                              id->function, name, id->argc);
    return 0;
}

/* str(name), the tag byte, then the payload in two pieces (a fixed-size
 * head and a variable body, either may be empty), counted as one argument. */
static int feed_arg(prpc_ident_t *id, const char *name, char tag, const void *head, size_t head_len,
                    const void *body, size_t body_len, prpc_error_t *err)
{
    uint8_t t = (uint8_t)tag;
    int rc = feed_str(id, name, strlen(name), err);
    if (rc == 0)
        rc = feed(id, &t, 1, err);
    if (rc == 0)
        rc = feed(id, head, head_len, err);
    if (rc == 0)
        rc = feed(id, body, body_len, err);
    if (rc == 0)
        id->added++;
    return rc;
}

prpc_ident_t *prpc_ident_new(const char *function, const char *version_hex, uint32_t argc,
                             prpc_error_t *err)
{
    static const uint8_t magic[] = PRPC_IDENT_MAGIC; /* sizeof includes the 0x00 */
    prpc_ident_t *id = NULL;
    uint8_t version[PRPC_SHA256_LEN], n[4];
    size_t len, bad, cut;
    prpc_error_t hex_err;

    if (function == NULL || function[0] == '\0') {
        prpc_error_set(err, PRPC_EINVAL, "call id: empty function name");
        return NULL;
    }
    len = strlen(function);
    bad = prpc_utf8_invalid_at(function, len);
    if (bad != len) {
        prpc_error_set(err, PRPC_EINVAL, "call id: function name is not valid UTF-8 (byte %zu)",
                       bad);
        return NULL;
    }
    if (version_hex == NULL ||
        prpc_hex_decode(version_hex, strlen(version_hex), version, sizeof(version), &hex_err) < 0) {
        prpc_error_set(err, PRPC_EINVAL, "call '%s': version must be 64 hex digits (a SHA-256): %s",
                       function, version_hex == NULL ? "none given" : hex_err.message);
        return NULL;
    }
    id = calloc(1, sizeof(*id));
    if (id == NULL) {
        prpc_error_set(err, PRPC_ENOMEM, "call '%s': out of memory", function);
        return NULL;
    }
    cut = len < IDENT_LABEL_MAX ? len : IDENT_LABEL_MAX;
    while (cut < len && cut > 0 && ((uint8_t)function[cut] & 0xc0) == 0x80)
        cut--;
    memcpy(id->function, function, cut);
    id->function[cut] = '\0';
    id->argc = argc;
    id->state = IDENT_OPEN;
    n[0] = (uint8_t)(argc >> 24);
    n[1] = (uint8_t)(argc >> 16);
    n[2] = (uint8_t)(argc >> 8);
    n[3] = (uint8_t)argc;
    if (prpc_sha256_init(&id->h, err) < 0 || feed(id, magic, sizeof(magic), err) < 0 ||
        feed_str(id, function, len, err) < 0 || feed(id, version, sizeof(version), err) < 0 ||
        feed(id, n, sizeof(n), err) < 0) {
        prpc_ident_free(id);
        return NULL;
    }
    return id;
}

int prpc_ident_add_int(prpc_ident_t *id, const char *name, int negative, const uint8_t *magnitude,
                       size_t len, prpc_error_t *err)
{
    uint8_t head[9];
    int rc = check_arg(id, name, err);
    if (rc < 0)
        return rc;
    if (magnitude == NULL && len > 0)
        return prpc_error_set(err, PRPC_EINVAL, "call '%s': argument '%s': no magnitude bytes",
                              id->function, name);
    while (len > 0 && magnitude[0] == 0) {
        magnitude++;
        len--;
    }
    head[0] = (negative && len > 0) ? 1 : 0;
    put_u64be(head + 1, (uint64_t)len);
    return feed_arg(id, name, PRPC_IDENT_TAG_INT, head, sizeof(head), magnitude, len, err);
}

#ifdef PRPC_UNITTEST
int prpc_ident_add_int64(prpc_ident_t *id, const char *name, int64_t value, prpc_error_t *err)
{
    /* Negate in unsigned arithmetic: -INT64_MIN does not fit in int64_t. */
    uint64_t mag = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    uint8_t be[8];
    put_u64be(be, mag);
    return prpc_ident_add_int(id, name, value < 0, be, sizeof(be), err);
}
#endif

int prpc_ident_add_float(prpc_ident_t *id, const char *name, double value, prpc_error_t *err)
{
    uint64_t bits;
    uint8_t be[8];
    int rc = check_arg(id, name, err);
    if (rc < 0)
        return rc;
    memcpy(&bits, &value, sizeof(bits));
    put_u64be(be, bits);
    return feed_arg(id, name, PRPC_IDENT_TAG_FLOAT, be, sizeof(be), NULL, 0, err);
}

int prpc_ident_add_bool(prpc_ident_t *id, const char *name, int value, prpc_error_t *err)
{
    uint8_t b = value ? 1 : 0;
    int rc = check_arg(id, name, err);
    if (rc < 0)
        return rc;
    return feed_arg(id, name, PRPC_IDENT_TAG_BOOL, &b, 1, NULL, 0, err);
}

int prpc_ident_add_str(prpc_ident_t *id, const char *name, const char *utf8, size_t len,
                       prpc_error_t *err)
{
    uint8_t n[8];
    size_t bad;
    int rc = check_arg(id, name, err);
    if (rc < 0)
        return rc;
    if (utf8 == NULL && len > 0)
        return prpc_error_set(err, PRPC_EINVAL, "call '%s': argument '%s': no string bytes",
                              id->function, name);
    bad = prpc_utf8_invalid_at(utf8, len);
    if (bad != len)
        return prpc_error_set(
            err, PRPC_EINVAL,
            "call '%s': argument '%s': string is not valid UTF-8 (byte %zu of %zu)", id->function,
            name, bad, len);
    put_u64be(n, (uint64_t)len);
    return feed_arg(id, name, PRPC_IDENT_TAG_STR, n, sizeof(n), utf8, len, err);
}

int prpc_ident_add_file_sha256(prpc_ident_t *id, const char *name,
                               const uint8_t sha[PRPC_SHA256_LEN], prpc_error_t *err)
{
    int rc = check_arg(id, name, err);
    if (rc < 0)
        return rc;
    if (sha == NULL)
        return prpc_error_set(err, PRPC_EINVAL, "call '%s': argument '%s': no file digest",
                              id->function, name);
    return feed_arg(id, name, PRPC_IDENT_TAG_FILE, sha, PRPC_SHA256_LEN, NULL, 0, err);
}

/* Hash the file (by path when path is not NULL, else by fd) and add its
 * digest; the argument is checked first so that a doomed add does not read
 * a large file for nothing. */
static int add_file(prpc_ident_t *id, const char *name, int fd, const char *path, prpc_error_t *err)
{
    uint8_t sha[PRPC_SHA256_LEN];
    prpc_error_t ferr;
    int rc = check_arg(id, name, err);
    if (rc < 0)
        return rc;
    if (path != NULL)
        rc = prpc_hash_path(path, sha, NULL, &ferr);
    else
        rc = prpc_hash_fd(fd, sha, NULL, &ferr);
    if (rc < 0)
        return prpc_error_set(err, rc, "call '%s': argument '%s': %s", id->function, name,
                              ferr.message);
    return prpc_ident_add_file_sha256(id, name, sha, err);
}

int prpc_ident_add_file_fd(prpc_ident_t *id, const char *name, int fd, prpc_error_t *err)
{
    return add_file(id, name, fd, NULL, err);
}

int prpc_ident_add_file_path(prpc_ident_t *id, const char *name, const char *path,
                             prpc_error_t *err)
{
    return add_file(id, name, -1, path == NULL ? "" : path, err);
}

int prpc_ident_finish(prpc_ident_t *id, char out_hex[PRPC_SHA256_HEX_LEN + 1], prpc_error_t *err)
{
    uint8_t digest[PRPC_SHA256_LEN];
    int rc = check_open(id, err);
    if (rc < 0)
        return rc;
    if (id->added != id->argc)
        return prpc_error_set(err, PRPC_EINVAL, "call '%s': %u of %u arguments given", id->function,
                              id->added, id->argc);
    rc = prpc_sha256_final(&id->h, digest, err);
    id->state = rc < 0 ? IDENT_BROKEN : IDENT_FINISHED;
    if (rc < 0)
        return rc;
    prpc_hex_encode(digest, sizeof(digest), out_hex);
    return 0;
}

void prpc_ident_free(prpc_ident_t *id)
{
    if (id == NULL)
        return;
    prpc_sha256_cleanup(&id->h);
    free(id);
}
