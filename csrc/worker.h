/*
 * worker.h - the worker loop: the engine side of a worker node (and of a
 * broker that does work itself). It asks brokers for work with long-polls,
 * fetches a call's file arguments into a local blob cache, hands the call to
 * the embedding program's `run` callback (the Python executor pool), keeps
 * the lease alive with heartbeats that carry progress, uploads the output
 * files and pushes the result. Nothing ever connects to a worker.
 *
 * Threads: concurrency N starts N slot threads; each works one call at a time
 * and, while it does, runs a heartbeat thread of its own. A slot keeps one
 * HTTP connection per broker for its work and its heartbeat thread another,
 * so N slots hold at most 2N connections to a broker.
 *
 * Callbacks are called from these engine threads, never while an engine lock
 * is held, so they may block (run does, for the length of the call) and may
 * call prpc_worker_report_progress. If prpc_worker_new or prpc_worker_start
 * returns an error, no callback is ever called.
 *
 * Wire: docs/API.md "Leases" and "Blobs", through wire.h. Brokers are tried in the order
 * given; after a transport failure a slot backs off (bounded, with jitter)
 * and moves on to the next broker. A lease is served entirely by the broker
 * that granted it.
 *
 * Retries: every request is safe to repeat, so a lost reply costs nothing but
 * time. A result push is retried on transport errors and answers that say
 * the broker failed to store it rather than refused it (500, 502, 503, 504:
 * httpc.h's prpc_httpc_retryable_status) up to PRPC_WORKER_RESULT_TRIES
 * times with the slot's backoff (prpc_httpc_backoff_ms); a 409 (the lease
 * lapsed or was replaced) or another status ends it. Blob transfers resume where
 * the last try stopped and are retried on transport errors and broker-side
 * EIO/5xx for up to PRPC_WORKER_TRANSFER_RETRY_MS, with short jittered waits,
 * unless the lease is lost meanwhile. Heartbeats need no retry of their own:
 * the next one follows after the heartbeat interval, well within the lease.
 */
#ifndef PRPC_WORKER_H
#define PRPC_WORKER_H

#include "common.h"

#define PRPC_WORKER_MAX_SLOTS 256            /* upper bound on concurrency */
#define PRPC_WORKER_BACKOFF_MIN_MS 200       /* first wait after a failure */
#define PRPC_WORKER_BACKOFF_MAX_MS 10000     /* longest wait between tries */
#define PRPC_WORKER_RESULT_TRIES 10          /* pushes of one result before giving up */
#define PRPC_WORKER_TRANSFER_RETRY_MS 60000  /* a failing blob transfer is retried this long */
#define PRPC_WORKER_DEFAULT_HEARTBEAT_MS 5000 /* when a lease names none */

/* Log levels, numerically those of Python's logging module. */
#define PRPC_LOG_DEBUG 10
#define PRPC_LOG_INFO 20
#define PRPC_LOG_WARNING 30
#define PRPC_LOG_ERROR 40

typedef struct prpc_worker prpc_worker_t;

typedef struct prpc_worker_function {
    const char *name;    /* registered function name */
    const char *version; /* its version (64 hex) */
} prpc_worker_function_t;

/*
 * Run one call and block until it has finished in its executor. job_json is
 *   {"call_id", "lease_id", "function", "version", "work_dir",
 *    "args": [typed entries as in docs/API.md; file entries also carry
 *             "path", the local path of the verified blob],
 *    "checkpoints": [{"key", "path"}: what earlier leases of the call saved
 *                    (prpc_worker_checkpoint_save), fetched like file args]}
 * and is valid for the duration of the callback. work_dir is the call's own
 * directory, removed with everything in it when the call ends; it does not
 * exist yet: the run makes it when it writes files there (most calls don't).
 * On return 0, *result_json
 * is a malloc'd (the engine frees it) JSON object
 *   {"state": "done"|"failed"|"terminated",
 *    "outputs": [typed entries; file outputs carry "path", a local file the
 *                engine hashes and uploads, and may carry "filename"],
 *    "error": {"type", "message", "traceback"} | null}.
 * A non-zero return (or a NULL result) counts as a failed call.
 */
typedef int (*prpc_worker_run_fn)(void *ud, const char *job_json, char **result_json);

/* Stop the call call_id as held under lease_id (the job's "lease_id"): its
 * broker asked to terminate it, or the lease was lost. Called at most once
 * per lease, from a heartbeat thread, possibly while run is still starting
 * that call (the callee must remember it) or just after run returned: a
 * callee that remembers early cancels must match them by lease, so a late
 * cancel never stops the same call leased again. */
