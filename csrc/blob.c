/*
 * blob.c - the blob directory (blob.h): content-addressed files, written in
 * verified, fsynced chunks and renamed into place only once whole.
 *
 * A partial file's length is the resume point: a chunk is appended and
 * fsynced before it is acknowledged. A crash mid-chunk can leave unacknowledged
 * bytes past that prefix (a chunk is written while it is hashed, so even one
 * that was about to be refused); they are kept as received, and the
 * whole-content hash at commit catches any that are wrong (the partial file
 * is then dropped and the upload starts over).
 */
#include "blob.h"
#include "fault.h"
#include "hash.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The running SHA-256 of an upload in progress: chunks arrive in order, so
 * the whole-content hash is ready when the last chunk lands and commit need
 * not read the blob again. Lost on restart; commit then hashes the file. */
typedef struct running_hash {
    char sha[65];    /* "" when the slot is free */
    uint64_t offset; /* bytes fed so far */
    uint64_t used;   /* last use, for eviction */
    prpc_sha256_t ctx;
} running_hash_t;

#define RUNNING_MAX 32

struct prpc_blobdir {
    char *dir; /* absolute or as given; never derived from user input */
    pthread_mutex_t lock; /* guards running */
    uint64_t clock;
    running_hash_t running[RUNNING_MAX];
    /* The chunk writer's stage, kept: a fresh 1 MiB per chunk would be page
     * faults on every chunk. stage_lock is held while it is in use; a second
     * concurrent writer allocates its own. */
    pthread_mutex_t stage_lock;
    uint8_t *stage;
    atomic_int no_direct; /* 1 once the file system refused O_DIRECT */
};

int prpc_blob_valid_sha(const char *sha)
{
    return prpc_valid_hex(sha, PRPC_SHA256_HEX_LEN);
}

static int mkdir_p(const char *path, prpc_error_t *err)
{
    char buf[PRPC_BLOB_PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf))
        return prpc_error_set(err, PRPC_EINVAL, "blob directory path is empty or too long");
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST)
                return prpc_error_errno(err, errno, "creating directory %s", buf);
            buf[i] = c;
        }
    }
    return 0;
}

prpc_blobdir_t *prpc_blobdir_open(const char *dir, prpc_error_t *err)
{
    prpc_blobdir_t *bd = NULL;
    char tmp[PRPC_BLOB_PATH_MAX];

    if (dir == NULL || strlen(dir) + 80 >= PRPC_BLOB_PATH_MAX) {
        prpc_error_set(err, PRPC_EINVAL, "blob directory path is missing or too long");
        return NULL;
    }
    snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
    if (mkdir_p(tmp, err) != 0)
        return NULL;
    bd = calloc(1, sizeof(*bd));
    if (bd == NULL || (bd->dir = strdup(dir)) == NULL) {
        free(bd);
        prpc_error_set(err, PRPC_ENOMEM, "out of memory opening blob directory %s", dir);
        return NULL;
    }
    pthread_mutex_init(&bd->lock, NULL);
    pthread_mutex_init(&bd->stage_lock, NULL);
    return bd;
}

static void running_drop_locked(running_hash_t *r)
{
    if (r->sha[0] != '\0')
        prpc_sha256_cleanup(&r->ctx);
    memset(r, 0, sizeof(*r));
}

static running_hash_t *running_find_locked(prpc_blobdir_t *bd, const char *sha)
{
    for (int i = 0; i < RUNNING_MAX; i++)
        if (strcmp(bd->running[i].sha, sha) == 0)
            return &bd->running[i];
    return NULL;
}

static void running_drop(prpc_blobdir_t *bd, const char *sha)
{
    running_hash_t *r;
    pthread_mutex_lock(&bd->lock);
    r = running_find_locked(bd, sha);
    if (r != NULL)
        running_drop_locked(r);
    pthread_mutex_unlock(&bd->lock);
}

/* Take sha's running hash out of its slot when it has covered exactly offset
 * bytes (a fresh one when offset is 0), for the caller to feed without the
 * lock; a running hash at another offset is dropped. *out is left released
 * when there is none. */
