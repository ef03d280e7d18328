/*
 * worker.c - the worker loop of worker.h.
 *
 * A slot thread's life is a loop: long-poll POST /v1/leases; on a lease,
 * wake the slot's heartbeat thread, fetch the file arguments, call run,
 * upload the output files, push the result, quiet the heartbeat thread. The
 * long-poll is the only wait when brokers are healthy; after a failure the
 * slot sleeps a bounded, jittered backoff on the worker's condition variable,
 * so prpc_worker_stop() wakes it at once.
 *
 * Every document sent to or read from a broker goes through wire.h (its
 * encoders, its rules for ids and keys, its paths). The job handed to run
 * and run's result are this engine's own: the job is built as BSON and
 * written as relaxed extended JSON, which for the types used here (strings,
 * integers, booleans, null, documents, arrays) is plain JSON.
 *
 * Checkpoints (prpc_worker_checkpoint_save) come from whatever thread the
 * embedding program calls from while run is in progress: each slot has a
 * third set of HTTP handles for them, used under the slot's ck_mu, so saves
 * of one call go out one at a time and never share a handle with the slot or
 * heartbeat threads.
 *
 * Thread safety: w->mu guards the slots' call state (call id, lease, progress,
 * heartbeat flags, the blob being downloaded) and w->cv/hb_cv are waited on
 * under it. Each HTTP handle belongs to exactly one thread at a time (ck_mu
 * for the checkpoint handles). Callbacks are always called with w->mu
 * released; ck_mu is never taken with w->mu held.
 */
#include "worker.h"

#include "auth.h"
#include "blob.h"
#include "gpu.h"
#include "hash.h"
#include "httpc.h"
#include "util.h"
#include "wire.h"

#include <bson/bson.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WORKER_PATH_MAX 4096
#define WORKER_LEASE_MARGIN_MS 15000 /* a long-poll's answer may take this much longer */
#define WORKER_REQUEST_TIMEOUT_MS 30000
#define WORKER_ANNOUNCED_FILES 16 /* file outputs of one call sent after the announcement */

typedef struct slot {
    prpc_worker_t *w;
    int index;
    pthread_t thread;
    int thread_started;
    pthread_t hb_thread;
    int hb_started;
    prpc_httpc_t **handles;    /* per broker; the slot thread's own */
    prpc_httpc_t **hb_handles; /* per broker; the heartbeat thread's own */
    unsigned int seed;         /* jitter */
    pthread_mutex_t ck_mu;     /* one checkpoint save at a time; guards ck_handles, ck_seed */
    prpc_httpc_t **ck_handles; /* per broker; checkpoint saves */
    unsigned int ck_seed;      /* jitter of checkpoint retries */
    atomic_int hb_abort;       /* ends the heartbeat's request in flight */
    pthread_cond_t hb_cv;      /* wakes the heartbeat thread, and a call waiting for it */
    /* Guarded by w->mu: */
    int active;                          /* a call is in progress */
    int broker;                          /* index of the broker that leased it */
    char call_id[PRPC_SHA256_HEX_LEN + 1];
    char lease_id[PRPC_LEASE_ID_HEX + 1];
    double progress;
    int hb_interval_ms;
    int hb_stop;           /* the heartbeat thread must leave the current call alone */
    int hb_busy;           /* the heartbeat thread is acting for the current call */
    int hb_exit;           /* the heartbeat thread must end (the worker stops) */
    unsigned hb_gen;       /* counts calls, so a late heartbeat never touches the next */
    int running;           /* run has been called for this call */
    int in_run;            /* ...and has not returned yet: only then is a cancel sent */
    int cancel_sent;       /* cancel was called for this call */
    int terminate_ordered; /* the broker asked to terminate it */
    int64_t job_started_ns; /* CLOCK_REALTIME when the current call began; 0 when idle */
    int stale;             /* the broker no longer knows this lease */
    char downloading[PRPC_SHA256_HEX_LEN + 1]; /* blob being fetched, "" when none */
    int fetched; /* this call fetched blobs: the cache may need trimming (slot thread only) */
} slot_t;

struct prpc_worker {
    char **brokers;
    char *ca; /* PEM CA file for https:// brokers, or NULL */
    uint64_t cache_max_bytes; /* the blob cache's bound */
    pthread_mutex_t trim_mu;  /* one cache trim at a time */
    size_t n_brokers;
    uint8_t key[PRPC_AUTH_KEY_LEN];
    int has_key;
    char *name;
    char *data_dir;
    char *jobs_dir;
    char *lease_body; /* the POST /v1/leases body, built once */
    size_t lease_body_len;
    int concurrency, lease_wait_ms, connect_timeout_ms;
    prpc_worker_run_fn run;
    prpc_worker_cancel_fn cancel;
    prpc_worker_log_fn log;
    void *ud;
    prpc_blobdir_t *blobs;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* backoff waits and blob download hand-offs */
    atomic_int stopping;
    int started, stopped;
    slot_t *slots;
};

static void wlog(prpc_worker_t *w, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void wlog(prpc_worker_t *w, int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (w->log != NULL)
        w->log(w->ud, level, msg);
    else if (level >= PRPC_LOG_WARNING)
        fprintf(stderr, "p2prpc worker %s: %s\n", w->name, msg);
}

static void abs_deadline(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

static int cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    int rc;
    if (pthread_condattr_init(&a) != 0)
        return -1;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    rc = pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
    return rc == 0 ? 0 : -1;
}

/* Sleep the backoff for the n-th consecutive failure, or until stop. seed
 * belongs to the calling thread. */
static void backoff_seeded(prpc_worker_t *w, unsigned *seed, int failures)
{
    int64_t ms = prpc_httpc_backoff_ms(failures, PRPC_WORKER_BACKOFF_MIN_MS,
                                       PRPC_WORKER_BACKOFF_MAX_MS,
                                       (double)rand_r(seed) / ((double)RAND_MAX + 1.0));
    struct timespec ts;
    abs_deadline(&ts, ms);
    pthread_mutex_lock(&w->mu);
    while (!atomic_load(&w->stopping))
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&w->mu);
}

static void backoff(slot_t *s, int failures)
{
    backoff_seeded(s->w, &s->seed, failures);
}

static prpc_httpc_t *handle_for(prpc_worker_t *w, prpc_httpc_t **handles, int b,
                                prpc_error_t *err)
{
    if (handles[b] == NULL) {
        handles[b] = prpc_httpc_new(w->brokers[b], w->has_key ? w->key : NULL,
                                    w->connect_timeout_ms, err);
        if (handles[b] != NULL && prpc_httpc_set_ca(handles[b], w->ca, err) != 0) {
            prpc_httpc_free(handles[b]);
            handles[b] = NULL;
        }
    }
    return handles[b];
}

static int transport_error(int rc)
{
    return rc == PRPC_ECONN || rc == PRPC_ETIMEDOUT;
}

/* After the attempt-th failed try (code rc) of a blob transfer begun at
 * started_ms: 1 after a short backoff when another try is worth it, 0 to give
 * up. EIO and EPROTO come from a broker that failed (5xx), not one that
 * refused; a transfer resumes where the last try stopped, so under lost
 * replies each try gets further. A lease lost meanwhile makes the transfer
 * pointless. */
static int transfer_again(slot_t *s, unsigned *seed, int rc, int attempt, int64_t started_ms)
{
    prpc_worker_t *w = s->w;
    int stale;
    if (!transport_error(rc) && rc != PRPC_EIO && rc != PRPC_EPROTO)
        return 0;
    pthread_mutex_lock(&w->mu);
    stale = s->stale;
    pthread_mutex_unlock(&w->mu);
    if (stale || prpc_mono_ms() - started_ms >= PRPC_WORKER_TRANSFER_RETRY_MS)
        return 0;
    /* Capped low: the broker answers, only some of its replies go missing. */
    backoff_seeded(w, seed, attempt < 3 ? attempt : 3);
    return 1;
}

