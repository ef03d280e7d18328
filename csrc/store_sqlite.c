/*
 * store_sqlite.c - the default store backend: one SQLite database file in WAL
 * mode, synchronous=FULL unless the options say otherwise, so every commit is
 * on disk before a function returns. The schema is described in docs/STORE.md;
 * the file is marked with PRAGMA application_id (PRPC_STORE_APPLICATION_ID)
 * and PRAGMA user_version (PRPC_STORE_SCHEMA_VERSION) so that a foreign,
 * damaged or newer file is refused on open without being touched.
 *
 * Thread safety: the handle owns one connection (opened SQLITE_OPEN_NOMUTEX)
 * and a pthread mutex held for the whole of every operation, prepared
 * statements and transaction included, so the handle may be shared by any
 * number of threads. Other processes on the same file are kept out by
 * SQLite's file locks: every read-then-write runs in BEGIN IMMEDIATE, and lock
 * waits are bounded by busy_timeout_ms (then ETIMEDOUT).
 */
#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#define CALL_COLUMNS                                                                           \
    "id, function, version, state, args_json, outputs_json, error_json, progress, attempts, " \
    "terminate_requested, created_ms, updated_ms, finished_ms, lease_id, lease_deadline_ms, "  \
    "worker, last_lease_id"

/* last_lease_id: the lease that finished the call, so a retried finish under
 * it can be recognised; never shown in prpc_call_t. */
static const char schema_sql[] =
    "CREATE TABLE calls ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " function TEXT NOT NULL,"
    " version TEXT NOT NULL,"
    " state INTEGER NOT NULL,"
    " args_json TEXT NOT NULL,"
    " outputs_json TEXT,"
    " error_json TEXT,"
    " progress REAL NOT NULL DEFAULT 0,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " terminate_requested INTEGER NOT NULL DEFAULT 0,"
    " created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL,"
    " finished_ms INTEGER NOT NULL DEFAULT 0,"
    " lease_id TEXT NOT NULL DEFAULT '',"
    " lease_deadline_ms INTEGER NOT NULL DEFAULT 0,"
    " worker TEXT NOT NULL DEFAULT '',"
    " last_lease_id TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX calls_queue ON calls(function, version, created_ms) WHERE state = 0;"
    "CREATE INDEX calls_leases ON calls(lease_deadline_ms) WHERE state = 1;"
    "CREATE INDEX calls_finished ON calls(finished_ms) WHERE state >= 2;"
    "CREATE INDEX calls_function ON calls(function, state);"
    "CREATE TABLE blobs ("
    " sha256 TEXT PRIMARY KEY NOT NULL,"
    " size INTEGER NOT NULL,"
    " added_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX blobs_added ON blobs(added_ms);"
    "CREATE TABLE call_blobs ("
    " call_id TEXT NOT NULL,"
    " sha256 TEXT NOT NULL,"
    " PRIMARY KEY (call_id, sha256)) WITHOUT ROWID;"
    "CREATE INDEX call_blobs_sha256 ON call_blobs(sha256);";

/* Schema version 2 adds checkpoints; a version 1 file gets it on open. */
static const char schema_v2_sql[] =
    "CREATE TABLE checkpoints ("
    " call_id TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " sha256 TEXT NOT NULL,"
    " size INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL,"
    " PRIMARY KEY (call_id, key)) WITHOUT ROWID;"
    "CREATE INDEX checkpoints_sha256 ON checkpoints(sha256);";

enum sq_id {
    SQ_BEGIN,
    SQ_COMMIT,
    SQ_ROLLBACK,
    SQ_CALL_INSERT,
    SQ_LEASES_HELD,
    SQ_STATES,
    SQ_CALL_GET,
    SQ_CALL_STATE,
    SQ_QUEUE_HEAD,
    SQ_LEASE,
    SQ_RENEW,
    SQ_FINISH,
    SQ_TERMINATE_QUEUED,
    SQ_TERMINATE_LEASED,
    SQ_RESTART,
    SQ_UNLINK_CALL,
    SQ_DELETE_CALL,
    SQ_EXPIRE_FAIL,
    SQ_EXPIRE_REQUEUE,
    SQ_NEXT_DEADLINE,
    SQ_BLOB_INSERT,
    SQ_BLOB_GET,
    SQ_LINK,
    SQ_BLOB_REFS,
    SQ_UNREFERENCED,
    SQ_BLOB_DELETE,
    SQ_EXPIRE_LINKS,
    SQ_EXPIRE_CALLS,
    SQ_STATS,
    SQ_STATS_ALL,
    SQ_CKPT_GET,
    SQ_CKPT_COUNT,
    SQ_CKPT_UPSERT,
    SQ_CKPT_LIST,
    SQ_CKPT_DROP_CALL,
    SQ_CKPT_EXPIRE,
    SQ_NSTMT
};