static void running_checkout(prpc_blobdir_t *bd, const char *sha, uint64_t offset,
                             prpc_sha256_t *out)
{
    running_hash_t *r;
    out->ctx = NULL;
    pthread_mutex_lock(&bd->lock);
    r = running_find_locked(bd, sha);
    if (r != NULL && r->offset == offset) {
        *out = r->ctx;
        r->ctx.ctx = NULL;
        r->sha[0] = '\0';
    }
    if (r != NULL)
        running_drop_locked(r);
    pthread_mutex_unlock(&bd->lock);
    if (out->ctx == NULL && offset == 0)
        (void)prpc_sha256_init(out, NULL);
}

/* Put a running hash that now covers offset bytes back (taking it over),
 * evicting the least recently used slot when all are taken. */
static void running_checkin(prpc_blobdir_t *bd, const char *sha, uint64_t offset,
                            prpc_sha256_t *h)
{
    running_hash_t *victim = &bd->running[0], *r;
    if (h->ctx == NULL)
        return;
    pthread_mutex_lock(&bd->lock);
    r = running_find_locked(bd, sha);
    if (r != NULL)
        running_drop_locked(r);
    for (int i = 0; i < RUNNING_MAX; i++) {
        if (bd->running[i].sha[0] == '\0') {
            victim = &bd->running[i];
            break;
        }
        if (bd->running[i].used < victim->used)
            victim = &bd->running[i];
    }
    running_drop_locked(victim);
    memcpy(victim->sha, sha, 65);
    victim->ctx = *h;
    victim->offset = offset;
    victim->used = ++bd->clock;
    h->ctx = NULL;
    pthread_mutex_unlock(&bd->lock);
}

/* Feed a chunk just written at offset into sha's running hash, starting one
 * at offset 0. A chunk that does not continue the running hash drops it:
 * commit then falls back to hashing the file. */
static void running_feed(prpc_blobdir_t *bd, const char *sha, uint64_t offset, const void *data,
                         size_t len)
{
    prpc_sha256_t h;
    running_checkout(bd, sha, offset, &h);
    if (h.ctx != NULL && prpc_sha256_update(&h, data, len, NULL) == 0)
        running_checkin(bd, sha, offset + len, &h);
    prpc_sha256_cleanup(&h);
}

void prpc_blobdir_feed(prpc_blobdir_t *bd, const char *sha, uint64_t offset, const void *data,
                       size_t len)
{
    if (bd != NULL && sha != NULL) /* sha was checked when the download began */
        running_feed(bd, sha, offset, data, len);
}

/* 1 and the digest when sha's running hash covers exactly size bytes. */
static int running_take(prpc_blobdir_t *bd, const char *sha, uint64_t size,
                        uint8_t out[PRPC_SHA256_LEN])
{
    running_hash_t *r;
    int ok = 0;
    pthread_mutex_lock(&bd->lock);
    r = running_find_locked(bd, sha);
    if (r != NULL) {
        ok = r->offset == size && prpc_sha256_final(&r->ctx, out, NULL) == 0;
        running_drop_locked(r);
    }
    pthread_mutex_unlock(&bd->lock);
    return ok;
}

void prpc_blobdir_free(prpc_blobdir_t *bd)
{
    if (bd == NULL)
        return;
    for (int i = 0; i < RUNNING_MAX; i++)
        running_drop_locked(&bd->running[i]);
    pthread_mutex_destroy(&bd->lock);
    pthread_mutex_destroy(&bd->stage_lock);
    free(bd->stage);
    free(bd->dir);
    free(bd);
}

static int check_sha(const char *sha, prpc_error_t *err)
{
    if (!prpc_blob_valid_sha(sha))
        return prpc_error_set(err, PRPC_EINVAL,
                              "invalid blob name \"%.80s\": expected 64 lowercase hex digits",
                              sha ? sha : "(null)");
    return 0;
}

int prpc_blobdir_path(const prpc_blobdir_t *bd, const char *sha, char out[PRPC_BLOB_PATH_MAX],
                      prpc_error_t *err)
{
    if (check_sha(sha, err) != 0)
        return PRPC_EINVAL;
    snprintf(out, PRPC_BLOB_PATH_MAX, "%s/%.2s/%s", bd->dir, sha, sha + 2);
    return 0;
}

