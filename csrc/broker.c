/*
 * broker.c - the broker node (broker.h): routes of docs/API.md, long-polls of
 * clients and workers, leases, and the blob endpoints.
 *
 * Thread safety: after prpc_broker_start everything here runs on the httpd
 * loop thread, so the waiter lists need no lock. The store is thread-safe on
 * its own. Store calls block the loop for the length of one durable commit;
 * that is the price of acknowledging only what is durable. Blob chunk writes
 * and commits (hashing, writing and syncing up to 8 MiB, or hashing a whole
 * blob) are the exception: they run on the broker's blob thread (blob_main),
 * so a large upload never holds up the answers to calls. Its job lists are
 * guarded by blob_mu; requests are only touched on the loop thread.
 *
 * Long-polls: over HTTP/1 h2o does not notice a client that went away while
 * its request is parked, so "answered" never means "received". Leases make
 * that safe: a lease handed to a departed worker lapses and the call is
 * queued again.
 */
#include "broker.h"
#include "auth.h"
#include "blob.h"
#include "hash.h"
#include "httpd.h"
#include "ident.h"
#include "json.h"
#include "nodes.h"
#include "store.h"
#include "util.h"
#include "wire.h"

#include <bson/bson.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#define NONCE_CACHE_MAX (4u << 20) /* live nonces remembered: ~64 MiB at most */
#define GRANTED_MAX 1024            /* leases remembered for retried lease requests */
#define EXPIRE_EVERY_MS 250         /* lapsed leases are looked for this often */
#define RETENTION_EVERY_MS 10000    /* finished calls and unused blobs, this often */
#define RETENTION_DEFAULT_MS (7LL * 24 * 3600 * 1000)

typedef struct call_waiter {
    h2o_linklist_t link;
    h2o_req_t *req;
    char id[PRPC_CALL_ID_HEX + 1];
    int64_t since;
    int64_t deadline_ms;
    /* A submit that waits (POST /v1/calls?wait_ms=N) is answered when its call
     * ends, not when it changes, and its answer keeps the submit's shape. */
    int until_end;
    int created;
} call_waiter_t;

/* A reader of many calls (POST /v1/calls/wait): answered as soon as one of
 * them is terminal or gone. */
typedef struct batch_waiter {
    h2o_linklist_t link;
    h2o_req_t *req;
    char (*ids)[PRPC_CALL_ID_HEX + 1]; /* in the request's pool */
    size_t n;
    int64_t deadline_ms;
} batch_waiter_t;

/* A chunk write or a commit, done on the blob thread. The request stays
 * parked meanwhile; job->req is NULL once h2o let go of it (blob_hold_dispose
 * waits for a job in progress first, so its body stays readable). */
typedef struct blob_job {
    h2o_linklist_t link; /* in blob_queue or blob_done, under blob_mu */
    struct blob_hold *hold;
    h2o_req_t *req;
    /* PARTIAL: a HEAD's answer; FOLLOW: the start of a GET ?follow=SIZE */
    enum { BLOB_CHUNK, BLOB_COMMIT, BLOB_PARTIAL, BLOB_FOLLOW } kind;
    char sha[PRPC_CALL_ID_HEX + 1];
    char chunk_sha[PRPC_CALL_ID_HEX + 1];
    uint64_t offset, size, partial;
    const void *data;
    size_t len;
    int running, ran, rc, held;
    int deferred;           /* CHUNK: once set aside to wait for the chunk before it */
    int64_t defer_until_ms; /* ...until then at most */
    int fd; /* FOLLOW: the partial file, opened behind the chunks queued before it */
    prpc_error_t err;
} blob_job_t;

typedef struct blob_hold {
    struct prpc_broker *b;
    blob_job_t *job; /* NULL once answered */
} blob_hold_t;

/* Outputs a worker announced while their upload goes on (cut-through of
 * results, POST /v1/leases/{lease}/outputs): a hint to the call's readers,
 * valid while the call is leased under that lease. Kept in memory only: after
 * a broker restart the call's result still comes, only without the head
 * start. Touched on the loop thread only. */
typedef struct arriving_outputs {
    char call_id[PRPC_CALL_ID_HEX + 1]; /* "" when the slot is free */
    char lease_id[PRPC_LEASE_ID_HEX + 1];
    char *outputs_json; /* owned */
    int64_t at_ms;      /* when announced, for eviction */
} arriving_outputs_t;

#define BROKER_ARRIVING_MAX 64
#define BROKER_ARRIVING_JSON_MAX (64 * 1024) /* bytes of one announcement kept */
#define BROKER_DEFERRED_MAX 4 /* chunks waiting for the one before them (8 MiB each) */
#define BROKER_DEFER_MS 5000  /* how long one waits before it is refused */
#define BROKER_FOLLOW_TAILS 2 /* followers holding a copy of a chunk (4 MiB each) at once */

typedef struct lease_waiter {
    h2o_linklist_t link;
    h2o_req_t *req;
    char request[33]; /* the worker's request id ("" when none): a retry gets the same lease */
    char worker[PRPC_STORE_NAME_MAX + 1];
    const char **functions;
    const char **versions;
    size_t n;
    int64_t deadline_ms;
} lease_waiter_t;

struct prpc_broker {
    prpc_store_t *store;
    prpc_blobdir_t *blobs;
    prpc_httpd_t *httpd;
    prpc_functions_t functions; /* what this broker serves */
    uint8_t key[PRPC_AUTH_KEY_LEN];
    int has_key;
    char advertise[300];
    prpc_nodes_t *nodes; /* the brokers this one knows */
    int64_t lease_ms;
    int heartbeat_ms;
    int max_attempts;
    size_t max_body;
    int max_leases_per_worker;
    int max_depth;
    int64_t last_expire_ms;
    int64_t expire_ms;          /* retention of finished calls; < 0 = forever */
    int64_t last_retention_ms;
    int64_t retention_every_ms; /* short retentions are enforced promptly */
    h2o_linklist_t call_waiters;
    h2o_linklist_t lease_waiters;
    h2o_linklist_t batch_waiters; /* POST /v1/calls/wait */
    h2o_linklist_t followers;     /* GET ?follow= answers of blobs still arriving */
    int follow_tails;             /* followers holding a chunk copy (BROKER_FOLLOW_TAILS) */
    arriving_outputs_t arriving[BROKER_ARRIVING_MAX];
    int64_t upload_stall_ms;      /* a follower with nothing new this long is cut off */
    pthread_t blob_thread;
    int blob_thread_started;
    pthread_mutex_t blob_mu;
    pthread_cond_t blob_cv; /* a job was queued or finished, or blob_quit */
    h2o_linklist_t blob_queue, blob_done;
    h2o_linklist_t blob_deferred; /* chunks that came before the chunk they continue */
    int ndeferred;
    int blob_flush; /* the broker stops: chunks set aside are answered now */
    int blob_quit;
    int blob_busy; /* the blob thread is doing a job */
    /* Held by the blob thread for a commit and by the loop while it decides on
     * and removes blobs, so a blob committed again (its added time refreshed)
     * is never removed on the strength of its old time. */
    pthread_mutex_t blob_gc_mu;
    struct {
        uint64_t requests;
        uint64_t bytes_received; /* blob chunk bytes accepted */
        uint64_t chunks_received;
        uint64_t chunks_refused;
        uint64_t blobs_committed;
        uint64_t bytes_served;   /* blob bytes sent by verified GETs */
        uint64_t bytes_followed; /* blob bytes sent while their upload was still arriving */
        uint64_t bytes_followed_from_memory; /* ...of them, sent from the chunk as it arrived */
        uint64_t corrupt_blobs_dropped;
        uint64_t calls_submitted;
        uint64_t leases_granted;
        uint64_t results_accepted;
        uint64_t results_refused;
        uint64_t auth_refused;
    } metrics;
    prpc_nonce_cache_t *nonces; /* replay protection, when there is a key */
    /* Leases recently granted per request id: a worker that lost the answer
     * asks again with the same id and gets the same lease, instead of the call
     * waiting for a lease nobody holds to lapse. */
    struct granted {
        char request[33];
        char call_id[PRPC_CALL_ID_HEX + 1];
        char lease_id[PRPC_LEASE_ID_HEX + 1];
    } granted[GRANTED_MAX];
    size_t granted_next;
};

/* ---- small helpers ---------------------------------------------------- */

static int status_of(int code)
{
    switch (code) {
    case PRPC_EINVAL:
    case PRPC_ECORRUPT:
        return 400;
    case PRPC_EAUTH:
        return 401;
    case PRPC_ENOTFOUND:
        return 404;
    case PRPC_ESTATE:
    case PRPC_EVERSION:
    case PRPC_EEXIST:
        return 409;
    case PRPC_ELIMIT:
        return 413; /* a body or batch too big (lease limits answer 429) */
    case PRPC_ENOSPC:
        return 507;
    default:
        return 500;
    }
}

static void send_err(h2o_req_t *req, const prpc_error_t *err)
{
    prpc_httpd_send_error(req, status_of(err->code), err->code, "%s", err->message);
}

static void send_buf(h2o_req_t *req, int status, prpc_buf_t *b)
{
    prpc_error_t err;
    size_t len = 0;
    char *text = prpc_buf_take(b, &len, &err);
    if (text == NULL) {
        send_err(req, &err);
        return;
    }
    prpc_httpd_send_json(req, status, text, len);
    free(text);
}

static const prpc_fn_t *find_fn(const prpc_broker_t *b, const char *name)
{
    return prpc_functions_find(&b->functions, name);
}

/* A blob is held when its verified file is in place AND the store knows it.
 * The file is renamed into place before its store row is written, so a crash
 * or a failed store write between the two leaves a file without a row: add
 * the row here (idempotent) rather than refuse the blob forever. */
static int blob_held(prpc_broker_t *b, const char *sha, uint64_t *size)
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
static int holds_blob(void *ud, const char *sha, uint64_t size)
{
    uint64_t held = 0;
    return blob_held((prpc_broker_t *)ud, sha, &held) && held == size;
}

/* A call's file argument is accepted while its upload is still arriving
 * (cut-through): its worker follows the upload (GET ?follow=). The blob is
 * recorded with the size the call gives, as the call's reference to it needs
 * (and retention then keeps the partial file while the call lives); the
 * commit checks the upload against that size. Results and checkpoints name
 * only held blobs. */
static int holds_or_receives_blob(void *ud, const char *sha, uint64_t size)
{
    prpc_broker_t *b = ud;
    uint64_t partial = 0;
    if (holds_blob(b, sha, size))
        return 1;
    return prpc_blobdir_partial(b->blobs, sha, &partial, NULL) == 0 && partial > 0 &&
           partial <= size && prpc_store_blob_add(b->store, sha, size, prpc_now_ms(), NULL) == 0;
}

/* The deepest nesting of [ and { in a JSON text (strings skipped). */
static int json_depth(const char *p, size_t n)
{
    int depth = 0, deepest = 0, in_string = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > deepest)
                deepest = depth;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return deepest;
}