/* Each statement with the words used when it fails ("... while <what>"). */
static const struct {
    const char *sql;
    const char *what;
} sq_sql[SQ_NSTMT] = {
    [SQ_BEGIN] = {"BEGIN IMMEDIATE", "starting a transaction"},
    [SQ_COMMIT] = {"COMMIT", "committing"},
    [SQ_ROLLBACK] = {"ROLLBACK", "rolling back"},
    [SQ_CALL_INSERT] = {"INSERT INTO calls (id, function, version, state, args_json, created_ms, "
                        "updated_ms) VALUES (?1, ?2, ?3, 0, ?4, ?5, ?5) "
                        "ON CONFLICT (id) DO NOTHING",
                        "submitting a call"},
    [SQ_STATES] = {"SELECT j.key, c.state FROM json_each(?1) AS j JOIN calls AS c ON c.id = j.value",
                   "reading the states of calls"},
    [SQ_LEASES_HELD] = {"SELECT count(*) FROM calls WHERE state = 1 AND worker = ?1",
                        "counting a worker's leases"},
    [SQ_CALL_GET] = {"SELECT " CALL_COLUMNS " FROM calls WHERE id = ?1", "reading a call"},
    [SQ_CALL_STATE] = {"SELECT state FROM calls WHERE id = ?1", "reading a call's state"},
    [SQ_QUEUE_HEAD] = {"SELECT id, created_ms, rowid FROM calls WHERE state = 0 AND function = ?1 "
                       "AND version = ?2 ORDER BY created_ms, rowid LIMIT 1",
                       "looking for queued calls"},
    [SQ_LEASE] = {"UPDATE calls SET state = 1, lease_id = ?2, lease_deadline_ms = ?3, worker = ?4, "
                  "attempts = attempts + 1, progress = 0, updated_ms = ?5 WHERE id = ?1",
                  "leasing a call"},
    [SQ_RENEW] = {"UPDATE calls SET progress = ?3, lease_deadline_ms = ?4, updated_ms = ?5 "
                  "WHERE id = ?1 AND state = 1 AND lease_id = ?2 RETURNING terminate_requested",
                  "renewing a lease"},
    [SQ_FINISH] = {"UPDATE calls SET state = ?2, outputs_json = ?3, error_json = ?4, "
                   "progress = CASE WHEN ?2 = 2 THEN 100.0 ELSE progress END, finished_ms = ?5, "
                   "updated_ms = ?5, lease_id = '', lease_deadline_ms = 0, worker = '', "
                   "last_lease_id = ?6 WHERE id = ?1",
                   "finishing a call"},
    [SQ_TERMINATE_QUEUED] = {"UPDATE calls SET state = 4, error_json = ?2, finished_ms = ?3, "
                             "updated_ms = ?3 WHERE id = ?1 AND state = 0",
                             "terminating a call"},
    [SQ_TERMINATE_LEASED] = {"UPDATE calls SET terminate_requested = 1, updated_ms = ?2 "
                             "WHERE id = ?1 AND state = 1",
                             "requesting termination"},
    [SQ_RESTART] = {"UPDATE calls SET state = 0, outputs_json = NULL, error_json = NULL, "
                    "progress = 0, attempts = 0, terminate_requested = 0, lease_id = '', "
                    "lease_deadline_ms = 0, worker = '', last_lease_id = '', finished_ms = 0, "
                    "updated_ms = ?2 WHERE id = ?1",
                    "restarting a call"},
    [SQ_UNLINK_CALL] = {"DELETE FROM call_blobs WHERE call_id = ?1", "removing blob references"},
    [SQ_DELETE_CALL] = {"DELETE FROM calls WHERE id = ?1", "deleting a call"},
    /* The right-hand sides read the row before the update: attempts and worker
     * are the expired lease's. */
    [SQ_EXPIRE_FAIL] = {"UPDATE calls SET state = 3, error_json = json_object('type', "
                        "'p2prpc.LeaseExpired', 'message', printf('the lease expired %d times "
                        "(max_attempts %d); the last worker was %s', attempts, ?2, worker), "
                        "'attempts', attempts, 'worker', worker), finished_ms = ?1, "
                        "updated_ms = ?1, lease_id = '', lease_deadline_ms = 0, worker = '' "
                        "WHERE state = 1 AND lease_deadline_ms <= ?1 AND attempts >= ?2",
                        "failing expired leases"},
    [SQ_EXPIRE_REQUEUE] = {"UPDATE calls SET state = 0, lease_id = '', lease_deadline_ms = 0, "
                           "worker = '', progress = 0, updated_ms = ?1 "
                           "WHERE state = 1 AND lease_deadline_ms <= ?1",
                           "requeueing expired leases"},
    [SQ_NEXT_DEADLINE] = {"SELECT min(lease_deadline_ms) FROM calls WHERE state = 1",
                          "reading lease deadlines"},
    [SQ_BLOB_INSERT] = {"INSERT INTO blobs (sha256, size, added_ms) VALUES (?1, ?2, ?3) "
                        "ON CONFLICT (sha256) DO NOTHING",
                        "recording a blob"},
    [SQ_BLOB_GET] = {"SELECT size FROM blobs WHERE sha256 = ?1", "reading a blob"},
    [SQ_LINK] = {"INSERT INTO call_blobs (call_id, sha256) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                 "linking a blob"},
    [SQ_BLOB_REFS] = {"SELECT (SELECT count(*) FROM call_blobs WHERE sha256 = ?1), "
                      "(SELECT count(*) FROM checkpoints WHERE sha256 = ?1)",
                      "counting blob references"},
    [SQ_UNREFERENCED] = {"SELECT sha256 FROM blobs AS b WHERE added_ms < ?1 AND NOT EXISTS "
                         "(SELECT 1 FROM call_blobs AS l WHERE l.sha256 = b.sha256) AND NOT "
                         "EXISTS (SELECT 1 FROM checkpoints AS k WHERE k.sha256 = b.sha256) "
                         "ORDER BY added_ms, sha256 LIMIT ?2",
                         "listing unreferenced blobs"},
    [SQ_BLOB_DELETE] = {"DELETE FROM blobs WHERE sha256 = ?1", "removing a blob"},
    [SQ_EXPIRE_LINKS] = {"DELETE FROM call_blobs WHERE call_id IN (SELECT id FROM calls "
                         "WHERE state >= 2 AND finished_ms < ?1)",
                         "expiring blob references"},
    [SQ_EXPIRE_CALLS] = {"DELETE FROM calls WHERE state >= 2 AND finished_ms < ?1",
                         "expiring calls"},
    [SQ_STATS] = {"SELECT state, count(*) FROM calls WHERE function = ?1 GROUP BY state",
                  "counting calls"},
    [SQ_STATS_ALL] = {"SELECT state, count(*) FROM calls GROUP BY state", "counting calls"},
    [SQ_CKPT_GET] = {"SELECT sha256 FROM checkpoints WHERE call_id = ?1 AND key = ?2",
                     "reading a checkpoint"},
    [SQ_CKPT_COUNT] = {"SELECT count(*) FROM checkpoints WHERE call_id = ?1",
                       "counting checkpoints"},
    [SQ_CKPT_UPSERT] = {"INSERT INTO checkpoints (call_id, key, sha256, size, updated_ms) "
                        "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (call_id, key) DO UPDATE SET "
                        "sha256 = excluded.sha256, size = excluded.size, "
                        "updated_ms = excluded.updated_ms",
                        "saving a checkpoint"},
    [SQ_CKPT_LIST] = {"SELECT key, sha256, size, updated_ms FROM checkpoints WHERE call_id = ?1 "
                      "ORDER BY key LIMIT ?2",
                      "listing checkpoints"},
    [SQ_CKPT_DROP_CALL] = {"DELETE FROM checkpoints WHERE call_id = ?1",
                           "removing a call's checkpoints"},
    [SQ_CKPT_EXPIRE] = {"DELETE FROM checkpoints WHERE call_id IN (SELECT id FROM calls "
                        "WHERE state >= 2 AND finished_ms < ?1)",
                        "expiring checkpoints"},
};

struct sq_store {
    prpc_store_t base;
    pthread_mutex_t lock;
    sqlite3 *db;
    char *path;
    int busy_timeout_ms;
    int full;                     /* configured synchronous=FULL */
    int relaxed;                  /* synchronous lowered for the current operation */
    sqlite3_stmt *stmt[SQ_NSTMT]; /* prepared on first use, kept until close */
};

/* Leases and heartbeats need not survive a crash: after a restart a lost
 * lease is one that lapses, and the call is queued again (at worst it runs
 * twice, as with any worker lost with its lease). So their commits skip the
 * fsync; the next durable commit (a submit or a result) syncs them too. */
static void sq_relaxed(struct sq_store *st)
{
    if (st->full && !st->relaxed &&
        sqlite3_exec(st->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL) == SQLITE_OK)
        st->relaxed = 1;
}

static struct sq_store *sq(prpc_store_t *s)
{
    return (struct sq_store *)s;
}

/* Map a SQLite failure to the engine's codes; the message names the file. */
static int sq_error(struct sq_store *st, int rc, const char *what, prpc_error_t *err)
{
    const char *msg = st->db != NULL ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc);
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return prpc_error_set(err, PRPC_ENOSPC, "store %s: disk full while %s (%s)", st->path,
                              what, msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return prpc_error_set(err, PRPC_ECORRUPT,
                              "store %s is damaged or not a database: %s while %s", st->path, msg,
                              what);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return prpc_error_set(err, PRPC_ETIMEDOUT,
                              "store %s stayed locked by another process for over %d ms while %s",
                              st->path, st->busy_timeout_ms, what);
    case SQLITE_NOMEM:
        return prpc_error_set(err, PRPC_ENOMEM, "store %s: out of memory while %s", st->path,
                              what);
    default:
        return prpc_error_set(err, PRPC_EIO, "store %s: %s while %s", st->path, msg, what);
    }
}