/* ---- the job and run's result: this engine's own JSON ---- */

static char *to_json(const bson_t *doc, size_t *len, prpc_error_t *err)
{
    size_t n = 0;
    char *j = bson_as_relaxed_extended_json(doc, &n);
    char *out;
    if (j == NULL) {
        prpc_error_set(err, PRPC_ENOMEM, "cannot write a JSON body");
        return NULL;
    }
    out = malloc(n + 1);
    if (out != NULL)
        memcpy(out, j, n + 1);
    else
        prpc_error_set(err, PRPC_ENOMEM, "out of memory for a JSON body");
    bson_free(j);
    if (len != NULL)
        *len = n;
    return out;
}

/* ---- config ---- */

static void worker_free_fields(prpc_worker_t *w)
{
    for (size_t i = 0; w->brokers != NULL && i < w->n_brokers; i++)
        free(w->brokers[i]);
    free(w->brokers);
    free(w->name);
    free(w->ca);
    free(w->data_dir);
    free(w->jobs_dir);
    free(w->lease_body);
    prpc_blobdir_free(w->blobs);
    if (w->slots != NULL) {
        for (int i = 0; i < w->concurrency; i++) {
            slot_t *s = &w->slots[i];
            for (size_t b = 0; b < w->n_brokers; b++) {
                if (s->handles != NULL)
                    prpc_httpc_free(s->handles[b]);
                if (s->hb_handles != NULL)
                    prpc_httpc_free(s->hb_handles[b]);
                if (s->ck_handles != NULL)
                    prpc_httpc_free(s->ck_handles[b]);
            }
            free(s->handles);
            free(s->hb_handles);
            free(s->ck_handles);
            pthread_cond_destroy(&s->hb_cv);
            pthread_mutex_destroy(&s->ck_mu);
        }
        free(w->slots);
    }
    memset(w->key, 0, sizeof(w->key));
}

static int make_dir(const char *path, prpc_error_t *err)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return prpc_error_errno(err, errno, "creating directory %s", path);
    return 0;
}

static int build_lease_body(prpc_worker_t *w, const prpc_worker_config_t *cfg, prpc_error_t *err)
{
    prpc_gpu_info_t gpus[PRPC_GPU_MAX];
    prpc_wire_function_ref_t *fns = calloc(cfg->n_functions, sizeof(*fns));
    prpc_buf_t out = PRPC_BUF_INIT;
    size_t ngpu = 0;

    if (fns == NULL)
        return prpc_error_set(err, PRPC_ENOMEM, "worker: out of memory");
    prpc_gpu_probe(gpus, PRPC_GPU_MAX, &ngpu, NULL);
    for (size_t i = 0; i < cfg->n_functions; i++) {
        fns[i].name = cfg->functions[i].name;
        fns[i].version = cfg->functions[i].version;
    }
    prpc_wire_write_lease_request(&out, w->name, fns, cfg->n_functions, w->lease_wait_ms, gpus,
                                  ngpu);
    free(fns);
    w->lease_body = prpc_buf_take(&out, &w->lease_body_len, err);
    return w->lease_body != NULL ? 0 : PRPC_ENOMEM;
}