static void partial_path(const prpc_blobdir_t *bd, const char *sha, char out[PRPC_BLOB_PATH_MAX])
{
    snprintf(out, PRPC_BLOB_PATH_MAX, "%s/tmp/%s.part", bd->dir, sha);
}

int prpc_blobdir_stat(const prpc_blobdir_t *bd, const char *sha, uint64_t *size,
                      prpc_error_t *err)
{
    char path[PRPC_BLOB_PATH_MAX];
    struct stat st;
    int rc = prpc_blobdir_path(bd, sha, path, err);
    if (rc != 0)
        return rc;
    if (stat(path, &st) != 0)
        return prpc_error_errno(err, errno, "blob %s", sha);
    if (size != NULL)
        *size = (uint64_t)st.st_size;
    return 0;
}

int prpc_blobdir_partial(const prpc_blobdir_t *bd, const char *sha, uint64_t *size,
                         prpc_error_t *err)
{
    char path[PRPC_BLOB_PATH_MAX];
    struct stat st;
    if (check_sha(sha, err) != 0)
        return PRPC_EINVAL;
    partial_path(bd, sha, path);
    if (stat(path, &st) != 0) {
        if (errno != ENOENT)
            return prpc_error_errno(err, errno, "partial blob %s", sha);
        *size = 0;
        return 0;
    }
    *size = (uint64_t)st.st_size;
    return 0;
}

static int write_all(int fd, const void *data, size_t len, uint64_t offset)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

/* ---- the blob writer ------------------------------------------------- */

/* A PRPC_BLOB_STAGE-byte buffer aligned for O_DIRECT, or NULL. free() it. */
static uint8_t *stage_new(void)
{
    void *p = NULL;
    if (posix_memalign(&p, PRPC_BLOB_DIRECT_ALIGN, PRPC_BLOB_STAGE) != 0)
        return NULL;
    return p;
}

void prpc_blob_writer_init(prpc_blob_writer_t *w, int fd, uint64_t offset, uint8_t *stage)
{
    memset(w, 0, sizeof(*w));
    w->fd = fd;
    w->off = offset;
    w->stage = stage;
    if (stage == NULL) {
        w->stage = stage_new();
        w->own_stage = w->stage != NULL;
    }
    w->no_direct = w->stage == NULL;
}

/* Put fd in O_DIRECT mode (on) or buffered mode; 0, or -1 when the file
 * system refuses O_DIRECT (the writer then stays buffered). */
static int writer_mode(prpc_blob_writer_t *w, int on)
{
    int fl;
    if (w->direct == on)
        return 0;
    if (on && w->no_direct)
        return -1;
    fl = fcntl(w->fd, F_GETFL);
    if (fl < 0 || fcntl(w->fd, F_SETFL, on ? (fl | O_DIRECT) : (fl & ~O_DIRECT)) != 0) {
        if (on)
            w->no_direct = 1;
        return -1;
    }
    w->direct = on;
    return 0;
}

/* Write data (len bytes at offset): O_DIRECT when data, offset and len are
 * aligned and the file system takes it, else buffered. */
static int writer_put(prpc_blob_writer_t *w, const void *data, size_t len, uint64_t offset)
{
    int aligned = ((uintptr_t)data | offset | len) % PRPC_BLOB_DIRECT_ALIGN == 0;
    if (aligned && writer_mode(w, 1) == 0) {
        if (write_all(w->fd, data, len, offset) == 0)
            return 0;
        if (errno != EINVAL)
            return -1;
        /* Some file systems accept the flag and refuse the write. */
        w->no_direct = 1;
    }
    if (writer_mode(w, 0) != 0)
        return -1;
    return write_all(w->fd, data, len, offset);
}

static int writer_flush(prpc_blob_writer_t *w);