static bson_t *parse_body(prpc_broker_t *b, h2o_req_t *req, const char *what,
                          prpc_error_t *err)
{
    if (req->entity.len <= b->max_body) {
        int depth = json_depth(req->entity.base, req->entity.len);
        if (depth > b->max_depth) {
            prpc_error_set(err, PRPC_ELIMIT,
                           "%s: JSON nested %d deep; the limit is %d (--max-depth)", what, depth,
                           b->max_depth);
            return NULL;
        }
    }
    return prpc_json_parse_max(req->entity.base, req->entity.len, b->max_body, "--max-body",
                               what, err);
}

/* ---- call records ----------------------------------------------------- */

static void arriving_drop(prpc_broker_t *b, const char *call_id)
{
    for (int i = 0; i < BROKER_ARRIVING_MAX; i++) {
        arriving_outputs_t *a = &b->arriving[i];
        if (a->call_id[0] != '\0' && (call_id == NULL || strcmp(a->call_id, call_id) == 0)) {
            free(a->outputs_json);
            memset(a, 0, sizeof(*a));
        }
    }
}

/* The outputs announced for c's current lease, or NULL. */
static const char *arriving_for(const prpc_broker_t *b, const prpc_call_t *c)
{
    if (c->state != PRPC_CALL_LEASED)
        return NULL;
    for (int i = 0; i < BROKER_ARRIVING_MAX; i++) {
        const arriving_outputs_t *a = &b->arriving[i];
        if (strcmp(a->call_id, c->id) == 0 && strcmp(a->lease_id, c->lease_id) == 0)
            return a->outputs_json;
    }
    return NULL;
}

/* Takes outputs_json. Replaces what call_id had; else takes a free slot, else
 * the oldest announcement (a hint lost costs only its head start). */
static void arriving_put(prpc_broker_t *b, const char *call_id, const char *lease_id,
                         char *outputs_json)
{
    arriving_outputs_t *slot = NULL;
    arriving_drop(b, call_id);
    for (int i = 0; i < BROKER_ARRIVING_MAX; i++) {
        arriving_outputs_t *a = &b->arriving[i];
        if (a->call_id[0] == '\0') {
            slot = a;
            break;
        }
        if (slot == NULL || a->at_ms < slot->at_ms)
            slot = a;
    }
    free(slot->outputs_json);
    snprintf(slot->call_id, sizeof(slot->call_id), "%s", call_id);
    snprintf(slot->lease_id, sizeof(slot->lease_id), "%s", lease_id);
    slot->outputs_json = outputs_json;
    slot->at_ms = prpc_now_ms();
}

static void write_call_arriving(prpc_buf_t *out, const prpc_call_t *c, int with_args,
                                const char *arriving)
{
    prpc_buf_printf(out,
                    "{\"id\": \"%s\", \"function\": ", c->id);
    prpc_buf_json_str(out, c->function, strlen(c->function));
    prpc_buf_printf(out,
                    ", \"version\": \"%s\", \"state\": \"%s\", \"progress\": %.3f, "
                    "\"attempts\": %d, \"created_ms\": %lld, \"updated_ms\": %lld, "
                    "\"finished_ms\": %lld, \"terminate_requested\": %s, \"outputs\": %s, "
                    "\"error\": %s",
                    c->version, prpc_call_state_name(c->state), c->progress, c->attempts,
                    (long long)c->created_ms, (long long)c->updated_ms, (long long)c->finished_ms,
                    c->terminate_requested ? "true" : "false",
                    c->outputs_json ? c->outputs_json : "null",
                    c->error_json ? c->error_json : "null");
    if (with_args)
        prpc_buf_printf(out, ", \"args\": %s", c->args_json ? c->args_json : "[]");
    if (arriving != NULL)
        prpc_buf_printf(out, ", \"arriving_outputs\": %s", arriving);
    prpc_buf_puts(out, "}");
}

static void write_call(prpc_buf_t *out, const prpc_call_t *c, int with_args)
{
    write_call_arriving(out, c, with_args, NULL);
}

static void send_call_arriving(h2o_req_t *req, const prpc_call_t *c, const char *prefix,
                               const char *arriving)
{
    prpc_buf_t out = PRPC_BUF_INIT;
    prpc_buf_printf(&out, "{%s\"call\": ", prefix ? prefix : "");
    write_call_arriving(&out, c, 0, arriving);
    prpc_buf_puts(&out, "}");
    send_buf(req, 200, &out);
}

static void send_call(h2o_req_t *req, const prpc_call_t *c, const char *prefix)
{
    send_call_arriving(req, c, prefix, NULL);
}

/* ---- waiters ---------------------------------------------------------- */

static void call_waiter_dispose(void *p)
{
    call_waiter_t *w = p;
    if (h2o_linklist_is_linked(&w->link))
        h2o_linklist_unlink(&w->link);
}

static void batch_waiter_dispose(void *p)
{
    batch_waiter_t *w = p;
    if (h2o_linklist_is_linked(&w->link))
        h2o_linklist_unlink(&w->link);
}

static void lease_waiter_dispose(void *p)
{
    lease_waiter_t *w = p;
    if (h2o_linklist_is_linked(&w->link))
        h2o_linklist_unlink(&w->link);
}

/* Answer every parked reader of call id (all calls when id is NULL) whose
 * view is out of date. */
static void notify_batches(prpc_broker_t *b, const char *id, int64_t now);

static void notify_calls(prpc_broker_t *b, const char *id, int force_all)
{
    h2o_linklist_t *node = b->call_waiters.next;
    /* Batch reads care about one call at a time; the periodic sweeps (id NULL)
     * that concern them call notify_batches themselves. */
    if (id != NULL)
        notify_batches(b, id, 0);
    while (node != &b->call_waiters) {
        call_waiter_t *w = H2O_STRUCT_FROM_MEMBER(call_waiter_t, link, node);
        prpc_call_t c;
        prpc_error_t err;
        int rc;
        node = node->next;
        if (id != NULL && strcmp(w->id, id) != 0)
            continue;
        memset(&c, 0, sizeof(c));
        rc = prpc_store_call_get(b->store, w->id, &c, &err);
        if (rc == 0 && !force_all && !prpc_call_state_is_terminal(c.state) &&
            (w->until_end ? w->since != INT64_MIN : c.updated_ms == w->since)) {
            prpc_call_cleanup(&c);
            continue;
        }
        h2o_linklist_unlink(&w->link);
        if (rc != 0)
            send_err(w->req, &err);
        else if (w->until_end)
            send_call(w->req, &c, w->created ? "\"created\": true, " : "\"created\": false, ");
        else
            send_call_arriving(w->req, &c, NULL, arriving_for(b, &c));
        prpc_call_cleanup(&c);
    }
}

/* Answer a batch read if one of its calls is terminal or gone (or always,
 * when force). Returns 1 when it answered. */
static int answer_batch(prpc_broker_t *b, h2o_req_t *req, char (*ids)[PRPC_CALL_ID_HEX + 1],
                        size_t n, int force)
{
    prpc_buf_t calls = PRPC_BUF_INIT, missing = PRPC_BUF_INIT, out = PRPC_BUF_INIT;
    size_t ncalls = 0, nmissing = 0;
    prpc_error_t err;
    char *a, *m;
    int *states = malloc(n * sizeof(*states));
    /* One query for all the states; full records only for the calls that ended. */
    if (states == NULL || prpc_store_calls_states(b->store, (const char(*)[65])ids, n, states,
                                                  &err) != 0) {
        free(states);
        if (!force)
            return 0; /* asked again at the next change or tick */
        prpc_httpd_send_error(req, 500, PRPC_EIO, "reading the calls' states failed");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        prpc_call_t c;
        int rc;
        if (states[i] >= 0 && !prpc_call_state_is_terminal(states[i]))
            continue;
        memset(&c, 0, sizeof(c));
        rc = states[i] < 0 ? PRPC_ENOTFOUND : prpc_store_call_get(b->store, ids[i], &c, &err);
        if (rc == PRPC_ENOTFOUND) {
            prpc_buf_printf(&missing, "%s\"%s\"", nmissing++ ? ", " : "", ids[i]);
        } else if (rc == 0 && prpc_call_state_is_terminal(c.state)) {
            if (ncalls++)
                prpc_buf_puts(&calls, ", ");
            write_call(&calls, &c, 0);
        }
        prpc_call_cleanup(&c);
    }
    free(states);
    if (!force && ncalls == 0 && nmissing == 0) {
        prpc_buf_cleanup(&calls);
        prpc_buf_cleanup(&missing);
        return 0;
    }
    a = prpc_buf_take(&calls, NULL, &err);
    m = prpc_buf_take(&missing, NULL, &err);
    prpc_buf_printf(&out, "{\"calls\": [%s], \"missing\": [%s]}", a ? a : "", m ? m : "");
    free(a);
    free(m);
    send_buf(req, 200, &out);
    return 1;
}

static void notify_batches(prpc_broker_t *b, const char *id, int64_t now)
{
    h2o_linklist_t *node = b->batch_waiters.next;
    if (node == &b->batch_waiters)
        return;
    if (id != NULL && id[0] != '\0') {
        /* Batch reads wait for calls to end: a call that merely changed (was
         * leased, made progress) concerns none of them. One look here saves
         * every concerned waiter a look at all of its calls. */
        prpc_call_t c;
        prpc_error_t err;
        int ended;
        memset(&c, 0, sizeof(c));
        ended = prpc_store_call_get(b->store, id, &c, &err) != 0 ||
                prpc_call_state_is_terminal(c.state);
        prpc_call_cleanup(&c);
        if (!ended)
            return;
    }
    while (node != &b->batch_waiters) {
        batch_waiter_t *w = H2O_STRUCT_FROM_MEMBER(batch_waiter_t, link, node);
        int concerned = id == NULL || w->deadline_ms <= now;
        node = node->next;
        for (size_t i = 0; !concerned && i < w->n; i++)
            concerned = strcmp(w->ids[i], id) == 0;
        if (!concerned)
            continue;
        h2o_linklist_unlink(&w->link);
        if (!answer_batch(b, w->req, w->ids, w->n, w->deadline_ms <= now))
            h2o_linklist_insert(&b->batch_waiters, &w->link);
    }
}

/* A lease answer carries the call's checkpoints, so that a call leased again
 * resumes from what an earlier holder saved. Without them the function would
 * silently start over, so a failure to read them fails the answer: the lease
 * then lapses and is granted again. */
static int send_lease(prpc_broker_t *b, h2o_req_t *req, const prpc_call_t *c)
{
    prpc_buf_t out = PRPC_BUF_INIT;
    prpc_checkpoint_t *ck = calloc(PRPC_CHECKPOINTS_MAX, sizeof(*ck));
    prpc_error_t err;
    size_t n = 0;
    if (ck == NULL) {
        prpc_httpd_send_error(req, 500, PRPC_ENOMEM, "out of memory");
        return PRPC_ENOMEM;
    }
    if (prpc_store_checkpoints_list(b->store, c->id, ck, PRPC_CHECKPOINTS_MAX, &n, &err) != 0) {
        free(ck);
        send_err(req, &err);
        return err.code;
    }
    prpc_buf_printf(&out,
                    "{\"lease\": {\"id\": \"%s\", \"call_id\": \"%s\", \"deadline_ms\": %lld, "
                    "\"heartbeat_ms\": %d}, \"call\": ",
                    c->lease_id, c->id, (long long)c->lease_deadline_ms, b->heartbeat_ms);
    write_call(&out, c, 1);
    prpc_buf_puts(&out, ", \"checkpoints\": [");
    for (size_t i = 0; i < n; i++)
        prpc_buf_printf(&out, "%s{\"key\": \"%s\", \"blob\": \"%s\", \"size\": %llu}",
                        i ? ", " : "", ck[i].key, ck[i].sha256, (unsigned long long)ck[i].size);
    prpc_buf_puts(&out, "]}");
    free(ck);
    send_buf(req, 200, &out);
    return 0;
}