static void sq_reset(struct sq_store *st, enum sq_id id)
{
    if (st->stmt[id] != NULL) {
        sqlite3_reset(st->stmt[id]);
        sqlite3_clear_bindings(st->stmt[id]);
    }
}

/* Every operation ends here: no statement stays open across operations, so
 * no read transaction outlives the mutex. */
static void sq_reset_all(struct sq_store *st)
{
    for (int i = 0; i < SQ_NSTMT; i++)
        if (st->stmt[i] != NULL && sqlite3_stmt_busy(st->stmt[i]))
            sq_reset(st, (enum sq_id)i);
}

/* Prepare statement id (once) and bind its parameters, one letter of fmt
 * each: 't' const char * (NULL binds NULL), 'i' int64_t, 'd' double. Strings
 * are bound SQLITE_STATIC: they must outlive the step. */
static int sq_vbind(struct sq_store *st, enum sq_id id, prpc_error_t *err, const char *fmt,
                    va_list ap)
{
    sqlite3_stmt *q = st->stmt[id];
    int rc = SQLITE_OK;
    if (q == NULL) {
        rc = sqlite3_prepare_v3(st->db, sq_sql[id].sql, -1, SQLITE_PREPARE_PERSISTENT, &q, NULL);
        if (rc != SQLITE_OK)
            return sq_error(st, rc, sq_sql[id].what, err);
        st->stmt[id] = q;
    } else {
        sq_reset(st, id);
    }
    /* A mismatch here is a bug in this file: caught before va_arg misreads. */
    if ((int)strlen(fmt) != sqlite3_bind_parameter_count(q))
        return prpc_error_set(err, PRPC_EINVAL,
                              "store %s: internal error: %d parameters given to a statement "
                              "taking %d while %s",
                              st->path, (int)strlen(fmt), sqlite3_bind_parameter_count(q),
                              sq_sql[id].what);
    for (int i = 0; rc == SQLITE_OK && fmt[i] != '\0'; i++) {
        if (fmt[i] == 't')
            rc = sqlite3_bind_text(q, i + 1, va_arg(ap, const char *), -1, SQLITE_STATIC);
        else if (fmt[i] == 'i')
            rc = sqlite3_bind_int64(q, i + 1, va_arg(ap, int64_t));
        else
            rc = sqlite3_bind_double(q, i + 1, va_arg(ap, double));
    }
    if (rc != SQLITE_OK)
        return sq_error(st, rc, sq_sql[id].what, err);
    return 0;
}

static int sq_bind(struct sq_store *st, enum sq_id id, prpc_error_t *err, const char *fmt, ...)
{
    va_list ap;
    int rc;
    va_start(ap, fmt);
    rc = sq_vbind(st, id, err, fmt, ap);
    va_end(ap);
    return rc;
}

/* 1: a row is ready (read it, then sq_reset); 0: done (statement reset);
 * negative: error (statement reset). */
static int sq_step(struct sq_store *st, enum sq_id id, prpc_error_t *err)
{
    int rc = sqlite3_step(st->stmt[id]);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE) {
        sq_reset(st, id);
        return 0;
    }
    rc = sq_error(st, rc, sq_sql[id].what, err);
    sq_reset(st, id);
    return rc;
}

/* Bind, run to completion and reset a statement that returns no rows. */
static int sq_run(struct sq_store *st, enum sq_id id, prpc_error_t *err, const char *fmt, ...)
{
    va_list ap;
    int rc;
    va_start(ap, fmt);
    rc = sq_vbind(st, id, err, fmt, ap);
    va_end(ap);
    if (rc < 0)
        return rc;
    rc = sq_step(st, id, err);
    if (rc == 1) {
        sq_reset(st, id);
        rc = 0;
    }
    return rc;
}

static int sq_begin(struct sq_store *st, prpc_error_t *err)
{
    return sq_run(st, SQ_BEGIN, err, "");
}

static int sq_commit(struct sq_store *st, prpc_error_t *err)
{
    return sq_run(st, SQ_COMMIT, err, "");
}

/* Undo an open transaction, if SQLite has not already rolled it back. */
static void sq_rollback(struct sq_store *st)
{
    sq_reset_all(st);
    if (!sqlite3_get_autocommit(st->db))
        sq_run(st, SQ_ROLLBACK, NULL, "");
}

static void sq_lock(struct sq_store *st)
{
    pthread_mutex_lock(&st->lock);
}

/* Ends every operation: rollback when it failed inside a transaction. */
static int sq_unlock(struct sq_store *st, int rc)
{
    if (rc < 0)
        sq_rollback(st);
    sq_reset_all(st);
    if (st->relaxed && sqlite3_exec(st->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) ==
                           SQLITE_OK)
        st->relaxed = 0;
    pthread_mutex_unlock(&st->lock);
    return rc;
}

static void col_copy(sqlite3_stmt *q, int col, char *buf, size_t size)
{
    const unsigned char *t = sqlite3_column_text(q, col);
    snprintf(buf, size, "%s", t != NULL ? (const char *)t : "");
}

/* A copy of a nullable text column into *out. */
static int col_dup(struct sq_store *st, sqlite3_stmt *q, int col, char **out, prpc_error_t *err)
{
    const unsigned char *t = sqlite3_column_text(q, col);
    *out = NULL;
    if (t == NULL) {
        if (sqlite3_column_type(q, col) == SQLITE_NULL)
            return 0;
        return prpc_error_set(err, PRPC_ENOMEM, "store %s: out of memory reading a call",
                              st->path);
    }
    *out = strdup((const char *)t);
    if (*out == NULL)
        return prpc_error_set(err, PRPC_ENOMEM, "store %s: out of memory reading a call",
                              st->path);
    return 0;
}

/* Read call id into out (and its last_lease_id into last_lease when not NULL).
 * ENOTFOUND when absent. The caller holds the lock. */