/* The writer's work: 0, or -1 with errno from the call that failed. */
static int writer_write(prpc_blob_writer_t *w, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        uint64_t at = w->off + w->staged;
        size_t n;
        if (w->no_direct || (w->staged == 0 && at % PRPC_BLOB_DIRECT_ALIGN != 0)) {
            /* Nothing to stage for: up to the next boundary (or all of it)
             * goes straight out. */
            n = w->no_direct ? len
                             : (size_t)(PRPC_BLOB_DIRECT_ALIGN - at % PRPC_BLOB_DIRECT_ALIGN);
            if (n > len)
                n = len;
            if (writer_put(w, p, n, at) != 0)
                return -1;
            w->off += n;
        } else {
            n = PRPC_BLOB_STAGE - w->staged;
            if (n > len)
                n = len;
            memcpy(w->stage + w->staged, p, n);
            w->staged += n;
            if (w->staged == PRPC_BLOB_STAGE && writer_flush(w) != 0)
                return -1;
        }
        p += n;
        len -= n;
    }
    return 0;
}

static int writer_flush(prpc_blob_writer_t *w)
{
    size_t whole = w->staged - w->staged % PRPC_BLOB_DIRECT_ALIGN, tail = w->staged - whole;
    if (whole > 0 && writer_put(w, w->stage, whole, w->off) != 0) {
        w->staged = 0;
        return -1;
    }
    if (tail > 0 && writer_put(w, w->stage + whole, tail, w->off + whole) != 0) {
        w->off += whole;
        w->staged = 0;
        return -1;
    }
    w->off += w->staged;
    w->staged = 0;
    return 0;
}

/* A failed write as an engine error naming where, errno left as it was. */
static int writer_error(const prpc_blob_writer_t *w, prpc_error_t *err)
{
    int e = errno, rc = prpc_error_errno(err, e, "writing blob bytes at offset %llu",
                                         (unsigned long long)(w->off + w->staged));
    errno = e;
    return rc;
}

int prpc_blob_writer_write(prpc_blob_writer_t *w, const void *data, size_t len,
                           prpc_error_t *err)
{
    return writer_write(w, data, len) == 0 ? 0 : writer_error(w, err);
}

int prpc_blob_writer_flush(prpc_blob_writer_t *w, prpc_error_t *err)
{
    return writer_flush(w) == 0 ? 0 : writer_error(w, err);
}

void prpc_blob_writer_cleanup(prpc_blob_writer_t *w)
{
    int e = errno;
    if (w->direct)
        (void)writer_mode(w, 0);
    if (w->own_stage)
        free(w->stage);
    w->stage = NULL;
    w->own_stage = 0;
    w->staged = 0;
    errno = e;
}

/* Write one chunk through a blob writer, on the directory's kept stage when
 * it is free. 0, or -1 with errno. */
static int write_through(prpc_blobdir_t *bd, int fd, const void *data, size_t len,
                         uint64_t offset)
{
    prpc_blob_writer_t w;
    int mine = pthread_mutex_trylock(&bd->stage_lock) == 0, rc;
    if (mine && bd->stage == NULL)
        bd->stage = stage_new();
    prpc_blob_writer_init(&w, fd, offset, mine ? bd->stage : NULL);
    if (atomic_load_explicit(&bd->no_direct, memory_order_relaxed))
        w.no_direct = 1;
    rc = writer_write(&w, data, len);
    if (rc == 0)
        rc = writer_flush(&w);
    if (w.no_direct && w.stage != NULL) /* refused here: not worth asking again */
        atomic_store_explicit(&bd->no_direct, 1, memory_order_relaxed);
    prpc_blob_writer_cleanup(&w);
    if (mine)
        pthread_mutex_unlock(&bd->stage_lock);
    return rc;
}

/* One chunk's write, on a thread of its own while the chunk is hashed. */
typedef struct chunk_write {
    prpc_blobdir_t *bd;
    int fd;
    const void *data;
    size_t len;
    uint64_t offset;
    int failed, errnum;
} chunk_write_t;

static void *chunk_write_main(void *arg)
{
    chunk_write_t *j = arg;
    j->failed = write_through(j->bd, j->fd, j->data, j->len, j->offset) != 0;
    j->errnum = j->failed ? errno : 0;
    return NULL;
}

/* Hash the chunk (its own digest into got_hex when checking, and the running
 * hash run when there is one) in one pass. */
