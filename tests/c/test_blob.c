/* test_blob.c - the content-addressed blob directory (csrc/blob.c): chunked
 * uploads, commit, import, resume, verification, and that nothing is written
 * outside the directory. Each test gets a fresh mkdtemp root holding the blob
 * directory (root/blobs) and, for imports, a source folder (root/src); after
 * the test the root is walked to prove nothing else appeared, then removed. */
#include "blob.h"
#include "hash.h"
#include "fault.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/* The pattern file of test_hash.c: byte i = (i*31+7) & 0xff; its digest was
 * computed independently with Python's hashlib. */
#define FILE5M_SIZE ((size_t)5 * 1024 * 1024 + 7)
#define FILE5M_SHA "84dfa80f4c2408b1cfbad6d26e2c0dc89af7c5284cb52c37484d5a57e9e41846"

struct fx {
    char root[256];  /* the mkdtemp parent */
    char dir[300];   /* root/blobs, the blob directory under test */
    char src[300];   /* root/src, where tests put files to import */
    prpc_blobdir_t *bd;
};

static struct fx *walk_fx_;
static int walk_bad_;

static int starts_with_dir(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Every entry under root must be root itself, inside root/blobs, or inside
 * root/src; inside the blob directory only tmp/, two-hex folders and
 * 62-hex files (or tmp/<sha>.part) may exist. */
static int walk_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    PRPC_UNUSED(st);
    PRPC_UNUSED(ftw);
    if (strcmp(path, walk_fx_->root) == 0 || starts_with_dir(path, walk_fx_->src))
        return 0;
    if (!starts_with_dir(path, walk_fx_->dir)) {
        fprintf(stderr, "  FAIL: written outside the blob directory: %s\n", path);
        walk_bad_ = 1;
        return 0;
    }
    if (type == FTW_F && strstr(path, "/tmp/") == NULL) {
        const char *rel = path + strlen(walk_fx_->dir) + 1;
        char sha[65];
        if (strlen(rel) != 65 || rel[2] != '/') {
            fprintf(stderr, "  FAIL: unexpected file in blob directory: %s\n", path);
            walk_bad_ = 1;
            return 0;
        }
        memcpy(sha, rel, 2);
        memcpy(sha + 2, rel + 3, 62);
        sha[64] = '\0';
        if (!prpc_blob_valid_sha(sha)) {
            fprintf(stderr, "  FAIL: blob file not named by a sha: %s\n", path);
            walk_bad_ = 1;
        }
    }
    return 0;
}

static int rm_cb(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    PRPC_UNUSED(st);
    PRPC_UNUSED(type);
    PRPC_UNUSED(ftw);
    remove(path);
    return 0;
}

static int fx_setup(struct fx *f)
{
    const char *t = getenv("TMPDIR");
    prpc_error_t err;
    memset(f, 0, sizeof(*f));
    snprintf(f->root, sizeof(f->root), "%s/prpc-test-blob-XXXXXX",
             t && strlen(t) < 100 ? t : "/tmp");
    if (mkdtemp(f->root) == NULL) {
        perror("mkdtemp");
        return -1;
    }
    snprintf(f->dir, sizeof(f->dir), "%s/blobs", f->root);
    snprintf(f->src, sizeof(f->src), "%s/src", f->root);
    if (mkdir(f->src, 0700) != 0)
        return -1;
    f->bd = prpc_blobdir_open(f->dir, &err);
    if (f->bd == NULL) {
        fprintf(stderr, "  blobdir_open: %s\n", err.message);
        return -1;
    }
    return 0;
}

static void fx_teardown(struct fx *f)
{
    prpc_blobdir_free(f->bd);
    walk_fx_ = f;
    walk_bad_ = 0;
    nftw(f->root, walk_cb, 16, FTW_PHYS);
    if (walk_bad_)
        test_failed_ = 1;
    nftw(f->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* BLOB_TEST(name) defines a test whose body gets a ready fixture `f`; the
 * body may return early (CHECK) and teardown still runs. */
#define BLOB_TEST(name)                                                              \
    static void body_##name(struct fx *f);                                           \
    TEST(name)                                                                       \
    {                                                                                \
        struct fx f;                                                                 \
        if (fx_setup(&f) != 0) {                                                     \
            test_failed_ = 1;                                                        \
            nftw(f.root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);                           \
            return;                                                                  \
        }                                                                            \
        body_##name(&f);                                                             \
        fx_teardown(&f);                                                             \
    }                                                                                \
    static void body_##name(struct fx *f)

static void sha_hex(const void *data, size_t len, char out[65])
{
    uint8_t d[32];
    if (prpc_sha256(data, len, d, NULL) != 0) {
        strcpy(out, "error");
        return;
    }
    prpc_hex_encode(d, 32, out);
}

/* n bytes of a pattern that differs per seed; caller frees. */
static uint8_t *pattern(size_t n, unsigned seed)
{
    uint8_t *p = malloc(n ? n : 1);
    if (p == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((i * 31 + 7 + seed * 13) & 0xff);
    return p;
}

/* Whole content of path (caller frees), or NULL when it cannot be read. */
static uint8_t *slurp(const char *path, size_t *len)
{
    struct stat st;
    uint8_t *buf;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) != 0 || (buf = malloc((size_t)st.st_size + 1)) == NULL) {
        close(fd);
        return NULL;
    }
    *len = 0;
    while (*len < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + *len, (size_t)st.st_size - *len);
        if (n <= 0)
            break;
        *len += (size_t)n;
    }
    close(fd);
    return buf;
}

static int file_equals(const char *path, const void *data, size_t len)
{
    size_t got = 0;
    uint8_t *buf = slurp(path, &got);
    int same = buf != NULL && got == len && memcmp(buf, data, len) == 0;
    free(buf);
    return same;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void part_path(const struct fx *f, const char *sha, char out[PRPC_BLOB_PATH_MAX])
{
    snprintf(out, PRPC_BLOB_PATH_MAX, "%s/tmp/%s.part", f->dir, sha);
}

static int write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const uint8_t *p = data;
    if (fd < 0)
        return -1;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return close(fd);
}

/* Upload data in pieces of `piece` bytes, each with its chunk SHA. */
static int upload(struct fx *f, const char *sha, const uint8_t *data, size_t len, size_t piece,
                  prpc_error_t *err)
{
    uint64_t partial = 0;
    for (size_t off = 0; off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        char csha[65];
        int rc;
        sha_hex(data + off, n, csha);
        rc = prpc_blobdir_write_chunk(f->bd, sha, off, data + off, n, csha, &partial, err);
        if (rc != 0)
            return rc;
        if (partial != off + n)
            return prpc_error_set(err, PRPC_EIO, "partial %llu after chunk at %zu",
                                  (unsigned long long)partial, off);
    }
    return 0;
}

