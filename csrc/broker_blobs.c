/*
 * broker_blobs.c - the broker's blob thread and the blobs it keeps
 * (broker_blobs.h).
 *
 * Blob chunk writes and commits (hashing, writing and syncing up to 8 MiB, or
 * hashing a whole blob) run on the broker's blob thread (blob_main), so a
 * large upload never holds up the answers to calls. Its job lists are
 * guarded by blob_mu; requests are only touched on the loop thread.
 */
#include "broker_blobs.h"
#include "broker_reply.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BROKER_DEFERRED_MAX 4 /* chunks waiting for the one before them (8 MiB each) */
#define BROKER_DEFER_MS 5000  /* how long one waits before it is refused */

/* A blob is held when its verified file is in place AND the store knows it.
 * The file is renamed into place before its store row is written, so a crash
 * or a failed store write between the two leaves a file without a row: add
 * the row here (idempotent) rather than refuse the blob forever. */
int prpc__blob_held(prpc_broker_t *b, const char *sha, uint64_t *size)
{
    uint64_t held = 0, known = 0;
    prpc_error_t err;
    if (prpc_blobdir_stat(b->blobs, sha, &held, NULL) != 0)
        return 0;
    if (prpc_store_blob_get(b->store, sha, &known, &err) == 0)
        ; /* known */
    else if (err.code != PRPC_ENOTFOUND ||
             prpc_store_blob_add(b->store, sha, held, prpc_now_ms(), &err) != 0)
        return 0;
    if (size != NULL)
        *size = held;
    return 1;
}

/* prpc_blob_check_fn over the broker's blob directory. */
int prpc__holds_blob(void *ud, const char *sha, uint64_t size)
{
    uint64_t held = 0;
    return prpc__blob_held((prpc_broker_t *)ud, sha, &held) && held == size;
}

/* A call's file argument is accepted while its upload is still arriving
 * (cut-through): its worker follows the upload (GET ?follow=). The blob is
 * recorded with the size the call gives, as the call's reference to it needs
 * (and retention then keeps the partial file while the call lives); the
 * commit checks the upload against that size. Results and checkpoints name
 * only held blobs. */
int prpc__holds_or_receives_blob(void *ud, const char *sha, uint64_t size)
{
    prpc_broker_t *b = ud;
    uint64_t partial = 0;
    if (prpc__holds_blob(b, sha, size))
        return 1;
    return prpc_blobdir_partial(b->blobs, sha, &partial, NULL) == 0 && partial > 0 &&
           partial <= size && prpc_store_blob_add(b->store, sha, size, prpc_now_ms(), NULL) == 0;
}

/* ---- removing blobs --------------------------------------------------- */

/* The blobs of call id's checkpoints, read before an operation that drops
 * them (finish, restart, delete), so that prpc__drop_checkpoint_blobs can remove
 * them after. *out is malloc'd (free it), NULL when there are none. */
size_t prpc__checkpoint_blobs(prpc_broker_t *b, const char *id, prpc_checkpoint_t **out)
{
    prpc_checkpoint_t *ck = calloc(PRPC_CHECKPOINTS_MAX, sizeof(*ck));
    size_t n = 0;
    if (ck != NULL &&
        prpc_store_checkpoints_list(b->store, id, ck, PRPC_CHECKPOINTS_MAX, &n, NULL) != 0)
        n = 0;
    if (n == 0) {
        free(ck);
        ck = NULL;
    }
    *out = ck;
    return n;
}

/* Remove a blob a checkpoint no longer needs, unless a call or another
 * checkpoint still references it (the store refuses then). Unlike other
 * unreferenced blobs, no grace period: checkpoints are rewritten often and
 * can be large, and only a worker saving a checkpoint uploads them. */
void prpc__drop_blob(prpc_broker_t *b, const char *sha)
{
    prpc_error_t err;
    pthread_mutex_lock(&b->blob_gc_mu);
    if (prpc_store_blob_remove(b->store, sha, &err) == 0)
        prpc_blobdir_remove(b->blobs, sha, &err);
    pthread_mutex_unlock(&b->blob_gc_mu);
}

void prpc__drop_checkpoint_blobs(prpc_broker_t *b, prpc_checkpoint_t *ck, size_t n)
{
    for (size_t i = 0; i < n; i++)
        prpc__drop_blob(b, ck[i].sha256);
    free(ck);
}

/* Remove blobs no call references that were added before older_than_ms
 * (uploads still waiting for their submit are younger than that). */
