/*
 * broker_serve.c - sending blobs (broker_serve.h): verified streaming with
 * Range, and following an upload still arriving. Runs on the loop thread;
 * what the blob thread finished reaches it through the hooks prpc__serve_init
 * sets.
 */
#include "broker_serve.h"
#include "broker_blobs.h"
#include "broker_reply.h"
#include "hash.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BROKER_FOLLOW_TAILS 2 /* followers holding a copy of a chunk (4 MiB each) at once */

/* ---- serving blobs: verified while streamed ---------------------------- */

#define SERVE_CHUNK (1u << 20)

/* A blob streamed from disk through its SHA-256: the last chunk is held back
 * until the whole content has hashed to the blob's name, so a blob that rotted
 * on disk is never delivered whole; it is cut short (the receiver sees a
 * failed transfer) and dropped. */
typedef struct blob_stream {
    h2o_generator_t super;
    prpc_broker_t *b;
    int fd;
    uint64_t pos, end, size; /* sending [pos, end) of a blob of size bytes */
    int verify;              /* the whole blob is sent: hash it on the way */
    prpc_sha256_t hash;
    char sha[65];
    char *buf;
} blob_stream_t;

static void blob_stream_close(blob_stream_t *st)
{
    if (st->fd >= 0) {
        close(st->fd);
        st->fd = -1;
        prpc_sha256_cleanup(&st->hash);
    }
}

static void blob_stream_stop(h2o_generator_t *g, h2o_req_t *req)
{
    PRPC_UNUSED(req);
    blob_stream_close((blob_stream_t *)g);
}

static void blob_stream_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    blob_stream_t *st = (blob_stream_t *)g;
    size_t want = st->end - st->pos < SERVE_CHUNK ? (size_t)(st->end - st->pos) : SERVE_CHUNK;
    size_t got = 0;
    h2o_iovec_t iov;
    int last;

    while (got < want) {
        ssize_t n = pread(st->fd, st->buf + got, want - got, (off_t)(st->pos + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got < want) {
        prpc__drop_corrupt_blob(st->b, st->sha, "shorter than its recorded size");
        blob_stream_close(st);
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    if (st->verify)
        prpc_sha256_update(&st->hash, st->buf, got, NULL);
    st->pos += got;
    last = st->pos == st->end;
    if (last && !st->verify) {
        blob_stream_close(st);
    } else if (last) {
        uint8_t digest[PRPC_SHA256_LEN];
        char hex[PRPC_SHA256_HEX_LEN + 1];
        prpc_sha256_final(&st->hash, digest, NULL);
        prpc_hex_encode(digest, sizeof(digest), hex);
        if (strcmp(hex, st->sha) != 0) {
            prpc__drop_corrupt_blob(st->b, st->sha, "its content no longer hashes to its name");
            blob_stream_close(st);
            h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
            return;
        }
        blob_stream_close(st);
    }
    iov = h2o_iovec_init(st->buf, got);
    st->b->metrics.bytes_served += got;
    h2o_send(req, &iov, 1, last ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

/* Parse "bytes=FIRST-" or "bytes=FIRST-LAST" against size. Returns 1 with
 * [*first, *end) for a satisfiable range, 0 when it is not satisfiable, -1 when
 * the header is not of a form we serve (the whole blob is sent then). */
static int parse_range(const char *range, uint64_t size, uint64_t *first, uint64_t *end)
{
    char *e1 = NULL, *e2 = NULL;
    unsigned long long a, z;
    if (strncmp(range, "bytes=", 6) != 0)
        return -1;
    if (range[6] == '-' && range[7] >= '0' && range[7] <= '9') {
        /* A suffix: the last N bytes. */
        z = strtoull(range + 7, &e2, 10);
        if (*e2 != '\0')
            return -1;
        if (z == 0 || size == 0)
            return 0;
        *first = z >= size ? 0 : size - z;
        *end = size;
        return 1;
    }
    if (range[6] < '0' || range[6] > '9')
        return -1;
    a = strtoull(range + 6, &e1, 10);
    if (*e1 != '-')
        return -1;
    if (e1[1] == '\0') {
        z = size ? size - 1 : 0;
    } else {
        if (e1[1] < '0' || e1[1] > '9')
            return -1;
        z = strtoull(e1 + 1, &e2, 10);
        if (*e2 != '\0' || z < a)
            return -1;
        if (z >= size)
            z = size ? size - 1 : 0;
    }
    if (a >= size)
        return 0;
    *first = a;
    *end = z + 1;
    return 1;
}

/* The part of a blob of size bytes that GET's Range header asks for: 1 with
 * [*first, *end) for a part, 0 for the whole blob (no Range, a form we do not
 * serve, or all of it), -1 after answering 416 (not satisfiable). */
static int blob_range(h2o_req_t *req, const char *range, const char *sha, uint64_t size,
                      uint64_t *first, uint64_t *end)
{
    char cr[48];
    int n, ranged = range != NULL ? parse_range(range, size, first, end) : -1;
    if (ranged == 0) {
        n = snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)size);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_RANGE, NULL,
                       h2o_strdup(&req->pool, cr, (size_t)n).base, (size_t)n);
        prpc_httpd_send_error(req, 416, PRPC_EINVAL, "range %.64s is outside blob %s", range,
                              sha);
        return -1;
    }
    if (ranged == 1 && !(*first == 0 && *end == size))
        return 1;
    *first = 0;
    *end = size;
    return 0;
}

/* Status and headers of a blob answer that sends [first, end) of size bytes. */
static void blob_headers(h2o_req_t *req, uint64_t first, uint64_t end, uint64_t size)
{
    if (first == 0 && end == size) {
        req->res.status = 200;
        req->res.reason = "OK";
    } else {
        char cr[96];
        int n = snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)first,
                         (unsigned long long)(end - 1), (unsigned long long)size);
        req->res.status = 206;
        req->res.reason = "Partial Content";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_RANGE, NULL,
                       h2o_strdup(&req->pool, cr, (size_t)n).base, (size_t)n);
    }
    req->res.content_length = end - first;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/octet-stream"));
}