/* ---- open ------------------------------------------------------------ */

BLOB_TEST(open_creates_dirs)
{
    char deep[400], tmp[450];
    struct stat st;
    prpc_error_t err;
    prpc_blobdir_t *bd;

    snprintf(deep, sizeof(deep), "%s/a/b/c", f->dir);
    CHECK(!exists(deep));
    bd = prpc_blobdir_open(deep, &err);
    CHECK(bd != NULL);
    prpc_blobdir_free(bd);
    snprintf(tmp, sizeof(tmp), "%s/tmp", deep);
    CHECK(stat(tmp, &st) == 0 && S_ISDIR(st.st_mode));
    /* Opening an existing directory again is fine. */
    bd = prpc_blobdir_open(deep, &err);
    CHECK(bd != NULL);
    prpc_blobdir_free(bd);
    /* The fixture's own directory got its tmp/ too. */
    snprintf(tmp, sizeof(tmp), "%s/tmp", f->dir);
    CHECK(stat(tmp, &st) == 0 && S_ISDIR(st.st_mode));
    prpc_blobdir_free(NULL);
}

BLOB_TEST(open_refuses_bad_paths)
{
    char file[400], under[450], longp[PRPC_BLOB_PATH_MAX];
    prpc_error_t err;

    CHECK(prpc_blobdir_open(NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(strstr(err.message, "blob directory path") != NULL);

    /* Room is kept for "/ab/<62 hex>" and "/tmp/<sha>.part" below it. */
    memset(longp, 'x', sizeof(longp) - 70);
    longp[0] = '/';
    longp[sizeof(longp) - 70] = '\0';
    CHECK(prpc_blobdir_open(longp, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(strstr(err.message, "too long") != NULL);

    /* A regular file where a directory must go. */
    snprintf(file, sizeof(file), "%s/plainfile", f->src);
    CHECK(write_file(file, "x", 1) == 0);
    snprintf(under, sizeof(under), "%s/blobs", file);
    CHECK(prpc_blobdir_open(under, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EIO);
    CHECK(strstr(err.message, "creating directory") != NULL);
    CHECK(strstr(err.message, file) != NULL);
}

/* ---- names ----------------------------------------------------------- */

BLOB_TEST(invalid_names_refused)
{
    static const char *bad[] = {
        "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",  /* uppercase */
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",   /* 63 chars */
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555", /* 65 chars */
        "g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  /* non-hex */
        "../../../../../../../../../../../../../../../../../../../etc/passwd",
        "",
    };
    prpc_error_t err;
    char path[PRPC_BLOB_PATH_MAX], out[65];
    uint64_t size = 77;
    int fd = -1;

    CHECK(prpc_blob_valid_sha(EMPTY_SHA));
    CHECK(!prpc_blob_valid_sha(NULL));
    for (size_t i = 0; i <= PRPC_ARRAY_LEN(bad); i++) {
        const char *s = i < PRPC_ARRAY_LEN(bad) ? bad[i] : NULL;
        const char *named = s ? s : "(null)";
        int rcs[9];
        CHECK(!prpc_blob_valid_sha(s));
        rcs[0] = prpc_blobdir_path(f->bd, s, path, &err);
        CHECK(strstr(err.message, named) != NULL);
        rcs[1] = prpc_blobdir_stat(f->bd, s, &size, &err);
        CHECK(strstr(err.message, named) != NULL);
        rcs[2] = prpc_blobdir_partial(f->bd, s, &size, &err);
        CHECK(strstr(err.message, named) != NULL);
        rcs[3] = prpc_blobdir_write_chunk(f->bd, s, 0, "abc", 3, NULL, &size, &err);
        CHECK(strstr(err.message, named) != NULL);
        rcs[4] = prpc_blobdir_commit(f->bd, s, 3, &err);
        CHECK(strstr(err.message, named) != NULL);
        rcs[5] = prpc_blobdir_partial_open(f->bd, s, &fd, &size, &err);
        CHECK(strstr(err.message, named) != NULL);
        rcs[6] = prpc_blobdir_verify(f->bd, s, &err);
        CHECK(strstr(err.message, named) != NULL);
        rcs[7] = prpc_blobdir_remove(f->bd, s, &err);
        CHECK(strstr(err.message, named) != NULL);
        rcs[8] = s ? prpc_blobdir_import_fd(f->bd, 0, s, out, &size, &err) : PRPC_EINVAL;
        CHECK(strstr(err.message, named) != NULL);
        CHECK(strstr(err.message, "64 lowercase hex") != NULL);
        CHECK_EQ_INT(err.code, PRPC_EINVAL);
        for (size_t k = 0; k < PRPC_ARRAY_LEN(rcs); k++)
            CHECK_EQ_INT(rcs[k], PRPC_EINVAL);
        CHECK_EQ_INT(size, 77);
        CHECK_EQ_INT(fd, -1);
    }
}

BLOB_TEST(path_layout)
{
    char path[PRPC_BLOB_PATH_MAX], want[PRPC_BLOB_PATH_MAX];
    prpc_error_t err;
    CHECK_EQ_INT(prpc_blobdir_path(f->bd, FILE5M_SHA, path, &err), 0);
    snprintf(want, sizeof(want), "%s/84/%s", f->dir, FILE5M_SHA + 2);
    CHECK_EQ_STR(path, want);
}

/* ---- chunked upload -------------------------------------------------- */

BLOB_TEST(chunks_in_order_then_commit)
{
    const size_t len = 300 * 1024 + 5;
    uint8_t *data = pattern(len, 1);
    char sha[65], path[PRPC_BLOB_PATH_MAX], want[PRPC_BLOB_PATH_MAX], part[PRPC_BLOB_PATH_MAX];
    uint64_t size = 0, partial = 0;
    size_t cuts[] = {0, 100 * 1024, 250 * 1024, len};
    prpc_error_t err;

    CHECK(data != NULL);
    sha_hex(data, len, sha);
    CHECK_EQ_INT(prpc_blobdir_partial(f->bd, sha, &size, &err), 0);
    CHECK_EQ_INT(size, 0);
    for (size_t i = 0; i + 1 < PRPC_ARRAY_LEN(cuts); i++) {
        size_t off = cuts[i], n = cuts[i + 1] - cuts[i];
        char csha[65];
        sha_hex(data + off, n, csha);
        if (prpc_blobdir_write_chunk(f->bd, sha, off, data + off, n, csha, &partial, &err) != 0) {
            fprintf(stderr, "  %s\n", err.message);
            free(data);
            CHECK(0);
        }
        CHECK_EQ_INT(partial, cuts[i + 1]);
        CHECK_EQ_INT(prpc_blobdir_partial(f->bd, sha, &size, &err), 0);
        CHECK_EQ_INT(size, cuts[i + 1]);
        /* Not visible as a blob until committed. */
        CHECK_EQ_INT(prpc_blobdir_stat(f->bd, sha, &size, &err), PRPC_ENOTFOUND);
    }
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, len, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_path(f->bd, sha, path, &err), 0);
    snprintf(want, sizeof(want), "%s/%.2s/%s", f->dir, sha, sha + 2);
    CHECK_EQ_STR(path, want);
    CHECK(file_equals(want, data, len));
    free(data);
    CHECK_EQ_INT(prpc_blobdir_stat(f->bd, sha, &size, &err), 0);
    CHECK_EQ_INT(size, len);
    CHECK_EQ_INT(prpc_blobdir_stat(f->bd, sha, NULL, &err), 0);
    part_path(f, sha, part);
    CHECK(!exists(part));
    CHECK_EQ_INT(prpc_blobdir_partial(f->bd, sha, &size, &err), 0);
    CHECK_EQ_INT(size, 0);
    CHECK_EQ_INT(prpc_blobdir_verify(f->bd, sha, &err), 0);
}

BLOB_TEST(chunk_without_checksum_and_max_size)
{
    uint8_t *data = pattern(PRPC_BLOB_CHUNK, 2);
    char sha[65];
    uint64_t partial = 0, size = 0;
    prpc_error_t err;

    CHECK(data != NULL);
    sha_hex(data, PRPC_BLOB_CHUNK, sha);
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, 0, data, PRPC_BLOB_CHUNK, NULL, &partial,
                                          &err),
                 0);
    CHECK_EQ_INT(partial, PRPC_BLOB_CHUNK);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, PRPC_BLOB_CHUNK, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_stat(f->bd, sha, &size, &err), 0);
    CHECK_EQ_INT(size, PRPC_BLOB_CHUNK);
    free(data);
}

BLOB_TEST(out_of_order_offset_refused)
{
    uint8_t *data = pattern(300, 3);
    char sha[65], part[PRPC_BLOB_PATH_MAX], msg[160];
    uint64_t partial = 999, size = 0;
    prpc_error_t err;

    CHECK(data != NULL);
    sha_hex(data, 300, sha);
    part_path(f, sha, part);
    /* First chunk must start at 0. */
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, 5, data + 5, 10, NULL, &partial, &err),
                 PRPC_ESTATE);
    CHECK(strstr(err.message, "offset 5 ") != NULL);
    CHECK(strstr(err.message, sha) != NULL);
    CHECK(strstr(err.message, "the 0 bytes") != NULL);
    CHECK_EQ_INT(partial, 999);
    /* Written while it was hashed, then removed with the file made for it. */
    CHECK(!exists(part));

    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, 0, data, 100, NULL, &partial, &err), 0);
    /* A gap, a repeat and an overlap are all refused and change nothing. */
    uint64_t offs[] = {150, 0, 50};
    for (size_t i = 0; i < PRPC_ARRAY_LEN(offs); i++) {
        CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, offs[i], data + offs[i], 100, NULL,
                                              &partial, &err),
                     PRPC_ESTATE);
        snprintf(msg, sizeof(msg), "chunk offset %llu of blob %s does not continue the 100 bytes",
                 (unsigned long long)offs[i], sha);
        CHECK(strstr(err.message, msg) != NULL);
        CHECK_EQ_INT(partial, 100);
        CHECK_EQ_INT(prpc_blobdir_partial(f->bd, sha, &size, &err), 0);
        CHECK_EQ_INT(size, 100);
        CHECK(file_equals(part, data, 100));
    }
    /* The right offset still continues the upload. */
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, 100, data + 100, 200, NULL, &partial, &err),
                 0);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, 300, &err), 0);
    free(data);
}