typedef void (*prpc_worker_cancel_fn)(void *ud, const char *call_id, const char *lease_id);

/* One log line (no newline); may be NULL: warnings and errors then go to
 * stderr. */
typedef void (*prpc_worker_log_fn)(void *ud, int level, const char *message);

#define PRPC_WORKER_CACHE_DEFAULT (10ULL << 30) /* the blob cache bound by default */

typedef struct prpc_worker_config {
    const char *const *brokers;              /* "host:port" or URLs, tried in order */
    size_t n_brokers;                        /* at least 1 */
    const uint8_t *key;                      /* PRPC_AUTH_KEY_LEN bytes, or NULL */
    const char *name;                        /* worker name; NULL: "<hostname>-<pid>" */
    const char *data_dir;                    /* blobs/ and jobs/ live here; created */
    const prpc_worker_function_t *functions; /* what this worker serves */
    size_t n_functions;                      /* at least 1 */
    int concurrency;                         /* slots; <= 0 means 1 */
    int lease_wait_ms;                       /* long-poll wait; <= 0 means 20000 */
    int connect_timeout_ms;                  /* <= 0 means 5000 */
    const char *ca;                          /* PEM CA file for https:// brokers; NULL: the
                                                system's trusted CAs */
    uint64_t cache_max_bytes;                /* blob cache bound, LRU; 0 means
                                                PRPC_WORKER_CACHE_DEFAULT */
    prpc_worker_run_fn run;                  /* required */
    prpc_worker_cancel_fn cancel;            /* required */
    prpc_worker_log_fn log;                  /* optional */
    void *ud;                                /* passed to the callbacks */
} prpc_worker_config_t;

/* Check and copy cfg (nothing of it is kept), create the data directory, and
 * probe GPUs (reported with every lease request). No thread starts yet.
 * NULL with err filled: PRPC_EINVAL naming the bad field, PRPC_EIO/ENOSPC
 * creating directories, PRPC_ENOMEM. */
prpc_worker_t *prpc_worker_new(const prpc_worker_config_t *cfg, prpc_error_t *err);

/* Start the slot threads. PRPC_ESTATE if already started (a stopped worker
 * is not restarted), PRPC_ENOMEM/PRPC_EIO when a thread cannot start (those
 * started are stopped again). */
int prpc_worker_start(prpc_worker_t *w, prpc_error_t *err);

/* Stop asking for work, end pending long-polls (within about a second), let
 * running calls finish and push their results, then join every thread. A
 * call whose run returns "terminated" during stop without the broker having
 * asked for it is not reported: its lease lapses and the broker hands it to
 * another worker. Blocks as long as the longest running call (cancel them
 * through the executor to stop faster). Safe to call more than once and on
 * a worker never started. Must not be called from a callback. */
void prpc_worker_stop(prpc_worker_t *w);

/* Stop (see above) and free; NULL is fine. */
void prpc_worker_free(prpc_worker_t *w);

/* Record progress (clamped to 0..100) of a running call; the next heartbeat
 * carries it. Any thread, including callbacks. PRPC_ENOTFOUND when no slot
 * is running call_id. */
int prpc_worker_report_progress(prpc_worker_t *w, const char *call_id, double pct,
                                prpc_error_t *err);

/* Save the file at path as checkpoint key of the running call call_id, so
 * that a later lease of the call (here or on another worker) finds it in its
 * job's "checkpoints": the file is hashed, uploaded as a blob (resuming,
 * retried like other transfers) and recorded under the call's lease with
 * POST /v1/leases/{lease}/checkpoints. Returns once the broker has made the
 * save durable. A later save of the same key replaces it. Blocks for the
 * upload; the file must not change until it returns.
 * Any thread, while run is in progress for call_id (not from the heartbeat
 * callbacks); saves of one call are serialised. Must not race
 * prpc_worker_free.
 * Errors: PRPC_EINVAL (bad call id or key: wire.h's checkpoint key rule, 1
 * to PRPC_CHECKPOINT_KEY_MAX bytes of [A-Za-z0-9._-]), PRPC_ENOTFOUND (no
 * slot runs call_id), PRPC_ESTATE (the lease lapsed or was replaced: the call
 * belongs to another worker now), PRPC_ELIMIT (too many keys for one call),
 * PRPC_EIO naming the file, transport codes (PRPC_ECONN, PRPC_ETIMEDOUT) once
 * retries are spent. */
int prpc_worker_checkpoint_save(prpc_worker_t *w, const char *call_id, const char *key,
                                const char *path, prpc_error_t *err);

#endif