static int sq_get_call(struct sq_store *st, const char *id, prpc_call_t *out,
                       char last_lease[PRPC_LEASE_ID_HEX + 1], prpc_error_t *err)
{
    sqlite3_stmt *q;
    int rc = sq_bind(st, SQ_CALL_GET, err, "t", id);
    memset(out, 0, sizeof(*out));
    if (rc == 0)
        rc = sq_step(st, SQ_CALL_GET, err);
    if (rc == 0)
        return prpc_error_set(err, PRPC_ENOTFOUND, "no call %s in the store", id);
    if (rc < 0)
        return rc;
    q = st->stmt[SQ_CALL_GET];
    col_copy(q, 0, out->id, sizeof(out->id));
    col_copy(q, 1, out->function, sizeof(out->function));
    col_copy(q, 2, out->version, sizeof(out->version));
    out->state = sqlite3_column_int(q, 3);
    out->progress = sqlite3_column_double(q, 7);
    out->attempts = sqlite3_column_int(q, 8);
    out->terminate_requested = sqlite3_column_int(q, 9);
    out->created_ms = sqlite3_column_int64(q, 10);
    out->updated_ms = sqlite3_column_int64(q, 11);
    out->finished_ms = sqlite3_column_int64(q, 12);
    col_copy(q, 13, out->lease_id, sizeof(out->lease_id));
    out->lease_deadline_ms = sqlite3_column_int64(q, 14);
    col_copy(q, 15, out->worker, sizeof(out->worker));
    if (last_lease != NULL)
        col_copy(q, 16, last_lease, PRPC_LEASE_ID_HEX + 1);
    rc = col_dup(st, q, 4, &out->args_json, err);
    if (rc == 0)
        rc = col_dup(st, q, 5, &out->outputs_json, err);
    if (rc == 0)
        rc = col_dup(st, q, 6, &out->error_json, err);
    sq_reset(st, SQ_CALL_GET);
    if (rc < 0)
        prpc_call_cleanup(out);
    return rc;
}

static void sq_close(prpc_store_t *s)
{
    struct sq_store *st = sq(s);
    for (int i = 0; i < SQ_NSTMT; i++)
        sqlite3_finalize(st->stmt[i]);
    sqlite3_close_v2(st->db);
    pthread_mutex_destroy(&st->lock);
    free(st->path);
    free(st);
}

static int sq_get_blob(struct sq_store *st, const char *sha, uint64_t *size, prpc_error_t *err);

static int sq_call_submit_many(prpc_store_t *s, prpc_submit_item_t *items, size_t n,
                               int64_t now_ms, prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    int rc;
    sq_lock(st);
    rc = sq_begin(st, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const prpc_call_t *c = items[i].call;
        prpc_call_t *cur = &items[i].current;
        rc = sq_run(st, SQ_CALL_INSERT, err, "tttti", c->id, c->function, c->version,
                    c->args_json, now_ms);
        if (rc == 0)
            items[i].created = sqlite3_changes(st->db) == 1;
        if (rc == 0)
            rc = sq_get_call(st, c->id, cur, NULL, err);
        if (rc == 0 && (strcmp(cur->function, c->function) != 0 ||
                        strcmp(cur->version, c->version) != 0))
            rc = prpc_error_set(err, PRPC_EEXIST,
                                "call id %s is already stored for function %s version %s, not %s "
                                "version %s",
                                c->id, cur->function, cur->version, c->function, c->version);
        for (size_t j = 0; rc == 0 && items[i].created && j < items[i].nblobs; j++) {
            uint64_t size;
            rc = sq_get_blob(st, items[i].blobs[j], &size, err);
            if (rc == 0)
                rc = sq_run(st, SQ_LINK, err, "tt", c->id, items[i].blobs[j]);
        }
    }
    if (rc == 0)
        rc = sq_commit(st, err);
    if (rc < 0)
        for (size_t i = 0; i < n; i++) {
            prpc_call_cleanup(&items[i].current);
            items[i].created = 0;
        }
    return sq_unlock(st, rc);
}

static int sq_calls_states(prpc_store_t *s, const char (*ids)[PRPC_CALL_ID_HEX + 1], size_t n,
                           int *states, prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    char *list = malloc(n * (PRPC_CALL_ID_HEX + 3) + 3);
    size_t o = 0;
    int rc;
    if (list == NULL)
        return prpc_error_set(err, PRPC_ENOMEM, "out of memory reading %zu call states", n);
    /* The ids go in as one JSON array: one prepared statement for any n. */
    list[o++] = '[';
    for (size_t i = 0; i < n; i++) {
        states[i] = -1;
        o += (size_t)sprintf(list + o, "%s\"%s\"", i ? "," : "", ids[i]);
    }
    list[o++] = ']';
    list[o] = '\0';
    sq_lock(st);
    rc = sq_bind(st, SQ_STATES, err, "t", list);
    while (rc == 0 && (rc = sq_step(st, SQ_STATES, err)) == 1) {
        int64_t k = sqlite3_column_int64(st->stmt[SQ_STATES], 0);
        if (k >= 0 && (size_t)k < n)
            states[k] = sqlite3_column_int(st->stmt[SQ_STATES], 1);
        rc = 0;
    }
    rc = sq_unlock(st, rc);
    free(list);
    return rc;
}

static int sq_leases_held(prpc_store_t *s, const char *worker, int64_t *n, prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    int rc;
    sq_lock(st);
    rc = sq_bind(st, SQ_LEASES_HELD, err, "t", worker);
    if (rc == 0)
        rc = sq_step(st, SQ_LEASES_HELD, err);
    if (rc == 1) {
        *n = sqlite3_column_int64(st->stmt[SQ_LEASES_HELD], 0);
        rc = 0;
    }
    return sq_unlock(st, rc);
}

static int sq_call_get(prpc_store_t *s, const char *id, prpc_call_t *out, prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    sq_lock(st);
    return sq_unlock(st, sq_get_call(st, id, out, NULL, err));
}

static int sq_lease_next(prpc_store_t *s, const char *const *functions,
                         const char *const *versions, size_t n, const char *worker,
                         const char *lease_id, int64_t deadline_ms, int64_t now_ms,
                         prpc_call_t *out, prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    char best[PRPC_CALL_ID_HEX + 1] = "";
    int64_t best_created = 0, best_rowid = 0;
    int rc;
    sq_lock(st);
    sq_relaxed(st);
    rc = sq_begin(st, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        sqlite3_stmt *q;
        rc = sq_bind(st, SQ_QUEUE_HEAD, err, "tt", functions[i], versions[i]);
        if (rc == 0)
            rc = sq_step(st, SQ_QUEUE_HEAD, err);
        if (rc != 1)
            continue;
        q = st->stmt[SQ_QUEUE_HEAD];
        if (best[0] == '\0' || sqlite3_column_int64(q, 1) < best_created ||
            (sqlite3_column_int64(q, 1) == best_created &&
             sqlite3_column_int64(q, 2) < best_rowid)) {
            col_copy(q, 0, best, sizeof(best));
            best_created = sqlite3_column_int64(q, 1);
            best_rowid = sqlite3_column_int64(q, 2);
        }
        sq_reset(st, SQ_QUEUE_HEAD);
        rc = 0;
    }
    if (rc == 0 && best[0] == '\0')
        rc = prpc_error_set(err, PRPC_ENOTFOUND, "no queued call for the %zu function(s) asked",
                            n);
    if (rc == 0)
        rc = sq_run(st, SQ_LEASE, err, "ttiti", best, lease_id, deadline_ms, worker, now_ms);
    if (rc == 0)
        rc = sq_get_call(st, best, out, NULL, err);
    if (rc == 0)
        rc = sq_commit(st, err);
    if (rc < 0)
        prpc_call_cleanup(out);
    return sq_unlock(st, rc);
}