BLOB_TEST(chunk_checksum_mismatch_keeps_nothing)
{
    uint8_t *data = pattern(200, 4);
    char sha[65], csha[65], part[PRPC_BLOB_PATH_MAX];
    uint64_t partial = 999, size = 0;
    prpc_error_t err;

    CHECK(data != NULL);
    sha_hex(data, 200, sha);
    part_path(f, sha, part);
    sha_hex(data, 99, csha); /* the hash of a different byte range */
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, 0, data, 100, csha, &partial, &err),
                 PRPC_ECORRUPT);
    CHECK(strstr(err.message, "offset 0 ") != NULL);
    CHECK(strstr(err.message, sha) != NULL);
    CHECK(strstr(err.message, "SHA-256") != NULL);
    CHECK_EQ_INT(partial, 999);
    /* Written while it was hashed, then removed with the file made for it. */
    CHECK(!exists(part));

    sha_hex(data, 100, csha);
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, 0, data, 100, csha, &partial, &err), 0);
    /* The right hash of the second chunk, but uppercase hex: a mismatch. */
    sha_hex(data + 100, 100, csha);
    for (char *p = csha; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, 100, data + 100, 100, csha, &partial, &err),
                 PRPC_ECORRUPT);
    CHECK(strstr(err.message, "offset 100 ") != NULL);
    CHECK_EQ_INT(partial, 100);
    CHECK_EQ_INT(prpc_blobdir_partial(f->bd, sha, &size, &err), 0);
    CHECK_EQ_INT(size, 100);
    CHECK(file_equals(part, data, 100));
    free(data);
}

BLOB_TEST(chunk_over_limit_refused)
{
    size_t n = (size_t)PRPC_BLOB_CHUNK + 1;
    uint8_t *data = pattern(n, 5);
    char sha[65], part[PRPC_BLOB_PATH_MAX], msg[120];
    uint64_t partial = 999;
    prpc_error_t err;

    CHECK(data != NULL);
    sha_hex(data, n, sha);
    part_path(f, sha, part);
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, 0, data, n, NULL, &partial, &err),
                 PRPC_ELIMIT);
    free(data);
    snprintf(msg, sizeof(msg), "chunk of %zu bytes exceeds the limit of %u", n, PRPC_BLOB_CHUNK);
    CHECK_EQ_STR(err.message, msg);
    CHECK_EQ_INT(err.code, PRPC_ELIMIT);
    CHECK_EQ_INT(partial, 999);
    CHECK(!exists(part));
}