void prpc__remove_unreferenced_blobs(prpc_broker_t *b, int64_t older_than_ms)
{
    char shas[64][65];
    size_t n = 0;
    prpc_error_t err;
    int failed = 0;
    do {
        pthread_mutex_lock(&b->blob_gc_mu);
        failed = prpc_store_blobs_unreferenced(b->store, older_than_ms, shas, 64, &n, &err) != 0;
        for (size_t i = 0; !failed && i < n; i++)
            failed = prpc_blobdir_remove(b->blobs, shas[i], &err) != 0 ||
                     prpc_store_blob_remove(b->store, shas[i], &err) != 0;
        pthread_mutex_unlock(&b->blob_gc_mu);
    } while (!failed && n == 64);
}

void prpc__drop_corrupt_blob(prpc_broker_t *b, const char *sha, const char *why)
{
    prpc_error_t err;
    fprintf(stderr, "p2prpc broker: blob %s is corrupt on disk (%s); it was removed\n", sha,
            why);
    b->metrics.corrupt_blobs_dropped++;
    pthread_mutex_lock(&b->blob_gc_mu);
    prpc_blobdir_remove(b->blobs, sha, &err);
    pthread_mutex_unlock(&b->blob_gc_mu);
}

/* ---- the blob thread -------------------------------------------------- */

/* An uploader keeps two chunks on the wire at once (httpc.c), on two
 * connections: the second may be whole here before the first. Rather than
 * refuse it (409, and the uploader starts over from the broker's copy), it
 * waits, its request parked, for the chunk it continues, a bounded time. With
 * blob_mu held; 1 when j was set aside. */
static int blob_defer(prpc_broker_t *b, blob_job_t *j)
{
    uint64_t have = 0;
    if (j->req == NULL || j->kind != BLOB_CHUNK || j->deferred || b->blob_flush ||
        b->ndeferred >= BROKER_DEFERRED_MAX ||
        prpc_blobdir_partial(b->blobs, j->sha, &have, NULL) != 0 ||
        j->offset != have + PRPC_BLOB_UPLOAD_CHUNK)
        return 0; /* not the chunk right after a whole chunk still on its way */
    j->deferred = 1;
    j->defer_until_ms = prpc_mono_ms() + BROKER_DEFER_MS;
    h2o_linklist_insert(&b->blob_deferred, &j->link);
    b->ndeferred++;
    pthread_cond_broadcast(&b->blob_cv); /* the queue changed: prpc__blobs_drain may be waiting */
    return 1;
}

/* With blob_mu held, after a chunk of sha was written (ok) or refused: the
 * chunk set aside that continues it goes first in the queue; after a refusal
 * every chunk of sha set aside does (nothing will continue them: they are
 * answered now, not after their wait). */
static void blob_undefer(prpc_broker_t *b, const char *sha, uint64_t partial, int ok)
{
    h2o_linklist_t *node = b->blob_deferred.next;
    while (node != &b->blob_deferred) {
        blob_job_t *d = H2O_STRUCT_FROM_MEMBER(blob_job_t, link, node);
        node = node->next;
        if (strcmp(d->sha, sha) == 0 && (!ok || d->offset == partial)) {
            h2o_linklist_unlink(&d->link);
            h2o_linklist_insert(b->blob_queue.next, &d->link);
            b->ndeferred--;
        }
    }
}

/* With blob_mu held: chunks whose wait is over (all of them when the broker
 * stops) go to the queue, to be written or refused. Returns the earliest
 * deadline still pending, 0 when none. */
static int64_t blob_expire_deferred(prpc_broker_t *b, int all)
{
    h2o_linklist_t *node = b->blob_deferred.next;
    int64_t now = prpc_mono_ms(), next = 0;
    while (node != &b->blob_deferred) {
        blob_job_t *d = H2O_STRUCT_FROM_MEMBER(blob_job_t, link, node);
        node = node->next;
        if (all || d->defer_until_ms <= now) {
            h2o_linklist_unlink(&d->link);
            h2o_linklist_insert(&b->blob_queue, &d->link);
            b->ndeferred--;
        } else if (next == 0 || d->defer_until_ms < next) {
            next = d->defer_until_ms;
        }
    }
    return next;
}