/* The ESTATE for a lease that is not the call's current one. */
static int stale_lease(struct sq_store *st, const char *call_id, const char *lease_id,
                       prpc_error_t *err)
{
    prpc_call_t now = {0};
    int rc = sq_get_call(st, call_id, &now, NULL, err);
    if (rc < 0)
        return rc;
    if (now.state == PRPC_CALL_LEASED)
        rc = prpc_error_set(err, PRPC_ESTATE,
                            "lease %s of call %s was replaced: the call is leased again to %s",
                            lease_id, call_id, now.worker);
    else
        rc = prpc_error_set(err, PRPC_ESTATE, "lease %s of call %s lapsed: the call is now %s",
                            lease_id, call_id, prpc_call_state_name(now.state));
    prpc_call_cleanup(&now);
    return rc;
}

static int sq_lease_renew(prpc_store_t *s, const char *call_id, const char *lease_id,
                          double progress, int64_t deadline_ms, int64_t now_ms,
                          int *terminate_requested, prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    int rc;
    sq_lock(st);
    sq_relaxed(st);
    rc = sq_bind(st, SQ_RENEW, err, "ttdii", call_id, lease_id, progress, deadline_ms, now_ms);
    if (rc == 0)
        rc = sq_step(st, SQ_RENEW, err);
    if (rc == 0)
        rc = stale_lease(st, call_id, lease_id, err);
    if (rc == 1) {
        *terminate_requested = sqlite3_column_int(st->stmt[SQ_RENEW], 0);
        /* The autocommit ends, and its error shows, only when the statement
         * runs to completion. */
        rc = sq_step(st, SQ_RENEW, err);
        if (rc == 1)
            rc = 0;
    }
    return sq_unlock(st, rc);
}

static int sq_call_finish(prpc_store_t *s, const char *call_id, const char *lease_id, int state,
                          const char *outputs_json, const char *error_json, int64_t now_ms,
                          prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    prpc_call_t cur = {0};
    char last_lease[PRPC_LEASE_ID_HEX + 1] = "";
    int rc, write = 0;
    sq_lock(st);
    rc = sq_begin(st, err);
    if (rc == 0)
        rc = sq_get_call(st, call_id, &cur, last_lease, err);
    if (rc == 0 && lease_id != NULL) {
        if (cur.state == PRPC_CALL_LEASED && strcmp(cur.lease_id, lease_id) == 0)
            write = 1;
        else if (strcmp(last_lease, lease_id) == 0 && cur.state == state)
            write = 0; /* the same finish, retried */
        else if (strcmp(last_lease, lease_id) == 0)
            rc = prpc_error_set(err, PRPC_ESTATE,
                                "call %s was already finished as %s under lease %s, not as %s",
                                call_id, prpc_call_state_name(cur.state), lease_id,
                                prpc_call_state_name(state));
        else
            rc = stale_lease(st, call_id, lease_id, err);
    } else if (rc == 0) {
        if (prpc_call_state_is_terminal(cur.state))
            rc = prpc_error_set(err, PRPC_ESTATE, "call %s is already %s", call_id,
                                prpc_call_state_name(cur.state));
        else
            write = 1;
    }
    if (rc == 0 && write)
        rc = sq_run(st, SQ_FINISH, err, "tittit", call_id, (int64_t)state, outputs_json,
                    error_json, now_ms, lease_id != NULL ? lease_id : "");
    if (rc == 0 && write)
        rc = sq_run(st, SQ_CKPT_DROP_CALL, err, "t", call_id);
    if (rc == 0)
        rc = sq_commit(st, err);
    prpc_call_cleanup(&cur);
    return sq_unlock(st, rc);
}

static int sq_call_terminate(prpc_store_t *s, const char *id, int64_t now_ms, int *state_out,
                             prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    int rc, state = -1;
    sq_lock(st);
    rc = sq_begin(st, err);
    if (rc == 0)
        rc = sq_bind(st, SQ_CALL_STATE, err, "t", id);
    if (rc == 0)
        rc = sq_step(st, SQ_CALL_STATE, err);
    if (rc == 0)
        rc = prpc_error_set(err, PRPC_ENOTFOUND, "no call %s in the store", id);
    if (rc == 1) {
        state = sqlite3_column_int(st->stmt[SQ_CALL_STATE], 0);
        sq_reset(st, SQ_CALL_STATE);
        rc = 0;
    }
    if (rc == 0 && state == PRPC_CALL_QUEUED) {
        rc = sq_run(st, SQ_TERMINATE_QUEUED, err, "tti", id, prpc__store_terminated_json, now_ms);
        state = PRPC_CALL_TERMINATED;
    } else if (rc == 0 && state == PRPC_CALL_LEASED) {
        rc = sq_run(st, SQ_TERMINATE_LEASED, err, "ti", id, now_ms);
    }
    if (rc == 0)
        rc = sq_commit(st, err);
    if (rc == 0)
        *state_out = state;
    return sq_unlock(st, rc);
}

static int sq_call_restart(prpc_store_t *s, const char *id, int64_t now_ms, prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    int rc;
    sq_lock(st);
    rc = sq_begin(st, err);
    if (rc == 0)
        rc = sq_run(st, SQ_RESTART, err, "ti", id, now_ms);
    if (rc == 0 && sqlite3_changes(st->db) == 0)
        rc = prpc_error_set(err, PRPC_ENOTFOUND, "no call %s in the store", id);
    if (rc == 0)
        rc = sq_run(st, SQ_CKPT_DROP_CALL, err, "t", id);
    if (rc == 0)
        rc = sq_commit(st, err);
    return sq_unlock(st, rc);
}

static int sq_call_delete(prpc_store_t *s, const char *id, prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    int rc;
    sq_lock(st);
    rc = sq_begin(st, err);
    if (rc == 0)
        rc = sq_run(st, SQ_UNLINK_CALL, err, "t", id);
    if (rc == 0)
        rc = sq_run(st, SQ_CKPT_DROP_CALL, err, "t", id);
    if (rc == 0)
        rc = sq_run(st, SQ_DELETE_CALL, err, "t", id);
    if (rc == 0 && sqlite3_changes(st->db) == 0)
        rc = prpc_error_set(err, PRPC_ENOTFOUND, "no call %s in the store", id);
    if (rc == 0)
        rc = sq_commit(st, err);
    return sq_unlock(st, rc);
}