/* A worker (by name) may hold at most max_leases_per_worker calls: one that
 * asks for more (a runaway or hostile one) is refused, not served. */
static int lease_limit_reached(prpc_broker_t *b, const char *worker, prpc_error_t *err)
{
    int64_t held = 0;
    if (prpc_store_leases_held(b->store, worker, &held, err) != 0)
        return 0; /* the lease attempt reports store trouble itself */
    if (held < b->max_leases_per_worker)
        return 0;
    prpc_error_set(err, PRPC_ELIMIT,
                   "worker %s already holds %lld leases; the limit is %d "
                   "(--max-leases-per-worker)",
                   worker, (long long)held, b->max_leases_per_worker);
    return 1;
}

/* Hand queued calls to parked workers, oldest waiter first. */
static void dispatch_leases(prpc_broker_t *b)
{
    h2o_linklist_t *node = b->lease_waiters.next;
    while (node != &b->lease_waiters) {
        lease_waiter_t *w = H2O_STRUCT_FROM_MEMBER(lease_waiter_t, link, node);
        prpc_call_t c;
        prpc_error_t err;
        int rc;
        node = node->next;
        memset(&c, 0, sizeof(c));
        if (lease_limit_reached(b, w->worker, &err)) {
            h2o_linklist_unlink(&w->link);
            prpc_httpd_send_error(w->req, 429, err.code, "%s", err.message);
            continue;
        }
        rc = prpc_store_lease_next(b->store, w->functions, w->versions, w->n, w->worker,
                                   b->lease_ms, prpc_now_ms(), &c, &err);
        if (rc == PRPC_ENOTFOUND)
            continue;
        h2o_linklist_unlink(&w->link);
        if (rc != 0) {
            send_err(w->req, &err);
        } else {
            b->metrics.leases_granted++;
            if (w->request[0] != '\0') {
                struct granted *g = &b->granted[b->granted_next++ % GRANTED_MAX];
                memcpy(g->request, w->request, sizeof(g->request));
                memcpy(g->call_id, c.id, sizeof(g->call_id));
                memcpy(g->lease_id, c.lease_id, sizeof(g->lease_id));
            }
            send_lease(b, w->req, &c);
        }
        prpc_call_cleanup(&c);
        /* The state of the leased call changed: readers learn it. */
        if (rc == 0)
            notify_calls(b, c.id, 0);
    }
}

/* ---- handlers --------------------------------------------------------- */

static int64_t query_int(h2o_req_t *req, const char *name, int64_t dflt)
{
    const char *v = prpc_httpd_query(req, name);
    char *end = NULL;
    long long n;
    if (v == NULL)
        return dflt;
    n = strtoll(v, &end, 10);
    if (end == v || *end != '\0')
        return dflt;
    return n;
}

/* Submit decoded calls in one durable transaction and append each one's
 * answer ({"created", "call"}) to out. */
static int requeue_if_argument_missing(prpc_broker_t *b, prpc_submit_item_t *it);

static int submit_decoded(prpc_broker_t *b, prpc_submit_t *subs, size_t n, prpc_buf_t *out,
                          const char *const *errors, int *created0, int *state0,
                          prpc_error_t *err)
{
    prpc_call_t *calls = calloc(n ? n : 1, sizeof(*calls));
    prpc_submit_item_t *items = calloc(n ? n : 1, sizeof(*items));
    size_t k = 0, created = 0, requeued = 0;
    int rc = 0;
    if (calls == NULL || items == NULL) {
        rc = prpc_error_set(err, PRPC_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (errors != NULL && errors[i] != NULL)
            continue;
        memcpy(calls[k].id, subs[i].id, sizeof(calls[k].id));
        snprintf(calls[k].function, sizeof(calls[k].function), "%s", subs[i].fn->name);
        snprintf(calls[k].version, sizeof(calls[k].version), "%s", subs[i].fn->version);
        calls[k].state = PRPC_CALL_QUEUED;
        calls[k].args_json = subs[i].args_json; /* borrowed */
        items[k].call = &calls[k];
        items[k].blobs = (const char(*)[PRPC_CALL_ID_HEX + 1])subs[i].blobs;
        items[k].nblobs = subs[i].nblobs;
        k++;
    }
    rc = prpc_store_call_submit_many(b->store, items, k, prpc_now_ms(), err);
    if (rc != 0)
        goto out;
    for (size_t i = 0; i < k; i++)
        requeued += (size_t)requeue_if_argument_missing(b, &items[i]);
    k = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            prpc_buf_puts(out, ", ");
        if (errors != NULL && errors[i] != NULL) {
            prpc_buf_puts(out, errors[i]);
            continue;
        }
        prpc_buf_printf(out, "{\"created\": %s, \"call\": ",
                        items[k].created ? "true" : "false");
        if (k == 0 && created0 != NULL)
            *created0 = items[k].created;
        if (k == 0 && state0 != NULL)
            *state0 = items[k].current.state;
        write_call(out, &items[k].current, 0);
        prpc_buf_puts(out, "}");
        created += (size_t)items[k].created;
        prpc_call_cleanup(&items[k].current);
        k++;
    }
    b->metrics.calls_submitted += created;
    if (created + requeued > 0)
        dispatch_leases(b);
out:
    free(calls);
    free(items);
    return rc;
}

/* POST /v1/calls[?wait_ms=N]: with wait_ms the answer comes when the call
 * ends (or after wait_ms, with the record as it is then), so a caller that
 * wants the result at once pays one round trip, not a submit and a read. */
static void on_submit(prpc_broker_t *b, h2o_req_t *req)
{
    prpc_error_t err;
    bson_t *doc = parse_body(b, req, "submit", &err);
    prpc_submit_t sub;
    prpc_buf_t out = PRPC_BUF_INIT;
    int64_t wait_ms = query_int(req, "wait_ms", 0);
    int created = 0, state = PRPC_CALL_QUEUED;

    memset(&sub, 0, sizeof(sub));
    if (doc == NULL ||
        prpc_wire_decode_submit(&b->functions, doc, holds_or_receives_blob, b, &sub, &err) != 0 ||
        submit_decoded(b, &sub, 1, &out, NULL, &created, &state, &err) != 0) {
        prpc_buf_cleanup(&out);
        send_err(req, &err);
    } else if (wait_ms > 0 && !prpc_call_state_is_terminal(state)) {
        call_waiter_t *w = h2o_mem_alloc_shared(&req->pool, sizeof(*w), call_waiter_dispose);
        prpc_buf_cleanup(&out);
        memset(w, 0, sizeof(*w));
        w->req = req;
        memcpy(w->id, sub.id, sizeof(w->id));
        w->until_end = 1;
        w->created = created;
        w->deadline_ms =
            prpc_now_ms() + (wait_ms > PRPC_BROKER_WAIT_MAX_MS ? PRPC_BROKER_WAIT_MAX_MS : wait_ms);
        h2o_linklist_insert(&b->call_waiters, &w->link);
    } else {
        /* One call: its answer object is the whole body. */
        send_buf(req, 200, &out);
    }
    prpc_submit_cleanup(&sub);
    if (doc != NULL)
        bson_destroy(doc);
}

/* POST /v1/calls/batch: many submits, one durable transaction. A call that
 * does not decode gets its own error entry; the others are stored. */
static void on_submit_batch(prpc_broker_t *b, h2o_req_t *req)
{
    prpc_error_t err;
    bson_t *doc = parse_body(b, req, "batch submit", &err);
    bson_iter_t it, arr;
    prpc_submit_t *subs = NULL;
    char **errors = NULL;
    size_t n = 0, i = 0;
    prpc_buf_t out = PRPC_BUF_INIT;

    if (doc == NULL)
        goto fail;
    if (!bson_iter_init_find(&it, doc, "calls") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr)) {
        prpc_error_set(&err, PRPC_EINVAL, "a batch submit needs \"calls\": [submit, ...]");
        goto fail;
    }
    while (bson_iter_next(&arr))
        n++;
    if (n == 0 || n > PRPC_BROKER_BATCH_MAX) {
        prpc_error_set(&err, PRPC_ELIMIT, "a batch holds 1 to %d calls, got %zu",
                       PRPC_BROKER_BATCH_MAX, n);
        goto fail;
    }
    subs = calloc(n, sizeof(*subs));
    errors = calloc(n, sizeof(*errors));
    if (subs == NULL || errors == NULL) {
        prpc_error_set(&err, PRPC_ENOMEM, "out of memory");
        goto fail;
    }
    bson_iter_recurse(&it, &arr);
    while (bson_iter_next(&arr)) {
        bson_t one;
        const uint8_t *data = NULL;
        uint32_t len = 0;
        prpc_error_t e;
        int rc = PRPC_EINVAL;
        prpc_error_set(&e, PRPC_EINVAL, "call %zu of the batch is not an object", i);
        if (BSON_ITER_HOLDS_DOCUMENT(&arr)) {
            bson_iter_document(&arr, &len, &data);
            if (bson_init_static(&one, data, len))
                rc = prpc_wire_decode_submit(&b->functions, &one, holds_or_receives_blob, b,
                                             &subs[i], &e);
        }
        if (rc != 0) {
            prpc_buf_t eb = PRPC_BUF_INIT;
            prpc_buf_printf(&eb, "{\"error\": {\"code\": \"%s\", \"message\": ",
                            prpc_strerror(e.code));
            prpc_buf_json_str(&eb, e.message, strlen(e.message));
            prpc_buf_puts(&eb, "}}");
            errors[i] = prpc_buf_take(&eb, NULL, NULL);
            if (errors[i] == NULL) {
                prpc_error_set(&err, PRPC_ENOMEM, "out of memory");
                goto fail;
            }
        }
        i++;
    }
    prpc_buf_puts(&out, "{\"results\": [");
    if (submit_decoded(b, subs, n, &out, (const char *const *)errors, NULL, NULL, &err) != 0)
        goto fail;
    prpc_buf_puts(&out, "]}");
    send_buf(req, 200, &out);
    goto out;
fail:
    prpc_buf_cleanup(&out);
    send_err(req, &err);
out:
    for (size_t k = 0; subs != NULL && k < n; k++)
        prpc_submit_cleanup(&subs[k]);
    for (size_t k = 0; errors != NULL && k < n; k++)
        free(errors[k]);
    free(subs);
    free(errors);
    if (doc != NULL)
        bson_destroy(doc);
}

/* POST /v1/calls/wait: {"ids": [...], "wait_ms": N} -> {"calls": [terminal
 * ones], "missing": [ids not stored]}, as soon as there is one, or after
 * wait_ms with whatever there is. */
