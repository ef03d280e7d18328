/*
 * store.h - the broker's durable truth: calls, leases, blob references and
 * expiry, behind one interface with two backends.
 *
 * A call is named by its content (64 lowercase hex, see docs/IDENTITY.md),
 * so submitting the same id twice is the same call. Its life:
 *
 *     queued -> leased -> done | failed | terminated
 *        ^        |
 *        +--------+  (lease expired, attempts left)
 *
 * Backends: "sqlite:PATH" or a plain PATH opens store_sqlite.c (the default, a
 * WAL database file); "mongodb://..." opens store_mongo.c. store.c validates
 * every argument, then dispatches through the backend's prpc_store_ops table,
 * so backends only see well-formed input.
 *
 * Durability: every function that writes returns only after the change is
 * durable under the configured synchronous level ("full" by default: fsync on
 * every commit). A broker may acknowledge a submit as soon as it returns.
 *
 * Time is always passed in by the caller (now_ms, unix milliseconds), so the
 * store never reads a clock and tests can drive expiry exactly.
 *
 * Thread safety: a prpc_store_t may be used from any number of threads at
 * once; each backend serialises access to its connection internally (SQLite:
 * one connection guarded by a mutex). Several processes may open the same
 * SQLite file: writes that read first run in BEGIN IMMEDIATE transactions and
 * wait up to busy_timeout_ms for the lock. prpc_store_close must not race any
 * other call on the same handle.
 */
#ifndef PRPC_STORE_H
#define PRPC_STORE_H

#include "common.h"

#include <stdint.h>

#define PRPC_CALL_ID_HEX 64                /* call ids and blob names: SHA-256 hex */
#define PRPC_LEASE_ID_HEX 32               /* 128 random bits */
#define PRPC_STORE_NAME_MAX 127            /* function and worker names, bytes */
#define PRPC_STORE_JSON_MAX (16u << 20)    /* args/outputs/error JSON text, bytes */
#define PRPC_STORE_LEASE_FUNCTIONS_MAX 1024 /* (function, version) pairs per lease request */
#define PRPC_STORE_SCHEMA_VERSION 2        /* PRAGMA user_version of a SQLite store */
#define PRPC_CHECKPOINT_KEY_MAX 128        /* checkpoint key, bytes of [A-Za-z0-9._-] */
#define PRPC_CHECKPOINTS_MAX 64            /* checkpoint keys one call may hold */
#define PRPC_STORE_APPLICATION_ID 0x70327072 /* "p2pr": PRAGMA application_id */
#define PRPC_STORE_BUSY_TIMEOUT_MS 5000    /* default wait for another process's lock */

/* Values are stored on disk: never renumber. */
typedef enum prpc_call_state {
    PRPC_CALL_QUEUED = 0,
    PRPC_CALL_LEASED = 1,
    PRPC_CALL_DONE = 2,
    PRPC_CALL_FAILED = 3,
    PRPC_CALL_TERMINATED = 4,
} prpc_call_state_t;

#define PRPC_CALL_NSTATES 5

/* "queued", "leased", "done", "failed", "terminated"; "unknown" otherwise.
 * The string is static. */
const char *prpc_call_state_name(int state);

/* 1 for done, failed and terminated. */
int prpc_call_state_is_terminal(int state);

typedef struct prpc_call {
    char id[PRPC_CALL_ID_HEX + 1];       /* call identifier, 64 lowercase hex */
    char function[PRPC_STORE_NAME_MAX + 1]; /* function name */
    char version[PRPC_CALL_ID_HEX + 1];  /* function version, 1..64 lowercase hex */
    int state;                           /* a prpc_call_state_t */
    char *args_json;                     /* owned: the arguments, JSON object text */
    char *outputs_json;                  /* owned, NULL until done */
    char *error_json;                    /* owned, NULL unless failed or terminated */
    double progress;                     /* 0..100 */
    int attempts;                        /* leases granted so far */
    int terminate_requested;             /* a client asked to terminate the leased call */
    int64_t created_ms, updated_ms;      /* unix ms */
    int64_t finished_ms;                 /* unix ms; 0 until terminal */
    char lease_id[PRPC_LEASE_ID_HEX + 1]; /* current lease, "" when none */
    int64_t lease_deadline_ms;           /* 0 when no lease */
    char worker[PRPC_STORE_NAME_MAX + 1]; /* who holds the lease, "" when none */
} prpc_call_t;