static void serve_blob(prpc_broker_t *b, h2o_req_t *req, const char *sha, const char *path,
                       const char *range)
{
    blob_stream_t *st;
    struct stat sb;
    uint64_t recorded = 0, first = 0, end = 0;
    int ranged = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        prpc_httpd_send_error(req, 404, PRPC_ENOTFOUND, "no blob %s on this broker", sha);
        return;
    }
    if (fstat(fd, &sb) != 0 ||
        (prpc_store_blob_get(b->store, sha, &recorded, NULL) == 0 &&
         recorded != (uint64_t)sb.st_size)) {
        close(fd);
        prpc__drop_corrupt_blob(b, sha, "its size differs from the recorded size");
        prpc_httpd_send_error(req, 404, PRPC_ENOTFOUND,
                              "blob %s was corrupt on this broker and was dropped; upload it again",
                              sha);
        return;
    }
    st = h2o_mem_alloc_shared(&req->pool, sizeof(*st), NULL);
    memset(st, 0, sizeof(*st));
    st->super.proceed = blob_stream_proceed;
    st->super.stop = blob_stream_stop;
    st->b = b;
    st->fd = fd;
    st->size = (uint64_t)sb.st_size;
    if ((ranged = blob_range(req, range, sha, st->size, &first, &end)) < 0) {
        close(fd);
        return;
    }
    memcpy(st->sha, sha, 65);
    st->buf = h2o_mem_alloc_pool(&req->pool, SERVE_CHUNK);
    if (prpc_sha256_init(&st->hash, NULL) != 0) {
        close(fd);
        prpc_httpd_send_error(req, 500, PRPC_ENOMEM, "out of memory");
        return;
    }
    /* Part of a blob is not verified here: the receiver hashes the whole blob
     * when it commits, and starts over from zero on a mismatch. */
    st->verify = ranged == 0;
    st->pos = first;
    st->end = end;
    blob_headers(req, first, end, st->size);
    h2o_start_response(req, &st->super);
    blob_stream_proceed(&st->super, req);
}

/* ---- following a blob still being uploaded (cut-through) -------------- */

