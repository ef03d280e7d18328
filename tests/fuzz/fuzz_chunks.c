/*
 * fuzz_chunks.c - libFuzzer target: the chunk protocol of a blob directory
 * (blob.h) driven by a sequence of operations decoded from the input, checked
 * against an exact model of what should be on disk.
 *
 * Input: 4-byte records [op, name, a, b]. Names 0..47 are valid blobs with
 * known content (blob k is gen(k, 0..len_k)); names 48..63 are malformed
 * names ("../", uppercase, wrong length...). Operations: write a chunk (offset
 * right or wrong, hash right, wrong or absent, data corrupt or not), commit
 * (with the right or a wrong size), remove, append through partial_open (the
 * download path), verify, import from an fd, reopen the directory (running
 * hashes are lost).
 *
 * Invariants, after every operation: the result code is the one the model
 * predicts; the partial size is exactly what was acknowledged; a complete
 * blob exists only when the model says so. At the end of each input: the
 * directory holds nothing but tmp/<sha>.part and ab/<rest> files the model
 * knows, every complete blob hashes to its name, and nothing at all was
 * written next to the blob directory.
 */
#include "fuzz_util.h"
#include "blob.h"
#include "hash.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define NAMES 48
#define MAXPART 8192

typedef struct model {
    int complete;
    int exists; /* partial file present */
    size_t plen;
    uint8_t part[MAXPART];
} model_t;

static char parent[512], root[600];
static prpc_blobdir_t *bd;
static char shas[NAMES][65];
static size_t lens[NAMES];
static model_t model[NAMES];

static const char *BAD[] = {
    "../../../../../../../../../../../../../../../../../../../../../etc",
    "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB",
    "abababababababababababababababababababababababababababababababa",
    "ababababababababababababababababababababababababababababababababa",
    "../abababababababababababababababababababababababababababababab",
    "abababababababababababababababab/bababababababababababababababab",
    "",
    "abababababababababababababababababababababababababababababababa\n",
    "ab/../../../../../../../../../../../../../../../../../../../../..",
    "gbababababababababababababababababababababababababababababababab",
};
#define NBAD (sizeof(BAD) / sizeof(BAD[0]))

static void cleanup(void)
{
    prpc_blobdir_free(bd);
    fuzz_rmtree(parent);
}

static uint8_t gen(size_t k, size_t i)
{
    return (uint8_t)(k * 31 + i * 7 + (i >> 4));
}

static void fill(size_t k, size_t off, uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = gen(k, off + i);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    uint8_t buf[MAXPART], digest[PRPC_SHA256_LEN];
    prpc_error_t err;
    (void)argc;
    (void)argv;
    fuzz_mkdtemp("fuzz-chunks", parent, sizeof(parent));
    snprintf(root, sizeof(root), "%s/blobs", parent);
    bd = prpc_blobdir_open(root, &err);
    FUZZ_CHECK(bd != NULL, "%s", err.message);
    atexit(cleanup);
    for (size_t k = 0; k < NAMES; k++) {
        lens[k] = (k * 97) % 700;
        fill(k, 0, buf, lens[k]);
        prpc_sha256(buf, lens[k], digest, NULL);
        prpc_hex_encode(digest, sizeof(digest), shas[k]);
    }
    return 0;
}

static int content_is_blob(size_t k, const uint8_t *p, size_t len)
{
    if (len != lens[k])
        return 0;
    for (size_t i = 0; i < len; i++)
        if (p[i] != gen(k, i))
            return 0;
    return 1;
}