/* Free the owned strings and zero the struct. Accepts a zeroed struct and NULL.
 * Functions below that fill a prpc_call_t overwrite it entirely (without
 * freeing what it held) and leave it zeroed on error, so cleanup is always
 * safe afterwards; clean up before reusing one. */
void prpc_call_cleanup(prpc_call_t *c);

typedef struct prpc_store_options {
    const char *synchronous; /* SQLite: "full" (NULL = default), "normal" or "off" */
    int busy_timeout_ms;     /* 0 = PRPC_STORE_BUSY_TIMEOUT_MS */
    int skip_open_check;     /* 1: skip PRAGMA quick_check on open (large stores) */
} prpc_store_options_t;

typedef struct prpc_store prpc_store_t;

/* Open (creating when missing, with its parent directories) the store at uri:
 * "sqlite:PATH", a plain PATH, or "mongodb://..." / "mongodb+srv://...".
 * opts may be NULL for defaults.
 * Returns the handle, or NULL with err set: EINVAL (empty or unknown uri, bad
 * option), EIO (cannot create or open the file), ECORRUPT (the file is not a
 * database, is damaged, belongs to another application, or has a newer schema;
 * the message names the path), ENOTSUP (MongoDB backend not available).
 * A file that fails the checks is never modified. */
prpc_store_t *prpc_store_open(const char *uri, const prpc_store_options_t *opts,
                              prpc_error_t *err);

/* Close the handle. Accepts NULL. */
void prpc_store_close(prpc_store_t *s);

/* One call of a prpc_store_call_submit_many batch. */
typedef struct prpc_submit_item {
    const prpc_call_t *call;       /* id, function, version, args_json; other fields ignored */
    const char (*blobs)[PRPC_CALL_ID_HEX + 1]; /* blobs the call references (linked if created) */
    size_t nblobs;
    int created;                   /* out: 1 when inserted */
    prpc_call_t current;           /* out: the stored record (prpc_call_cleanup it) */
} prpc_submit_item_t;

/* Submit n calls and link each new one to its blobs in ONE durable
 * transaction (one fsync for all: group commit). Each call is inserted as
 * queued, created at now_ms, unless a call with its id exists: then nothing
 * changes, whatever its state (a failed or terminated call is not restarted;
 * use prpc_store_call_restart). .current gets the stored record either way.
 * All or nothing: on error nothing is stored and the message names the call
 * that failed. Errors: EINVAL (bad field, named), ELIMIT (args_json too long),
 * EEXIST (the id is stored for another function or version), ENOTFOUND (a
 * referenced blob is not known: prpc_store_blob_add it first),
 * EIO/ENOSPC/ECORRUPT. */
int prpc_store_call_submit_many(prpc_store_t *s, prpc_submit_item_t *items, size_t n,
                                int64_t now_ms, prpc_error_t *err);

/* The states of n calls at once (one query): states[i] is a
 * prpc_call_state_t, or -1 when ids[i] is not stored. */
int prpc_store_calls_states(prpc_store_t *s, const char (*ids)[PRPC_CALL_ID_HEX + 1], size_t n,
                            int *states, prpc_error_t *err);

/* *n = the calls leased to worker now. */
int prpc_store_leases_held(prpc_store_t *s, const char *worker, int64_t *n, prpc_error_t *err);

/* Read call id into out. ENOTFOUND when absent. */
int prpc_store_call_get(prpc_store_t *s, const char *id, prpc_call_t *out, prpc_error_t *err);

/* Atomically take the oldest queued call whose (functions[i], versions[i]) is
 * one of the n pairs, and lease it to worker: a fresh lease id from the
 * CSPRNG, deadline now_ms + lease_ms, attempts + 1, progress 0. out receives
 * the leased record. ENOTFOUND when no call matches; EINVAL for n == 0, a NULL
 * or bad entry, lease_ms <= 0. */
int prpc_store_lease_next(prpc_store_t *s, const char *const *functions,
                          const char *const *versions, size_t n, const char *worker,
                          int64_t lease_ms, int64_t now_ms, prpc_call_t *out, prpc_error_t *err);