static int hash_chunk(const void *data, size_t len, prpc_sha256_t *run, int check,
                      char got_hex[PRPC_SHA256_HEX_LEN + 1], prpc_error_t *err)
{
    prpc_sha256_t chunk = {NULL};
    uint8_t got[PRPC_SHA256_LEN];
    int rc;
    if (!check)
        return run->ctx != NULL ? prpc_sha256_update(run, data, len, err) : 0;
    rc = prpc_sha256_init(&chunk, err);
    if (rc == 0)
        rc = run->ctx != NULL ? prpc_sha256_update2(&chunk, run, data, len, err)
                              : prpc_sha256_update(&chunk, data, len, err);
    if (rc == 0)
        rc = prpc_sha256_final(&chunk, got, err);
    if (rc == 0)
        prpc_hex_encode(got, sizeof(got), got_hex);
    prpc_sha256_cleanup(&chunk);
    return rc;
}

int prpc_blobdir_write_chunk(prpc_blobdir_t *bd, const char *sha, uint64_t offset,
                             const void *data, size_t len, const char *chunk_sha_hex,
                             uint64_t *partial, prpc_error_t *err)
{
    char path[PRPC_BLOB_PATH_MAX], got_hex[PRPC_SHA256_HEX_LEN + 1] = "";
    uint64_t have = 0;
    prpc_sha256_t run = {NULL}, before = {NULL};
    chunk_write_t job;
    pthread_t writer;
    int fd = -1, rc, bad, slow_ms = 0, threaded = 0, existed, check = chunk_sha_hex != NULL;

    if ((rc = check_sha(sha, err)) != 0)
        return rc;
    if (len > PRPC_BLOB_CHUNK)
        return prpc_error_set(err, PRPC_ELIMIT, "chunk of %zu bytes exceeds the limit of %u",
                              len, PRPC_BLOB_CHUNK);
    if ((rc = prpc_blobdir_partial(bd, sha, &have, err)) != 0)
        return rc;
    if (offset != have) {
        /* Nothing is written; a damaged chunk is still called damaged first. */
        if (check && (rc = hash_chunk(data, len, &run, 1, got_hex, err)) != 0)
            return rc;
        if (check && strcmp(got_hex, chunk_sha_hex) != 0)
            return prpc_error_set(err, PRPC_ECORRUPT,
                                  "chunk at offset %llu of blob %s does not match its SHA-256",
                                  (unsigned long long)offset, sha);
        return prpc_error_set(err, PRPC_ESTATE,
                              "chunk offset %llu of blob %s does not continue the %llu bytes "
                              "received so far",
                              (unsigned long long)offset, sha, (unsigned long long)have);
    }
    /* The chunk's own hash and the blob's running hash in one pass over it,
     * while another thread writes it: the disk and the hash overlap. The
     * running hash is ours until it goes back; a refused chunk puts back the
     * state from before it (or none: the commit then hashes the file). */
    partial_path(bd, sha, path);
    existed = access(path, F_OK) == 0; /* this thread is the blob's only writer */
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return prpc_error_errno(err, errno, "opening partial blob %s", sha);
    running_checkout(bd, sha, offset, &run);
    if (run.ctx != NULL && offset > 0)
        (void)prpc_sha256_copy(&before, &run, NULL);
    job = (chunk_write_t){bd, fd, data, len, offset, 0, 0};
    threaded = pthread_create(&writer, NULL, chunk_write_main, &job) == 0;
    rc = hash_chunk(data, len, &run, check, got_hex, err);
    if (threaded)
        pthread_join(writer, NULL);
    else
        chunk_write_main(&job);
    if (rc == 0 && check && strcmp(got_hex, chunk_sha_hex) != 0)
        rc = prpc_error_set(err, PRPC_ECORRUPT,
                            "chunk at offset %llu of blob %s does not match its SHA-256",
                            (unsigned long long)offset, sha);
    if (rc != 0) {
        /* Refused (or not hashed): what was written of it goes. A file made
         * for this chunk goes whole; one that was there is cut back (a
         * follower may hold it open). Should the cut fail, the partial goes
         * whole, as on a full disk: it never keeps bytes that were refused. */
        int cut = -1;
        errno = EIO; /* what the cut_fails fault reports */
        if (!existed)
            cut = unlink(path);
        else if (!prpc_fault("cut_fails", NULL))
            cut = ftruncate(fd, (off_t)offset);
        if (cut != 0) {
            rc = prpc_error_errno(err, errno, "cutting a refused chunk off partial blob %s",
                                  sha);
            unlink(path);
        } else {
            running_checkin(bd, sha, offset, &before);
        }
        goto out;
    }
    bad = job.failed;
    errno = job.errnum;
    if (!bad) {
        if (prpc_fault("slow_disk", &slow_ms) && slow_ms > 0)
            usleep((useconds_t)slow_ms * 1000);
        bad = fsync(fd) != 0;
    }
    if (bad) {
        int e = errno;
        rc = prpc_error_errno(err, e, "writing chunk of blob %s", sha);
        if (e == ENOSPC || e == EDQUOT) {
            /* A full disk: keeping the partial would hold the space that every
             * other upload needs. The upload starts over when there is room. */
            unlink(path);
        } else if (ftruncate(fd, (off_t)offset) != 0) {
            /* Keep only the acknowledged prefix, so a resume starts from truth. */
            rc = prpc_error_errno(err, errno, "truncating partial blob %s", sha);
        } else {
            running_checkin(bd, sha, offset, &before);
        }
        goto out;
    }
    *partial = offset + len;
    running_checkin(bd, sha, offset + len, &run);
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    prpc_sha256_cleanup(&run);
    prpc_sha256_cleanup(&before);
    return rc;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc;
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

int prpc_blobdir_commit(prpc_blobdir_t *bd, const char *sha, uint64_t size, prpc_error_t *err)
{
    char src[PRPC_BLOB_PATH_MAX], dst[PRPC_BLOB_PATH_MAX], sub[PRPC_BLOB_PATH_MAX];
    uint8_t got[PRPC_SHA256_LEN];
    char got_hex[PRPC_SHA256_HEX_LEN + 1];
    uint64_t got_size = 0, present = 0;
    struct stat st;
    int rc;

    if ((rc = prpc_blobdir_path(bd, sha, dst, err)) != 0)
        return rc;
    if (prpc_blobdir_stat(bd, sha, &present, NULL) == 0 && present == size)
        return 0;
    partial_path(bd, sha, src);
    if (stat(src, &st) == 0 && (uint64_t)st.st_size == size && running_take(bd, sha, size, got)) {
        got_size = size;
    } else {
        running_drop(bd, sha);
        rc = prpc_hash_path(src, got, &got_size, err);
        if (rc == PRPC_ENOTFOUND)
            return prpc_error_set(err, PRPC_ENOTFOUND, "blob %s: nothing was uploaded", sha);
        if (rc != 0)
            return rc;
    }
    prpc_hex_encode(got, sizeof(got), got_hex);
    if (got_size != size || strcmp(got_hex, sha) != 0) {
        unlink(src);
        return prpc_error_set(err, PRPC_ECORRUPT,
                              "blob %s: received %llu bytes hashing to %s, expected %llu bytes; "
                              "the partial upload was dropped",
                              sha, (unsigned long long)got_size, got_hex,
                              (unsigned long long)size);
    }
    snprintf(sub, sizeof(sub), "%s/%.2s", bd->dir, sha);
    if (mkdir(sub, 0700) != 0 && errno != EEXIST)
        return prpc_error_errno(err, errno, "creating %s", sub);
    if (rename(src, dst) != 0)
        return prpc_error_errno(err, errno, "moving blob %s into place", sha);
    if (fsync_dir(sub) != 0)
        return prpc_error_errno(err, errno, "syncing directory of blob %s", sha);
    return 0;
}

/* Open sha's partial file with flags: *fd and its length now. */
static int open_partial(prpc_blobdir_t *bd, const char *sha, int flags, int *fd,
                        uint64_t *size, prpc_error_t *err)
{
    char path[PRPC_BLOB_PATH_MAX];
    struct stat st;
    int f, rc;
    if ((rc = check_sha(sha, err)) != 0)
        return rc;
    partial_path(bd, sha, path);
    f = open(path, flags | O_CLOEXEC, 0600);
    if (f < 0) {
        if (errno == ENOENT && !(flags & O_CREAT))
            return prpc_error_set(err, PRPC_ENOTFOUND, "no upload of blob %s is in progress",
                                  sha);
        return prpc_error_errno(err, errno, "opening partial blob %s", sha);
    }
    if (fstat(f, &st) != 0) {
        rc = prpc_error_errno(err, errno, "partial blob %s", sha);
        close(f);
        return rc;
    }
    *fd = f;
    *size = (uint64_t)st.st_size;
    return 0;
}

int prpc_blobdir_partial_open(prpc_blobdir_t *bd, const char *sha, int *fd, uint64_t *offset,
                              prpc_error_t *err)
{
    return open_partial(bd, sha, O_WRONLY | O_CREAT, fd, offset, err);
}

int prpc_blobdir_partial_read(prpc_blobdir_t *bd, const char *sha, int *fd, uint64_t *size,
                              prpc_error_t *err)
{
    return open_partial(bd, sha, O_RDONLY, fd, size, err);
}

#ifdef PRPC_UNITTEST
int prpc_blobdir_import_fd(prpc_blobdir_t *bd, int fd, const char *sha, char sha_out[65],
                           uint64_t *size, prpc_error_t *err)
{
    char path[PRPC_BLOB_PATH_MAX];
    uint8_t digest[PRPC_SHA256_LEN];
    char *buf = NULL;
    uint64_t off = 0, total = 0;
    int out = -1, rc;

    if (sha != NULL && (rc = check_sha(sha, err)) != 0)
        return rc;
    if ((rc = prpc_hash_fd(fd, digest, &total, err)) != 0)
        return rc;
    prpc_hex_encode(digest, sizeof(digest), sha_out);
    if (sha != NULL && strcmp(sha, sha_out) != 0)
        return prpc_error_set(err, PRPC_ECORRUPT, "file hashes to %s, expected blob %s", sha_out,
                              sha);
    *size = total;
    if (prpc_blobdir_stat(bd, sha_out, NULL, NULL) == 0)
        return 0;
    partial_path(bd, sha_out, path);
    out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0)
        return prpc_error_errno(err, errno, "creating partial blob %s", sha_out);
    buf = malloc(PRPC_HASH_CHUNK);
    if (buf == NULL) {
        rc = prpc_error_set(err, PRPC_ENOMEM, "out of memory importing blob %s", sha_out);
        goto out;
    }
    while (off < total) {
        ssize_t n = pread(fd, buf, PRPC_HASH_CHUNK, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? prpc_error_errno(err, errno, "reading file for blob %s", sha_out)
                       : prpc_error_set(err, PRPC_EIO, "file for blob %s shrank while copied",
                                        sha_out);
            goto out;
        }
        if (write_all(out, buf, (size_t)n, off) != 0) {
            rc = prpc_error_errno(err, errno, "writing blob %s", sha_out);
            goto out;
        }
        off += (uint64_t)n;
    }
    if (fsync(out) != 0) {
        rc = prpc_error_errno(err, errno, "syncing blob %s", sha_out);
        goto out;
    }
    close(out);
    out = -1;
    rc = prpc_blobdir_commit(bd, sha_out, total, err);
out:
    free(buf);
    if (out >= 0) {
        close(out);
        unlink(path);
    }
    return rc;
}
#endif