static void *blob_main(void *arg)
{
    prpc_broker_t *b = arg;
    pthread_mutex_lock(&b->blob_mu);
    for (;;) {
        blob_job_t *j;
        for (;;) {
            int64_t next = blob_expire_deferred(b, b->blob_quit || b->blob_flush);
            struct timespec ts;
            if (!h2o_linklist_is_empty(&b->blob_queue) || b->blob_quit)
                break;
            if (next == 0) {
                pthread_cond_wait(&b->blob_cv, &b->blob_mu);
                continue;
            }
            ts.tv_sec = (time_t)(next / 1000);
            ts.tv_nsec = (long)(next % 1000) * 1000000L;
            pthread_cond_timedwait(&b->blob_cv, &b->blob_mu, &ts);
        }
        if (h2o_linklist_is_empty(&b->blob_queue))
            break;
        j = H2O_STRUCT_FROM_MEMBER(blob_job_t, link, b->blob_queue.next);
        h2o_linklist_unlink(&j->link);
        if (blob_defer(b, j))
            continue;
        if (j->req != NULL) {
            j->running = b->blob_busy = 1;
            pthread_mutex_unlock(&b->blob_mu);
            if (j->kind == BLOB_PARTIAL) {
                /* Behind the chunks queued before it: what it reports is synced. */
                j->held = prpc__blob_held(b, j->sha, &j->size);
                if (!j->held && prpc_blobdir_partial(b->blobs, j->sha, &j->partial, NULL) != 0)
                    j->partial = 0;
                j->rc = 0;
            } else if (j->kind == BLOB_FOLLOW) {
                /* Behind the chunks queued before it, like PARTIAL: the
                 * length it starts from is synced, and later chunks and the
                 * commit reach its followers in order. */
                j->held = prpc__blob_held(b, j->sha, NULL);
                if (!j->held &&
                    prpc_blobdir_partial_read(b->blobs, j->sha, &j->fd, &j->partial, NULL) != 0)
                    j->fd = -1;
                j->rc = 0;
            } else if (j->kind == BLOB_COMMIT) {
                pthread_mutex_lock(&b->blob_gc_mu);
                j->rc = prpc_blobdir_commit(b->blobs, j->sha, j->size, &j->err);
                if (j->rc == 0)
                    j->rc = prpc_store_blob_add(b->store, j->sha, j->size, prpc_now_ms(),
                                                &j->err);
                pthread_mutex_unlock(&b->blob_gc_mu);
            } else {
                j->rc = prpc_blobdir_write_chunk(b->blobs, j->sha, j->offset, j->data, j->len,
                                                 j->chunk_sha, &j->partial, &j->err);
            }
            pthread_mutex_lock(&b->blob_mu);
            j->running = b->blob_busy = 0;
            j->ran = 1;
            if (j->kind == BLOB_CHUNK)
                blob_undefer(b, j->sha, j->partial, j->rc == 0);
        }
        h2o_linklist_insert(&b->blob_done, &j->link);
        pthread_cond_broadcast(&b->blob_cv);
        pthread_mutex_unlock(&b->blob_mu);
        prpc_httpd_wake(b->httpd);
        pthread_mutex_lock(&b->blob_mu);
    }
    pthread_mutex_unlock(&b->blob_mu);
    return NULL;
}

/* h2o lets go of a parked chunk request (its connection closed, the broker
 * stops): wait for the job's write to end, so the body it reads stays valid. */
static void blob_hold_dispose(void *p)
{
    blob_hold_t *h = p;
    prpc_broker_t *b = h->b;
    if (h->job == NULL)
        return;
    pthread_mutex_lock(&b->blob_mu);
    while (h->job->running)
        pthread_cond_wait(&b->blob_cv, &b->blob_mu);
    h->job->req = NULL;
    h->job->hold = NULL;
    pthread_mutex_unlock(&b->blob_mu);
    h->job = NULL;
}

/* HEAD /v1/blobs/{sha}: 200 with its size when held, else 404 saying how many
 * bytes of it the broker has synced (where an upload resumes). */
static void send_head(h2o_req_t *req, int held, uint64_t size, uint64_t partial)
{
    static h2o_generator_t gen = {NULL, NULL};
    char body[32];
    int n;
    if (held) {
        req->res.status = 200;
        req->res.reason = "OK";
        req->res.content_length = size;
    } else {
        n = snprintf(body, sizeof(body), "%llu", (unsigned long long)partial);
        req->res.status = 404;
        req->res.reason = "Not Found";
        req->res.content_length = 0;
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-p2prpc-partial"), 0,
                              NULL, h2o_strdup(&req->pool, body, (size_t)n).base, (size_t)n);
    }
    h2o_start_response(req, &gen);
    h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
}