static void check_name(size_t k)
{
    uint64_t size = 99;
    int rc = prpc_blobdir_partial(bd, shas[k], &size, NULL);
    FUZZ_CHECK(rc == 0, "partial of blob %zu: %d", k, rc);
    FUZZ_CHECK(size == (model[k].exists ? model[k].plen : 0),
               "blob %zu: partial is %llu bytes, %zu acknowledged", k, (unsigned long long)size,
               model[k].exists ? model[k].plen : 0);
    rc = prpc_blobdir_stat(bd, shas[k], &size, NULL);
    if (model[k].complete)
        FUZZ_CHECK(rc == 0 && size == lens[k], "blob %zu should be complete (%d)", k, rc);
    else
        FUZZ_CHECK(rc == PRPC_ENOTFOUND, "blob %zu should be absent (%d)", k, rc);
}

static void expect(int rc, int want, const prpc_error_t *err, const char *op, size_t k)
{
    FUZZ_CHECK(rc == want, "%s on blob %zu: got %d (%s), model says %d", op, k, rc,
               rc ? err->message : "", want);
    FUZZ_CHECK(rc == 0 || (err->code == rc && err->message[0] != '\0'),
               "%s: error without a message", op);
}

static int is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static int find_name(const char *sha)
{
    for (size_t k = 0; k < NAMES; k++)
        if (strcmp(shas[k], sha) == 0)
            return (int)k;
    return -1;
}

/* Everything under the parent dir is the blob dir's layout, known to the model. */
static void walk_and_check(void)
{
    char path[1200], sha[65];
    struct dirent *e, *f;
    DIR *d, *sub;
    size_t parts = 0, completes = 0;

    d = opendir(parent);
    FUZZ_CHECK(d != NULL, "cannot list %s", parent);
    while ((e = readdir(d)) != NULL)
        FUZZ_CHECK(e->d_name[0] == '.' || strcmp(e->d_name, "blobs") == 0,
                   "a file was written outside the blob directory: %s", e->d_name);
    closedir(d);
    d = opendir(root);
    FUZZ_CHECK(d != NULL, "cannot list %s", root);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", root, e->d_name);
        sub = opendir(path);
        FUZZ_CHECK(sub != NULL, "unexpected file %s", path);
        FUZZ_CHECK(strcmp(e->d_name, "tmp") == 0 || is_hex(e->d_name, 2),
                   "unexpected directory %s", path);
        while ((f = readdir(sub)) != NULL) {
            int k;
            if (strcmp(f->d_name, ".") == 0 || strcmp(f->d_name, "..") == 0)
                continue;
            if (strcmp(e->d_name, "tmp") == 0) {
                size_t n = strlen(f->d_name);
                FUZZ_CHECK(n == 69 && strcmp(f->d_name + 64, ".part") == 0,
                           "unexpected file tmp/%s", f->d_name);
                memcpy(sha, f->d_name, 64);
                sha[64] = '\0';
                k = find_name(sha);
                FUZZ_CHECK(k >= 0 && model[k].exists, "partial file %s the model lacks", sha);
                parts++;
            } else {
                uint8_t digest[PRPC_SHA256_LEN];
                char hex[65];
                uint64_t size = 0;
                snprintf(sha, sizeof(sha), "%s%s", e->d_name, f->d_name);
                k = find_name(sha);
                FUZZ_CHECK(k >= 0 && model[k].complete, "complete blob %s the model lacks", sha);
                snprintf(path, sizeof(path), "%s/%s/%s", root, e->d_name, f->d_name);
                FUZZ_CHECK(prpc_hash_path(path, digest, &size, NULL) == 0, "cannot hash %s",
                           path);
                prpc_hex_encode(digest, sizeof(digest), hex);
                FUZZ_CHECK(strcmp(hex, sha) == 0, "blob %s holds content hashing to %s", sha,
                           hex);
                completes++;
            }
        }
        closedir(sub);
    }
    closedir(d);
    for (size_t k = 0; k < NAMES; k++) {
        parts -= model[k].exists ? 1 : 0;
        completes -= model[k].complete ? 1 : 0;
    }
    FUZZ_CHECK(parts == 0 && completes == 0, "the model has files the disk lacks");
}