int prpc_blobdir_verify(prpc_blobdir_t *bd, const char *sha, prpc_error_t *err)
{
    char path[PRPC_BLOB_PATH_MAX];
    uint8_t digest[PRPC_SHA256_LEN];
    char hex[PRPC_SHA256_HEX_LEN + 1];
    int rc;
    if ((rc = prpc_blobdir_path(bd, sha, path, err)) != 0)
        return rc;
    if ((rc = prpc_hash_path(path, digest, NULL, err)) != 0)
        return rc;
    prpc_hex_encode(digest, sizeof(digest), hex);
    if (strcmp(hex, sha) != 0) {
        unlink(path);
        return prpc_error_set(err, PRPC_ECORRUPT,
                              "blob %s is corrupt on disk (content hashes to %s); it was removed",
                              sha, hex);
    }
    return 0;
}

int prpc_blobdir_remove(prpc_blobdir_t *bd, const char *sha, prpc_error_t *err)
{
    char path[PRPC_BLOB_PATH_MAX];
    int rc;
    if ((rc = prpc_blobdir_path(bd, sha, path, err)) != 0)
        return rc;
    if (unlink(path) != 0 && errno != ENOENT)
        return prpc_error_errno(err, errno, "removing blob %s", sha);
    running_drop(bd, sha);
    partial_path(bd, sha, path);
    if (unlink(path) != 0 && errno != ENOENT)
        return prpc_error_errno(err, errno, "removing partial blob %s", sha);
    return 0;
}