/* Count what the blob thread did: a chunk written and synced is received
 * whether or not its sender is still there to hear so. */
static void blob_count(prpc_broker_t *b, const blob_job_t *j)
{
    if (!j->ran)
        return;
    if (j->kind == BLOB_COMMIT && j->rc == 0)
        b->metrics.blobs_committed++;
    if (j->kind == BLOB_CHUNK && j->rc != 0)
        b->metrics.chunks_refused++;
    if (j->kind == BLOB_CHUNK && j->rc == 0) {
        b->metrics.chunks_received++;
        b->metrics.bytes_received += j->len;
    }
}

static void blob_answer(blob_job_t *j)
{
    char body[96];
    int n;
    if (j->kind == BLOB_PARTIAL) {
        send_head(j->req, j->held, j->size, j->partial);
        return;
    }
    if (j->kind == BLOB_FOLLOW) {
        j->hold->b->follow_start(j->hold->b, j->req, j);
        return;
    }
    if (j->rc != 0) {
        prpc__send_err(j->req, &j->err);
        return;
    }
    if (j->kind == BLOB_COMMIT)
        n = snprintf(body, sizeof(body), "{\"size\": %llu}", (unsigned long long)j->size);
    else
        n = snprintf(body, sizeof(body), "{\"partial\": %llu}", (unsigned long long)j->partial);
    prpc_httpd_send_json(j->req, 200, body, (size_t)n);
}

/* On the loop thread: answer the jobs the blob thread finished. */
void prpc__blobs_answer_done(void *ud)
{
    prpc_broker_t *b = ud;
    h2o_linklist_t done;
    h2o_linklist_init_anchor(&done);
    pthread_mutex_lock(&b->blob_mu);
    h2o_linklist_insert_list(&done, &b->blob_done);
    pthread_mutex_unlock(&b->blob_mu);
    while (!h2o_linklist_is_empty(&done)) {
        blob_job_t *j = H2O_STRUCT_FROM_MEMBER(blob_job_t, link, done.next);
        h2o_linklist_unlink(&j->link);
        blob_count(b, j);
        b->blob_news(b, j); /* first: it may copy the chunk's body, valid until the answer */
        if (j->req != NULL) {
            j->hold->job = NULL;
            blob_answer(j);
        }
        if (j->fd >= 0)
            close(j->fd); /* a follower that left before its answer began */
        free(j);
    }
}

/* A job of kind for blob sha, or NULL when out of memory (req is answered). */
static blob_job_t *blob_job_new(h2o_req_t *req, int kind, const char *sha)
{
    blob_job_t *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        prpc_httpd_send_error(req, 503, PRPC_ENOMEM, "out of memory");
        return NULL;
    }
    j->kind = kind;
    j->fd = -1;
    memcpy(j->sha, sha, sizeof(j->sha));
    return j;
}

/* Park req and hand its chunk, commit or HEAD to the blob thread. */
static void blob_enqueue(prpc_broker_t *b, h2o_req_t *req, blob_job_t *j)
{
    blob_hold_t *h = h2o_mem_alloc_shared(&req->pool, sizeof(*h), blob_hold_dispose);
    h->b = b;
    h->job = j;
    j->hold = h;
    j->req = req;
    pthread_mutex_lock(&b->blob_mu);
    h2o_linklist_insert(&b->blob_queue, &j->link);
    pthread_cond_broadcast(&b->blob_cv);
    pthread_mutex_unlock(&b->blob_mu);
}

/* ---- the blob endpoints ----------------------------------------------- */

void prpc__on_blob_head(prpc_broker_t *b, h2o_req_t *req, const char *sha)
{
    uint64_t size = 0;
    blob_job_t *j;
    if (prpc__blob_held(b, sha, &size)) {
        send_head(req, 1, size, 0);
        return;
    }
    if ((j = blob_job_new(req, BLOB_PARTIAL, sha)) != NULL)
        blob_enqueue(b, req, j);
}

void prpc__blob_follow(prpc_broker_t *b, h2o_req_t *req, const char *sha, uint64_t size)
{
    blob_job_t *j = blob_job_new(req, BLOB_FOLLOW, sha);
    if (j != NULL) {
        j->size = size;
        blob_enqueue(b, req, j);
    }
}