/* Heartbeat: record progress (0..100) and move the deadline to
 * now_ms + lease_ms. *terminate_requested (may be NULL) tells the worker to
 * kill the call and finish it as terminated. A lease stays valid until it is
 * replaced or prpc_store_leases_expire takes it back, even past its deadline.
 * ENOTFOUND (no such call), ESTATE (lease_id is not the call's current lease:
 * the message says it lapsed or was replaced and the call's state). */
int prpc_store_lease_renew(prpc_store_t *s, const char *call_id, const char *lease_id,
                           double progress, int64_t lease_ms, int64_t now_ms,
                           int *terminate_requested, prpc_error_t *err);

/* Make the call terminal: state is DONE (outputs_json required), FAILED
 * (error_json required) or TERMINATED (error_json optional: a default
 * {"type":"Terminated",...} is stored). The JSON not required by the state is
 * ignored. Sets finished_ms, progress 100 for done, clears the lease and
 * drops the call's checkpoints (a finished call never resumes).
 * With lease_id, the call must be leased under it: else ESTATE. Finishing again
 * with the same lease id and state after success returns 0 without change (a
 * retried request). With lease_id NULL (the broker itself), any queued or
 * leased call may be finished; a terminal one gives ESTATE. ENOTFOUND. */
int prpc_store_call_finish(prpc_store_t *s, const char *call_id, const char *lease_id, int state,
                           const char *outputs_json, const char *error_json, int64_t now_ms,
                           prpc_error_t *err);

/* A client's terminate: queued -> terminated at once; leased ->
 * terminate_requested = 1 (the worker learns it from its next renew); a
 * terminal call is unchanged. *state_out (may be NULL) receives the state
 * after the call. ENOTFOUND. */
int prpc_store_call_terminate(prpc_store_t *s, const char *id, int64_t now_ms, int *state_out,
                              prpc_error_t *err);

/* Any state -> queued: clears outputs, error, progress, lease, attempts,
 * terminate_requested and checkpoints (a restart runs from scratch). A worker
 * still holding the old lease gets ESTATE on its next renew or finish.
 * ENOTFOUND. */
int prpc_store_call_restart(prpc_store_t *s, const char *id, int64_t now_ms, prpc_error_t *err);

/* Remove the call, its checkpoints and its blob references (the blobs stay;
 * see prpc_store_blobs_unreferenced). ENOTFOUND. */
int prpc_store_call_delete(prpc_store_t *s, const char *id, prpc_error_t *err);

/* Take back every lease whose deadline is <= now_ms: the call returns to
 * queued, or becomes failed with error_json
 * {"type":"LeaseExpired","message":"...","attempts":N,"worker":"..."} when its
 * attempts reached max_attempts (>= 1). *requeued and *failed (may be NULL)
 * receive the counts. */
int prpc_store_leases_expire(prpc_store_t *s, int64_t now_ms, int max_attempts, int *requeued,
                             int *failed, prpc_error_t *err);

/* Record blob sha256_hex (64 lowercase hex) of size bytes. Idempotent; EEXIST
 * if it is recorded with another size. */
int prpc_store_blob_add(prpc_store_t *s, const char *sha256_hex, uint64_t size, int64_t now_ms,
                        prpc_error_t *err);

/* *size (may be NULL) receives the blob's size. ENOTFOUND. */
int prpc_store_blob_get(prpc_store_t *s, const char *sha256_hex, uint64_t *size,
                        prpc_error_t *err);

/* The call references the blob. Idempotent. ENOTFOUND (call or blob, named). */
int prpc_store_blob_link(prpc_store_t *s, const char *call_id, const char *sha256_hex,
                         prpc_error_t *err);

/* Up to max blobs referenced by no call nor checkpoint and added before
 * older_than_ms (a
 * grace period for uploads whose call is not submitted yet), oldest first,
 * into out[0..*n). */
int prpc_store_blobs_unreferenced(prpc_store_t *s, int64_t older_than_ms,
                                  char (*out)[PRPC_CALL_ID_HEX + 1], size_t max, size_t *n,
                                  prpc_error_t *err);

/* Forget the blob (the caller removes the file after). ESTATE while a call
 * or a checkpoint references it; ENOTFOUND. */
int prpc_store_blob_remove(prpc_store_t *s, const char *sha256_hex, prpc_error_t *err);