static void op_write(size_t k, uint8_t a, uint8_t b)
{
    model_t *m = &model[k];
    uint8_t data[800], digest[PRPC_SHA256_LEN];
    char hex[65];
    const char *chunk_sha = hex;
    size_t have = m->exists ? m->plen : 0, off, len = (size_t)b * 3;
    uint64_t partial = 0;
    prpc_error_t err;
    int want, rc, wrong_hash = 0;

    switch (a & 3) {
    case 0: off = have; break;
    case 1: off = have + 1 + (b & 15); break;
    case 2: off = 0; break;
    default: off = have ? have - 1 : 1; break;
    }
    if (off + len > MAXPART)
        len = off < MAXPART ? MAXPART - off : 0;
    fill(k, off, data, len);
    if ((a & 16) && len > 0)
        data[b % len] ^= 0x5a; /* wrong bytes, hashed as they are */
    prpc_sha256(data, len, digest, NULL);
    prpc_hex_encode(digest, sizeof(digest), hex);
    switch ((a >> 2) & 3) {
    case 1: hex[a % 64] = hex[a % 64] == '0' ? '1' : '0'; wrong_hash = 1; break;
    case 2: chunk_sha = NULL; break;
    case 3: /* right hash, data damaged in flight */
        if (len > 0) {
            data[0] ^= 1;
            wrong_hash = 1;
        }
        break;
    default: break;
    }
    want = wrong_hash ? PRPC_ECORRUPT : off != have ? PRPC_ESTATE : 0;
    rc = prpc_blobdir_write_chunk(bd, shas[k], off, data, len, chunk_sha, &partial, &err);
    expect(rc, want, &err, "write_chunk", k);
    if (rc == 0) {
        FUZZ_CHECK(partial == off + len, "partial %llu after a chunk ending at %zu",
                   (unsigned long long)partial, off + len);
        memcpy(m->part + off, data, len);
        m->plen = off + len;
        m->exists = 1;
    }
}

static void op_commit(size_t k, uint8_t a, uint8_t b)
{
    model_t *m = &model[k];
    uint64_t size;
    prpc_error_t err;
    int want, rc;
    switch (a & 3) {
    case 0: size = lens[k]; break;
    case 1: size = m->plen; break;
    case 2: size = lens[k] + 1; break;
    default: size = b; break;
    }
    if (m->complete && size == lens[k])
        want = 0;
    else if (!m->exists)
        want = PRPC_ENOTFOUND;
    else if (size == lens[k] && content_is_blob(k, m->part, m->plen))
        want = 0;
    else
        want = PRPC_ECORRUPT;
    rc = prpc_blobdir_commit(bd, shas[k], size, &err);
    expect(rc, want, &err, "commit", k);
    if (!(m->complete && size == lens[k])) {
        /* Committed or dropped: the partial file is gone either way. */
        if (rc == 0)
            m->complete = 1;
        m->exists = 0;
        m->plen = 0;
    }
}

static void op_append(size_t k, uint8_t a, uint8_t b)
{
    model_t *m = &model[k];
    uint8_t data[256];
    uint64_t off = 99;
    prpc_error_t err;
    size_t len = b;
    int fd = -1, rc;
    rc = prpc_blobdir_partial_open(bd, shas[k], &fd, &off, &err);
    expect(rc, 0, &err, "partial_open", k);
    FUZZ_CHECK(off == (m->exists ? m->plen : 0), "partial_open resumes at %llu, model %zu",
               (unsigned long long)off, m->plen);
    m->exists = 1;
    if (off + len > MAXPART)
        len = MAXPART - off;
    fill(k, off, data, len);
    if ((a & 1) && len > 0)
        data[len - 1] ^= 0x80;
    FUZZ_CHECK(pwrite(fd, data, len, (off_t)off) == (ssize_t)len, "pwrite");
    close(fd);
    memcpy(m->part + off, data, len);
    m->plen = off + len;
}