BLOB_TEST(chunk_open_failure_reported)
{
    char sha[65], part[PRPC_BLOB_PATH_MAX];
    uint64_t have = 0, partial = 999;
    prpc_error_t err;

    sha_hex("blocked", 7, sha);
    part_path(f, sha, part);
    /* A directory squats on the partial file's name. */
    CHECK(mkdir(part, 0700) == 0);
    CHECK_EQ_INT(prpc_blobdir_partial(f->bd, sha, &have, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, have, "blocked", 7, NULL, &partial, &err),
                 PRPC_EIO);
    CHECK(strstr(err.message, "opening partial blob") != NULL);
    CHECK(strstr(err.message, sha) != NULL);
    CHECK_EQ_INT(partial, 999);
    /* Commit cannot hash a directory. */
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, 7, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, sha) != NULL);
    /* Neither can a download resume into it, nor can it be removed as a file. */
    int fd = -1;
    CHECK_EQ_INT(prpc_blobdir_partial_open(f->bd, sha, &fd, &have, &err), PRPC_EIO);
    CHECK(strstr(err.message, "opening partial blob") != NULL);
    CHECK(strstr(err.message, sha) != NULL);
    CHECK_EQ_INT(fd, -1);
    CHECK_EQ_INT(prpc_blobdir_remove(f->bd, sha, &err), PRPC_EIO);
    CHECK(strstr(err.message, "removing partial blob") != NULL);
    CHECK(strstr(err.message, sha) != NULL);
    CHECK(rmdir(part) == 0);
}

/* ---- commit ---------------------------------------------------------- */

BLOB_TEST(commit_wrong_size_drops_partial)
{
    uint8_t *data = pattern(1000, 6);
    char sha[65], part[PRPC_BLOB_PATH_MAX], blob[PRPC_BLOB_PATH_MAX];
    uint64_t size = 1;
    prpc_error_t err;

    CHECK(data != NULL);
    sha_hex(data, 1000, sha);
    part_path(f, sha, part);
    CHECK_EQ_INT(prpc_blobdir_path(f->bd, sha, blob, &err), 0);
    CHECK_EQ_INT(upload(f, sha, data, 1000, 300, &err), 0);
    free(data);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, 1001, &err), PRPC_ECORRUPT);
    CHECK(strstr(err.message, sha) != NULL);
    CHECK(strstr(err.message, "received 1000 bytes") != NULL);
    CHECK(strstr(err.message, "expected 1001 bytes") != NULL);
    CHECK(strstr(err.message, "dropped") != NULL);
    CHECK(!exists(part));
    CHECK(!exists(blob));
    CHECK_EQ_INT(prpc_blobdir_partial(f->bd, sha, &size, &err), 0);
    CHECK_EQ_INT(size, 0);
    CHECK_EQ_INT(prpc_blobdir_stat(f->bd, sha, &size, &err), PRPC_ENOTFOUND);
    CHECK(strstr(err.message, sha) != NULL);
}

BLOB_TEST(commit_wrong_content_drops_partial)
{
    uint8_t *data = pattern(1000, 7);
    char sha[65], other[65], part[PRPC_BLOB_PATH_MAX], blob[PRPC_BLOB_PATH_MAX];
    prpc_error_t err;

    CHECK(data != NULL);
    sha_hex(data, 1000, sha);
    data[500] ^= 1;
    sha_hex(data, 1000, other);
    part_path(f, sha, part);
    CHECK_EQ_INT(prpc_blobdir_path(f->bd, sha, blob, &err), 0);
    /* Every chunk matches its own hash, but the whole is not `sha`. */
    CHECK_EQ_INT(upload(f, sha, data, 1000, 400, &err), 0);
    free(data);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, 1000, &err), PRPC_ECORRUPT);
    CHECK(strstr(err.message, sha) != NULL);
    CHECK(strstr(err.message, other) != NULL);
    CHECK(strstr(err.message, "dropped") != NULL);
    CHECK(!exists(part));
    CHECK(!exists(blob));
}

BLOB_TEST(commit_nothing_uploaded)
{
    char sha[65];
    prpc_error_t err;
    sha_hex("never sent", 10, sha);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, 10, &err), PRPC_ENOTFOUND);
    CHECK(strstr(err.message, sha) != NULL);
    CHECK(strstr(err.message, "nothing was uploaded") != NULL);
    CHECK_EQ_INT(err.code, PRPC_ENOTFOUND);
}

BLOB_TEST(commit_twice_is_idempotent)
{
    uint8_t *data = pattern(5000, 8);
    char sha[65], blob[PRPC_BLOB_PATH_MAX];
    struct stat st1, st2;
    prpc_error_t err;

    CHECK(data != NULL);
    sha_hex(data, 5000, sha);
    CHECK_EQ_INT(upload(f, sha, data, 5000, 4096, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, 5000, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_path(f->bd, sha, blob, &err), 0);
    CHECK(stat(blob, &st1) == 0);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, 5000, &err), 0);
    CHECK(stat(blob, &st2) == 0);
    CHECK_EQ_INT(st1.st_ino, st2.st_ino);
    CHECK(file_equals(blob, data, 5000));
    free(data);
}

BLOB_TEST(commit_when_shard_dir_is_a_file)
{
    uint8_t *data = pattern(64, 9);
    char sha[65], shard[400], part[PRPC_BLOB_PATH_MAX];
    prpc_error_t err;

    CHECK(data != NULL);
    sha_hex(data, 64, sha);
    snprintf(shard, sizeof(shard), "%s/%.2s", f->dir, sha);
    CHECK(write_file(shard, "x", 1) == 0);
    CHECK_EQ_INT(upload(f, sha, data, 64, 64, &err), 0);
    free(data);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, 64, &err), PRPC_EIO);
    CHECK(strstr(err.message, "moving blob") != NULL);
    CHECK(strstr(err.message, sha) != NULL);
    /* The verified upload is kept for a retry. */
    part_path(f, sha, part);
    CHECK(exists(part));
    CHECK(unlink(shard) == 0);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, 64, &err), 0);
    CHECK(!exists(part));
}