static void on_wait(prpc_broker_t *b, h2o_req_t *req)
{
    prpc_error_t err;
    bson_t *doc = parse_body(b, req, "wait", &err);
    bson_iter_t it, arr;
    double wait = 0;
    size_t n = 0;
    batch_waiter_t *w;

    if (doc == NULL) {
        send_err(req, &err);
        return;
    }
    prpc_doc_num(doc, "wait_ms", &wait);
    if (!bson_iter_init_find(&it, doc, "ids") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr)) {
        prpc_httpd_send_error(req, 400, PRPC_EINVAL, "a wait needs \"ids\": [call id, ...]");
        goto out;
    }
    while (bson_iter_next(&arr))
        n++;
    if (n == 0 || n > PRPC_BROKER_BATCH_MAX) {
        prpc_httpd_send_error(req, 413, PRPC_ELIMIT, "a wait names 1 to %d calls, got %zu",
                              PRPC_BROKER_BATCH_MAX, n);
        goto out;
    }
    w = h2o_mem_alloc_shared(&req->pool, sizeof(*w), batch_waiter_dispose);
    memset(w, 0, sizeof(*w));
    w->req = req;
    w->ids = h2o_mem_alloc_pool(&req->pool, n * sizeof(*w->ids));
    bson_iter_recurse(&it, &arr);
    while (bson_iter_next(&arr)) {
        const char *id = BSON_ITER_HOLDS_UTF8(&arr) ? bson_iter_utf8(&arr, NULL) : NULL;
        if (!prpc_valid_hex(id, 64)) {
            prpc_httpd_send_error(req, 400, PRPC_EINVAL,
                                  "ids[%zu] of the wait is not a call id (64 hex)", w->n);
            goto out;
        }
        memcpy(w->ids[w->n++], id, 65);
    }
    w->deadline_ms = prpc_now_ms() + (wait > PRPC_BROKER_WAIT_MAX_MS ? PRPC_BROKER_WAIT_MAX_MS
                                      : wait > 0                    ? (int64_t)wait
                                                                    : 0);
    if (!answer_batch(b, req, w->ids, w->n, wait <= 0))
        h2o_linklist_insert(&b->batch_waiters, &w->link);
out:
    bson_destroy(doc);
}

static void on_get_call(prpc_broker_t *b, h2o_req_t *req, const char *id)
{
    prpc_error_t err;
    prpc_call_t c;
    int64_t wait_ms = query_int(req, "wait_ms", 0);
    int64_t since = query_int(req, "since", -1);
    int unseen;
    memset(&c, 0, sizeof(c));
    if (prpc_store_call_get(b->store, id, &c, &err) != 0) {
        send_err(req, &err);
        return;
    }
    /* arriving=0: the reader has not seen this lease's announced outputs yet;
     * they are news even though the record did not change. */
    unseen = arriving_for(b, &c) != NULL && query_int(req, "arriving", 1) == 0;
    if (wait_ms > 0 && since == c.updated_ms && !unseen &&
        !prpc_call_state_is_terminal(c.state)) {
        call_waiter_t *w = h2o_mem_alloc_shared(&req->pool, sizeof(*w), call_waiter_dispose);
        memset(w, 0, sizeof(*w));
        w->req = req;
        memcpy(w->id, c.id, sizeof(w->id));
        w->since = since;
        w->deadline_ms =
            prpc_now_ms() + (wait_ms > PRPC_BROKER_WAIT_MAX_MS ? PRPC_BROKER_WAIT_MAX_MS : wait_ms);
        h2o_linklist_insert(&b->call_waiters, &w->link);
    } else {
        send_call_arriving(req, &c, NULL, arriving_for(b, &c));
    }
    prpc_call_cleanup(&c);
}

static void reply_call(prpc_broker_t *b, h2o_req_t *req, const char *id)
{
    prpc_error_t err;
    prpc_call_t c;
    memset(&c, 0, sizeof(c));
    if (prpc_store_call_get(b->store, id, &c, &err) != 0)
        send_err(req, &err);
    else
        send_call(req, &c, NULL);
    prpc_call_cleanup(&c);
}

static void on_terminate(prpc_broker_t *b, h2o_req_t *req, const char *id)
{
    prpc_error_t err;
    int state = 0;
    if (prpc_store_call_terminate(b->store, id, prpc_now_ms(), &state, &err) != 0) {
        send_err(req, &err);
        return;
    }
    reply_call(b, req, id);
    notify_calls(b, id, 0);
}

/* The blobs of call id's checkpoints, read before an operation that drops
 * them (finish, restart, delete), so that drop_checkpoint_blobs can remove
 * them after. *out is malloc'd (free it), NULL when there are none. */
static size_t checkpoint_blobs(prpc_broker_t *b, const char *id, prpc_checkpoint_t **out)
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
static void drop_blob(prpc_broker_t *b, const char *sha)
{
    prpc_error_t err;
    pthread_mutex_lock(&b->blob_gc_mu);
    if (prpc_store_blob_remove(b->store, sha, &err) == 0)
        prpc_blobdir_remove(b->blobs, sha, &err);
    pthread_mutex_unlock(&b->blob_gc_mu);
}

static void drop_checkpoint_blobs(prpc_broker_t *b, prpc_checkpoint_t *ck, size_t n)
{
    for (size_t i = 0; i < n; i++)
        drop_blob(b, ck[i].sha256);
    free(ck);
}

/* Back to queued, from scratch: its checkpoints and their blobs go. */
static int restart_call(prpc_broker_t *b, const char *id, prpc_error_t *err)
{
    prpc_checkpoint_t *ck = NULL;
    size_t nck = checkpoint_blobs(b, id, &ck);
    int rc = prpc_store_call_restart(b->store, id, prpc_now_ms(), err);
    if (rc != 0) {
        free(ck);
        return rc;
    }
    drop_checkpoint_blobs(b, ck, nck);
    notify_calls(b, id, 0);
    return 0;
}

static void on_restart(prpc_broker_t *b, h2o_req_t *req, const char *id)
{
    prpc_error_t err;
    if (restart_call(b, id, &err) != 0) {
        send_err(req, &err);
        return;
    }
    reply_call(b, req, id);
    dispatch_leases(b);
}

/* A call that failed because a file argument never arrived whole (its upload
 * was abandoned: PRPC_ARGUMENT_MISSING) never ran. Submitted again, by a client
 * that has just uploaded or resumed that argument, it is queued again, and its
 * partial arguments count as written now, so the worker following them waits
 * for the resumed upload rather than finding it stopped. Any other ended call
 * stays as it is. 1 when it->current was queued again (and re-read). */
static int requeue_if_argument_missing(prpc_broker_t *b, prpc_submit_item_t *it)
{
    prpc_call_t *c = &it->current, fresh;
    prpc_error_t err;
    bson_error_t berr;
    bson_t *e;
    const char *type;
    int missing;
    if (it->created || c->state != PRPC_CALL_FAILED || c->error_json == NULL)
        return 0;
    if ((e = bson_new_from_json((const uint8_t *)c->error_json, -1, &berr)) == NULL)
        return 0;
    type = prpc_doc_str(e, "type");
    missing = type != NULL && strcmp(type, PRPC_ARGUMENT_MISSING) == 0;
    bson_destroy(e);
    if (!missing)
        return 0;
    for (size_t i = 0; i < it->nblobs; i++)
        prpc_blobdir_partial_touch(b->blobs, it->blobs[i], NULL);
    if (restart_call(b, c->id, &err) != 0 ||
        prpc_store_call_get(b->store, c->id, &fresh, &err) != 0) {
        fprintf(stderr, "p2prpc broker: call %s: queueing it again: %s\n", c->id, err.message);
        return 0;
    }
    prpc_call_cleanup(c);
    *c = fresh;
    return 1;
}

/* Remove blobs no call references that were added before older_than_ms
 * (uploads still waiting for their submit are younger than that). */
static void remove_unreferenced_blobs(prpc_broker_t *b, int64_t older_than_ms)
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

static void on_delete(prpc_broker_t *b, h2o_req_t *req, const char *id)
{
    prpc_error_t err;
    prpc_checkpoint_t *ck = NULL;
    size_t nck = checkpoint_blobs(b, id, &ck);
    int state = 0;
    /* A running call is told to stop first, as the seed's delete did. */
    if (prpc_store_call_terminate(b->store, id, prpc_now_ms(), &state, &err) != 0 ||
        prpc_store_call_delete(b->store, id, &err) != 0) {
        free(ck);
        send_err(req, &err);
        return;
    }
    drop_checkpoint_blobs(b, ck, nck);
    /* Blobs uploaded in the last minute may belong to a submit on its way. */
    remove_unreferenced_blobs(b, prpc_now_ms() - 60000);
    prpc_httpd_send_json(req, 200, "{\"deleted\": true}", 17);
    notify_calls(b, id, 1);
}

/* A retried lease request whose lease is still the call's current one gets
 * that lease again. Returns 1 when it answered. */
static int regrant(prpc_broker_t *b, h2o_req_t *req, const char *request)
{
    for (size_t i = 0; i < GRANTED_MAX; i++) {
        struct granted *g = &b->granted[i];
        prpc_call_t c;
        prpc_error_t err;
        int again;
        if (strcmp(g->request, request) != 0)
            continue;
        memset(&c, 0, sizeof(c));
        again = prpc_store_call_get(b->store, g->call_id, &c, &err) == 0 &&
                c.state == PRPC_CALL_LEASED && strcmp(c.lease_id, g->lease_id) == 0;
        if (again)
            send_lease(b, req, &c);
        prpc_call_cleanup(&c);
        return again;
    }
    return 0;
}