/*
 * Checkpoints: what a running function saved (p2p_save) so that a later
 * lease of the same call resumes from it. A checkpoint is (call, key) ->
 * blob; it references its blob as a call does, so expiry keeps the blob while
 * the checkpoint lives. A call's checkpoints go when it finishes, restarts, is
 * deleted or expires; one failed by lease expiry keeps them until then.
 */
typedef struct prpc_checkpoint {
    char key[PRPC_CHECKPOINT_KEY_MAX + 1]; /* 1..128 of [A-Za-z0-9._-] */
    char sha256[PRPC_CALL_ID_HEX + 1];     /* the content's blob */
    uint64_t size;                         /* its size, bytes */
    int64_t updated_ms;                    /* when it was last saved */
} prpc_checkpoint_t;

/* Record that call_id, leased under lease_id, saved blob sha256_hex (known to
 * the store with this size) as checkpoint key, replacing an earlier save of
 * the key. replaced (may be NULL) receives the blob the key named before, ""
 * when none or the same: the caller may remove it if nothing else references
 * it. Saving the same again (a retried request) changes nothing but the time.
 * Errors: EINVAL (a bad key or field, named; size differs from the blob's
 * recorded size), ENOTFOUND (no such call, or no such blob), ESTATE (lease_id
 * is not the call's current lease: lapsed or replaced, as for renew), ELIMIT
 * (a new key beyond PRPC_CHECKPOINTS_MAX). */
int prpc_store_checkpoint_put(prpc_store_t *s, const char *call_id, const char *lease_id,
                              const char *key, const char *sha256_hex, uint64_t size,
                              int64_t now_ms, char replaced[PRPC_CALL_ID_HEX + 1],
                              prpc_error_t *err);

/* The checkpoints of call_id, by key, into out[0..*n) (at most max; pass
 * PRPC_CHECKPOINTS_MAX to get them all). A call without checkpoints, or
 * unknown, has none (0, *n = 0). */
int prpc_store_checkpoints_list(prpc_store_t *s, const char *call_id, prpc_checkpoint_t *out,
                                size_t max, size_t *n, prpc_error_t *err);

/* Remove the terminal calls finished before finished_before_ms, with their
 * checkpoints and blob references. *removed (may be NULL) receives the count. */
int prpc_store_calls_expire(prpc_store_t *s, int64_t finished_before_ms, int *removed,
                            prpc_error_t *err);

/* counts[state] = number of calls of function (NULL: of all functions) in each
 * state. */
int prpc_store_function_stats(prpc_store_t *s, const char *function,
                              int64_t counts[PRPC_CALL_NSTATES], prpc_error_t *err);

#ifdef PRPC_UNITTEST
/* For tests/c only (-DPRPC_UNITTEST): the engine never calls these, so the
 * extension does not carry them. */

/* "sqlite" or "mongodb". Static string. */
const char *prpc_store_backend(const prpc_store_t *s);

/* prpc_store_call_submit_many of the one call c. *created and current may be
 * NULL. Errors as prpc_store_call_submit_many. */
int prpc_store_call_submit(prpc_store_t *s, const prpc_call_t *c, int64_t now_ms, int *created,
                           prpc_call_t *current, prpc_error_t *err);

/* The earliest deadline among leased calls. ENOTFOUND when no call is leased.
 * (The broker does not need it: its tick runs prpc_store_leases_expire every
 * EXPIRE_EVERY_MS.) */
int prpc_store_next_lease_deadline(prpc_store_t *s, int64_t *deadline_ms, prpc_error_t *err);

/* Full consistency check of the stored data (SQLite: PRAGMA integrity_check).
 * ECORRUPT with the first problem found. */
int prpc_store_check_integrity(prpc_store_t *s, prpc_error_t *err);
#endif

/*
 * Backend interface, for store.c and store_<backend>.c only. A backend's
 * handle embeds struct prpc_store as its first member. Every op is called with
 * arguments already validated by store.c and with out-parameters non-NULL
 * where the public function allows NULL.
 */