BLOB_TEST(empty_blob_commits)
{
    char blob[PRPC_BLOB_PATH_MAX];
    uint64_t partial = 9, size = 9;
    prpc_error_t err;

    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, EMPTY_SHA, 0, "", 0, EMPTY_SHA, &partial, &err),
                 0);
    CHECK_EQ_INT(partial, 0);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, EMPTY_SHA, 0, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_stat(f->bd, EMPTY_SHA, &size, &err), 0);
    CHECK_EQ_INT(size, 0);
    CHECK_EQ_INT(prpc_blobdir_path(f->bd, EMPTY_SHA, blob, &err), 0);
    CHECK(file_equals(blob, "", 0));
    CHECK_EQ_INT(prpc_blobdir_verify(f->bd, EMPTY_SHA, &err), 0);
}

/* ---- import ---------------------------------------------------------- */

BLOB_TEST(import_fd_hashes_copies_and_dedups)
{
    uint8_t *data = pattern(FILE5M_SIZE, 0);
    char src[400], out[65], blob[PRPC_BLOB_PATH_MAX];
    struct stat st1, st2;
    uint64_t size = 0;
    prpc_error_t err;
    int fd;

    CHECK(data != NULL);
    snprintf(src, sizeof(src), "%s/input.bin", f->src);
    if (write_file(src, data, FILE5M_SIZE) != 0) {
        free(data);
        CHECK(0);
    }
    fd = open(src, O_RDONLY);
    CHECK(fd >= 0);
    /* The file position is at 10: the import must still take the whole file. */
    CHECK(lseek(fd, 10, SEEK_SET) == 10);
    if (prpc_blobdir_import_fd(f->bd, fd, NULL, out, &size, &err) != 0) {
        fprintf(stderr, "  %s\n", err.message);
        close(fd);
        free(data);
        CHECK(0);
    }
    CHECK_EQ_STR(out, FILE5M_SHA);
    CHECK_EQ_INT(size, FILE5M_SIZE);
    CHECK_EQ_INT(prpc_blobdir_path(f->bd, FILE5M_SHA, blob, &err), 0);
    CHECK(file_equals(blob, data, FILE5M_SIZE));
    free(data);
    CHECK(stat(blob, &st1) == 0);

    /* With the expected sha: accepted, and the blob already there is kept. */
    memset(out, 0, sizeof(out));
    size = 0;
    CHECK_EQ_INT(prpc_blobdir_import_fd(f->bd, fd, FILE5M_SHA, out, &size, &err), 0);
    CHECK_EQ_STR(out, FILE5M_SHA);
    CHECK_EQ_INT(size, FILE5M_SIZE);
    CHECK(stat(blob, &st2) == 0);
    CHECK_EQ_INT(st1.st_ino, st2.st_ino);
    CHECK_EQ_INT(st1.st_mtim.tv_sec, st2.st_mtim.tv_sec);
    CHECK_EQ_INT(st1.st_mtim.tv_nsec, st2.st_mtim.tv_nsec);
    close(fd);
}

BLOB_TEST(import_fd_refuses_mismatch)
{
    const char *text = "hello blob";
    char src[400], out[65], want[65], wrong_blob[PRPC_BLOB_PATH_MAX], part[PRPC_BLOB_PATH_MAX];
    uint64_t size = 77;
    prpc_error_t err;
    int fd;

    snprintf(src, sizeof(src), "%s/hello.txt", f->src);
    CHECK(write_file(src, text, strlen(text)) == 0);
    sha_hex(text, strlen(text), want);
    fd = open(src, O_RDONLY);
    CHECK(fd >= 0);
    CHECK_EQ_INT(prpc_blobdir_import_fd(f->bd, fd, FILE5M_SHA, out, &size, &err), PRPC_ECORRUPT);
    close(fd);
    CHECK(strstr(err.message, want) != NULL);
    CHECK(strstr(err.message, FILE5M_SHA) != NULL);
    CHECK_EQ_INT(size, 77);
    CHECK_EQ_INT(prpc_blobdir_path(f->bd, FILE5M_SHA, wrong_blob, &err), 0);
    CHECK(!exists(wrong_blob));
    part_path(f, FILE5M_SHA, part);
    CHECK(!exists(part));
    part_path(f, want, part);
    CHECK(!exists(part));
    CHECK_EQ_INT(prpc_blobdir_stat(f->bd, want, &size, &err), PRPC_ENOTFOUND);

    /* A bad fd is refused before anything is created. */
    CHECK_EQ_INT(prpc_blobdir_import_fd(f->bd, -1, NULL, out, &size, &err), PRPC_EINVAL);
    CHECK_EQ_INT(size, 77);
}

BLOB_TEST(import_fd_partial_blocked)
{
    const char *text = "partial path is taken";
    char src[400], out[65], sha[65], part[PRPC_BLOB_PATH_MAX];
    uint64_t size = 0;
    prpc_error_t err;
    int fd;

    sha_hex(text, strlen(text), sha);
    part_path(f, sha, part);
    CHECK(mkdir(part, 0700) == 0);
    snprintf(src, sizeof(src), "%s/in.txt", f->src);
    CHECK(write_file(src, text, strlen(text)) == 0);
    fd = open(src, O_RDONLY);
    CHECK(fd >= 0);
    CHECK_EQ_INT(prpc_blobdir_import_fd(f->bd, fd, NULL, out, &size, &err), PRPC_EIO);
    close(fd);
    CHECK(strstr(err.message, "creating partial blob") != NULL);
    CHECK(strstr(err.message, sha) != NULL);
    CHECK_EQ_INT(prpc_blobdir_stat(f->bd, sha, &size, &err), PRPC_ENOTFOUND);
    CHECK(rmdir(part) == 0);
}

/* ---- resume ---------------------------------------------------------- */

BLOB_TEST(partial_open_resumes)
{
    uint8_t *data = pattern(3000, 10);
    char sha[65], blob[PRPC_BLOB_PATH_MAX];
    uint64_t off = 99, partial = 0;
    prpc_error_t err;
    int fd = -1;

    CHECK(data != NULL);
    sha_hex(data, 3000, sha);
    /* Nothing yet: resume at 0, and the partial file now exists. */
    CHECK_EQ_INT(prpc_blobdir_partial_open(f->bd, sha, &fd, &off, &err), 0);
    CHECK(fd >= 0);
    CHECK_EQ_INT(off, 0);
    close(fd);
    fd = -1;
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, 0, data, 1000, NULL, &partial, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_partial_open(f->bd, sha, &fd, &off, &err), 0);
    CHECK_EQ_INT(off, 1000);
    CHECK(pwrite(fd, data + off, 3000 - off, (off_t)off) == (ssize_t)(3000 - off));
    CHECK(fsync(fd) == 0);
    close(fd);
    CHECK_EQ_INT(prpc_blobdir_partial(f->bd, sha, &partial, &err), 0);
    CHECK_EQ_INT(partial, 3000);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, 3000, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_path(f->bd, sha, blob, &err), 0);
    CHECK(file_equals(blob, data, 3000));
    free(data);
}