static void on_lease(prpc_broker_t *b, h2o_req_t *req)
{
    prpc_error_t err;
    bson_t *doc = parse_body(b, req, "lease request", &err);
    bson_iter_t it, arr, field;
    const char *worker, *request;
    double wait = 0;
    lease_waiter_t *w;
    size_t n = 0;

    if (doc == NULL) {
        send_err(req, &err);
        return;
    }
    worker = prpc_doc_str(doc, "worker");
    prpc_doc_num(doc, "wait_ms", &wait);
    if (worker == NULL || worker[0] == '\0' || strlen(worker) > PRPC_STORE_NAME_MAX ||
        !bson_iter_init_find(&it, doc, "functions") || !BSON_ITER_HOLDS_ARRAY(&it)) {
        prpc_httpd_send_error(req, 400, PRPC_EINVAL,
                              "a lease request needs \"worker\" (a name) and \"functions\"");
        goto out;
    }
    request = prpc_httpd_query(req, "request");
    if (request != NULL && !prpc_valid_hex(request, 32)) {
        prpc_httpd_send_error(req, 400, PRPC_EINVAL,
                              "a lease request id (?request=) is 32 lowercase hex digits");
        goto out;
    }
    if (request != NULL && regrant(b, req, request))
        goto out;
    w = h2o_mem_alloc_shared(&req->pool, sizeof(*w), lease_waiter_dispose);
    memset(w, 0, sizeof(*w));
    w->req = req;
    if (request != NULL)
        memcpy(w->request, request, sizeof(w->request));
    snprintf(w->worker, sizeof(w->worker), "%s", worker);
    bson_iter_recurse(&it, &arr);
    while (bson_iter_next(&arr))
        n++;
    if (n == 0 || n > PRPC_STORE_LEASE_FUNCTIONS_MAX) {
        prpc_httpd_send_error(req, 400, PRPC_EINVAL, "a lease request names 1 to %d functions",
                              PRPC_STORE_LEASE_FUNCTIONS_MAX);
        goto out;
    }
    w->functions = h2o_mem_alloc_pool(&req->pool, n * sizeof(char *));
    w->versions = h2o_mem_alloc_pool(&req->pool, n * sizeof(char *));
    bson_iter_recurse(&it, &arr);
    while (bson_iter_next(&arr)) {
        const char *name = NULL, *version = NULL;
        const prpc_fn_t *f;
        if (BSON_ITER_HOLDS_DOCUMENT(&arr) && bson_iter_recurse(&arr, &field))
            while (bson_iter_next(&field)) {
                if (strcmp(bson_iter_key(&field), "name") == 0)
                    name = (BSON_ITER_HOLDS_UTF8(&field) ? bson_iter_utf8(&field, NULL) : NULL);
                else if (strcmp(bson_iter_key(&field), "version") == 0)
                    version = (BSON_ITER_HOLDS_UTF8(&field) ? bson_iter_utf8(&field, NULL) : NULL);
            }
        if (name == NULL || version == NULL) {
            prpc_httpd_send_error(req, 400, PRPC_EINVAL,
                                  "each function of a lease request needs a name and a version");
            goto out;
        }
        f = find_fn(b, name);
        if (f != NULL && strcmp(f->version, version) != 0) {
            prpc_httpd_send_error(req, 409, PRPC_EVERSION,
                                  "function %s: the worker has version %.64s but the broker has "
                                  "version %s; deploy the same function source everywhere",
                                  f->name, version, f->version);
            goto out;
        }
        w->functions[w->n] = h2o_strdup(&req->pool, name, SIZE_MAX).base;
        w->versions[w->n] = h2o_strdup(&req->pool, version, SIZE_MAX).base;
        w->n++;
    }
    w->deadline_ms = prpc_now_ms() + (wait > PRPC_BROKER_WAIT_MAX_MS ? PRPC_BROKER_WAIT_MAX_MS
                                      : wait > 0                    ? (int64_t)wait
                                                                    : 0);
    /* Park first, then dispatch: one path hands out work, waiting or not. */
    h2o_linklist_insert(&b->lease_waiters, &w->link);
    dispatch_leases(b);
    if (h2o_linklist_is_linked(&w->link) && wait <= 0) {
        h2o_linklist_unlink(&w->link);
        prpc_httpd_send_json(req, 204, "", 0);
    }
out:
    bson_destroy(doc);
}

static void on_heartbeat(prpc_broker_t *b, h2o_req_t *req, const char *lease)
{
    prpc_error_t err;
    bson_t *doc = parse_body(b, req, "heartbeat", &err);
    const char *call_id;
    double progress = 0;
    int terminate = 0;
    char body[160];
    int n;
    if (doc == NULL) {
        send_err(req, &err);
        return;
    }
    call_id = prpc_doc_str(doc, "call_id");
    if (!prpc_valid_hex(call_id, 64) || !prpc_doc_num(doc, "progress", &progress) ||
        progress != progress || progress < 0 || progress > 100) {
        prpc_httpd_send_error(req, 400, PRPC_EINVAL,
                              "a heartbeat needs \"call_id\" (64 hex) and \"progress\" (0..100)");
        goto out;
    }
    if (prpc_store_lease_renew(b->store, call_id, lease, progress, b->lease_ms, prpc_now_ms(),
                               &terminate, &err) != 0) {
        send_err(req, &err);
        goto out;
    }
    n = snprintf(body, sizeof(body), "{\"terminate\": %s, \"deadline_ms\": %lld}",
                 terminate ? "true" : "false", (long long)(prpc_now_ms() + b->lease_ms));
    prpc_httpd_send_json(req, 200, body, (size_t)n);
    notify_calls(b, call_id, 0);
out:
    bson_destroy(doc);
}

/* Answer the GET readers of call id parked on its record: its announced
 * outputs are news although the record itself did not change. */
static void notify_arriving(prpc_broker_t *b, const char *id)
{
    h2o_linklist_t *node = b->call_waiters.next;
    while (node != &b->call_waiters) {
        call_waiter_t *w = H2O_STRUCT_FROM_MEMBER(call_waiter_t, link, node);
        prpc_call_t c;
        prpc_error_t err;
        node = node->next;
        if (w->until_end || strcmp(w->id, id) != 0)
            continue;
        memset(&c, 0, sizeof(c));
        if (prpc_store_call_get(b->store, w->id, &c, &err) != 0) {
            prpc_call_cleanup(&c);
            continue; /* answered at the next change or its deadline */
        }
        h2o_linklist_unlink(&w->link);
        send_call_arriving(w->req, &c, NULL, arriving_for(b, &c));
        prpc_call_cleanup(&c);
    }
}

/* POST /v1/leases/{lease}/outputs: {"call_id", "outputs": [typed...]}. The
 * worker's outputs, announced once each file output's first chunk is on the
 * broker: readers of the call see them as "arriving_outputs" and download
 * each file following its upload (GET ?follow=), so the result's upload and
 * its download overlap. The call stays leased: only the result ends it, and a
 * lease that lapses (the worker died mid-upload) drops the announcement with
 * it. */
static void on_outputs(prpc_broker_t *b, h2o_req_t *req, const char *lease)
{
    prpc_error_t err;
    bson_t *doc = parse_body(b, req, "outputs", &err);
    bson_iter_t it;
    const char *call_id;
    const prpc_fn_t *f;
    prpc_call_t c;
    prpc_buf_t outputs = PRPC_BUF_INIT;
    char *outputs_json = NULL;
    char (*blobs)[65] = NULL;
    size_t nblobs = 0, outputs_len = 0;
    char body[128];
    int n;

    memset(&c, 0, sizeof(c));
    if (doc == NULL)
        goto fail;
    call_id = prpc_doc_str(doc, "call_id");
    if (!prpc_valid_hex(call_id, 64) || !bson_iter_init_find(&it, doc, "outputs")) {
        prpc_error_set(&err, PRPC_EINVAL,
                       "announced outputs need \"call_id\" (64 hex) and \"outputs\"");
        goto fail;
    }
    if (prpc_store_call_get(b->store, call_id, &c, &err) != 0)
        goto fail;
    if (c.state != PRPC_CALL_LEASED || strcmp(c.lease_id, lease) != 0) {
        prpc_error_set(&err, PRPC_ESTATE, "call %s is not leased under lease %s (it is %s)",
                       call_id, lease, prpc_call_state_name(c.state));
        goto fail;
    }
    if ((f = find_fn(b, c.function)) == NULL) {
        prpc_error_set(&err, PRPC_ENOTFOUND, "function %s is no longer registered", c.function);
        goto fail;
    }
    if ((blobs = calloc(f->nreturns + 1, sizeof(*blobs))) == NULL) {
        prpc_error_set(&err, PRPC_ENOMEM, "out of memory");
        goto fail;
    }
    if (prpc_wire_check_typed(f, f->returns, f->nreturns, "outputs", &it, holds_or_receives_blob,
                              b, NULL, &outputs, blobs, &nblobs, &err) != 0)
        goto fail;
    if ((outputs_json = prpc_buf_take(&outputs, &outputs_len, &err)) == NULL)
        goto fail;
    if (outputs_len > BROKER_ARRIVING_JSON_MAX) {
        prpc_error_set(&err, PRPC_ELIMIT,
                       "announced outputs of %zu bytes exceed the %d kept: the result will "
                       "bring them",
                       outputs_len, BROKER_ARRIVING_JSON_MAX);
        free(outputs_json);
        goto fail;
    }
    arriving_put(b, call_id, lease, outputs_json);
    n = snprintf(body, sizeof(body), "{\"call_id\": \"%s\"}", call_id);
    prpc_httpd_send_json(req, 200, body, (size_t)n);
    notify_arriving(b, call_id);
    goto out;
fail:
    send_err(req, &err);
out:
    prpc_call_cleanup(&c);
    prpc_buf_cleanup(&outputs);
    free(blobs);
    if (doc != NULL)
        bson_destroy(doc);
}

static void on_result(prpc_broker_t *b, h2o_req_t *req, const char *lease)
{
    prpc_error_t err;
    bson_t *doc = parse_body(b, req, "result", &err);
    bson_iter_t it;
    const char *call_id, *state_s;
    prpc_call_t c;
    const prpc_fn_t *f;
    prpc_buf_t outputs = PRPC_BUF_INIT, error = PRPC_BUF_INIT;
    char *outputs_json = NULL, *error_json = NULL;
    char (*blobs)[65] = NULL;
    prpc_checkpoint_t *ck = NULL;
    size_t nblobs = 0, nck = 0;
    int state;

    memset(&c, 0, sizeof(c));
    if (doc == NULL)
        goto fail;
    call_id = prpc_doc_str(doc, "call_id");
    state_s = prpc_doc_str(doc, "state");
    if (!prpc_valid_hex(call_id, 64) || state_s == NULL) {
        prpc_error_set(&err, PRPC_EINVAL, "a result needs \"call_id\" (64 hex) and \"state\"");
        goto fail;
    }
    if (strcmp(state_s, "done") == 0)
        state = PRPC_CALL_DONE;
    else if (strcmp(state_s, "failed") == 0)
        state = PRPC_CALL_FAILED;
    else if (strcmp(state_s, "terminated") == 0)
        state = PRPC_CALL_TERMINATED;
    else {
        prpc_error_set(&err, PRPC_EINVAL, "result state must be done, failed or terminated");
        goto fail;
    }
    if (prpc_store_call_get(b->store, call_id, &c, &err) != 0)
        goto fail;
    f = find_fn(b, c.function);
    if (f == NULL) {
        prpc_error_set(&err, PRPC_ENOTFOUND, "function %s is no longer registered", c.function);
        goto fail;
    }
    if (state == PRPC_CALL_DONE) {
        blobs = calloc(f->nreturns + 1, sizeof(*blobs));
        if (blobs == NULL) {
            prpc_error_set(&err, PRPC_ENOMEM, "out of memory");
            goto fail;
        }
        if (!bson_iter_init_find(&it, doc, "outputs")) {
            prpc_error_set(&err, PRPC_EINVAL, "a done result needs \"outputs\"");
            goto fail;
        }
        if (prpc_wire_check_typed(f, f->returns, f->nreturns, "outputs", &it, holds_blob, b,
                                  NULL, &outputs, blobs, &nblobs, &err) != 0)
            goto fail;
        if ((outputs_json = prpc_buf_take(&outputs, NULL, &err)) == NULL)
            goto fail;
    } else {
        bson_t sub;
        const char *type = NULL, *message = NULL, *tb = NULL;
        if (bson_iter_init_find(&it, doc, "error") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            const uint8_t *data;
            uint32_t len;
            bson_iter_document(&it, &len, &data);
            if (bson_init_static(&sub, data, len)) {
                type = prpc_doc_str(&sub, "type");
                message = prpc_doc_str(&sub, "message");
                tb = prpc_doc_str(&sub, "traceback");
            }
        }
        prpc_buf_puts(&error, "{\"type\": ");
        prpc_buf_json_str(&error, type ? type : "Error", type ? strnlen(type, 256) : 5);
        prpc_buf_puts(&error, ", \"message\": ");
        prpc_buf_json_str(&error, message ? message : "", message ? strnlen(message, 65536) : 0);
        prpc_buf_puts(&error, ", \"traceback\": ");
        prpc_buf_json_str(&error, tb ? tb : "", tb ? strnlen(tb, 262144) : 0);
        prpc_buf_puts(&error, "}");
        if ((error_json = prpc_buf_take(&error, NULL, &err)) == NULL)
            goto fail;
    }
    for (size_t i = 0; i < nblobs; i++)
        if (prpc_store_blob_link(b->store, call_id, blobs[i], &err) != 0)
            goto fail;
    nck = checkpoint_blobs(b, call_id, &ck);
    if (prpc_store_call_finish(b->store, call_id, lease, state, outputs_json, error_json,
                               prpc_now_ms(), &err) != 0) {
        if (err.code == PRPC_ESTATE)
            b->metrics.results_refused++;
        goto fail;
    }
    /* A finished call never resumes: its checkpoints went with the finish. */
    drop_checkpoint_blobs(b, ck, nck);
    ck = NULL;
    b->metrics.results_accepted++;
    arriving_drop(b, call_id);
    prpc_call_cleanup(&c);
    /* Waiting clients first: they wait for this answer, the worker only for
     * its acknowledgement. */
    notify_calls(b, call_id, 0);
    reply_call(b, req, call_id);
    goto out;
fail:
    send_err(req, &err);
out:
    prpc_call_cleanup(&c);
    prpc_buf_cleanup(&outputs);
    prpc_buf_cleanup(&error);
    free(outputs_json);
    free(error_json);
    free(blobs);
    free(ck);
    if (doc != NULL)
        bson_destroy(doc);
}