int prpc_blobdir_touch(prpc_blobdir_t *bd, const char *sha, prpc_error_t *err)
{
    char path[PRPC_BLOB_PATH_MAX];
    int rc;
    if ((rc = prpc_blobdir_path(bd, sha, path, err)) != 0)
        return rc;
    if (utimensat(AT_FDCWD, path, NULL, 0) != 0)
        return prpc_error_errno(err, errno, "marking blob %s as used", sha);
    return 0;
}

int prpc_blobdir_partial_touch(prpc_blobdir_t *bd, const char *sha, prpc_error_t *err)
{
    char path[PRPC_BLOB_PATH_MAX];
    int rc;
    if ((rc = check_sha(sha, err)) != 0)
        return rc;
    partial_path(bd, sha, path);
    if (utimensat(AT_FDCWD, path, NULL, 0) != 0 && errno != ENOENT)
        return prpc_error_errno(err, errno, "marking partial blob %s as written", sha);
    return 0;
}

typedef struct cached_blob {
    int64_t used_ns;
    uint64_t size;
    char sha[65];
} cached_blob_t;

static int by_use(const void *a, const void *b)
{
    const cached_blob_t *x = a, *y = b;
    return x->used_ns < y->used_ns ? -1 : x->used_ns > y->used_ns;
}