BLOB_TEST(partial_read_and_touch)
{
    uint8_t *data = pattern(2000, 12);
    char sha[65], part[PRPC_BLOB_PATH_MAX];
    uint64_t size = 99, partial = 0;
    struct timespec old[2] = {{1000, 0}, {1000, 0}};
    struct stat st;
    prpc_error_t err;
    int fd = -1;

    CHECK(data != NULL);
    sha_hex(data, 2000, sha);
    /* No upload: nothing to follow, and touching it is no error. */
    CHECK_EQ_INT(prpc_blobdir_partial_read(f->bd, sha, &fd, &size, &err), PRPC_ENOTFOUND);
    CHECK(strstr(err.message, sha) != NULL);
    CHECK_EQ_INT(prpc_blobdir_partial_touch(f->bd, sha, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_partial_touch(f->bd, "nope", &err), PRPC_EINVAL);
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, 0, data, 1200, NULL, &partial, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_partial_read(f->bd, sha, &fd, &size, &err), 0);
    CHECK_EQ_INT(size, 1200);
    /* The fd stays valid when the commit renames the file into place. */
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, 1200, data + 1200, 800, NULL, &partial,
                                          &err),
                 0);
    part_path(f, sha, part);
    CHECK(utimensat(AT_FDCWD, part, old, 0) == 0);
    CHECK_EQ_INT(prpc_blobdir_partial_touch(f->bd, sha, &err), 0);
    CHECK(stat(part, &st) == 0 && st.st_mtim.tv_sec > 1000);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, 2000, &err), 0);
    {
        uint8_t back[2000];
        CHECK(pread(fd, back, sizeof(back), 0) == 2000);
        CHECK(memcmp(back, data, 2000) == 0);
    }
    close(fd);
    free(data);
}

/* ---- verify and remove ----------------------------------------------- */

BLOB_TEST(verify_detects_bit_flip)
{
    uint8_t *data = pattern(4096, 11);
    char sha[65], blob[PRPC_BLOB_PATH_MAX];
    uint64_t size = 0;
    prpc_error_t err;
    uint8_t b = 0;
    int fd;

    CHECK(data != NULL);
    sha_hex(data, 4096, sha);
    CHECK_EQ_INT(upload(f, sha, data, 4096, 4096, &err), 0);
    free(data);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, 4096, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_verify(f->bd, sha, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_path(f->bd, sha, blob, &err), 0);
    fd = open(blob, O_RDWR);
    CHECK(fd >= 0);
    CHECK(pread(fd, &b, 1, 2000) == 1);
    b ^= 0x10;
    CHECK(pwrite(fd, &b, 1, 2000) == 1);
    close(fd);
    CHECK_EQ_INT(prpc_blobdir_verify(f->bd, sha, &err), PRPC_ECORRUPT);
    CHECK(strstr(err.message, sha) != NULL);
    CHECK(strstr(err.message, "corrupt") != NULL);
    CHECK(strstr(err.message, "removed") != NULL);
    CHECK(!exists(blob));
    CHECK_EQ_INT(prpc_blobdir_stat(f->bd, sha, &size, &err), PRPC_ENOTFOUND);
    /* Verifying a blob that is not there. */
    CHECK_EQ_INT(prpc_blobdir_verify(f->bd, sha, &err), PRPC_ENOTFOUND);
    CHECK(strstr(err.message, sha + 2) != NULL);
}

BLOB_TEST(remove_is_idempotent)
{
    uint8_t *data = pattern(500, 12);
    char sha[65], blob[PRPC_BLOB_PATH_MAX], part[PRPC_BLOB_PATH_MAX];
    uint64_t partial = 0, size = 0;
    prpc_error_t err;

    CHECK(data != NULL);
    sha_hex(data, 500, sha);
    CHECK_EQ_INT(upload(f, sha, data, 500, 500, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, 500, &err), 0);
    /* A new partial of the same blob, as from a second upload. */
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, 0, data, 100, NULL, &partial, &err), 0);
    free(data);
    CHECK_EQ_INT(prpc_blobdir_path(f->bd, sha, blob, &err), 0);
    part_path(f, sha, part);
    CHECK(exists(blob) && exists(part));
    CHECK_EQ_INT(prpc_blobdir_remove(f->bd, sha, &err), 0);
    CHECK(!exists(blob) && !exists(part));
    CHECK_EQ_INT(prpc_blobdir_stat(f->bd, sha, &size, &err), PRPC_ENOTFOUND);
    CHECK_EQ_INT(prpc_blobdir_remove(f->bd, sha, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_remove(f->bd, EMPTY_SHA, &err), 0);
}

BLOB_TEST(remove_reports_failure)
{
    char blob[PRPC_BLOB_PATH_MAX], shard[400];
    prpc_error_t err;
    snprintf(shard, sizeof(shard), "%s/%.2s", f->dir, EMPTY_SHA);
    CHECK(mkdir(shard, 0700) == 0);
    CHECK_EQ_INT(prpc_blobdir_path(f->bd, EMPTY_SHA, blob, &err), 0);
    CHECK(mkdir(blob, 0700) == 0);
    CHECK_EQ_INT(prpc_blobdir_remove(f->bd, EMPTY_SHA, &err), PRPC_EIO);
    CHECK(strstr(err.message, "removing blob") != NULL);
    CHECK(strstr(err.message, EMPTY_SHA) != NULL);
    CHECK(rmdir(blob) == 0);
}

/* ---- the running hash ------------------------------------------------ */

/* After a restart (a fresh handle on the same directory) the running hash is
 * gone: commit hashes the partial file, and still refuses a wrong one. */