/* GET /v1/blobs/{sha}?follow=SIZE while the blob's upload is in progress: a
 * worker fetching a call's argument gets each chunk as soon as the blob
 * thread has synced it, so its download runs beside the client's upload
 * rather than after it. The last piece waits for the commit (the broker's
 * hash of the whole upload). A failed commit, no new chunk for
 * upload_stall_ms, or the broker stopping cut the answer short: the receiver
 * sees a failed transfer, keeps what it has and asks again from there (Range).
 * Not hashed on the way out: every byte was hashed on its way in (its chunk's
 * SHA-256, then the whole at the commit), and the receiver hashes what it got
 * before using it. */
typedef struct blob_follow {
    h2o_generator_t super;
    h2o_linklist_t link; /* in b->followers until the answer ends */
    prpc_broker_t *b;
    h2o_req_t *req;
    int fd; /* the partial file; the commit renames it, the fd stays valid */
    char sha[65];
    uint64_t pos, end, size; /* sending [pos, end) of a blob of size bytes */
    uint64_t synced;         /* bytes of the partial file the blob thread has synced */
    int committed;
    int ready;            /* h2o wants more and nothing is in flight */
    int cut;              /* cut short while a send was in flight: end at the next proceed */
    int64_t last_news_ms; /* the answer started or a chunk arrived */
    char *buf;
    /* The bytes of the last chunk that arrived while this follower waited
     * for them, [tail_off, tail_off + tail_len): PRPC_BLOB_UPLOAD_CHUNK bytes
     * from the request's pool, or NULL (at most BROKER_FOLLOW_TAILS at once). */
    char *tail;
    uint64_t tail_off;
    size_t tail_len;
    /* The send in flight, counted in the metrics once h2o has written it
     * (proceed): bytes handed to a connection that turns out dead are not sent. */
    size_t sending;
    int sending_from_memory;
} blob_follow_t;

static void follow_close(blob_follow_t *f)
{
    if (h2o_linklist_is_linked(&f->link))
        h2o_linklist_unlink(&f->link);
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
}

static void follow_dispose(void *p)
{
    blob_follow_t *f = p;
    follow_close(f);
    if (f->tail != NULL) /* the pool frees it: only a send could still read it */
        f->b->follow_tails--;
}

static void follow_stop(h2o_generator_t *g, h2o_req_t *req)
{
    PRPC_UNUSED(req);
    follow_close((blob_follow_t *)g);
}

/* Cut the answer short: the receiver resumes with a Range request. */
static void follow_cut(blob_follow_t *f, const char *why)
{
    fprintf(stderr, "p2prpc broker: a download following blob %s was cut at byte %llu: %s\n",
            f->sha, (unsigned long long)f->pos, why);
    follow_close(f);
    if (f->ready)
        h2o_send(f->req, NULL, 0, H2O_SEND_STATE_ERROR);
    else
        f->cut = 1; /* h2o allows one send in flight */
}

static void follow_sent(blob_follow_t *f)
{
    f->b->metrics.bytes_followed += f->sending;
    if (f->sending_from_memory)
        f->b->metrics.bytes_followed_from_memory += f->sending;
    f->sending = 0;
}