int prpc_blobdir_trim(prpc_blobdir_t *bd, uint64_t max_bytes, int64_t used_before_ns,
                      uint64_t *removed, prpc_error_t *err)
{
    cached_blob_t *list = NULL;
    size_t n = 0, cap = 0;
    uint64_t total = 0, freed = 0;
    DIR *top = opendir(bd->dir);
    struct dirent *de;
    int rc = 0;

    if (removed != NULL)
        *removed = 0;
    if (top == NULL)
        return prpc_error_errno(err, errno, "listing blob directory %s", bd->dir);
    while ((de = readdir(top)) != NULL) {
        char sub[PRPC_BLOB_PATH_MAX];
        DIR *d;
        struct dirent *e;
        if (strlen(de->d_name) != 2 || prpc_hex_digit((unsigned char)de->d_name[0]) < 0 ||
            prpc_hex_digit((unsigned char)de->d_name[1]) < 0)
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", bd->dir, de->d_name);
        if ((d = opendir(sub)) == NULL)
            continue;
        while ((e = readdir(d)) != NULL) {
            char sha[65], path[PRPC_BLOB_PATH_MAX];
            struct stat st;
            if (strlen(e->d_name) != 62)
                continue;
            memcpy(sha, de->d_name, 2);
            memcpy(sha + 2, e->d_name, 63); /* 62 chars and the NUL */
            if (!prpc_blob_valid_sha(sha))
                continue;
            if (prpc_blobdir_path(bd, sha, path, NULL) != 0)
                continue;
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
                continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 256;
                cached_blob_t *grown = realloc(list, ncap * sizeof(*list));
                if (grown == NULL) {
                    closedir(d);
                    rc = prpc_error_set(err, PRPC_ENOMEM, "out of memory listing blobs");
                    goto out;
                }
                list = grown;
                cap = ncap;
            }
            list[n].used_ns = (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
            list[n].size = (uint64_t)st.st_size;
            memcpy(list[n].sha, sha, sizeof(sha));
            total += (uint64_t)st.st_size;
            n++;
        }
        closedir(d);
    }
    if (total > max_bytes && n > 0) {
        qsort(list, n, sizeof(*list), by_use);
        for (size_t i = 0; i < n && total > max_bytes; i++) {
            if (list[i].used_ns >= used_before_ns)
                break; /* in use by a running job, and so is everything newer */
            if (prpc_blobdir_remove(bd, list[i].sha, err) != 0) {
                rc = err != NULL ? err->code : PRPC_EIO;
                goto out;
            }
            total -= list[i].size;
            freed += list[i].size;
        }
    }
    if (removed != NULL)
        *removed = freed;
out:
    closedir(top);
    free(list);
    return rc;
}