/* POST /v1/leases/{lease}/checkpoints: {"call_id", "key", "blob", "size"}.
 * The blob was uploaded first; the store checks the lease and the key and
 * makes the save durable before the answer. A key saved again replaces its
 * earlier content, whose blob is removed when nothing else needs it. */
static void on_checkpoint(prpc_broker_t *b, h2o_req_t *req, const char *lease)
{
    prpc_error_t err;
    bson_t *doc = parse_body(b, req, "checkpoint", &err);
    const char *call_id, *key, *sha;
    char replaced[PRPC_CALL_ID_HEX + 1] = "";
    prpc_buf_t out = PRPC_BUF_INIT;
    double size = -1;

    if (doc == NULL) {
        send_err(req, &err);
        return;
    }
    call_id = prpc_doc_str(doc, "call_id");
    key = prpc_doc_str(doc, "key");
    sha = prpc_doc_str(doc, "blob");
    if (!prpc_valid_hex(call_id, 64) || key == NULL || !prpc_valid_hex(sha, 64) ||
        !prpc_doc_num(doc, "size", &size) || !(size >= 0 && size <= 9007199254740992.0) ||
        size != (double)(uint64_t)size) {
        prpc_httpd_send_error(req, 400, PRPC_EINVAL,
                              "a checkpoint needs \"call_id\" (64 hex), \"key\", \"blob\" (64 "
                              "hex) and \"size\" (bytes)");
        goto out;
    }
    if (!holds_blob(b, sha, (uint64_t)size)) {
        prpc_httpd_send_error(req, 404, PRPC_ENOTFOUND,
                              "checkpoint blob %s of %llu bytes is not on this broker: upload it "
                              "first",
                              sha, (unsigned long long)size);
        goto out;
    }
    if (prpc_store_checkpoint_put(b->store, call_id, lease, key, sha, (uint64_t)size,
                                  prpc_now_ms(), replaced, &err) != 0) {
        send_err(req, &err);
        goto out;
    }
    if (replaced[0] != '\0')
        drop_blob(b, replaced);
    prpc_buf_printf(&out, "{\"call_id\": \"%s\", \"key\": \"%s\", \"blob\": \"%s\", "
                          "\"size\": %llu}",
                    call_id, key, sha, (unsigned long long)size);
    send_buf(req, 200, &out);
out:
    bson_destroy(doc);
}

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

static void drop_corrupt_blob(prpc_broker_t *b, const char *sha, const char *why)
{
    prpc_error_t err;
    fprintf(stderr, "p2prpc broker: blob %s is corrupt on disk (%s); it was removed\n", sha,
            why);
    b->metrics.corrupt_blobs_dropped++;
    pthread_mutex_lock(&b->blob_gc_mu);
    prpc_blobdir_remove(b->blobs, sha, &err);
    pthread_mutex_unlock(&b->blob_gc_mu);
}

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
        drop_corrupt_blob(st->b, st->sha, "shorter than its recorded size");
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
            drop_corrupt_blob(st->b, st->sha, "its content no longer hashes to its name");
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
        drop_corrupt_blob(b, sha, "its size differs from the recorded size");
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
static void follow_expire(prpc_broker_t *b, int64_t now)
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
            send_err(req, &err);
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

/* ---- the blob thread -------------------------------------------------- */

/* An uploader keeps two chunks on the wire at once (httpc.c), on two
 * connections: the second may be whole here before the first. Rather than
 * refuse it (409, and the uploader starts over from the broker's copy), it
 * waits, its request parked, for the chunk it continues, a bounded time. With
 * blob_mu held; 1 when j was set aside. */
/* Milliseconds on the clock blob_cv waits by, which wall-clock steps do not move. */
static int64_t blob_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int blob_defer(prpc_broker_t *b, blob_job_t *j)
{
    uint64_t have = 0;
    if (j->req == NULL || j->kind != BLOB_CHUNK || j->deferred || b->blob_flush ||
        b->ndeferred >= BROKER_DEFERRED_MAX ||
        prpc_blobdir_partial(b->blobs, j->sha, &have, NULL) != 0 ||
        j->offset != have + PRPC_BLOB_UPLOAD_CHUNK)
        return 0; /* not the chunk right after a whole chunk still on its way */
    j->deferred = 1;
    j->defer_until_ms = blob_clock_ms() + BROKER_DEFER_MS;
    h2o_linklist_insert(&b->blob_deferred, &j->link);
    b->ndeferred++;
    pthread_cond_broadcast(&b->blob_cv); /* the queue changed: on_stop may be waiting */
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
    int64_t now = blob_clock_ms(), next = 0;
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
                j->held = blob_held(b, j->sha, &j->size);
                if (!j->held && prpc_blobdir_partial(b->blobs, j->sha, &j->partial, NULL) != 0)
                    j->partial = 0;
                j->rc = 0;
            } else if (j->kind == BLOB_FOLLOW) {
                /* Behind the chunks queued before it, like PARTIAL: the
                 * length it starts from is synced, and later chunks and the
                 * commit reach its followers in order. */
                j->held = blob_held(b, j->sha, NULL);
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
        follow_start(j->hold->b, j->req, j);
        return;
    }
    if (j->rc != 0) {
        send_err(j->req, &j->err);
        return;
    }
    if (j->kind == BLOB_COMMIT)
        n = snprintf(body, sizeof(body), "{\"size\": %llu}", (unsigned long long)j->size);
    else
        n = snprintf(body, sizeof(body), "{\"partial\": %llu}", (unsigned long long)j->partial);
    prpc_httpd_send_json(j->req, 200, body, (size_t)n);
}

/* On the loop thread: answer the jobs the blob thread finished. */
static void blob_answer_done(void *ud)
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
        follow_news(b, j); /* first: it may copy the chunk's body, valid until the answer */
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

static void on_blob(prpc_broker_t *b, h2o_req_t *req, const char *sha, const char *rest)
{
    prpc_error_t err;
    uint64_t size = 0;
    char path[PRPC_BLOB_PATH_MAX], body[96];
    int n;
    h2o_iovec_t m = req->method;
    blob_job_t *j;

    if (!prpc_blob_valid_sha(sha)) {
        prpc_httpd_send_error(req, 400, PRPC_EINVAL, "a blob is named by 64 lowercase hex digits");
        return;
    }
    if (rest[0] == '\0' && h2o_memis(m.base, m.len, H2O_STRLIT("HEAD"))) {
        if (blob_held(b, sha, &size)) {
            send_head(req, 1, size, 0);
            return;
        }
        if ((j = blob_job_new(req, BLOB_PARTIAL, sha)) != NULL)
            blob_enqueue(b, req, j);
        return;
    }
    if (rest[0] == '\0' && h2o_memis(m.base, m.len, H2O_STRLIT("GET"))) {
        int64_t follow = query_int(req, "follow", -1);
        if (prpc_httpd_query(req, "follow") != NULL && follow < 0) {
            prpc_httpd_send_error(req, 400, PRPC_EINVAL,
                                  "follow=SIZE needs the blob's size in bytes");
            return;
        }
        if (follow >= 0 && !blob_held(b, sha, NULL)) {
            /* The upload may still be arriving: the blob thread looks, in
             * order with its chunks. */
            if ((j = blob_job_new(req, BLOB_FOLLOW, sha)) != NULL) {
                j->size = (uint64_t)follow;
                blob_enqueue(b, req, j);
            }
            return;
        }
        if (prpc_blobdir_path(b->blobs, sha, path, &err) != 0) {
            send_err(req, &err);
            return;
        }
        serve_blob(b, req, sha, path, prpc_httpd_header(req, "range"));
        return;
    }
    if (rest[0] == '\0' && h2o_memis(m.base, m.len, H2O_STRLIT("PUT"))) {
        const char *chunk_sha = prpc_httpd_header(req, "x-p2prpc-chunk-sha256");
        int64_t offset = query_int(req, "offset", -1);
        if (offset < 0 || !prpc_blob_valid_sha(chunk_sha)) {
            prpc_httpd_send_error(req, 400, PRPC_EINVAL,
                                  "a chunk upload needs ?offset=N and the X-P2PRPC-Chunk-Sha256 "
                                  "header");
            return;
        }
        if (blob_held(b, sha, &size)) {
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
        return;
    }
    if (strcmp(rest, "/commit") == 0 && h2o_memis(m.base, m.len, H2O_STRLIT("POST"))) {
        int64_t want = query_int(req, "size", -1);
        if (want < 0) {
            prpc_httpd_send_error(req, 400, PRPC_EINVAL, "commit needs ?size=N");
            return;
        }
        if ((j = blob_job_new(req, BLOB_COMMIT, sha)) == NULL)
            return;
        j->size = (uint64_t)want;
        blob_enqueue(b, req, j);
        return;
    }
    prpc_httpd_send_error(req, 405, PRPC_EINVAL, "method not allowed on a blob");
}

static void on_stats(prpc_broker_t *b, h2o_req_t *req, const char *name)
{
    prpc_error_t err;
    int64_t counts[PRPC_CALL_NSTATES] = {0};
    prpc_buf_t out = PRPC_BUF_INIT;
    if (find_fn(b, name) == NULL) {
        prpc_httpd_send_error(req, 404, PRPC_ENOTFOUND, "function %.128s is not registered", name);
        return;
    }
    if (prpc_store_function_stats(b->store, name, counts, &err) != 0) {
        send_err(req, &err);
        return;
    }
    prpc_buf_puts(&out, "{\"function\": ");
    prpc_buf_json_str(&out, name, strlen(name));
    for (int i = 0; i < PRPC_CALL_NSTATES; i++)
        prpc_buf_printf(&out, ", \"%s\": %lld", prpc_call_state_name(i), (long long)counts[i]);
    prpc_buf_puts(&out, "}");
    send_buf(req, 200, &out);
}

static int authenticate(prpc_broker_t *b, h2o_req_t *req)
{
    prpc_error_t err;
    uint8_t digest[PRPC_SHA256_LEN];
    char body_hex[PRPC_SHA256_HEX_LEN + 1], method[16], *path;
    const char *time_s, *nonce, *chunk_sha;
    int64_t now;
    if (!b->has_key)
        return 0;
    chunk_sha = prpc_httpd_header(req, "x-p2prpc-chunk-sha256");
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("PUT")) &&
        prpc_valid_hex(chunk_sha, 64)) {
        /* A chunk upload is signed over its declared hash, and the chunk is
         * checked against that hash before it is written: a chunk damaged in
         * flight is then refused as corrupt (and sent again), not as a forgery,
         * and the 8 MiB are hashed once, not twice. */
        memcpy(body_hex, chunk_sha, sizeof(body_hex));
    } else {
        if (prpc_sha256(req->entity.base ? req->entity.base : "", req->entity.len, digest,
                        &err) != 0)
            return -1;
        prpc_hex_encode(digest, sizeof(digest), body_hex);
    }
    snprintf(method, sizeof(method), "%.*s", (int)req->method.len, req->method.base);
    path = h2o_strdup(&req->pool, req->path.base, req->path.len).base;
    time_s = prpc_httpd_header(req, "x-p2prpc-time");
    nonce = prpc_httpd_header(req, "x-p2prpc-nonce");
    now = prpc_now_ms();
    if (prpc_auth_verify(b->key, method, path, time_s, nonce, body_hex,
                         prpc_httpd_header(req, "x-p2prpc-signature"), now, &err) != 0 ||
        prpc_nonce_cache_add(b->nonces, nonce, strtoll(time_s, NULL, 10), now, &err) != 0) {
        b->metrics.auth_refused++;
        send_err(req, &err);
        return -1;
    }
    return 0;
}