/* Send what is synced and not yet sent, when h2o is ready for it. */
static void follow_pump(blob_follow_t *f)
{
    /* Until the commit the last byte is held back, so the answer cannot
     * complete on bytes the commit may yet refuse. */
    uint64_t cap = f->committed ? f->end : (f->end > f->pos ? f->end - 1 : f->pos);
    uint64_t avail = f->committed ? f->end : (f->synced < cap ? f->synced : cap);
    size_t want, got = 0;
    h2o_iovec_t iov;
    const char *from = f->buf;
    int last;

    if (!f->ready || f->fd < 0)
        return;
    want = avail > f->pos ? (avail - f->pos < SERVE_CHUNK ? (size_t)(avail - f->pos) : SERVE_CHUNK)
                          : 0;
    if (want > 0 && f->tail_len > 0 && f->pos >= f->tail_off &&
        f->pos < f->tail_off + f->tail_len) {
        /* From the copy of the chunk, in one send: no disk read, and the
         * copy is not touched again before h2o asks for more. */
        uint64_t stop = f->tail_off + f->tail_len < avail ? f->tail_off + f->tail_len : avail;
        from = f->tail + (f->pos - f->tail_off);
        want = got = (size_t)(stop - f->pos);
    }
    while (got < want) {
        ssize_t n = pread(f->fd, f->buf + got, want - got, (off_t)(f->pos + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got < want && f->committed) {
        follow_cut(f, "the committed blob is shorter than its size");
        return;
    }
    last = f->committed && f->pos + got == f->end;
    if (got == 0 && !last)
        return; /* parked until the blob thread syncs more (follow_news) */
    f->pos += got;
    f->ready = 0;
    f->sending = got;
    f->sending_from_memory = from != f->buf;
    if (last) {
        follow_sent(f); /* no proceed comes after the last send */
        follow_close(f);
    }
    iov = h2o_iovec_init(from, got);
    h2o_send(f->req, &iov, 1, last ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

/* A follower waiting for the bytes of the chunk j that just arrived takes
 * them from the chunk's request body, still in memory, not from the disk:
 * the broker wrote the chunk with O_DIRECT, so a pread would read it back
 * from the disk and copy it out of pages the disk just filled (that copy was
 * a quarter of a busy broker's time). Only while nothing of this follower is
 * in flight (its copy is then not being sent); otherwise, or past the cap,
 * it reads the partial file as before. */
static void follow_keep_tail(prpc_broker_t *b, blob_follow_t *f, const blob_job_t *j)
{
    size_t skip;
    if (!f->ready || j->req == NULL || j->data == NULL || j->len > PRPC_BLOB_UPLOAD_CHUNK ||
        f->pos < j->offset || f->pos >= j->offset + j->len)
        return;
    if (f->tail == NULL) {
        if (b->follow_tails >= BROKER_FOLLOW_TAILS)
            return;
        f->tail = h2o_mem_alloc_pool(&f->req->pool, PRPC_BLOB_UPLOAD_CHUNK);
        b->follow_tails++;
    }
    skip = (size_t)(f->pos - j->offset);
    memcpy(f->tail, (const char *)j->data + skip, j->len - skip);
    f->tail_off = f->pos;
    f->tail_len = j->len - skip;
}

static void follow_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    blob_follow_t *f = (blob_follow_t *)g;
    follow_sent(f);
    if (f->cut) {
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    f->ready = 1;
    follow_pump(f);
}

/* The blob thread finished job j: tell the followers of its blob. */
static void follow_news(prpc_broker_t *b, const blob_job_t *j)
{
    h2o_linklist_t *node;
    /* A refused chunk leaves the partial file as it was, except on a full
     * disk: then the file was dropped, and an open follower would keep its
     * space from every other upload. */
    if (!j->ran || (j->kind != BLOB_CHUNK && j->kind != BLOB_COMMIT) ||
        (j->kind == BLOB_CHUNK && j->rc != 0 && j->rc != PRPC_ENOSPC))
        return;
    for (node = b->followers.next; node != &b->followers;) {
        blob_follow_t *f = H2O_STRUCT_FROM_MEMBER(blob_follow_t, link, node);
        node = node->next;
        if (strcmp(f->sha, j->sha) != 0)
            continue;
        if (j->kind == BLOB_CHUNK && j->rc != 0) {
            follow_cut(f, j->err.message);
            continue;
        }
        if (j->kind == BLOB_CHUNK) {
            if (j->partial > f->synced)
                f->synced = j->partial;
            f->last_news_ms = prpc_now_ms();
            follow_keep_tail(b, f, j);
        } else if (j->rc != 0) {
            follow_cut(f, j->err.message);
            continue;
        } else if (j->size != f->size) {
            follow_cut(f, "the upload committed a blob of another size than the download asked");
            continue;
        } else {
            f->committed = 1;
            f->synced = j->size;
        }
        follow_pump(f);
    }
}

/* Followers that waited upload_stall_ms for a chunk are cut off: an upload
 * nobody finishes must not hold a worker forever. */
void prpc__follow_expire(prpc_broker_t *b, int64_t now)
{
    h2o_linklist_t *node;
    for (node = b->followers.next; node != &b->followers;) {
        blob_follow_t *f = H2O_STRUCT_FROM_MEMBER(blob_follow_t, link, node);
        node = node->next;
        if (f->ready && !f->committed && now - f->last_news_ms >= b->upload_stall_ms)
            follow_cut(f, "no new chunk of its upload arrived in time");
    }
}

/* Answer a GET ?follow= once the blob thread has looked (job j): the blob
 * itself when it is held by now, else the partial file it opened. */
static void follow_start(prpc_broker_t *b, h2o_req_t *req, blob_job_t *j)
{
    const char *range = prpc_httpd_header(req, "range");
    char path[PRPC_BLOB_PATH_MAX];
    prpc_error_t err;
    blob_follow_t *f;
    struct stat sb;
    uint64_t first = 0, end = j->size;

    if (j->held) {
        if (prpc_blobdir_path(b->blobs, j->sha, path, &err) != 0)
            prpc__send_err(req, &err);
        else
            serve_blob(b, req, j->sha, path, range);
        return;
    }
    if (j->fd < 0) {
        prpc_httpd_send_error(req, 404, PRPC_ENOTFOUND,
                              "no blob %s on this broker, and no upload of it in progress", j->sha);
        return;
    }
    if (blob_range(req, range, j->sha, j->size, &first, &end) < 0)
        return;
    if (j->partial <= first && fstat(j->fd, &sb) == 0 &&
        prpc_now_ms() - ((int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000) >=
            b->upload_stall_ms) {
        /* Nothing to send and nothing arriving: a download asking again after
         * its answer was cut for a stall learns the upload stopped. */
        prpc_httpd_send_error(req, 404, PRPC_ENOTFOUND,
                              "blob %s is not on this broker: its upload stopped at %llu of %llu "
                              "bytes (no chunk for %.1f s); upload it again",
                              j->sha, (unsigned long long)j->partial,
                              (unsigned long long)j->size, (double)b->upload_stall_ms / 1000.0);
        return;
    }
    f = h2o_mem_alloc_shared(&req->pool, sizeof(*f), follow_dispose);
    memset(f, 0, sizeof(*f));
    f->super.proceed = follow_proceed;
    f->super.stop = follow_stop;
    f->b = b;
    f->req = req;
    f->fd = j->fd;
    j->fd = -1;
    memcpy(f->sha, j->sha, sizeof(f->sha));
    f->pos = first;
    f->end = end;
    f->size = j->size;
    f->synced = j->partial;
    f->last_news_ms = prpc_now_ms();
    f->buf = h2o_mem_alloc_pool(&req->pool, SERVE_CHUNK);
    blob_headers(req, first, end, j->size);
    h2o_linklist_insert(&b->followers, &f->link);
    h2o_start_response(req, &f->super);
    f->ready = 1;
    follow_pump(f);
}

/* ---- GET /v1/blobs/{sha} ------------------------------------------------ */

void prpc__on_blob_get(prpc_broker_t *b, h2o_req_t *req, const char *sha)
{
    prpc_error_t err;
    char path[PRPC_BLOB_PATH_MAX];
    int64_t follow = prpc__query_int(req, "follow", -1);
    if (prpc_httpd_query(req, "follow") != NULL && follow < 0) {
        prpc_httpd_send_error(req, 400, PRPC_EINVAL, "follow=SIZE needs the blob's size in bytes");
        return;
    }
    if (follow >= 0 && !prpc__blob_held(b, sha, NULL)) {
        /* The upload may still be arriving: the blob thread looks, in order
         * with its chunks. */
        prpc__blob_follow(b, req, sha, (uint64_t)follow);
        return;
    }
    if (prpc_blobdir_path(b->blobs, sha, path, &err) != 0) {
        prpc__send_err(req, &err);
        return;
    }
    serve_blob(b, req, sha, path, prpc_httpd_header(req, "range"));
}

void prpc__serve_init(prpc_broker_t *b)
{
    h2o_linklist_init_anchor(&b->followers);
    b->blob_news = follow_news;
    b->follow_start = follow_start;
}

void prpc__serve_stop(prpc_broker_t *b)
{
    while (!h2o_linklist_is_empty(&b->followers))
        follow_cut(H2O_STRUCT_FROM_MEMBER(blob_follow_t, link, b->followers.next),
                   "the broker is shutting down");
}