BLOB_TEST(commit_after_reopen_hashes_the_file)
{
    size_t n = 3 * 1024 * 1024 + 5;
    uint8_t *data = pattern(n, 7);
    char sha[65], other[65];
    prpc_error_t err;
    uint64_t size = 0;
    CHECK(data != NULL);
    sha_hex(data, n, sha);
    CHECK_EQ_INT(upload(f, sha, data, n, 1024 * 1024, &err), 0);
    prpc_blobdir_free(f->bd);
    f->bd = prpc_blobdir_open(f->dir, &err);
    CHECK(f->bd != NULL);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, n, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_stat(f->bd, sha, &size, &err), 0);
    CHECK_EQ_INT(size, n);
    /* The same upload under a name its bytes do not hash to, reopened before
     * commit: refused by the full hash. */
    data[0] ^= 1;
    sha_hex(data, n, other);
    data[0] ^= 1;
    CHECK_EQ_INT(upload(f, other, data, n, 1024 * 1024, &err), 0);
    prpc_blobdir_free(f->bd);
    f->bd = prpc_blobdir_open(f->dir, &err);
    CHECK(f->bd != NULL);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, other, n, &err), PRPC_ECORRUPT);
    CHECK(strstr(err.message, other) != NULL);
    free(data);
}

/* Flip one byte of sha's partial file behind the writer's back. */
static int flip_partial_byte(struct fx *f, const char *sha, off_t at)
{
    char path[400];
    uint8_t c;
    int fd, ok;
    snprintf(path, sizeof(path), "%s/tmp/%s.part", f->dir, sha);
    fd = open(path, O_RDWR);
    if (fd < 0)
        return -1;
    ok = pread(fd, &c, 1, at) == 1;
    c ^= 0x10;
    ok = ok && pwrite(fd, &c, 1, at) == 1;
    close(fd);
    return ok ? 0 : -1;
}

/* A chunk refused as corrupt leaves the running hash where it was, so the
 * commit still needs no second read of the file. White box: the commit
 * trusts the running hash (it saw the bytes as they were written), so a
 * byte changed on disk behind the writer's back shows which one it used. */
BLOB_TEST(running_hash_survives_a_refused_chunk)
{
    size_t piece = 1024 * 1024, n = 3 * piece;
    uint8_t *data = pattern(n, 9);
    char sha[65], csha[65], part[PRPC_BLOB_PATH_MAX];
    uint64_t partial = 0;
    prpc_error_t err;
    CHECK(data != NULL);
    sha_hex(data, n, sha);
    CHECK_EQ_INT(upload(f, sha, data, 2 * piece, piece, &err), 0);
    sha_hex(data + 2 * piece, piece, csha);
    data[2 * piece + 5] ^= 1;
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, 2 * piece, data + 2 * piece, piece, csha,
                                          &partial, &err),
                 PRPC_ECORRUPT);
    /* It was written while it was hashed: cut off again. */
    part_path(f, sha, part);
    CHECK(file_equals(part, data, 2 * piece));
    data[2 * piece + 5] ^= 1;
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, 2 * piece, data + 2 * piece, piece, csha,
                                          &partial, &err),
                 0);
    CHECK_EQ_INT(flip_partial_byte(f, sha, 10), 0);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, n, &err), 0);
    /* Without a running hash (a refused chunk at offset 0 keeps none, and a
     * restart loses it) the same flip is caught by the full hash. */
    prpc_blobdir_remove(f->bd, sha, &err);
    CHECK_EQ_INT(upload(f, sha, data, n, piece, &err), 0);
    CHECK_EQ_INT(flip_partial_byte(f, sha, 10), 0);
    prpc_blobdir_free(f->bd);
    f->bd = prpc_blobdir_open(f->dir, &err);
    CHECK(f->bd != NULL);
    CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha, n, &err), PRPC_ECORRUPT);
    free(data);
}

/* Should cutting a refused chunk off fail, the partial goes whole: it never
 * keeps bytes that were refused. */
BLOB_TEST(refused_chunk_that_cannot_be_cut_drops_the_partial)
{
    size_t piece = 64 * 1024;
    uint8_t *data = pattern(2 * piece, 5);
    char sha[65], csha[65], part[PRPC_BLOB_PATH_MAX];
    uint64_t partial = 0, size = 9;
    prpc_error_t err;
    CHECK(data != NULL);
    sha_hex(data, 2 * piece, sha);
    part_path(f, sha, part);
    CHECK_EQ_INT(upload(f, sha, data, piece, piece, &err), 0);
    sha_hex(data, piece - 1, csha); /* not the second piece's */
    setenv("P2PRPC_FAULTS", "cut_fails=1", 1);
    prpc_fault_reload();
    CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha, piece, data + piece, piece, csha, &partial,
                                          &err),
                 PRPC_EIO);
    unsetenv("P2PRPC_FAULTS");
    prpc_fault_reload();
    CHECK(strstr(err.message, "cutting a refused chunk off") != NULL);
    CHECK(!exists(part));
    CHECK_EQ_INT(prpc_blobdir_partial(f->bd, sha, &size, &err), 0);
    CHECK_EQ_INT(size, 0);
    free(data);
}

/* Many uploads interleaved (more than the running-hash slots): every one
 * commits, those that lost their slot by the full hash. */
BLOB_TEST(interleaved_uploads_all_commit)
{
    enum { N = 40 };
    static uint8_t *data[N];
    char sha[N][65], csha[65];
    size_t len = 64 * 1024;
    uint64_t partial = 0;
    prpc_error_t err;
    for (int i = 0; i < N; i++) {
        data[i] = pattern(2 * len, (unsigned)i + 100);
        CHECK(data[i] != NULL);
        sha_hex(data[i], 2 * len, sha[i]);
    }
    for (int half = 0; half < 2; half++)
        for (int i = 0; i < N; i++) {
            sha_hex(data[i] + half * len, len, csha);
            CHECK_EQ_INT(prpc_blobdir_write_chunk(f->bd, sha[i], half * len, data[i] + half * len,
                                                  len, csha, &partial, &err),
                         0);
        }
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(prpc_blobdir_commit(f->bd, sha[i], 2 * len, &err), 0);
        free(data[i]);
    }
}

/* 1 when an aligned O_DIRECT write to a file in dir succeeds. */
static int direct_works(const char *dir)
{
    char path[400];
    void *block = NULL;
    int fd, ok;
    snprintf(path, sizeof(path), "%s/probe", dir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0600);
    if (fd < 0 || posix_memalign(&block, 4096, 4096) != 0) {
        if (fd >= 0)
            close(fd);
        unlink(path);
        return 0;
    }
    memset(block, 7, 4096);
    ok = pwrite(fd, block, 4096, 0) == 4096;
    close(fd);
    unlink(path);
    free(block);
    return ok;
}