static void op_import(size_t k, uint8_t a)
{
    model_t *m = &model[k];
    uint8_t data[MAXPART];
    char out[65];
    uint64_t size = 0;
    prpc_error_t err;
    int corrupt = (a & 1) && lens[k] > 0, fd, rc, want;
    fd = memfd_create("fuzz-import", MFD_CLOEXEC);
    FUZZ_CHECK(fd >= 0, "memfd_create: %s", strerror(errno));
    fill(k, 0, data, lens[k]);
    if (corrupt)
        data[0] ^= 1;
    FUZZ_CHECK(write(fd, data, lens[k]) == (ssize_t)lens[k], "write");
    /* Without an expected name only the right content is imported here: the
     * model only knows the 48 names. */
    want = corrupt ? PRPC_ECORRUPT : 0;
    rc = prpc_blobdir_import_fd(bd, fd, (a & 2) && !corrupt ? NULL : shas[k], out, &size, &err);
    close(fd);
    expect(rc, want, &err, "import_fd", k);
    if (rc == 0) {
        FUZZ_CHECK(strcmp(out, shas[k]) == 0 && size == lens[k], "import named it %s", out);
        if (!m->complete) {
            m->complete = 1;
            m->exists = 0; /* the import wrote and committed the partial path */
            m->plen = 0;
        }
    }
}

static void op_bad_name(const char *name, uint8_t a)
{
    uint8_t data[4] = {1, 2, 3, 4};
    uint64_t n = 0;
    prpc_error_t err;
    int fd = -1, rc;
    switch (a % 7) {
    case 0: rc = prpc_blobdir_write_chunk(bd, name, 0, data, sizeof(data), NULL, &n, &err); break;
    case 1: rc = prpc_blobdir_commit(bd, name, 4, &err); break;
    case 2: rc = prpc_blobdir_remove(bd, name, &err); break;
    case 3: rc = prpc_blobdir_partial_open(bd, name, &fd, &n, &err); break;
    case 4: rc = prpc_blobdir_verify(bd, name, &err); break;
    case 5: rc = prpc_blobdir_partial(bd, name, &n, &err); break;
    default: rc = prpc_blobdir_stat(bd, name, &n, &err); break;
    }
    FUZZ_CHECK(rc == PRPC_EINVAL && err.code == PRPC_EINVAL && strstr(err.message, "blob"),
               "operation %d on blob name \"%s\" gave %d", a % 7, name, rc);
    FUZZ_CHECK(fd == -1, "an fd was opened for a bad name");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    prpc_error_t err;
    memset(model, 0, sizeof(model));
    for (size_t i = 0; i + 4 <= size; i += 4) {
        uint8_t op = data[i] % 7, n = data[i + 1] % 64, a = data[i + 2], b = data[i + 3];
        size_t k = n;
        if (n >= NAMES) {
            op_bad_name(BAD[(n - NAMES) % NBAD], a);
            continue;
        }
        switch (op) {
        case 0: op_write(k, a, b); break;
        case 1: op_commit(k, a, b); break;
        case 2:
            expect(prpc_blobdir_remove(bd, shas[k], &err), 0, &err, "remove", k);
            memset(&model[k], 0, sizeof(model[k]));
            break;
        case 3: op_append(k, a, b); break;
        case 4:
            expect(prpc_blobdir_verify(bd, shas[k], &err),
                   model[k].complete ? 0 : PRPC_ENOTFOUND, &err, "verify", k);
            break;
        case 5: op_import(k, a); break;
        default:
            prpc_blobdir_free(bd);
            bd = prpc_blobdir_open(root, &err);
            FUZZ_CHECK(bd != NULL, "reopen: %s", err.message);
            break;
        }
        check_name(k);
    }
    walk_and_check();
    for (size_t k = 0; k < NAMES; k++)
        FUZZ_CHECK(prpc_blobdir_remove(bd, shas[k], &err) == 0, "cleanup: %s", err.message);
    return 0;
}