static int route(void *ud, h2o_req_t *req)
{
    prpc_broker_t *b = ud;
    char path[512];
    const char *p, *m;
    size_t mlen = req->method.len;
    m = req->method.base;
#define METHOD(s) (mlen == sizeof(s) - 1 && memcmp(m, s, mlen) == 0)

    if (req->path_normalized.len >= sizeof(path)) {
        prpc_httpd_send_error(req, 414, PRPC_ELIMIT, "path too long");
        return 0;
    }
    memcpy(path, req->path_normalized.base, req->path_normalized.len);
    path[req->path_normalized.len] = '\0';
    if (strcmp(path, "/v1/health") == 0 && METHOD("GET")) {
        static const char ok[] = "{\"ok\": true, \"node\": \"broker\", \"version\": \"0.1.0\"}";
        prpc_httpd_send_json(req, 200, ok, sizeof(ok) - 1);
        return 0;
    }
    if (strncmp(path, "/v1/", 4) != 0) {
        prpc_httpd_send_error(req, 404, PRPC_ENOTFOUND, "no such route");
        return 0;
    }
    b->metrics.requests++;
    if (authenticate(b, req) != 0)
        return 0;
    p = path + 4;
    if (strcmp(p, "calls") == 0 && METHOD("POST")) {
        on_submit(b, req);
    } else if (strcmp(p, "calls/batch") == 0 && METHOD("POST")) {
        on_submit_batch(b, req);
    } else if (strcmp(p, "calls/wait") == 0 && METHOD("POST")) {
        on_wait(b, req);
    } else if (strncmp(p, "calls/", 6) == 0 && strlen(p) >= 6 + 64) {
        char id[65];
        const char *rest = p + 6 + 64;
        memcpy(id, p + 6, 64);
        id[64] = '\0';
        if (!prpc_valid_hex(id, 64))
            prpc_httpd_send_error(req, 400, PRPC_EINVAL, "a call id is 64 lowercase hex digits");
        else if (rest[0] == '\0' && METHOD("GET"))
            on_get_call(b, req, id);
        else if (rest[0] == '\0' && METHOD("DELETE"))
            on_delete(b, req, id);
        else if (strcmp(rest, "/terminate") == 0 && METHOD("POST"))
            on_terminate(b, req, id);
        else if (strcmp(rest, "/restart") == 0 && METHOD("POST"))
            on_restart(b, req, id);
        else
            prpc_httpd_send_error(req, 405, PRPC_EINVAL, "no such operation on a call");
    } else if (strcmp(p, "leases") == 0 && METHOD("POST")) {
        on_lease(b, req);
    } else if (strncmp(p, "leases/", 7) == 0 && strlen(p) > 7 + 32 && METHOD("POST")) {
        char lease[33];
        const char *rest = p + 7 + 32;
        memcpy(lease, p + 7, 32);
        lease[32] = '\0';
        if (!prpc_valid_hex(lease, 32))
            prpc_httpd_send_error(req, 400, PRPC_EINVAL, "a lease id is 32 lowercase hex digits");
        else if (strcmp(rest, "/heartbeat") == 0)
            on_heartbeat(b, req, lease);
        else if (strcmp(rest, "/result") == 0)
            on_result(b, req, lease);
        else if (strcmp(rest, "/outputs") == 0)
            on_outputs(b, req, lease);
        else if (strcmp(rest, "/checkpoints") == 0)
            on_checkpoint(b, req, lease);
        else
            prpc_httpd_send_error(req, 404, PRPC_ENOTFOUND, "no such operation on a lease");
    } else if (strncmp(p, "blobs/", 6) == 0 && strlen(p) >= 6 + 64) {
        char sha[65];
        memcpy(sha, p + 6, 64);
        sha[64] = '\0';
        on_blob(b, req, sha, p + 6 + 64);
    } else if (strcmp(p, "functions") == 0 && METHOD("GET")) {
        prpc_httpd_send_json(req, 200, b->functions.listing_json,
                             strlen(b->functions.listing_json));
    } else if (strncmp(p, "functions/", 10) == 0 && METHOD("GET") &&
               strlen(p) > 16 && strcmp(p + strlen(p) - 6, "/stats") == 0) {
        char name[PRPC_STORE_NAME_MAX + 1];
        size_t n = strlen(p) - 10 - 6;
        snprintf(name, sizeof(name), "%.*s", (int)n, p + 10);
        on_stats(b, req, name);
    } else if (strcmp(p, "metrics") == 0 && METHOD("GET")) {
        prpc_buf_t out = PRPC_BUF_INIT;
        prpc_buf_printf(&out,
                        "{\"requests\": %llu, \"bytes_received\": %llu, "
                        "\"chunks_received\": %llu, \"chunks_refused\": %llu, "
                        "\"blobs_committed\": %llu, \"bytes_served\": %llu, "
                        "\"bytes_followed\": %llu, \"bytes_followed_from_memory\": %llu, "
                        "\"corrupt_blobs_dropped\": %llu, \"calls_submitted\": %llu, "
                        "\"leases_granted\": %llu, \"results_accepted\": %llu, "
                        "\"results_refused\": %llu, \"auth_refused\": %llu}",
                        (unsigned long long)b->metrics.requests,
                        (unsigned long long)b->metrics.bytes_received,
                        (unsigned long long)b->metrics.chunks_received,
                        (unsigned long long)b->metrics.chunks_refused,
                        (unsigned long long)b->metrics.blobs_committed,
                        (unsigned long long)b->metrics.bytes_served,
                        (unsigned long long)b->metrics.bytes_followed,
                        (unsigned long long)b->metrics.bytes_followed_from_memory,
                        (unsigned long long)b->metrics.corrupt_blobs_dropped,
                        (unsigned long long)b->metrics.calls_submitted,
                        (unsigned long long)b->metrics.leases_granted,
                        (unsigned long long)b->metrics.results_accepted,
                        (unsigned long long)b->metrics.results_refused,
                        (unsigned long long)b->metrics.auth_refused);
        send_buf(req, 200, &out);
    } else if (strcmp(p, "nodes") == 0 && METHOD("GET")) {
        prpc_error_t err;
        size_t len = 0;
        const char *from = prpc_httpd_query(req, "from");
        char *text;
        if (from != NULL)
            prpc_nodes_learn(b->nodes, from);
        text = prpc_nodes_json(b->nodes, &len, &err);
        if (text == NULL) {
            send_err(req, &err);
        } else {
            prpc_httpd_send_json(req, 200, text, len);
            free(text);
        }
    } else {
        prpc_httpd_send_error(req, 404, PRPC_ENOTFOUND, "no such route");
    }
#undef METHOD
    return 0;
}

/* Remove finished calls past their retention, then the blobs no call
 * references any more (a blob a live call references is never removed). */
static void run_retention(prpc_broker_t *b, int64_t now)
{
    int removed = 0;
    prpc_error_t err;
    if (b->expire_ms < 0)
        return;
    if (prpc_store_calls_expire(b->store, now - b->expire_ms, &removed, &err) != 0)
        return;
    remove_unreferenced_blobs(b, now - b->expire_ms);
    if (removed > 0) {
        notify_calls(b, NULL, 1);
        notify_batches(b, NULL, 0);
    }
}

static void on_tick(void *ud, uint64_t now_ms)
{
    prpc_broker_t *b = ud;
    int64_t now = (int64_t)now_ms;
    h2o_linklist_t *node;

    for (node = b->call_waiters.next; node != &b->call_waiters;) {
        call_waiter_t *w = H2O_STRUCT_FROM_MEMBER(call_waiter_t, link, node);
        node = node->next;
        if (w->deadline_ms <= now)
            w->since = INT64_MIN; /* out of date by definition: answer it */
    }
    notify_calls(b, NULL, 0);
    notify_batches(b, "", now); /* "" matches no id: only expired waits answer */
    for (node = b->lease_waiters.next; node != &b->lease_waiters;) {
        lease_waiter_t *w = H2O_STRUCT_FROM_MEMBER(lease_waiter_t, link, node);
        node = node->next;
        if (w->deadline_ms <= now) {
            h2o_linklist_unlink(&w->link);
            prpc_httpd_send_json(w->req, 204, "", 0);
        }
    }
    if (now - b->last_expire_ms >= EXPIRE_EVERY_MS) {
        int requeued = 0, failed = 0;
        prpc_error_t err;
        b->last_expire_ms = now;
        if (prpc_store_leases_expire(b->store, now, b->max_attempts, &requeued, &failed, &err) ==
                0 &&
            requeued + failed > 0) {
            notify_calls(b, NULL, 0);
            if (failed > 0)
                notify_batches(b, NULL, 0);
            if (requeued > 0)
                dispatch_leases(b);
        }
    }
    follow_expire(b, now);
    if (now - b->last_retention_ms >= b->retention_every_ms) {
        b->last_retention_ms = now;
        run_retention(b, now);
    }
}