static int sq_leases_expire(prpc_store_t *s, int64_t now_ms, int max_attempts, int *requeued,
                            int *failed, prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    int rc;
    sq_lock(st);
    rc = sq_begin(st, err);
    if (rc == 0)
        rc = sq_run(st, SQ_EXPIRE_FAIL, err, "ii", now_ms, (int64_t)max_attempts);
    if (rc == 0)
        *failed = sqlite3_changes(st->db);
    if (rc == 0)
        rc = sq_run(st, SQ_EXPIRE_REQUEUE, err, "i", now_ms);
    if (rc == 0)
        *requeued = sqlite3_changes(st->db);
    if (rc == 0)
        rc = sq_commit(st, err);
    return sq_unlock(st, rc);
}

static int sq_next_lease_deadline(prpc_store_t *s, int64_t *deadline_ms, prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    int rc;
    sq_lock(st);
    rc = sq_bind(st, SQ_NEXT_DEADLINE, err, "");
    if (rc == 0)
        rc = sq_step(st, SQ_NEXT_DEADLINE, err);
    if (rc == 1) {
        sqlite3_stmt *q = st->stmt[SQ_NEXT_DEADLINE];
        if (sqlite3_column_type(q, 0) == SQLITE_NULL)
            rc = prpc_error_set(err, PRPC_ENOTFOUND, "no call is leased");
        else
            *deadline_ms = sqlite3_column_int64(q, 0);
        if (rc == 1)
            rc = 0;
    } else if (rc == 0) {
        rc = prpc_error_set(err, PRPC_ENOTFOUND, "no call is leased");
    }
    return sq_unlock(st, rc);
}

/* *size of blob sha, or ENOTFOUND. The caller holds the lock. */
static int sq_get_blob(struct sq_store *st, const char *sha, uint64_t *size, prpc_error_t *err)
{
    int rc = sq_bind(st, SQ_BLOB_GET, err, "t", sha);
    if (rc == 0)
        rc = sq_step(st, SQ_BLOB_GET, err);
    if (rc == 0)
        return prpc_error_set(err, PRPC_ENOTFOUND, "no blob %s in the store", sha);
    if (rc < 0)
        return rc;
    *size = (uint64_t)sqlite3_column_int64(st->stmt[SQ_BLOB_GET], 0);
    sq_reset(st, SQ_BLOB_GET);
    return 0;
}

static int sq_blob_add(prpc_store_t *s, const char *sha256_hex, uint64_t size, int64_t now_ms,
                       prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    uint64_t stored = 0;
    int rc;
    sq_lock(st);
    rc = sq_run(st, SQ_BLOB_INSERT, err, "tii", sha256_hex, (int64_t)size, now_ms);
    if (rc == 0 && sqlite3_changes(st->db) == 0) {
        rc = sq_get_blob(st, sha256_hex, &stored, err);
        if (rc == 0 && stored != size)
            rc = prpc_error_set(err, PRPC_EEXIST,
                                "blob %s is already recorded with size %llu, not %llu",
                                sha256_hex, (unsigned long long)stored,
                                (unsigned long long)size);
    }
    return sq_unlock(st, rc);
}

static int sq_blob_get(prpc_store_t *s, const char *sha256_hex, uint64_t *size,
                       prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    sq_lock(st);
    return sq_unlock(st, sq_get_blob(st, sha256_hex, size, err));
}

static int sq_blob_link(prpc_store_t *s, const char *call_id, const char *sha256_hex,
                        prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    uint64_t size;
    int rc;
    sq_lock(st);
    rc = sq_begin(st, err);
    if (rc == 0)
        rc = sq_bind(st, SQ_CALL_STATE, err, "t", call_id);
    if (rc == 0)
        rc = sq_step(st, SQ_CALL_STATE, err);
    if (rc == 0)
        rc = prpc_error_set(err, PRPC_ENOTFOUND, "no call %s in the store to link blob %s to",
                            call_id, sha256_hex);
    if (rc == 1) {
        sq_reset(st, SQ_CALL_STATE);
        rc = sq_get_blob(st, sha256_hex, &size, err);
    }
    if (rc == 0)
        rc = sq_run(st, SQ_LINK, err, "tt", call_id, sha256_hex);
    if (rc == 0)
        rc = sq_commit(st, err);
    return sq_unlock(st, rc);
}

static int sq_blobs_unreferenced(prpc_store_t *s, int64_t older_than_ms,
                                 char (*out)[PRPC_CALL_ID_HEX + 1], size_t max, size_t *n,
                                 prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    int rc;
    sq_lock(st);
    rc = sq_bind(st, SQ_UNREFERENCED, err, "ii", older_than_ms,
                 (int64_t)(max > INT64_MAX ? INT64_MAX : max));
    while (rc == 0 && *n < max) {
        rc = sq_step(st, SQ_UNREFERENCED, err);
        if (rc != 1)
            break;
        col_copy(st->stmt[SQ_UNREFERENCED], 0, out[*n], sizeof(out[*n]));
        (*n)++;
        rc = 0;
    }
    if (rc < 0)
        *n = 0;
    return sq_unlock(st, rc);
}

static int sq_blob_remove(prpc_store_t *s, const char *sha256_hex, prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    int64_t refs = 0, ckpts = 0;
    int rc;
    sq_lock(st);
    rc = sq_begin(st, err);
    if (rc == 0)
        rc = sq_bind(st, SQ_BLOB_REFS, err, "t", sha256_hex);
    if (rc == 0)
        rc = sq_step(st, SQ_BLOB_REFS, err);
    if (rc == 1) {
        refs = sqlite3_column_int64(st->stmt[SQ_BLOB_REFS], 0);
        ckpts = sqlite3_column_int64(st->stmt[SQ_BLOB_REFS], 1);
        sq_reset(st, SQ_BLOB_REFS);
        rc = 0;
    }
    if (rc == 0 && refs + ckpts > 0)
        rc = prpc_error_set(err, PRPC_ESTATE,
                            "blob %s is still referenced by %lld call(s) and %lld checkpoint(s)",
                            sha256_hex, (long long)refs, (long long)ckpts);
    if (rc == 0)
        rc = sq_run(st, SQ_BLOB_DELETE, err, "t", sha256_hex);
    if (rc == 0 && sqlite3_changes(st->db) == 0)
        rc = prpc_error_set(err, PRPC_ENOTFOUND, "no blob %s in the store", sha256_hex);
    if (rc == 0)
        rc = sq_commit(st, err);
    return sq_unlock(st, rc);
}

static int sq_calls_expire(prpc_store_t *s, int64_t finished_before_ms, int *removed,
                           prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    int rc;
    sq_lock(st);
    rc = sq_begin(st, err);
    if (rc == 0)
        rc = sq_run(st, SQ_EXPIRE_LINKS, err, "i", finished_before_ms);
    if (rc == 0)
        rc = sq_run(st, SQ_CKPT_EXPIRE, err, "i", finished_before_ms);
    if (rc == 0)
        rc = sq_run(st, SQ_EXPIRE_CALLS, err, "i", finished_before_ms);
    if (rc == 0)
        *removed = sqlite3_changes(st->db);
    if (rc == 0)
        rc = sq_commit(st, err);
    return sq_unlock(st, rc);
}