void prpc__on_blob_put(prpc_broker_t *b, h2o_req_t *req, const char *sha)
{
    const char *chunk_sha = prpc_httpd_header(req, "x-p2prpc-chunk-sha256");
    int64_t offset = prpc__query_int(req, "offset", -1);
    uint64_t size = 0;
    char body[96];
    int n;
    blob_job_t *j;
    if (offset < 0 || !prpc_blob_valid_sha(chunk_sha)) {
        prpc_httpd_send_error(req, 400, PRPC_EINVAL,
                              "a chunk upload needs ?offset=N and the X-P2PRPC-Chunk-Sha256 "
                              "header");
        return;
    }
    if (prpc__blob_held(b, sha, &size)) {
        n = snprintf(body, sizeof(body), "{\"partial\": %llu, \"complete\": true}",
                     (unsigned long long)size);
        prpc_httpd_send_json(req, 200, body, (size_t)n);
        return;
    }
    if ((j = blob_job_new(req, BLOB_CHUNK, sha)) == NULL)
        return;
    memcpy(j->chunk_sha, chunk_sha, sizeof(j->chunk_sha));
    j->offset = (uint64_t)offset;
    j->data = req->entity.base;
    j->len = req->entity.len;
    blob_enqueue(b, req, j);
}

void prpc__on_blob_commit(prpc_broker_t *b, h2o_req_t *req, const char *sha)
{
    int64_t want = prpc__query_int(req, "size", -1);
    blob_job_t *j;
    if (want < 0) {
        prpc_httpd_send_error(req, 400, PRPC_EINVAL, "commit needs ?size=N");
        return;
    }
    if ((j = blob_job_new(req, BLOB_COMMIT, sha)) == NULL)
        return;
    j->size = (uint64_t)want;
    blob_enqueue(b, req, j);
}

/* ---- life cycle ------------------------------------------------------- */

void prpc__blobs_init(prpc_broker_t *b)
{
    pthread_condattr_t a;
    h2o_linklist_init_anchor(&b->blob_queue);
    h2o_linklist_init_anchor(&b->blob_done);
    h2o_linklist_init_anchor(&b->blob_deferred);
    pthread_mutex_init(&b->blob_mu, NULL);
    pthread_mutex_init(&b->blob_gc_mu, NULL);
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC); /* prpc_mono_ms */
    pthread_cond_init(&b->blob_cv, &a);
    pthread_condattr_destroy(&a);
}

int prpc__blobs_start(prpc_broker_t *b, prpc_error_t *err)
{
    int rc = pthread_create(&b->blob_thread, NULL, blob_main, b);
    if (rc != 0)
        return prpc_error_errno(err, rc, "starting the broker's blob thread");
    b->blob_thread_started = 1;
    return 0;
}

void prpc__blobs_drain(prpc_broker_t *b)
{
    /* Chunks already handed to the blob thread are written and answered; those
     * set aside to wait for the chunk before them, now. */
    pthread_mutex_lock(&b->blob_mu);
    b->blob_flush = 1;
    pthread_cond_broadcast(&b->blob_cv);
    while (b->blob_thread_started && (!h2o_linklist_is_empty(&b->blob_queue) || b->blob_busy ||
                                      b->ndeferred > 0))
        pthread_cond_wait(&b->blob_cv, &b->blob_mu);
    pthread_mutex_unlock(&b->blob_mu);
    prpc__blobs_answer_done(b);
}

void prpc__blobs_join(prpc_broker_t *b)
{
    if (!b->blob_thread_started)
        return;
    pthread_mutex_lock(&b->blob_mu);
    b->blob_quit = 1;
    pthread_cond_broadcast(&b->blob_cv);
    pthread_mutex_unlock(&b->blob_mu);
    pthread_join(b->blob_thread, NULL);
    b->blob_thread_started = 0;
}

void prpc__blobs_cleanup(prpc_broker_t *b)
{
    while (!h2o_linklist_is_empty(&b->blob_done)) { /* only jobs whose requests are gone */
        blob_job_t *j = H2O_STRUCT_FROM_MEMBER(blob_job_t, link, b->blob_done.next);
        h2o_linklist_unlink(&j->link);
        if (j->fd >= 0)
            close(j->fd);
        free(j);
    }
    pthread_cond_destroy(&b->blob_cv);
    pthread_mutex_destroy(&b->blob_gc_mu);
    pthread_mutex_destroy(&b->blob_mu);
}