/* Sign every JSON answer of an authenticated request, so a worker runs work
 * only from a broker that knows the password, and a client trusts only
 * answers to its own request (the signature covers the request's nonce). */
static void on_respond(void *ud, h2o_req_t *req, int status, const char *body, size_t len)
{
    prpc_broker_t *b = ud;
    const char *nonce;
    uint8_t digest[PRPC_SHA256_LEN];
    char body_hex[PRPC_SHA256_HEX_LEN + 1], sig[PRPC_AUTH_SIG_HEX];
    if (!b->has_key)
        return;
    nonce = prpc_httpd_header(req, "x-p2prpc-nonce");
    if (nonce == NULL || strlen(nonce) != 32)
        return;
    if (prpc_sha256(body, len, digest, NULL) != 0)
        return;
    prpc_hex_encode(digest, sizeof(digest), body_hex);
    prpc_auth_sign_response(b->key, status, nonce, body_hex, sig);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-p2prpc-signature"), 0,
                          NULL, h2o_strdup(&req->pool, sig, 64).base, 64);
}

static void on_stop(void *ud)
{
    prpc_broker_t *b = ud;
    /* Chunks already handed to the blob thread are written and answered; those
     * set aside to wait for the chunk before them, now. */
    pthread_mutex_lock(&b->blob_mu);
    b->blob_flush = 1;
    pthread_cond_broadcast(&b->blob_cv);
    while (b->blob_thread_started && (!h2o_linklist_is_empty(&b->blob_queue) || b->blob_busy ||
                                      b->ndeferred > 0))
        pthread_cond_wait(&b->blob_cv, &b->blob_mu);
    pthread_mutex_unlock(&b->blob_mu);
    blob_answer_done(b);
    while (!h2o_linklist_is_empty(&b->followers))
        follow_cut(H2O_STRUCT_FROM_MEMBER(blob_follow_t, link, b->followers.next),
                   "the broker is shutting down");
    while (!h2o_linklist_is_empty(&b->call_waiters)) {
        call_waiter_t *w = H2O_STRUCT_FROM_MEMBER(call_waiter_t, link, b->call_waiters.next);
        h2o_linklist_unlink(&w->link);
        prpc_httpd_send_error(w->req, 503, PRPC_ECONN, "the broker is shutting down");
    }
    while (!h2o_linklist_is_empty(&b->batch_waiters)) {
        batch_waiter_t *w = H2O_STRUCT_FROM_MEMBER(batch_waiter_t, link, b->batch_waiters.next);
        h2o_linklist_unlink(&w->link);
        prpc_httpd_send_error(w->req, 503, PRPC_ECONN, "the broker is shutting down");
    }
    while (!h2o_linklist_is_empty(&b->lease_waiters)) {
        lease_waiter_t *w = H2O_STRUCT_FROM_MEMBER(lease_waiter_t, link, b->lease_waiters.next);
        h2o_linklist_unlink(&w->link);
        prpc_httpd_send_error(w->req, 503, PRPC_ECONN, "the broker is shutting down");
    }
}

/* ---- life cycle ------------------------------------------------------- */

static int is_loopback(const char *host)
{
    return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
           strcmp(host, "::1") == 0;
}

prpc_broker_t *prpc_broker_new(const prpc_broker_config_t *cfg, prpc_error_t *err)
{
    prpc_broker_t *b = calloc(1, sizeof(*b));
    char path[PRPC_BLOB_PATH_MAX], uri[PRPC_BLOB_PATH_MAX + 8];
    prpc_store_options_t sopts;
    prpc_httpd_config_t hc;
    const char *host = cfg->host ? cfg->host : "127.0.0.1";

    if (b == NULL) {
        prpc_error_set(err, PRPC_ENOMEM, "out of memory creating the broker");
        return NULL;
    }
    h2o_linklist_init_anchor(&b->call_waiters);
    h2o_linklist_init_anchor(&b->lease_waiters);
    h2o_linklist_init_anchor(&b->batch_waiters);
    h2o_linklist_init_anchor(&b->followers);
    h2o_linklist_init_anchor(&b->blob_queue);
    h2o_linklist_init_anchor(&b->blob_done);
    h2o_linklist_init_anchor(&b->blob_deferred);
    pthread_mutex_init(&b->blob_mu, NULL);
    pthread_mutex_init(&b->blob_gc_mu, NULL);
    {
        pthread_condattr_t a;
        pthread_condattr_init(&a);
        pthread_condattr_setclock(&a, CLOCK_MONOTONIC); /* blob_clock_ms */
        pthread_cond_init(&b->blob_cv, &a);
        pthread_condattr_destroy(&a);
    }
    b->lease_ms = cfg->lease_ms > 0 ? cfg->lease_ms : 30000;
    b->heartbeat_ms = cfg->heartbeat_ms > 0 ? cfg->heartbeat_ms : 2000;
    b->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : 3;
    b->upload_stall_ms = cfg->upload_stall_ms > 0 ? cfg->upload_stall_ms : 25000;
    b->max_body = cfg->max_body > 0 && cfg->max_body < PRPC_WIRE_META_MAX ? cfg->max_body
                                                                          : PRPC_WIRE_META_MAX;
    b->max_leases_per_worker = cfg->max_leases_per_worker > 0 ? cfg->max_leases_per_worker : 64;
    b->max_depth = cfg->max_depth > 0 ? cfg->max_depth : 32;
    b->expire_ms = cfg->expire_ms == 0 ? RETENTION_DEFAULT_MS : cfg->expire_ms;
    b->last_retention_ms = prpc_now_ms();
    b->retention_every_ms = RETENTION_EVERY_MS;
    if (b->expire_ms > 0 && b->expire_ms / 2 < RETENTION_EVERY_MS)
        b->retention_every_ms = b->expire_ms / 2 > 100 ? b->expire_ms / 2 : 100;
    if (cfg->key == NULL && !cfg->insecure && !is_loopback(host)) {
        prpc_error_set(err, PRPC_EINVAL,
                       "refusing to listen on %s without a password: anyone who can connect "
                       "could run calls; set a password, or pass --insecure to accept the risk",
                       host);
        goto fail;
    }
    if (cfg->key != NULL) {
        memcpy(b->key, cfg->key, PRPC_AUTH_KEY_LEN);
        b->has_key = 1;
        if ((b->nonces = prpc_nonce_cache_new(NONCE_CACHE_MAX, err)) == NULL)
            goto fail;
    }
    if (cfg->data_dir == NULL || cfg->data_dir[0] == '\0' ||
        strlen(cfg->data_dir) > PRPC_BLOB_PATH_MAX - 64) {
        prpc_error_set(err, PRPC_EINVAL, "the broker needs a data directory (path too long?)");
        goto fail;
    }
    if (cfg->functions_json == NULL ||
        prpc_functions_parse(&b->functions, cfg->functions_json, err) != 0) {
        if (cfg->functions_json == NULL)
            prpc_error_set(err, PRPC_EINVAL, "the broker needs the functions it serves");
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/blobs", cfg->data_dir);
    if ((b->blobs = prpc_blobdir_open(path, err)) == NULL)
        goto fail;
    if (cfg->store_uri != NULL)
        snprintf(uri, sizeof(uri), "%s", cfg->store_uri);
    else
        snprintf(uri, sizeof(uri), "sqlite:%s/broker.db", cfg->data_dir);
    memset(&sopts, 0, sizeof(sopts));
    sopts.synchronous = cfg->synchronous;
    if ((b->store = prpc_store_open(uri, &sopts, err)) == NULL)
        goto fail;
    memset(&hc, 0, sizeof(hc));
    hc.host = host;
    hc.port = cfg->port;
    snprintf(path, sizeof(path), "%s/blobs/tmp", cfg->data_dir);
    hc.tmp_dir = path;
    hc.max_request_body = PRPC_BLOB_CHUNK + 64 * 1024;
    hc.body_buffer = PRPC_BLOB_UPLOAD_CHUNK + 64 * 1024; /* what our own senders send */
    hc.request_timeout_ms = cfg->request_timeout_ms > 0 ? (uint64_t)cfg->request_timeout_ms
                                                        : 120000;
    hc.max_connections = cfg->max_connections > 0 ? cfg->max_connections : 1024;
    hc.max_headers = cfg->max_headers > 0 ? cfg->max_headers : 64;
    hc.max_header_bytes = cfg->max_header_bytes > 0 ? cfg->max_header_bytes : 64 * 1024;
    hc.ud = b;
    hc.on_req = route;
    hc.on_tick = on_tick;
    hc.on_stop = on_stop;
    hc.on_respond = on_respond;
    hc.on_wake = blob_answer_done;
    hc.tls_cert = cfg->tls_cert;
    hc.tls_key = cfg->tls_key;
    if ((b->httpd = prpc_httpd_new(&hc, err)) == NULL)
        goto fail;
    if (cfg->advertise != NULL)
        snprintf(b->advertise, sizeof(b->advertise), "%s", cfg->advertise);
    else
        snprintf(b->advertise, sizeof(b->advertise), "%s:%d", host, prpc_httpd_port(b->httpd));
    if ((b->nodes = prpc_nodes_new(b->advertise, cfg->peers, cfg->key, err)) == NULL)
        goto fail;
    return b;
fail:
    prpc_broker_free(b);
    return NULL;
}

int prpc_broker_start(prpc_broker_t *b, prpc_error_t *err)
{
    int rc = pthread_create(&b->blob_thread, NULL, blob_main, b);
    if (rc != 0)
        return prpc_error_errno(err, rc, "starting the broker's blob thread");
    b->blob_thread_started = 1;
    rc = prpc_httpd_start(b->httpd, err);
    if (rc == 0)
        rc = prpc_nodes_start(b->nodes, err);
    return rc;
}

int prpc_broker_port(const prpc_broker_t *b)
{
    return prpc_httpd_port(b->httpd);
}

void prpc_broker_stop(prpc_broker_t *b)
{
    if (b != NULL && b->httpd != NULL)
        prpc_httpd_stop(b->httpd);
    if (b != NULL && b->blob_thread_started) {
        pthread_mutex_lock(&b->blob_mu);
        b->blob_quit = 1;
        pthread_cond_broadcast(&b->blob_cv);
        pthread_mutex_unlock(&b->blob_mu);
        pthread_join(b->blob_thread, NULL);
        b->blob_thread_started = 0;
    }
}

void prpc_broker_free(prpc_broker_t *b)
{
    if (b == NULL)
        return;
    prpc_broker_stop(b);
    prpc_nodes_free(b->nodes);
    prpc_httpd_free(b->httpd);
    arriving_drop(b, NULL);
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
    prpc_store_close(b->store);
    prpc_blobdir_free(b->blobs);
    prpc_nonce_cache_free(b->nonces);
    prpc_functions_cleanup(&b->functions);
    free(b);
}