static int sq_checkpoint_put(prpc_store_t *s, const char *call_id, const char *lease_id,
                             const char *key, const char *sha256_hex, uint64_t size,
                             int64_t now_ms, char replaced[PRPC_CALL_ID_HEX + 1],
                             prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    prpc_call_t cur = {0};
    uint64_t stored = 0;
    int64_t count = 0;
    int rc, known = 0;
    sq_lock(st);
    rc = sq_begin(st, err);
    if (rc == 0)
        rc = sq_get_call(st, call_id, &cur, NULL, err);
    if (rc == 0 && !(cur.state == PRPC_CALL_LEASED && strcmp(cur.lease_id, lease_id) == 0))
        rc = stale_lease(st, call_id, lease_id, err);
    if (rc == 0)
        rc = sq_get_blob(st, sha256_hex, &stored, err);
    if (rc == 0 && stored != size)
        rc = prpc_error_set(err, PRPC_EINVAL,
                            "checkpoint %s names blob %s of size %llu, but the blob has %llu "
                            "bytes",
                            key, sha256_hex, (unsigned long long)size,
                            (unsigned long long)stored);
    if (rc == 0)
        rc = sq_bind(st, SQ_CKPT_GET, err, "tt", call_id, key);
    if (rc == 0)
        rc = sq_step(st, SQ_CKPT_GET, err);
    if (rc == 1) {
        col_copy(st->stmt[SQ_CKPT_GET], 0, replaced, PRPC_CALL_ID_HEX + 1);
        sq_reset(st, SQ_CKPT_GET);
        known = 1;
        rc = 0;
    }
    if (rc == 0 && !known)
        rc = sq_bind(st, SQ_CKPT_COUNT, err, "t", call_id);
    if (rc == 0 && !known)
        rc = sq_step(st, SQ_CKPT_COUNT, err);
    if (rc == 1) {
        count = sqlite3_column_int64(st->stmt[SQ_CKPT_COUNT], 0);
        sq_reset(st, SQ_CKPT_COUNT);
        rc = 0;
        if (count >= PRPC_CHECKPOINTS_MAX)
            rc = prpc_error_set(err, PRPC_ELIMIT,
                                "call %s already holds %d checkpoints: key %s would be one more; "
                                "reuse keys",
                                call_id, PRPC_CHECKPOINTS_MAX, key);
    }
    if (rc == 0)
        rc = sq_run(st, SQ_CKPT_UPSERT, err, "tttii", call_id, key, sha256_hex, (int64_t)size,
                    now_ms);
    if (rc == 0)
        rc = sq_commit(st, err);
    if (rc < 0 || strcmp(replaced, sha256_hex) == 0)
        replaced[0] = '\0';
    prpc_call_cleanup(&cur);
    return sq_unlock(st, rc);
}

static int sq_checkpoints_list(prpc_store_t *s, const char *call_id, prpc_checkpoint_t *out,
                               size_t max, size_t *n, prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    int rc;
    sq_lock(st);
    rc = sq_bind(st, SQ_CKPT_LIST, err, "ti", call_id,
                 (int64_t)(max > INT64_MAX ? INT64_MAX : max));
    while (rc == 0 && *n < max) {
        sqlite3_stmt *q = st->stmt[SQ_CKPT_LIST];
        prpc_checkpoint_t *c = &out[*n];
        rc = sq_step(st, SQ_CKPT_LIST, err);
        if (rc != 1)
            break;
        col_copy(q, 0, c->key, sizeof(c->key));
        col_copy(q, 1, c->sha256, sizeof(c->sha256));
        c->size = (uint64_t)sqlite3_column_int64(q, 2);
        c->updated_ms = sqlite3_column_int64(q, 3);
        (*n)++;
        rc = 0;
    }
    return sq_unlock(st, rc);
}

static int sq_function_stats(prpc_store_t *s, const char *function,
                             int64_t counts[PRPC_CALL_NSTATES], prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    enum sq_id id = function != NULL ? SQ_STATS : SQ_STATS_ALL;
    int rc;
    sq_lock(st);
    rc = function != NULL ? sq_bind(st, id, err, "t", function) : sq_bind(st, id, err, "");
    while (rc == 0) {
        int state;
        rc = sq_step(st, id, err);
        if (rc != 1)
            break;
        state = sqlite3_column_int(st->stmt[id], 0);
        if (state >= 0 && state < PRPC_CALL_NSTATES)
            counts[state] = sqlite3_column_int64(st->stmt[id], 1);
        rc = 0;
    }
    return sq_unlock(st, rc);
}

/* PRAGMA integrity_check or quick_check: ECORRUPT naming the first problem.
 * The caller holds the lock (or owns the handle alone). */
static int sq_check(struct sq_store *st, const char *pragma, prpc_error_t *err)
{
    sqlite3_stmt *q = NULL;
    char first[256] = "";
    int rows = 0, rc;
    rc = sqlite3_prepare_v2(st->db, pragma, -1, &q, NULL);
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW && rows++ == 0)
            col_copy(q, 0, first, sizeof(first));
    }
    if (rc != SQLITE_DONE)
        rc = sq_error(st, rc, "checking integrity", err);
    else if (rows != 1 || strcmp(first, "ok") != 0)
        rc = prpc_error_set(err, PRPC_ECORRUPT, "store %s failed its integrity check: %s",
                            st->path, first);
    else
        rc = 0;
    sqlite3_finalize(q);
    return rc;
}

static int sq_check_integrity(prpc_store_t *s, prpc_error_t *err)
{
    struct sq_store *st = sq(s);
    sq_lock(st);
    return sq_unlock(st, sq_check(st, "PRAGMA integrity_check", err));
}

static const struct prpc_store_ops sq_ops = {
    .name = "sqlite",
    .close = sq_close,
    .call_submit_many = sq_call_submit_many,
    .call_get = sq_call_get,
    .leases_held = sq_leases_held,
    .calls_states = sq_calls_states,
    .lease_next = sq_lease_next,
    .lease_renew = sq_lease_renew,
    .call_finish = sq_call_finish,
    .call_terminate = sq_call_terminate,
    .call_restart = sq_call_restart,
    .call_delete = sq_call_delete,
    .leases_expire = sq_leases_expire,
    .next_lease_deadline = sq_next_lease_deadline,
    .blob_add = sq_blob_add,
    .blob_get = sq_blob_get,
    .blob_link = sq_blob_link,
    .blobs_unreferenced = sq_blobs_unreferenced,
    .blob_remove = sq_blob_remove,
    .calls_expire = sq_calls_expire,
    .checkpoint_put = sq_checkpoint_put,
    .checkpoints_list = sq_checkpoints_list,
    .function_stats = sq_function_stats,
    .check_integrity = sq_check_integrity,
};

/* Run a one-off statement; *value (may be NULL) receives the first column of
 * its first row, *text (may be NULL, size PRPC_STORE_NAME_MAX + 1) as text. */