prpc_worker_t *prpc_worker_new(const prpc_worker_config_t *cfg, prpc_error_t *err)
{
    prpc_worker_t *w = NULL;
    char path[WORKER_PATH_MAX], host[256];
    int rc = 0, mu_ok = 0, cv_ok = 0;

    if (cfg == NULL || cfg->brokers == NULL || cfg->n_brokers == 0) {
        prpc_error_set(err, PRPC_EINVAL, "worker: no broker given");
        return NULL;
    }
    if (cfg->functions == NULL || cfg->n_functions == 0) {
        prpc_error_set(err, PRPC_EINVAL, "worker: no function to serve");
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_functions; i++) {
        if (cfg->functions[i].name == NULL || cfg->functions[i].name[0] == '\0' ||
            cfg->functions[i].version == NULL || cfg->functions[i].version[0] == '\0') {
            prpc_error_set(err, PRPC_EINVAL, "worker: function %zu has no name or version", i);
            return NULL;
        }
    }
    if (cfg->data_dir == NULL || cfg->data_dir[0] == '\0' ||
        strlen(cfg->data_dir) > WORKER_PATH_MAX - 200) {
        prpc_error_set(err, PRPC_EINVAL, "worker: data_dir missing or too long");
        return NULL;
    }
    if (cfg->run == NULL || cfg->cancel == NULL) {
        prpc_error_set(err, PRPC_EINVAL, "worker: the run and cancel callbacks are required");
        return NULL;
    }
    if (cfg->concurrency > PRPC_WORKER_MAX_SLOTS) {
        prpc_error_set(err, PRPC_EINVAL, "worker: concurrency %d exceeds the limit of %d",
                       cfg->concurrency, PRPC_WORKER_MAX_SLOTS);
        return NULL;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        goto nomem;
    w->n_brokers = cfg->n_brokers;
    w->concurrency = cfg->concurrency > 0 ? cfg->concurrency : 1;
    w->lease_wait_ms = cfg->lease_wait_ms > 0 ? cfg->lease_wait_ms : 20000;
    w->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 5000;
    w->run = cfg->run;
    w->cancel = cfg->cancel;
    w->log = cfg->log;
    w->ud = cfg->ud;
    if (cfg->key != NULL) {
        memcpy(w->key, cfg->key, PRPC_AUTH_KEY_LEN);
        w->has_key = 1;
    }
    if (cfg->ca != NULL && cfg->ca[0] != '\0' && (w->ca = strdup(cfg->ca)) == NULL)
        goto nomem;
    w->cache_max_bytes = cfg->cache_max_bytes ? cfg->cache_max_bytes : PRPC_WORKER_CACHE_DEFAULT;
    pthread_mutex_init(&w->trim_mu, NULL);
    w->brokers = calloc(cfg->n_brokers, sizeof(char *));
    if (w->brokers == NULL)
        goto nomem;
    for (size_t i = 0; i < cfg->n_brokers; i++) {
        /* Validate now so a bad discovery line fails here, not in a thread. */
        prpc_httpc_t *probe = prpc_httpc_new(cfg->brokers[i], NULL, 0, err);
        if (probe == NULL)
            goto fail;
        /* The CA file too: an unusable one fails here, naming it. */
        if (i == 0 && cfg->ca != NULL && prpc_httpc_set_ca(probe, cfg->ca, err) != 0) {
            prpc_httpc_free(probe);
            goto fail;
        }
        w->brokers[i] = strdup(prpc_httpc_base_url(probe));
        prpc_httpc_free(probe);
        if (w->brokers[i] == NULL)
            goto nomem;
    }
    if (cfg->name != NULL && cfg->name[0] != '\0') {
        w->name = strdup(cfg->name);
    } else {
        if (gethostname(host, sizeof(host)) != 0)
            snprintf(host, sizeof(host), "worker");
        host[sizeof(host) - 1] = '\0';
        snprintf(path, sizeof(path), "%s-%ld", host, (long)getpid());
        w->name = strdup(path);
    }
    w->data_dir = strdup(cfg->data_dir);
    snprintf(path, sizeof(path), "%s/jobs", cfg->data_dir);
    w->jobs_dir = strdup(path);
    if (w->name == NULL || w->data_dir == NULL || w->jobs_dir == NULL)
        goto nomem;
    if ((rc = make_dir(w->data_dir, err)) != 0 || (rc = make_dir(w->jobs_dir, err)) != 0)
        goto fail;
    snprintf(path, sizeof(path), "%s/blobs", cfg->data_dir);
    w->blobs = prpc_blobdir_open(path, err);
    if (w->blobs == NULL)
        goto fail;
    if (build_lease_body(w, cfg, err) != 0)
        goto fail;
    if (pthread_mutex_init(&w->mu, NULL) != 0)
        goto nomem;
    mu_ok = 1;
    if (cond_init_monotonic(&w->cv) != 0)
        goto nomem;
    cv_ok = 1;
    w->slots = calloc((size_t)w->concurrency, sizeof(slot_t));
    if (w->slots == NULL)
        goto nomem;
    for (int i = 0; i < w->concurrency; i++) {
        slot_t *s = &w->slots[i];
        s->w = w;
        s->index = i;
        s->seed = (unsigned)(prpc_mono_ms() ^ (getpid() << 8) ^ (i * 7919));
        s->ck_seed = s->seed ^ 0x5bd1e995u;
        if (cond_init_monotonic(&s->hb_cv) != 0) {
            w->concurrency = i; /* only earlier slots hold a condition variable */
            goto nomem;
        }
        if (pthread_mutex_init(&s->ck_mu, NULL) != 0) {
            pthread_cond_destroy(&s->hb_cv);
            w->concurrency = i;
            goto nomem;
        }
        s->handles = calloc(w->n_brokers, sizeof(prpc_httpc_t *));
        s->hb_handles = calloc(w->n_brokers, sizeof(prpc_httpc_t *));
        s->ck_handles = calloc(w->n_brokers, sizeof(prpc_httpc_t *));
        if (s->handles == NULL || s->hb_handles == NULL || s->ck_handles == NULL) {
            w->concurrency = i + 1;
            goto nomem;
        }
    }
    return w;
nomem:
    prpc_error_set(err, PRPC_ENOMEM, "worker: out of memory");
fail:
    if (w != NULL) {
        worker_free_fields(w);
        if (cv_ok)
            pthread_cond_destroy(&w->cv);
        if (mu_ok)
            pthread_mutex_destroy(&w->mu);
        free(w);
    }
    return NULL;
}

/* ---- heartbeats ---- */

/* A slot's heartbeat thread lives as long as the slot: starting a thread per
 * call cost more than a no-op call itself. Between calls it sleeps on hb_cv. */
static void *heartbeat_main(void *arg)
{
    slot_t *s = arg;
    prpc_worker_t *w = s->w;
    char call_id[PRPC_SHA256_HEX_LEN + 1], lease_id[PRPC_LEASE_ID_HEX + 1];
    char pq[PRPC_WIRE_PATH_MAX];
    prpc_error_t err;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        struct timespec ts;
        int interval, b, rc, terminate = 0, stale = 0;
        unsigned gen;
        double progress;
        long status = 0;
        char *resp = NULL, *body = NULL;
        size_t rlen = 0, blen = 0;
        prpc_buf_t out = PRPC_BUF_INIT;
        prpc_httpc_t *h = NULL;

        while (!s->hb_exit && !(s->active && !s->hb_stop))
            pthread_cond_wait(&s->hb_cv, &w->mu);
        if (s->hb_exit)
            break;
        gen = s->hb_gen;
        interval = s->hb_interval_ms;
        b = s->broker;
        abs_deadline(&ts, interval);
        while (!s->hb_stop && !s->hb_exit && s->hb_gen == gen)
            if (pthread_cond_timedwait(&s->hb_cv, &w->mu, &ts) == ETIMEDOUT)
                break;
        if (s->hb_stop || s->hb_exit || s->hb_gen != gen)
            continue;
        s->hb_busy = 1;
        progress = s->progress;
        snprintf(call_id, sizeof(call_id), "%s", s->call_id);
        snprintf(lease_id, sizeof(lease_id), "%s", s->lease_id);
        pthread_mutex_unlock(&w->mu);

        prpc_wire_write_heartbeat(&out, call_id, progress);
        body = prpc_buf_take(&out, &blen, &err);
        rc = body != NULL ? prpc_wire_path_lease(pq, lease_id, "heartbeat", &err) : err.code;
        if (rc == 0)
            h = handle_for(w, s->hb_handles, b, &err);
        if (rc == 0 && h == NULL) {
            rc = err.code;
        } else if (rc == 0) {
            prpc_httpc_set_cancel(h, &s->hb_abort);
            rc = prpc_httpc_request(h, "POST", pq, body, blen, interval > 2000 ? interval : 2000,
                                    &status, &resp, &rlen, &err);
            prpc_httpc_set_cancel(h, NULL);
        }
        free(body);
        if (rc == 0 && status == 200) {
            terminate = prpc_wire_heartbeat_terminates(resp, rlen);
        } else if (rc == 0 && (status == 409 || status == 404)) {
            /* 409: the lease lapsed or was replaced; 404: the call was
             * deleted (a client's delete terminates a running call). */
            stale = 1;
            prpc_httpc_status_error(status, resp, rlen, "heartbeat", &err);
            wlog(w, PRPC_LOG_WARNING, "call %s: lease lost (%s)", call_id, err.message);
        } else if (rc == 0) {
            prpc_httpc_status_error(status, resp, rlen, "heartbeat", &err);
            wlog(w, PRPC_LOG_WARNING, "call %s: %s", call_id, err.message);
        } else if (rc != PRPC_ESTATE) {
            wlog(w, PRPC_LOG_WARNING, "call %s: heartbeat failed: %s", call_id, err.message);
        }
        free(resp);

        pthread_mutex_lock(&w->mu);
        if (s->hb_gen == gen) {
            if (terminate)
                s->terminate_ordered = 1;
            if (stale)
                s->stale = 1;
            if ((terminate || stale) && !s->cancel_sent && !s->hb_stop && s->in_run) {
                s->cancel_sent = 1;
                pthread_mutex_unlock(&w->mu);
                wlog(w, PRPC_LOG_INFO, "call %s: %s", call_id,
                     terminate ? "terminated by the broker" : "cancelled: lease lost");
                w->cancel(w->ud, call_id, lease_id);
                pthread_mutex_lock(&w->mu);
            }
        }
        s->hb_busy = 0;
        pthread_cond_broadcast(&s->hb_cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* The call ends: once this returns, its heartbeats are over (none in flight,
 * no cancel in progress). */
static void heartbeat_stop(slot_t *s)
{
    prpc_worker_t *w = s->w;
    pthread_mutex_lock(&w->mu);
    s->hb_stop = 1;
    atomic_store(&s->hb_abort, 1);
    pthread_cond_broadcast(&s->hb_cv);
    while (s->hb_busy)
        pthread_cond_wait(&s->hb_cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

/* ---- one call ---- */

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    PRPC_UNUSED(sb);
    PRPC_UNUSED(flag);
    PRPC_UNUSED(f);
    remove(p);
    return 0;
}

static void remove_tree(const char *path)
{
    nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Download one blob into the cache; one slot at a time per blob. With
 * follow >= 0 (a call argument of that size) the blob may still be arriving
 * at the broker: the download follows its upload. */
static int fetch_blob(slot_t *s, prpc_httpc_t *h, const char *sha, int64_t follow,
                      prpc_error_t *err)
{
    prpc_worker_t *w = s->w;
    int rc = 0, busy;
    pthread_mutex_lock(&w->mu);
    do {
        busy = 0;
        for (int i = 0; i < w->concurrency; i++)
            if (i != s->index && strcmp(w->slots[i].downloading, sha) == 0)
                busy = 1;
        if (busy)
            pthread_cond_wait(&w->cv, &w->mu);
    } while (busy);
    snprintf(s->downloading, sizeof(s->downloading), "%s", sha);
    pthread_mutex_unlock(&w->mu);
    s->fetched = 1;

    /* A blob already in the cache is hashed before a function reads it: one
     * that rotted on this disk is dropped and fetched again, never used. */
    if (prpc_blobdir_stat(w->blobs, sha, NULL, NULL) == 0) {
        prpc_error_t bad;
        if (prpc_blobdir_verify(w->blobs, sha, &bad) == PRPC_ECORRUPT)
            wlog(w, PRPC_LOG_WARNING, "%s; fetching it again", bad.message);
    }

    {
        int64_t started = prpc_mono_ms();
        uint64_t had = 0, has = 0;
        for (int attempt = 1;; attempt++) {
            prpc_blobdir_partial(w->blobs, sha, &had, NULL);
            rc = follow >= 0 ? prpc_httpc_follow_blob(h, sha, (uint64_t)follow, w->blobs, err)
                             : prpc_httpc_download_blob(h, sha, w->blobs, err);
            /* A try that moved the download on restarts the retry window: a
             * long transfer (or one following a slow upload) cut late is
             * resumed, not given up. */
            if (rc != 0 && prpc_blobdir_partial(w->blobs, sha, &has, NULL) == 0 && has > had) {
                started = prpc_mono_ms();
                attempt = 1;
            }
            if (rc == 0 || atomic_load(&w->stopping) ||
                !transfer_again(s, &s->seed, rc, attempt, started))
                break;
        }
    }

    pthread_mutex_lock(&w->mu);
    s->downloading[0] = '\0';
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (rc == 0)
        prpc_blobdir_touch(w->blobs, sha, NULL); /* used now: last in line for eviction */
    return rc;
}

/* Keep the blob cache under its bound after a call: evict the least recently
 * used blobs, never one used since the oldest running call began. */
static void trim_cache(prpc_worker_t *w)
{
    int64_t before = prpc_now_ns();
    uint64_t freed = 0;
    prpc_error_t err;
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->concurrency; i++)
        if (w->slots[i].job_started_ns != 0 && w->slots[i].job_started_ns < before)
            before = w->slots[i].job_started_ns;
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_lock(&w->trim_mu);
    if (prpc_blobdir_trim(w->blobs, w->cache_max_bytes, before, &freed, &err) != 0)
        wlog(w, PRPC_LOG_WARNING, "trimming the blob cache: %s", err.message);
    else if (freed > 0)
        wlog(w, PRPC_LOG_INFO, "blob cache: evicted %llu bytes (bound %llu)",
             (unsigned long long)freed, (unsigned long long)w->cache_max_bytes);
    pthread_mutex_unlock(&w->trim_mu);
}

/* Fetch the lease's checkpoints into the cache and list them in the job as
 * "checkpoints": [{"key", "path"}]. One whose blob the broker no longer has
 * (dropped as corrupt) is left out with a warning: the function then starts
 * that part over, as it would without a checkpoint. Other failures fail the
 * job as a file argument's would. */
static int append_checkpoints(slot_t *s, prpc_httpc_t *h, const bson_t *lease,
                              const char *call_id, bson_t *job, prpc_error_t *err)
{
    bson_iter_t it, sub;
    bson_t arr, entry;
    uint32_t i = 0, seen = 0;
    int rc = 0;
    BSON_APPEND_ARRAY_BEGIN(job, "checkpoints", &arr);
    if (bson_iter_init_find(&it, lease, "checkpoints") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &sub)) {
        while (rc == 0 && bson_iter_next(&sub)) {
            const char *key = prpc_iter_doc_str(&sub, "key"), *k;
            const char *sha = prpc_iter_doc_str(&sub, "blob");
            char kbuf[16], path[PRPC_BLOB_PATH_MAX];
            prpc_error_t e;
            if (!prpc_wire_valid_checkpoint_key(key) || !prpc_wire_valid_call_id(sha)) {
                rc = prpc_error_set(err, PRPC_EPROTO,
                                    "lease for call %s: checkpoint %u has no valid key or blob",
                                    call_id, seen);
                break;
            }
            seen++;
            rc = fetch_blob(s, h, sha, -1, &e);
            if (rc == 0)
                rc = prpc_blobdir_path(s->w->blobs, sha, path, &e);
            if (rc == PRPC_ENOTFOUND || rc == PRPC_ECORRUPT) {
                wlog(s->w, PRPC_LOG_WARNING,
                     "call %s: checkpoint %s is lost (%s); the function starts without it",
                     call_id, key, e.message);
                rc = 0;
                continue;
            }
            if (rc != 0) {
                if (err != NULL)
                    *err = e;
                break;
            }
            bson_uint32_to_string(i++, &k, kbuf, sizeof(kbuf));
            bson_append_document_begin(&arr, k, -1, &entry);
            BSON_APPEND_UTF8(&entry, "key", key);
            BSON_APPEND_UTF8(&entry, "path", path);
            bson_append_document_end(&arr, &entry);
        }
    }
    bson_append_array_end(job, &arr);
    return rc;
}

/* Build the job JSON, fetching file arguments and checkpoints. */
static char *build_job(slot_t *s, prpc_httpc_t *h, const bson_t *lease, const char *call_id,
                       const char *lease_id, const char *work_dir, prpc_error_t *err)
{
    bson_t job = BSON_INITIALIZER, arr;
    bson_iter_t it, sub;
    const char *function = prpc_doc_str(lease, "call.function");
    const char *version = prpc_doc_str(lease, "call.version");
    char *out = NULL;
    uint32_t i = 0;
    int ok = 1;

    if (function == NULL || version == NULL) {
        prpc_error_set(err, PRPC_EPROTO, "lease for call %s names no function or version",
                       call_id);
        goto out;
    }
    BSON_APPEND_UTF8(&job, "call_id", call_id);
    BSON_APPEND_UTF8(&job, "lease_id", lease_id);
    BSON_APPEND_UTF8(&job, "function", function);
    BSON_APPEND_UTF8(&job, "version", version);
    BSON_APPEND_UTF8(&job, "work_dir", work_dir);
    BSON_APPEND_ARRAY_BEGIN(&job, "args", &arr);
    if (bson_iter_init(&it, lease) && bson_iter_find_descendant(&it, "call.args", &sub) &&
        BSON_ITER_HOLDS_ARRAY(&sub) && bson_iter_recurse(&sub, &it)) {
        while (ok && bson_iter_next(&it)) {
            const char *kind = prpc_iter_doc_str(&it, "kind"), *k;
            const uint8_t *data;
            uint32_t len;
            char key[16], path[PRPC_BLOB_PATH_MAX];
            bson_t entry, view;
            if (kind == NULL) {
                ok = 0;
                prpc_error_set(err, PRPC_EPROTO, "lease for call %s: argument %u has no kind",
                               call_id, i);
                break;
            }
            bson_iter_document(&it, &len, &data);
            bson_init_static(&view, data, len);
            bson_uint32_to_string(i++, &k, key, sizeof(key));
            if (strcmp(kind, "file") != 0) {
                bson_append_document(&arr, k, -1, &view);
                continue;
            }
            {
                const char *sha = prpc_iter_doc_str(&it, "blob");
                double size = -1;
                if (!prpc_wire_valid_call_id(sha)) {
                    ok = 0;
                    prpc_error_set(err, PRPC_EPROTO,
                                   "lease for call %s: file argument %u has no valid blob",
                                   call_id, i - 1);
                    break;
                }
                if (!prpc_iter_doc_num(&it, "size", &size) || size != (double)(int64_t)size)
                    size = -1;
                if (fetch_blob(s, h, sha, (int64_t)size, err) != 0 ||
                    prpc_blobdir_path(s->w->blobs, sha, path, err) != 0) {
                    ok = 0;
                    break;
                }
            }
            bson_append_document_begin(&arr, k, -1, &entry);
            bson_concat(&entry, &view);
            BSON_APPEND_UTF8(&entry, "path", path);
            bson_append_document_end(&arr, &entry);
        }
    }
    bson_append_array_end(&job, &arr);
    if (ok)
        ok = append_checkpoints(s, h, lease, call_id, &job, err) == 0;
    if (ok)
        out = to_json(&job, NULL, err);
out:
    bson_destroy(&job);
    return out;
}

static void append_error(bson_t *doc, const char *type, const char *message)
{
    bson_t e;
    BSON_APPEND_DOCUMENT_BEGIN(doc, "error", &e);
    BSON_APPEND_UTF8(&e, "type", type);
    BSON_APPEND_UTF8(&e, "message", message);
    BSON_APPEND_UTF8(&e, "traceback", "");
    bson_append_document_end(doc, &e);
}

/* An output file whose upload goes on after the outputs were announced. */
typedef struct pending_output {
    int fd;
    char sha[PRPC_SHA256_HEX_LEN + 1];
    uint64_t size;
    prpc_chunk_digests_t cd; /* its pieces' digests, owned */
} pending_output_t;

/* Upload sha (fd, size bytes) until the broker has synced `until` bytes of it
 * (UINT64_MAX: all, committed), retrying transfer errors. *complete says
 * whether it got there. */
static int upload_output(slot_t *s, prpc_httpc_t *h, int fd, const char *sha, uint64_t size,
                         uint64_t until, int *complete, const prpc_chunk_digests_t *cd,
                         prpc_error_t *err)
{
    int64_t started = prpc_mono_ms();
    int rc;
    for (int attempt = 1;; attempt++) {
        *complete = 1;
        rc = prpc_httpc_upload_blob_hashed(h, fd, sha, size, until, complete, cd, err);
        if (rc == 0 || !transfer_again(s, &s->seed, rc, attempt, started))
            return rc;
    }
}

/* Upload one output file and append its typed entry to arr under key k. A
 * file larger than one chunk is sent only until its first chunk is on the
 * broker when pend is not NULL: *pend then holds the fd for the rest
 * (pend->fd < 0 when nothing is left to send). */
static int put_output_file(slot_t *s, prpc_httpc_t *h, bson_t *arr, const char *k,
                           const bson_t *entry, const char *path, pending_output_t *pend,
                           prpc_error_t *err)
{
    uint8_t digest[PRPC_SHA256_LEN];
    char sha[PRPC_SHA256_HEX_LEN + 1];
    uint64_t size = 0;
    prpc_chunk_digests_t cd = {PRPC_BLOB_UPLOAD_CHUNK, 0, NULL};
    bson_iter_t it;
    bson_t out;
    int fd, rc, has_filename = 0, complete = 1;

    if (pend != NULL) {
        pend->fd = -1;
        memset(&pend->cd, 0, sizeof(pend->cd));
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return prpc_error_errno(err, errno, "output file %s", path);
    /* The chunks' digests come out of the same pass as the file's name. */
    rc = prpc_hash_fd_chunks(fd, digest, &size, &cd, err);
    if (rc == 0) {
        prpc_hex_encode(digest, sizeof(digest), sha);
        uint64_t until = pend != NULL && size > PRPC_BLOB_UPLOAD_CHUNK ? 1 : UINT64_MAX;
        rc = upload_output(s, h, fd, sha, size, until, &complete, &cd, err);
    }
    if (rc == 0 && !complete) {
        pend->fd = fd;
        memcpy(pend->sha, sha, sizeof(pend->sha));
        pend->size = size;
        pend->cd = cd; /* handed over */
        memset(&cd, 0, sizeof(cd));
    } else {
        close(fd);
    }
    prpc_chunk_digests_cleanup(&cd);
    if (rc != 0)
        return rc;
    bson_append_document_begin(arr, k, -1, &out);
    if (bson_iter_init(&it, entry)) {
        while (bson_iter_next(&it)) {
            const char *key = bson_iter_key(&it);
            if (strcmp(key, "path") == 0 || strcmp(key, "blob") == 0 || strcmp(key, "size") == 0)
                continue;
            if (strcmp(key, "filename") == 0)
                has_filename = 1;
            bson_append_iter(&out, key, -1, &it);
        }
    }
    BSON_APPEND_UTF8(&out, "blob", sha);
    BSON_APPEND_INT64(&out, "size", (int64_t)size);
    if (!has_filename) {
        const char *base = strrchr(path, '/');
        BSON_APPEND_UTF8(&out, "filename", base != NULL ? base + 1 : path);
    }
    bson_append_document_end(arr, &out);
    return 0;
}

/* Tell the broker the outputs (outs, an array's entries) while the files in
 * pend are still being uploaded, so the call's readers start downloading them
 * now. Only a head start: whatever goes wrong here, the result still comes. */
static void announce_outputs(slot_t *s, prpc_httpc_t *h, const char *lease_id,
                             const char *call_id, const bson_t *outs)
{
    prpc_buf_t out = PRPC_BUF_INIT, list = PRPC_BUF_INIT;
    char path[PRPC_WIRE_PATH_MAX], *json = NULL, *outputs, *resp = NULL;
    size_t len = 0, rlen = 0;
    long status = 0;
    prpc_error_t e;

    prpc_wire_write_json_doc(&list, outs, 1);
    outputs = prpc_buf_take(&list, NULL, &e);
    if (outputs != NULL) {
        prpc_wire_write_outputs(&out, call_id, outputs);
        json = prpc_buf_take(&out, &len, &e);
        free(outputs);
    }
    if (json == NULL || prpc_wire_path_lease(path, lease_id, "outputs", &e) != 0)
        wlog(s->w, PRPC_LOG_DEBUG, "call %s: announcing its outputs: %s", call_id, e.message);
    else if (prpc_httpc_request(h, "POST", path, json, len, WORKER_REQUEST_TIMEOUT_MS, &status,
                                &resp, &rlen, &e) != 0)
        wlog(s->w, PRPC_LOG_DEBUG, "call %s: announcing its outputs: %s", call_id, e.message);
    else if (status != 200)
        wlog(s->w, PRPC_LOG_DEBUG, "call %s: announcing its outputs: HTTP %ld %.*s", call_id,
             status, (int)(rlen < 200 ? rlen : 200), resp ? resp : "");
    free(resp);
    free(json);
}

/* A result body (wire.h): state with outputs (JSON text, NULL: none) and
 * error (JSON text, NULL: null). */
static char *result_body(const char *call_id, const char *state, const char *outputs_json,
                         const char *error_json, size_t *len, prpc_error_t *err)
{
    prpc_buf_t out = PRPC_BUF_INIT;
    prpc_wire_write_result(&out, call_id, state, outputs_json, error_json);
    return prpc_buf_take(&out, len, err);
}

/* The result of a call this worker failed itself: no outputs, and an error
 * record of type saying why. */
static char *failed_body(const char *call_id, const char *type, const char *message, size_t *len,
                         prpc_error_t *err)
{
    prpc_buf_t rec = PRPC_BUF_INIT;
    char *error_json, *out;
    prpc_wire_write_error_record(&rec, type, message, "");
    error_json = prpc_buf_take(&rec, NULL, err);
    if (error_json == NULL)
        return NULL;
    out = result_body(call_id, "failed", NULL, error_json, len, err);
    free(error_json);
    return out;
}

/* Turn run's answer into the result body, uploading output files: each file
 * larger than a chunk up to its first chunk, then the outputs are announced
 * (announce_outputs), then the rest is sent. */
static char *build_result(slot_t *s, prpc_httpc_t *h, const char *lease_id, const char *call_id,
                          const char *result_json, int run_rc, int terminated, size_t *len,
                          prpc_error_t *err)
{
    pending_output_t pend[WORKER_ANNOUNCED_FILES];
    size_t npend = 0;
    bson_t *res = NULL, outs = BSON_INITIALIZER; /* the outputs, as an array's entries */
    bson_iter_t it, sub;
    prpc_buf_t list = PRPC_BUF_INIT, rec = PRPC_BUF_INIT;
    const char *state = NULL;
    char msg[PRPC_ERROR_MSG_MAX + 64];
    char *out = NULL, *outputs_json = NULL, *error_json = NULL;
    int failed = 0;
    uint32_t i = 0;

    msg[0] = '\0';
    if (run_rc != 0 || result_json == NULL) {
        snprintf(msg, sizeof(msg), "the executor could not run the call (code %d)", run_rc);
    } else {
        bson_error_t be;
        res = bson_new_from_json((const uint8_t *)result_json, -1, &be);
        if (res == NULL)
            snprintf(msg, sizeof(msg), "the executor's result is not JSON: %s", be.message);
        else if ((state = prpc_doc_str(res, "state")) == NULL ||
                 (strcmp(state, "done") != 0 && strcmp(state, "failed") != 0 &&
                  strcmp(state, "terminated") != 0))
            snprintf(msg, sizeof(msg), "the executor's result has no valid state");
    }
    if (msg[0] == '\0' && terminated && strcmp(state, "done") != 0)
        state = "terminated";

    if (msg[0] == '\0') {
        /* Only a result that will be "done" has outputs worth announcing. */
        int early = strcmp(state, "done") == 0;
        if (bson_iter_init_find(&it, res, "outputs") && BSON_ITER_HOLDS_ARRAY(&it) &&
            bson_iter_recurse(&it, &sub)) {
            while (bson_iter_next(&sub)) {
                const char *kind = prpc_iter_doc_str(&sub, "kind"), *k;
                const char *path = prpc_iter_doc_str(&sub, "path");
                const uint8_t *data;
                uint32_t dlen;
                char key[16];
                bson_t view;
                prpc_error_t e;
                if (!BSON_ITER_HOLDS_DOCUMENT(&sub))
                    continue;
                bson_iter_document(&sub, &dlen, &data);
                bson_init_static(&view, data, dlen);
                bson_uint32_to_string(i++, &k, key, sizeof(key));
                if (kind == NULL || strcmp(kind, "file") != 0 || path == NULL) {
                    bson_append_document(&outs, k, -1, &view);
                } else if (put_output_file(s, h, &outs, k, &view, path,
                                           early && npend < WORKER_ANNOUNCED_FILES ? &pend[npend]
                                                                                  : NULL,
                                           &e) != 0) {
                    snprintf(msg, sizeof(msg), "output %u could not be delivered: %s", i - 1,
                             e.message);
                    failed = 1;
                    break;
                } else if (early && npend < WORKER_ANNOUNCED_FILES && pend[npend].fd >= 0) {
                    npend++;
                }
            }
        }
    }
    if (msg[0] == '\0' && npend > 0)
        announce_outputs(s, h, lease_id, call_id, &outs);
    for (size_t j = 0; j < npend; j++) {
        prpc_error_t e;
        int complete = 1;
        if (msg[0] == '\0' &&
            upload_output(s, h, pend[j].fd, pend[j].sha, pend[j].size, UINT64_MAX, &complete,
                          &pend[j].cd, &e) != 0) {
            snprintf(msg, sizeof(msg), "output blob %s could not be delivered: %s", pend[j].sha,
                     e.message);
            failed = 1;
        }
        close(pend[j].fd);
        prpc_chunk_digests_cleanup(&pend[j].cd);
    }
    if (msg[0] != '\0') {
        /* Outputs of a failed delivery are not reported. */
        out = failed_body(call_id, failed ? "OutputError" : "WorkerError", msg, len, err);
        wlog(s->w, PRPC_LOG_ERROR, "call %s failed on this worker: %s", call_id, msg);
        goto done;
    }
    prpc_wire_write_json_doc(&list, &outs, 1);
    if ((outputs_json = prpc_buf_take(&list, NULL, err)) == NULL)
        goto done;
    if (bson_iter_init_find(&it, res, "error") && BSON_ITER_HOLDS_DOCUMENT(&it))
        prpc_wire_write_json_iter(&rec, &it);
    else if (strcmp(state, "failed") == 0)
        prpc_wire_write_error_record(&rec, "WorkerError", "the call failed without an error record",
                                     "");
    if (rec.len > 0 && (error_json = prpc_buf_take(&rec, NULL, err)) == NULL)
        goto done;
    out = result_body(call_id, state, outputs_json, error_json, len, err);
done:
    prpc_buf_cleanup(&rec);
    free(outputs_json);
    free(error_json);
    bson_destroy(&outs);
    if (res != NULL)
        bson_destroy(res);
    return out;
}

/* 1 when run's answer parses and says "terminated". */
static int result_is_terminated(const char *result_json)
{
    bson_t *res = result_json != NULL ? bson_new_from_json((const uint8_t *)result_json, -1, NULL)
                                      : NULL;
    const char *state = res != NULL ? prpc_doc_str(res, "state") : NULL;
    int yes = state != NULL && strcmp(state, "terminated") == 0;
    if (res != NULL)
        bson_destroy(res);
    return yes;
}

/* Push a result; retried on transport errors and answers that say the broker
 * failed (prpc_httpc_retryable_status; worker.h). A retry of a result the
 * broker already took answers 200. */
static void push_result(slot_t *s, prpc_httpc_t *h, const char *lease_id, const char *call_id,
                        const char *body, size_t len)
{
    prpc_worker_t *w = s->w;
    char pq[PRPC_WIRE_PATH_MAX];
    prpc_error_t err;
    if (prpc_wire_path_lease(pq, lease_id, "result", &err) != 0) {
        wlog(w, PRPC_LOG_ERROR, "call %s: result lost: %s", call_id, err.message);
        return;
    }
    for (int attempt = 1; attempt <= PRPC_WORKER_RESULT_TRIES; attempt++) {
        long status = 0;
        char *resp = NULL;
        size_t rlen = 0;
        int rc = prpc_httpc_request(h, "POST", pq, body, len, WORKER_REQUEST_TIMEOUT_MS, &status,
                                    &resp, &rlen, &err);
        if (rc == 0 && status == 200) {
            free(resp);
            wlog(w, PRPC_LOG_INFO, "call %s: result delivered", call_id);
            return;
        }
        if (rc == 0) {
            prpc_httpc_status_error(status, resp, rlen, "pushing the result", &err);
            free(resp);
            if (!prpc_httpc_retryable_status(status)) {
                wlog(w, PRPC_LOG_ERROR, "call %s: broker refused the result: %s", call_id,
                     err.message);
                return;
            }
            rc = PRPC_ECONN; /* the broker failed to take it: as good as unreachable */
        }
        if (!transport_error(rc) || attempt == PRPC_WORKER_RESULT_TRIES) {
            wlog(w, PRPC_LOG_ERROR, "call %s: result lost: %s", call_id, err.message);
            return;
        }
        wlog(w, PRPC_LOG_WARNING, "call %s: pushing the result failed, retrying: %s", call_id,
             err.message);
        backoff(s, attempt);
    }
}

static void work_lease(slot_t *s, int b, prpc_httpc_t *h, const char *resp, size_t rlen)
{
    prpc_worker_t *w = s->w;
    bson_t *lease = bson_new_from_json((const uint8_t *)resp, (ssize_t)rlen, NULL);
    prpc_wire_lease_t head;
    char work_dir[WORKER_PATH_MAX], cid[PRPC_SHA256_HEX_LEN + 1], lid[PRPC_LEASE_ID_HEX + 1];
    char *job = NULL, *result = NULL, *body = NULL;
    size_t body_len = 0;
    prpc_error_t err;
    int run_rc = -1, skip, terminated, stale;

    prpc_error_clear(&err);
    if (lease == NULL) {
        wlog(w, PRPC_LOG_ERROR, "broker %s answered a lease request with invalid JSON",
             w->brokers[b]);
        return;
    }
    if (prpc_wire_decode_lease(lease, &head, &err) != 0) {
        wlog(w, PRPC_LOG_ERROR, "broker %s answered a lease without a valid lease or call id (%s)",
             w->brokers[b], err.message);
        bson_destroy(lease);
        return;
    }
    memcpy(cid, head.call_id, sizeof(cid));
    memcpy(lid, head.id, sizeof(lid));
    snprintf(work_dir, sizeof(work_dir), "%s/%s", w->jobs_dir, cid);
    wlog(w, PRPC_LOG_INFO, "call %s: leased from %s", cid, w->brokers[b]);

    pthread_mutex_lock(&w->mu);
    s->active = 1;
    s->job_started_ns = prpc_now_ns();
    s->broker = b;
    snprintf(s->call_id, sizeof(s->call_id), "%s", cid);
    snprintf(s->lease_id, sizeof(s->lease_id), "%s", lid);
    s->progress = 0;
    s->hb_interval_ms = head.heartbeat_ms >= 100 && head.heartbeat_ms <= 600000
                            ? (int)head.heartbeat_ms
                            : PRPC_WORKER_DEFAULT_HEARTBEAT_MS;
    s->hb_stop = s->running = s->cancel_sent = s->terminate_ordered = s->stale = 0;
    s->hb_gen++;
    atomic_store(&s->hb_abort, 0);
    pthread_cond_broadcast(&s->hb_cv);
    pthread_mutex_unlock(&w->mu);

    /* The executor makes the work dir when the function writes there (outputs,
     * checkpoints): most calls never need one. A crashed run may have left one. */
    remove_tree(work_dir);
    s->fetched = 0;
    job = build_job(s, h, lease, cid, lid, work_dir, &err);

    pthread_mutex_lock(&w->mu);
    skip = s->stale || s->terminate_ordered;
    s->running = s->in_run = job != NULL && !skip;
    pthread_mutex_unlock(&w->mu);
    if (job == NULL && !transport_error(err.code)) {
        bson_t doc = BSON_INITIALIZER;
        wlog(w, PRPC_LOG_ERROR, "call %s: cannot prepare the job: %s", cid, err.message);
        BSON_APPEND_UTF8(&doc, "state", "failed");
        /* ENOTFOUND here is an argument the broker does not have (any more). */
        append_error(&doc, err.code == PRPC_ENOTFOUND ? PRPC_ARGUMENT_MISSING : "WorkerError",
                     err.message);
        result = to_json(&doc, NULL, NULL);
        bson_destroy(&doc);
        run_rc = result != NULL ? 0 : -1;
    } else if (!skip) {
        run_rc = w->run(w->ud, job, &result);
    }

    pthread_mutex_lock(&w->mu);
    s->in_run = 0; /* a cancel now would only be remembered for nothing */
    terminated = s->terminate_ordered;
    stale = s->stale;
    pthread_mutex_unlock(&w->mu);
    if (stale) {
        wlog(w, PRPC_LOG_WARNING, "call %s: lease lost, result dropped", cid);
    } else if (job == NULL && transport_error(err.code)) {
        /* The broker is unreachable: failing the call would be wrong and could
         * not be reported anyway. The lease lapses and the call is handed on. */
        wlog(w, PRPC_LOG_WARNING, "call %s: left to lapse: %s", cid, err.message);
    } else if (!skip && !terminated && atomic_load(&w->stopping) && run_rc == 0 &&
               result_is_terminated(result)) {
        wlog(w, PRPC_LOG_INFO, "call %s: stopped with the worker; its lease will lapse", cid);
    } else {
        body = skip ? result_body(cid, "terminated", NULL, NULL, &body_len, &err)
                    : build_result(s, h, lid, cid, result, run_rc, terminated, &body_len,
                                   &err);
        if (body != NULL)
            push_result(s, h, lid, cid, body, body_len);
        else
            wlog(w, PRPC_LOG_ERROR, "call %s: cannot build the result: %s", cid, err.message);
    }

    heartbeat_stop(s);
    pthread_mutex_lock(&w->mu);
    s->active = 0;
    s->running = 0;
    s->call_id[0] = '\0';
    s->lease_id[0] = '\0';
    s->job_started_ns = 0;
    pthread_mutex_unlock(&w->mu);
    remove_tree(work_dir);
    if (s->fetched)
        trim_cache(w);
    free(body);
    free(result);
    free(job);
    bson_destroy(lease);
}

/* ---- slot loop ---- */

static void *slot_main(void *arg)
{
    slot_t *s = arg;
    prpc_worker_t *w = s->w;
    int b = 0, failures = 0;
    char request[PRPC_AUTH_NONCE_HEX] = "", path[PRPC_WIRE_PATH_MAX];

    while (!atomic_load(&w->stopping)) {
        prpc_error_t err;
        long status = 0;
        char *resp = NULL;
        size_t rlen = 0;
        int rc;
        prpc_httpc_t *h = handle_for(w, s->handles, b, &err);

        if (h == NULL) {
            rc = err.code;
        } else {
            /* One request id per lease asked for, kept across retries after a
             * transport error: a lease whose answer was lost comes back. */
            if (request[0] == '\0' && prpc_auth_nonce(request, NULL) != 0)
                request[0] = '\0';
            if (prpc_wire_path_leases(path, request, NULL) != 0)
                prpc_wire_path_leases(path, NULL, NULL);
            prpc_httpc_set_cancel(h, &w->stopping);
            rc = prpc_httpc_request(h, "POST", path, w->lease_body,
                                    w->lease_body_len, w->lease_wait_ms + WORKER_LEASE_MARGIN_MS,
                                    &status, &resp, &rlen, &err);
            prpc_httpc_set_cancel(h, NULL);
            if (!transport_error(rc))
                request[0] = '\0';
        }
        if (atomic_load(&w->stopping)) {
            /* A lease granted as we stopped lapses and is handed on. */
            free(resp);
            break;
        }
        if (rc == 0 && status == 200) {
            failures = 0;
            work_lease(s, b, h, resp, rlen);
        } else if (rc == 0 && status == 204) {
            failures = 0;
        } else {
            if (rc == 0)
                rc = prpc_httpc_status_error(status, resp, rlen, "asking for work", &err);
            failures++;
            if (failures == 1 || failures % 10 == 0)
                wlog(w, PRPC_LOG_WARNING, "broker %s: %s", w->brokers[b], err.message);
            /* A broker that cannot be reached or fails (5xx) is left for the
             * next; one that refuses us (4xx) would refuse us again too. */
            if (transport_error(rc) || rc == PRPC_EPROTO)
                b = (b + 1) % (int)w->n_brokers;
            backoff(s, failures);
        }
        free(resp);
    }
    return NULL;
}

int prpc_worker_start(prpc_worker_t *w, prpc_error_t *err)
{
    if (w->started)
        return prpc_error_set(err, PRPC_ESTATE, "worker %s was already started", w->name);
    w->started = 1;
    for (int i = 0; i < w->concurrency; i++) {
        slot_t *s = &w->slots[i];
        int e = pthread_create(&s->hb_thread, NULL, heartbeat_main, s);
        if (e != 0) {
            prpc_worker_stop(w);
            return prpc_error_errno(err, e, "worker %s: starting heartbeat thread %d", w->name,
                                    i);
        }
        s->hb_started = 1;
        e = pthread_create(&s->thread, NULL, slot_main, s);
        if (e != 0) {
            prpc_worker_stop(w);
            return prpc_error_errno(err, e, "worker %s: starting slot thread %d", w->name, i);
        }
        s->thread_started = 1;
    }
    wlog(w, PRPC_LOG_INFO, "serving with %d slot(s), first broker %s", w->concurrency,
         w->brokers[0]);
    return 0;
}

void prpc_worker_stop(prpc_worker_t *w)
{
    if (w == NULL || w->stopped)
        return;
    w->stopped = 1;
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->stopping, 1);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->concurrency; i++) {
        if (w->slots[i].thread_started) {
            pthread_join(w->slots[i].thread, NULL);
            w->slots[i].thread_started = 0;
        }
    }
    /* The slots have ended their calls: their heartbeat threads go too. */
    for (int i = 0; i < w->concurrency; i++) {
        slot_t *s = &w->slots[i];
        if (!s->hb_started)
            continue;
        pthread_mutex_lock(&w->mu);
        s->hb_exit = 1;
        pthread_cond_broadcast(&s->hb_cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(s->hb_thread, NULL);
        s->hb_started = 0;
    }
}

void prpc_worker_free(prpc_worker_t *w)
{
    if (w == NULL)
        return;
    prpc_worker_stop(w);
    worker_free_fields(w);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->trim_mu);
    free(w);
}

int prpc_worker_report_progress(prpc_worker_t *w, const char *call_id, double pct,
                                prpc_error_t *err)
{
    int found = 0;
    if (call_id == NULL)
        return prpc_error_set(err, PRPC_EINVAL, "report_progress: call id missing");
    if (!(pct >= 0)) /* also NaN */
        pct = 0;
    if (pct > 100)
        pct = 100;
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->concurrency; i++) {
        if (w->slots[i].active && strcmp(w->slots[i].call_id, call_id) == 0) {
            w->slots[i].progress = pct;
            found = 1;
        }
    }
    pthread_mutex_unlock(&w->mu);
    if (!found)
        return prpc_error_set(err, PRPC_ENOTFOUND, "report_progress: no running call %s",
                              call_id);
    return 0;
}

/* ---- checkpoints ---- */

/* POST the checkpoint record; retried like a result (worker.h). */
static int post_checkpoint(slot_t *s, prpc_httpc_t *h, const char *lease_id, const char *body,
                           prpc_error_t *err)
{
    char pq[PRPC_WIRE_PATH_MAX];
    int rc = prpc_wire_path_lease(pq, lease_id, "checkpoints", err);
    if (rc != 0)
        return rc;
    for (int attempt = 1; attempt <= PRPC_WORKER_RESULT_TRIES; attempt++) {
        long status = 0;
        char *resp = NULL;
        size_t rlen = 0;
        rc = prpc_httpc_request(h, "POST", pq, body, strlen(body), WORKER_REQUEST_TIMEOUT_MS,
                                &status, &resp, &rlen, err);
        if (rc == 0 && status == 200) {
            free(resp);
            return 0;
        }
        if (rc == 0) {
            rc = prpc_httpc_status_error(status, resp, rlen, "saving a checkpoint", err);
            free(resp);
            if (!prpc_httpc_retryable_status(status))
                return rc;
        } else if (!transport_error(rc)) {
            return rc;
        }
        if (attempt < PRPC_WORKER_RESULT_TRIES)
            backoff_seeded(s->w, &s->ck_seed, attempt);
    }
    return rc;
}

int prpc_worker_checkpoint_save(prpc_worker_t *w, const char *call_id, const char *key,
                                const char *path, prpc_error_t *err)
{
    slot_t *s = NULL;
    prpc_httpc_t *h;
    uint8_t digest[PRPC_SHA256_LEN];
    char sha[PRPC_SHA256_HEX_LEN + 1], lease_id[PRPC_LEASE_ID_HEX + 1], *body;
    prpc_buf_t out = PRPC_BUF_INIT;
    uint64_t size = 0;
    int b = 0, fd = -1, rc = 0, stale = 0;

    if (w == NULL || !prpc_wire_valid_call_id(call_id))
        return prpc_error_set(err, PRPC_EINVAL, "checkpoint_save: a call id (64 hex) is needed");
    if (!prpc_wire_valid_checkpoint_key(key))
        return prpc_error_set(err, PRPC_EINVAL,
                              "checkpoint key \"%.140s\" is not 1 to %d characters of "
                              "[A-Za-z0-9._-]",
                              key != NULL ? key : "(null)", PRPC_CHECKPOINT_KEY_MAX);
    if (path == NULL || path[0] == '\0')
        return prpc_error_set(err, PRPC_EINVAL, "checkpoint %s: no file given", key);
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->concurrency && s == NULL; i++)
        if (w->slots[i].active && strcmp(w->slots[i].call_id, call_id) == 0)
            s = &w->slots[i];
    if (s != NULL) {
        b = s->broker;
        stale = s->stale;
        snprintf(lease_id, sizeof(lease_id), "%s", s->lease_id);
    }
    pthread_mutex_unlock(&w->mu);
    if (s == NULL)
        return prpc_error_set(err, PRPC_ENOTFOUND,
                              "checkpoint %s: call %s is not running on this worker", key,
                              call_id);
    if (stale)
        return prpc_error_set(err, PRPC_ESTATE,
                              "checkpoint %s: the lease of call %s lapsed or was replaced: the "
                              "call is no longer this worker's",
                              key, call_id);

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return prpc_error_errno(err, errno, "checkpoint %s: cannot open %s", key, path);
    pthread_mutex_lock(&s->ck_mu);
    h = handle_for(w, s->ck_handles, b, err);
    if (h == NULL)
        rc = err != NULL ? err->code : PRPC_ENOMEM;
    if (rc == 0)
        rc = prpc_hash_fd(fd, digest, &size, err);
    if (rc == 0) {
        int64_t started = prpc_mono_ms();
        prpc_hex_encode(digest, sizeof(digest), sha);
        for (int attempt = 1;; attempt++) {
            rc = prpc_httpc_upload_blob(h, fd, sha, size, err);
            if (rc == 0 || !transfer_again(s, &s->ck_seed, rc, attempt, started))
                break;
        }
    }
    if (rc == 0) {
        prpc_wire_write_checkpoint(&out, call_id, key, sha, size);
        body = prpc_buf_take(&out, NULL, err);
        rc = body != NULL ? post_checkpoint(s, h, lease_id, body, err) : PRPC_ENOMEM;
        free(body);
    }
    pthread_mutex_unlock(&s->ck_mu);
    close(fd);
    if (rc == 0)
        wlog(w, PRPC_LOG_DEBUG, "call %s: checkpoint %s saved (%" PRIu64 " bytes)", call_id, key,
             size);
    return rc;
}