struct prpc_store_ops {
    const char *name;
    void (*close)(prpc_store_t *s);
    int (*call_submit_many)(prpc_store_t *s, prpc_submit_item_t *items, size_t n,
                            int64_t now_ms, prpc_error_t *err);
    int (*call_get)(prpc_store_t *s, const char *id, prpc_call_t *out, prpc_error_t *err);
    int (*leases_held)(prpc_store_t *s, const char *worker, int64_t *n, prpc_error_t *err);
    int (*calls_states)(prpc_store_t *s, const char (*ids)[PRPC_CALL_ID_HEX + 1], size_t n,
                        int *states, prpc_error_t *err);
    int (*lease_next)(prpc_store_t *s, const char *const *functions, const char *const *versions,
                      size_t n, const char *worker, const char *lease_id, int64_t deadline_ms,
                      int64_t now_ms, prpc_call_t *out, prpc_error_t *err);
    int (*lease_renew)(prpc_store_t *s, const char *call_id, const char *lease_id,
                       double progress, int64_t deadline_ms, int64_t now_ms,
                       int *terminate_requested, prpc_error_t *err);
    int (*call_finish)(prpc_store_t *s, const char *call_id, const char *lease_id, int state,
                       const char *outputs_json, const char *error_json, int64_t now_ms,
                       prpc_error_t *err);
    int (*call_terminate)(prpc_store_t *s, const char *id, int64_t now_ms, int *state_out,
                          prpc_error_t *err);
    int (*call_restart)(prpc_store_t *s, const char *id, int64_t now_ms, prpc_error_t *err);
    int (*call_delete)(prpc_store_t *s, const char *id, prpc_error_t *err);
    int (*leases_expire)(prpc_store_t *s, int64_t now_ms, int max_attempts, int *requeued,
                         int *failed, prpc_error_t *err);
    int (*next_lease_deadline)(prpc_store_t *s, int64_t *deadline_ms, prpc_error_t *err);
    int (*blob_add)(prpc_store_t *s, const char *sha256_hex, uint64_t size, int64_t now_ms,
                    prpc_error_t *err);
    int (*blob_get)(prpc_store_t *s, const char *sha256_hex, uint64_t *size, prpc_error_t *err);
    int (*blob_link)(prpc_store_t *s, const char *call_id, const char *sha256_hex,
                     prpc_error_t *err);
    int (*blobs_unreferenced)(prpc_store_t *s, int64_t older_than_ms,
                              char (*out)[PRPC_CALL_ID_HEX + 1], size_t max, size_t *n,
                              prpc_error_t *err);
    int (*blob_remove)(prpc_store_t *s, const char *sha256_hex, prpc_error_t *err);
    int (*calls_expire)(prpc_store_t *s, int64_t finished_before_ms, int *removed,
                        prpc_error_t *err);
    int (*checkpoint_put)(prpc_store_t *s, const char *call_id, const char *lease_id,
                          const char *key, const char *sha256_hex, uint64_t size, int64_t now_ms,
                          char replaced[PRPC_CALL_ID_HEX + 1], prpc_error_t *err);
    int (*checkpoints_list)(prpc_store_t *s, const char *call_id, prpc_checkpoint_t *out,
                            size_t max, size_t *n, prpc_error_t *err);
    int (*function_stats)(prpc_store_t *s, const char *function,
                          int64_t counts[PRPC_CALL_NSTATES], prpc_error_t *err);
    int (*check_integrity)(prpc_store_t *s, prpc_error_t *err);
};

struct prpc_store {
    const struct prpc_store_ops *ops;
};

/* The error text stored for a call terminated without one from the worker. */
extern const char prpc__store_terminated_json[];

/* Backend constructors: path or uri already checked non-empty, opts non-NULL
 * with defaults filled in. */
prpc_store_t *prpc__store_sqlite_open(const char *path, const prpc_store_options_t *opts,
                                      prpc_error_t *err);
prpc_store_t *prpc__store_mongo_open(const char *uri, const prpc_store_options_t *opts,
                                     prpc_error_t *err);


/* The checkpoint key rule, the one definition (the wire, the broker, the
 * worker and Python's p2p_save use it): 1 to PRPC_CHECKPOINT_KEY_MAX bytes of
 * [A-Za-z0-9._-] (keys name files and travel in URLs and JSON unescaped).
 * PRPC_EINVAL with a message quoting the key otherwise. */
int prpc_store_check_checkpoint_key(const char *key, prpc_error_t *err);

#endif