/* Write data[start..n) through a blob writer in pieces of the sizes in
 * steps (cycled), with the file already holding data[0..start). */
static int write_split(const char *path, const uint8_t *data, size_t n, size_t start,
                       const size_t *steps, size_t nsteps, int buffered_only, int *used_direct)
{
    prpc_blob_writer_t w;
    size_t at = start, i = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600), rc = 0;
    if (fd < 0)
        return -1;
    if (start > 0 && pwrite(fd, data, start, 0) != (ssize_t)start)
        rc = -1;
    prpc_blob_writer_init(&w, fd, start, NULL);
    if (buffered_only)
        w.no_direct = 1;
    while (rc == 0 && at < n) {
        size_t k = steps[i++ % nsteps];
        if (k > n - at)
            k = n - at;
        rc = prpc_blob_writer_write(&w, data + at, k, NULL);
        at += k;
        if (w.direct)
            *used_direct = 1;
    }
    if (rc == 0)
        rc = prpc_blob_writer_flush(&w, NULL);
    prpc_blob_writer_cleanup(&w);
    if (rc == 0 && (fcntl(fd, F_GETFL) & O_DIRECT) != 0)
        rc = -2; /* cleanup must leave the fd buffered */
    close(fd);
    return rc;
}

/* Whatever the split and the starting offset (aligned or not), the file ends
 * up byte for byte the data; with O_DIRECT refused it is the same. */
BLOB_TEST(writer_keeps_bytes_whatever_the_split)
{
    static const size_t splits[][4] = {
        {1, 4095, 100000, PRPC_BLOB_STAGE + 3},
        {PRPC_BLOB_STAGE, PRPC_BLOB_STAGE, PRPC_BLOB_STAGE, PRPC_BLOB_STAGE},
        {4096, 4096, 4096, 4096},
        {3 * PRPC_BLOB_STAGE + 4097, 1, 1, 1},
    };
    static const size_t starts[] = {0, 1000, 4096, PRPC_BLOB_STAGE + 5};
    size_t n = 3 * PRPC_BLOB_STAGE + 4097 + 1000;
    uint8_t *data = pattern(n, 7), *got = NULL;
    char path[400];
    int used_direct = 0;
    CHECK(data != NULL);
    snprintf(path, sizeof(path), "%s/written", f->src);
    for (size_t b = 0; b < 2; b++)
        for (size_t s = 0; s < PRPC_ARRAY_LEN(starts); s++)
            for (size_t k = 0; k < PRPC_ARRAY_LEN(splits); k++) {
                size_t len = 0;
                CHECK_EQ_INT(write_split(path, data, n, starts[s], splits[k], 4, (int)b,
                                         &used_direct),
                             0);
                got = slurp(path, &len);
                CHECK(got != NULL);
                CHECK(len == n);
                CHECK(memcmp(got, data, n) == 0);
                free(got);
            }
    /* Not every file system takes O_DIRECT (tmpfs before Linux 6.6): where
     * an aligned O_DIRECT write works, the writer must have used it. */
    CHECK_EQ_INT(used_direct, direct_works(f->src));
    fprintf(stderr, "  (O_DIRECT %s here)\n", used_direct ? "used" : "refused");
    free(data);
}

/* A write the file refuses is an error with errno, also when the bytes were
 * only staged until the flush. */
BLOB_TEST(writer_reports_write_errors)
{
    prpc_blob_writer_t w;
    prpc_error_t err;
    char path[400];
    uint8_t buf[5000] = {1};
    int fd;
    snprintf(path, sizeof(path), "%s/readonly", f->src);
    fd = open(path, O_RDONLY | O_CREAT, 0600);
    CHECK(fd >= 0);
    prpc_blob_writer_init(&w, fd, 0, NULL);
    CHECK_EQ_INT(prpc_blob_writer_write(&w, buf, 10, &err), 0); /* staged */
    errno = 0;
    CHECK_EQ_INT(prpc_blob_writer_flush(&w, &err), PRPC_EIO);
    CHECK_EQ_INT(errno, EBADF);
    CHECK(strstr(err.message, "at offset 0") != NULL);
    prpc_blob_writer_cleanup(&w);
    prpc_blob_writer_init(&w, fd, 3, NULL); /* unaligned: written at once */
    errno = 0;
    CHECK_EQ_INT(prpc_blob_writer_write(&w, buf, sizeof(buf), &err), PRPC_EIO);
    CHECK_EQ_INT(errno, EBADF);
    CHECK(strstr(err.message, "at offset 3") != NULL);
    prpc_blob_writer_cleanup(&w);
    close(fd);
}

TEST_MAIN(TEST_ENTRY(commit_after_reopen_hashes_the_file),
          TEST_ENTRY(running_hash_survives_a_refused_chunk),
          TEST_ENTRY(refused_chunk_that_cannot_be_cut_drops_the_partial),
          TEST_ENTRY(interleaved_uploads_all_commit),
          TEST_ENTRY(open_creates_dirs), TEST_ENTRY(open_refuses_bad_paths),
          TEST_ENTRY(invalid_names_refused), TEST_ENTRY(path_layout),
          TEST_ENTRY(chunks_in_order_then_commit), TEST_ENTRY(chunk_without_checksum_and_max_size),
          TEST_ENTRY(out_of_order_offset_refused),
          TEST_ENTRY(chunk_checksum_mismatch_keeps_nothing), TEST_ENTRY(chunk_over_limit_refused),
          TEST_ENTRY(chunk_open_failure_reported), TEST_ENTRY(commit_wrong_size_drops_partial),
          TEST_ENTRY(commit_wrong_content_drops_partial), TEST_ENTRY(commit_nothing_uploaded),
          TEST_ENTRY(commit_twice_is_idempotent), TEST_ENTRY(commit_when_shard_dir_is_a_file),
          TEST_ENTRY(empty_blob_commits), TEST_ENTRY(import_fd_hashes_copies_and_dedups),
          TEST_ENTRY(import_fd_refuses_mismatch), TEST_ENTRY(import_fd_partial_blocked),
          TEST_ENTRY(partial_open_resumes), TEST_ENTRY(partial_read_and_touch),
          TEST_ENTRY(verify_detects_bit_flip),
          TEST_ENTRY(remove_is_idempotent), TEST_ENTRY(remove_reports_failure),
          TEST_ENTRY(writer_keeps_bytes_whatever_the_split),
          TEST_ENTRY(writer_reports_write_errors))