static int sq_once(struct sq_store *st, const char *sql, const char *what, int64_t *value,
                   char *text, prpc_error_t *err)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        if (value != NULL)
            *value = sqlite3_column_int64(q, 0);
        if (text != NULL)
            col_copy(q, 0, text, PRPC_STORE_NAME_MAX + 1);
        rc = SQLITE_DONE;
    }
    rc = rc == SQLITE_DONE ? 0 : sq_error(st, rc, what, err);
    sqlite3_finalize(q);
    return rc;
}

/* Whether the file holds our schema (0, *fresh = 0, *schema its version), is
 * empty (0, *fresh = 1), or is something else (ECORRUPT). Reads only. */
static int sq_check_header(struct sq_store *st, int *fresh, int64_t *schema, prpc_error_t *err)
{
    int64_t app = 0, version = 0, tables = 0;
    int rc = sq_once(st, "PRAGMA application_id", "reading the file header", &app, NULL, err);
    if (rc == 0)
        rc = sq_once(st, "PRAGMA user_version", "reading the file header", &version, NULL, err);
    if (rc == 0)
        rc = sq_once(st, "SELECT count(*) FROM sqlite_schema", "reading the schema", &tables, NULL,
                     err);
    if (rc < 0)
        return rc;
    *fresh = 0;
    if (app == 0 && version == 0 && tables == 0)
        *fresh = 1;
    else if (app == 0)
        rc = prpc_error_set(err, PRPC_ECORRUPT,
                            "%s is not a p2prpc store: it is another application's SQLite "
                            "database (%lld tables, no p2prpc application_id)",
                            st->path, (long long)tables);
    else if ((uint32_t)app != (uint32_t)PRPC_STORE_APPLICATION_ID)
        rc = prpc_error_set(err, PRPC_ECORRUPT,
                            "%s is not a p2prpc store: it is another application's SQLite "
                            "database (application_id 0x%08llx)",
                            st->path, (unsigned long long)(uint32_t)app);
    else if (version > PRPC_STORE_SCHEMA_VERSION)
        rc = prpc_error_set(err, PRPC_ECORRUPT,
                            "store %s has schema version %lld, newer than this p2prpc's %d: "
                            "upgrade p2prpc",
                            st->path, (long long)version, PRPC_STORE_SCHEMA_VERSION);
    else if (version < 1)
        rc = prpc_error_set(err, PRPC_ECORRUPT, "store %s has no schema version", st->path);
    *schema = version;
    return rc;
}

/* Create the directories above path, like mkdir -p. */
static int make_parents(const char *path, prpc_error_t *err)
{
    char *dir = strdup(path);
    char *slash;
    int rc = 0;
    if (dir == NULL)
        return prpc_error_set(err, PRPC_ENOMEM, "out of memory opening store %s", path);
    slash = strrchr(dir, '/');
    if (slash != NULL && slash != dir) {
        *slash = '\0';
        for (char *p = dir + 1; rc == 0; p++) {
            int last = *p == '\0';
            if (*p != '/' && !last)
                continue;
            *p = '\0';
            if (mkdir(dir, 0700) != 0 && errno != EEXIST)
                rc = prpc_error_errno(err, errno, "cannot create directory %s for the store",
                                      dir);
            if (last)
                break;
            *p = '/';
        }
    }
    free(dir);
    return rc;
}

prpc_store_t *prpc__store_sqlite_open(const char *path, const prpc_store_options_t *opts,
                                      prpc_error_t *err)
{
    struct sq_store *st = calloc(1, sizeof(*st));
    char sync_sql[48], mode[PRPC_STORE_NAME_MAX + 1] = "";
    int64_t schema = 0;
    int rc = 0, fresh = 0, locked = 0;
    if (st == NULL) {
        prpc_error_set(err, PRPC_ENOMEM, "out of memory opening store %s", path);
        return NULL;
    }
    st->base.ops = &sq_ops;
    st->busy_timeout_ms = opts->busy_timeout_ms;
    st->path = strdup(path);
    if (st->path == NULL) {
        free(st);
        prpc_error_set(err, PRPC_ENOMEM, "out of memory opening store %s", path);
        return NULL;
    }
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        free(st->path);
        free(st);
        prpc_error_set(err, PRPC_ENOMEM, "cannot create the lock of store %s", path);
        return NULL;
    }
    rc = make_parents(path, err);
    if (rc == 0) {
        int src = sqlite3_open_v2(path, &st->db,
                                  SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                  NULL);
        if (src != SQLITE_OK)
            rc = prpc_error_set(err, PRPC_EIO, "cannot open store %s: %s", path,
                                st->db != NULL ? sqlite3_errmsg(st->db) : sqlite3_errstr(src));
    }
    if (rc == 0) {
        sqlite3_extended_result_codes(st->db, 1);
        sqlite3_busy_timeout(st->db, opts->busy_timeout_ms);
        if (sqlite3_db_readonly(st->db, "main") == 1)
            rc = prpc_error_set(err, PRPC_EIO, "store %s is read-only", path);
    }
    /* Look before touching: a foreign or damaged file must stay as it is. */
    if (rc == 0)
        rc = sq_check_header(st, &fresh, &schema, err);
    if (rc == 0 && !fresh && !opts->skip_open_check)
        rc = sq_check(st, "PRAGMA quick_check", err);
    if (rc == 0)
        rc = sq_once(st, "PRAGMA journal_mode=WAL", "switching to WAL", NULL, mode, err);
    if (rc == 0) {
        snprintf(sync_sql, sizeof(sync_sql), "PRAGMA synchronous=%s", opts->synchronous);
        rc = sq_once(st, sync_sql, "setting synchronous", NULL, NULL, err);
        st->full = strcmp(opts->synchronous, "full") == 0;
    }
    if (rc == 0 && (fresh || schema < PRPC_STORE_SCHEMA_VERSION)) {
        rc = sq_begin(st, err);
        locked = rc == 0;
        /* Another process may have created or upgraded it since we looked. */
        if (rc == 0)
            rc = sq_check_header(st, &fresh, &schema, err);
        if (rc == 0 && (fresh || schema < PRPC_STORE_SCHEMA_VERSION)) {
            char sql[64];
            int src = SQLITE_OK;
            if (fresh)
                src = sqlite3_exec(st->db, schema_sql, NULL, NULL, NULL);
            /* Version 1 -> 2: the checkpoints table. */
            if (src == SQLITE_OK && (fresh || schema < 2))
                src = sqlite3_exec(st->db, schema_v2_sql, NULL, NULL, NULL);
            if (src == SQLITE_OK && fresh) {
                snprintf(sql, sizeof(sql), "PRAGMA application_id=%d", PRPC_STORE_APPLICATION_ID);
                src = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
            }
            if (src == SQLITE_OK) {
                snprintf(sql, sizeof(sql), "PRAGMA user_version=%d", PRPC_STORE_SCHEMA_VERSION);
                src = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
            }
            if (src != SQLITE_OK)
                rc = sq_error(st, src, fresh ? "creating the schema" : "upgrading the schema",
                              err);
        }
        if (rc == 0)
            rc = sq_commit(st, err);
    }
    if (rc < 0) {
        if (locked)
            sq_rollback(st);
        sq_close(&st->base);
        return NULL;
    }
    return &st->base;
}
