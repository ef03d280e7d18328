/*
 * wire_doc.c - the documents of wire.h: a table per document (its fields in
 * the order they are written, each with its rule), the walk that checks a
 * parsed document against its table and writes it canonically, and the
 * encoders, which fill values in the same table order so every document's
 * bytes come from one writer.
 */
#include "wire.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the document tables ------------------------------------------------ */

/* Field kinds: what a value must be. */
enum {
    K_HEX64,    /* 64 lowercase hex: a call id, a blob, a version */
    K_LEASE_ID, /* a lease id */
    K_KEY,      /* a checkpoint key */
    K_NAME,     /* a string of 1..PRPC_WIRE_NAME_MAX bytes without NUL */
    K_STR,      /* any string */
    K_STATE,    /* a call state's name */
    K_END,      /* done, failed or terminated */
    K_KIND,     /* a typed value's kind */
    K_BOOL,
    K_INT,      /* a number, written as an integer */
    K_PROGRESS, /* a number from 0 to 100 */
    K_SIZE,     /* a byte count: an integral number from 0 to 2^53 */
    K_TYPED,    /* an array of typed entries */
    K_OBJ,      /* an object of document sub */
    K_OBJS,     /* an array of min..max objects of document sub */
    K_HEX64S,   /* an array of min..max call ids */
    K_STRS,     /* an array of min..max strings */
};

#define F_REQ 1   /* must be present */
#define F_NULL 2  /* null is a value */
#define F_LAX 4   /* a value of another kind counts as absent: the broker ignores it */
#define F_LIMIT 8 /* a count outside min..max is PRPC_ELIMIT (a 413 answer) */

typedef struct wire_field {
    const char *name;
    unsigned char kind, flags;
    unsigned char decimals; /* K_PROGRESS: digits written after the point */
    unsigned char sub;      /* K_OBJ, K_OBJS: a prpc_wire_doc_t */
    uint32_t min, max;      /* K_OBJS, K_HEX64S, K_STRS: entries */
} wire_field_t;

typedef struct wire_doc {
    const char *name;
    const char *needs; /* how errors start; NULL in a nested object: its parent's words */
    const wire_field_t *fields;
    size_t n;
} wire_doc_t;

#define FIELDS(a) a, PRPC_ARRAY_LEN(a)

static const wire_field_t ERROR_CODE_F[] = {
    {"code", K_STR, F_REQ, 0, 0, 0, 0},
    {"message", K_STR, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t ERROR_F[] = {
    {"error", K_OBJ, F_REQ, 0, PRPC_WIRE_ERROR_CODE, 0, 0},
};
static const wire_field_t ERROR_RECORD_F[] = {
    {"type", K_STR, F_LAX, 0, 0, 0, 0},
    {"message", K_STR, F_LAX, 0, 0, 0, 0},
    {"traceback", K_STR, F_LAX, 0, 0, 0, 0},
};
static const wire_field_t CALL_F[] = {
    {"id", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"function", K_NAME, F_REQ, 0, 0, 0, 0},
    {"version", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"state", K_STATE, F_REQ, 0, 0, 0, 0},
    {"progress", K_PROGRESS, 0, 3, 0, 0, 0},
    {"attempts", K_INT, 0, 0, 0, 0, 0},
    {"created_ms", K_INT, 0, 0, 0, 0, 0},
    {"updated_ms", K_INT, 0, 0, 0, 0, 0},
    {"finished_ms", K_INT, 0, 0, 0, 0, 0},
    {"terminate_requested", K_BOOL, 0, 0, 0, 0, 0},
    {"outputs", K_TYPED, F_NULL, 0, 0, 0, 0},
    {"error", K_OBJ, F_NULL, 0, PRPC_WIRE_ERROR_RECORD, 0, 0},
    {"args", K_TYPED, 0, 0, 0, 0, 0},
    {"arriving_outputs", K_TYPED, 0, 0, 0, 0, 0},
};
static const wire_field_t SUBMIT_F[] = {
    {"id", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"function", K_NAME, F_REQ, 0, 0, 0, 0},
    {"version", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"args", K_TYPED, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t SUBMITTED_F[] = {
    {"created", K_BOOL, F_REQ, 0, 0, 0, 0},
    {"call", K_OBJ, F_REQ, 0, PRPC_WIRE_CALL, 0, 0},
};
static const wire_field_t BATCH_F[] = {
    {"calls", K_OBJS, F_REQ | F_LIMIT, 0, PRPC_WIRE_SUBMIT, 1, PRPC_WIRE_BATCH_MAX},
};
static const wire_field_t BATCH_ENTRY_F[] = {
    {"created", K_BOOL, 0, 0, 0, 0, 0},
    {"call", K_OBJ, 0, 0, PRPC_WIRE_CALL, 0, 0},
    {"error", K_OBJ, 0, 0, PRPC_WIRE_ERROR_CODE, 0, 0},
};
static const wire_field_t BATCH_ANSWER_F[] = {
    {"results", K_OBJS, F_REQ, 0, PRPC_WIRE_BATCH_ENTRY, 0, PRPC_WIRE_BATCH_MAX},
};
static const wire_field_t WAIT_F[] = {
    {"ids", K_HEX64S, F_REQ | F_LIMIT, 0, 0, 1, PRPC_WIRE_BATCH_MAX},
    {"wait_ms", K_INT, 0, 0, 0, 0, 0},
};
static const wire_field_t WAIT_ANSWER_F[] = {
    {"calls", K_OBJS, F_REQ, 0, PRPC_WIRE_CALL, 0, PRPC_WIRE_BATCH_MAX},
    {"missing", K_HEX64S, F_REQ, 0, 0, 0, PRPC_WIRE_BATCH_MAX},
};
static const wire_field_t CALL_ANSWER_F[] = {
    {"call", K_OBJ, F_REQ, 0, PRPC_WIRE_CALL, 0, 0},
};
static const wire_field_t DELETED_F[] = {
    {"deleted", K_BOOL, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t FUNCTION_REF_F[] = {
    {"name", K_STR, F_REQ, 0, 0, 0, 0},
    {"version", K_STR, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t GPU_F[] = {
    {"index", K_INT, F_LAX, 0, 0, 0, 0},
    {"name", K_STR, F_LAX, 0, 0, 0, 0},
    {"uuid", K_STR, F_LAX, 0, 0, 0, 0},
    {"total_bytes", K_INT, F_LAX, 0, 0, 0, 0},
    {"free_bytes", K_INT, F_LAX, 0, 0, 0, 0},
};
static const wire_field_t LEASE_REQUEST_F[] = {
    {"worker", K_NAME, F_REQ, 0, 0, 0, 0},
    {"functions", K_OBJS, F_REQ, 0, PRPC_WIRE_FUNCTION_REF, 1, PRPC_STORE_LEASE_FUNCTIONS_MAX},
    {"wait_ms", K_INT, 0, 0, 0, 0, 0},
    {"gpus", K_OBJS, F_LAX, 0, PRPC_WIRE_GPU, 0, PRPC_GPU_MAX},
};
static const wire_field_t LEASE_HEAD_F[] = {
    {"id", K_LEASE_ID, F_REQ, 0, 0, 0, 0},
    {"call_id", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"deadline_ms", K_INT, 0, 0, 0, 0, 0},
    {"heartbeat_ms", K_INT, 0, 0, 0, 0, 0},
};
static const wire_field_t CHECKPOINT_ENTRY_F[] = {
    {"key", K_KEY, F_REQ, 0, 0, 0, 0},
    {"blob", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"size", K_SIZE, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t LEASE_F[] = {
    {"lease", K_OBJ, F_REQ, 0, PRPC_WIRE_LEASE_HEAD, 0, 0},
    {"call", K_OBJ, F_REQ, 0, PRPC_WIRE_CALL, 0, 0},
    {"checkpoints", K_OBJS, 0, 0, PRPC_WIRE_CHECKPOINT_ENTRY, 0, PRPC_CHECKPOINTS_MAX},
};
static const wire_field_t HEARTBEAT_F[] = {
    {"call_id", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"progress", K_PROGRESS, F_REQ, 2, 0, 0, 0},
};
static const wire_field_t HEARTBEAT_ANSWER_F[] = {
    {"terminate", K_BOOL, F_REQ, 0, 0, 0, 0},
    {"deadline_ms", K_INT, 0, 0, 0, 0, 0},
};
static const wire_field_t CHECKPOINT_F[] = {
    {"call_id", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"key", K_KEY, F_REQ, 0, 0, 0, 0},
    {"blob", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"size", K_SIZE, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t OUTPUTS_F[] = {
    {"call_id", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"outputs", K_TYPED, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t OUTPUTS_ANSWER_F[] = {
    {"call_id", K_HEX64, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t RESULT_F[] = {
    {"call_id", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"state", K_END, F_REQ, 0, 0, 0, 0},
    {"outputs", K_TYPED, 0, 0, 0, 0, 0},
    {"error", K_OBJ, F_NULL | F_LAX, 0, PRPC_WIRE_ERROR_RECORD, 0, 0},
};
static const wire_field_t PARTIAL_F[] = {
    {"partial", K_SIZE, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t COMMITTED_F[] = {
    {"size", K_SIZE, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t HEALTH_F[] = {
    {"ok", K_BOOL, F_REQ, 0, 0, 0, 0},
    {"node", K_STR, F_REQ, 0, 0, 0, 0},
    {"version", K_STR, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t DECL_F[] = {
    {"name", K_NAME, F_REQ, 0, 0, 0, 0},
    {"kind", K_KIND, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t FUNCTION_F[] = {
    {"name", K_NAME, F_REQ, 0, 0, 0, 0},
    {"version", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"args", K_OBJS, F_REQ, 0, PRPC_WIRE_DECL, 0, PRPC_WIRE_ARGS_MAX},
    {"returns", K_OBJS, F_REQ, 0, PRPC_WIRE_DECL, 0, PRPC_WIRE_ARGS_MAX},
};
static const wire_field_t FUNCTIONS_F[] = {
    {"functions", K_OBJS, F_REQ, 0, PRPC_WIRE_FUNCTION, 1, PRPC_WIRE_FUNCTIONS_MAX},
};
static const wire_field_t STATS_F[] = {
    {"function", K_NAME, F_REQ, 0, 0, 0, 0},
    {"queued", K_INT, F_REQ, 0, 0, 0, 0},
    {"leased", K_INT, F_REQ, 0, 0, 0, 0},
    {"done", K_INT, F_REQ, 0, 0, 0, 0},
    {"failed", K_INT, F_REQ, 0, 0, 0, 0},
    {"terminated", K_INT, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t NODES_F[] = {
    {"nodes", K_STRS, F_REQ, 0, 0, 1, 4096},
};
static const wire_field_t METRICS_F[] = {
    {"requests", K_INT, F_REQ, 0, 0, 0, 0},
    {"bytes_received", K_INT, F_REQ, 0, 0, 0, 0},
    {"chunks_received", K_INT, F_REQ, 0, 0, 0, 0},
    {"chunks_refused", K_INT, F_REQ, 0, 0, 0, 0},
    {"blobs_committed", K_INT, F_REQ, 0, 0, 0, 0},
    {"bytes_served", K_INT, F_REQ, 0, 0, 0, 0},
    {"bytes_followed", K_INT, F_REQ, 0, 0, 0, 0},
    {"bytes_followed_from_memory", K_INT, F_REQ, 0, 0, 0, 0},
    {"corrupt_blobs_dropped", K_INT, F_REQ, 0, 0, 0, 0},
    {"calls_submitted", K_INT, F_REQ, 0, 0, 0, 0},
    {"leases_granted", K_INT, F_REQ, 0, 0, 0, 0},
    {"results_accepted", K_INT, F_REQ, 0, 0, 0, 0},
    {"results_refused", K_INT, F_REQ, 0, 0, 0, 0},
    {"auth_refused", K_INT, F_REQ, 0, 0, 0, 0},
};

static const wire_doc_t DOCS[PRPC_WIRE_NDOCS] = {
    [PRPC_WIRE_ERROR] = {"error", "an error answer", FIELDS(ERROR_F)},
    [PRPC_WIRE_CALL] = {"call", "a call record", FIELDS(CALL_F)},
    [PRPC_WIRE_SUBMIT] = {"submit",
                          "submit needs \"id\" (64 hex), \"function\" and \"version\" (64 hex)",
                          FIELDS(SUBMIT_F)},
    [PRPC_WIRE_SUBMITTED] = {"submitted", "a submit answer", FIELDS(SUBMITTED_F)},
    [PRPC_WIRE_BATCH] = {"batch", "a batch submit needs \"calls\": [submit, ...]",
                         FIELDS(BATCH_F)},
    [PRPC_WIRE_BATCH_ANSWER] = {"batch_answer", "a batch answer", FIELDS(BATCH_ANSWER_F)},
    [PRPC_WIRE_WAIT] = {"wait", "a wait needs \"ids\": [call id, ...]", FIELDS(WAIT_F)},
    [PRPC_WIRE_WAIT_ANSWER] = {"wait_answer", "a wait answer", FIELDS(WAIT_ANSWER_F)},
    [PRPC_WIRE_CALL_ANSWER] = {"call_answer", "a call answer", FIELDS(CALL_ANSWER_F)},
    [PRPC_WIRE_DELETED] = {"deleted", "a delete answer", FIELDS(DELETED_F)},
    [PRPC_WIRE_LEASE_REQUEST] = {"lease_request",
                                 "a lease request needs \"worker\" (a name) and \"functions\"",
                                 FIELDS(LEASE_REQUEST_F)},
    [PRPC_WIRE_LEASE] = {"lease", "a lease answer", FIELDS(LEASE_F)},
    [PRPC_WIRE_HEARTBEAT] = {"heartbeat",
                             "a heartbeat needs \"call_id\" (64 hex) and \"progress\" (0..100)",
                             FIELDS(HEARTBEAT_F)},
    [PRPC_WIRE_HEARTBEAT_ANSWER] = {"heartbeat_answer", "a heartbeat answer",
                                    FIELDS(HEARTBEAT_ANSWER_F)},
    [PRPC_WIRE_CHECKPOINT] = {"checkpoint",
                              "a checkpoint needs \"call_id\" (64 hex), \"key\", \"blob\" (64 "
                              "hex) and \"size\" (bytes)",
                              FIELDS(CHECKPOINT_F)},
    [PRPC_WIRE_OUTPUTS] = {"outputs", "announced outputs need \"call_id\" (64 hex) and \"outputs\"",
                           FIELDS(OUTPUTS_F)},
    [PRPC_WIRE_OUTPUTS_ANSWER] = {"outputs_answer", "an outputs answer",
                                  FIELDS(OUTPUTS_ANSWER_F)},
    [PRPC_WIRE_RESULT] = {"result", "a result needs \"call_id\" (64 hex) and \"state\"",
                          FIELDS(RESULT_F)},
    [PRPC_WIRE_PARTIAL] = {"partial", "a chunk answer", FIELDS(PARTIAL_F)},
    [PRPC_WIRE_COMMITTED] = {"committed", "a commit answer", FIELDS(COMMITTED_F)},
    [PRPC_WIRE_HEALTH] = {"health", "a health answer", FIELDS(HEALTH_F)},
    [PRPC_WIRE_FUNCTIONS] = {"functions", "a function listing", FIELDS(FUNCTIONS_F)},
    [PRPC_WIRE_STATS] = {"stats", "function stats", FIELDS(STATS_F)},
    [PRPC_WIRE_NODES] = {"nodes", "a node list", FIELDS(NODES_F)},
    [PRPC_WIRE_METRICS] = {"metrics", "metrics", FIELDS(METRICS_F)},
    [PRPC_WIRE_ERROR_CODE] = {"error_code", NULL, FIELDS(ERROR_CODE_F)},
    [PRPC_WIRE_ERROR_RECORD] = {"error_record", NULL, FIELDS(ERROR_RECORD_F)},
    [PRPC_WIRE_BATCH_ENTRY] = {"batch_entry", NULL, FIELDS(BATCH_ENTRY_F)},
    [PRPC_WIRE_FUNCTION_REF] = {"function_ref",
                                "each function of a lease request needs a name and a version",
                                FIELDS(FUNCTION_REF_F)},
    [PRPC_WIRE_GPU] = {"gpu", NULL, FIELDS(GPU_F)},
    [PRPC_WIRE_LEASE_HEAD] = {"lease_head", NULL, FIELDS(LEASE_HEAD_F)},
    [PRPC_WIRE_CHECKPOINT_ENTRY] = {"checkpoint_entry", NULL, FIELDS(CHECKPOINT_ENTRY_F)},
    [PRPC_WIRE_FUNCTION] = {"function", NULL, FIELDS(FUNCTION_F)},
    [PRPC_WIRE_DECL] = {"decl", NULL, FIELDS(DECL_F)},
};

const char *prpc_wire_doc_name(int doc)
{
    return doc >= 0 && doc < PRPC_WIRE_NDOCS ? DOCS[doc].name : NULL;
}

int prpc_wire_doc_find(const char *name)
{
    for (int i = 0; name != NULL && i < PRPC_WIRE_NDOCS; i++)
        if (strcmp(DOCS[i].name, name) == 0)
            return i;
    return -1;
}

/* ---- checking and canonical text --------------------------------------- */

/* Where a check is: the top document's words and the field's path. */
typedef struct where {
    const char *needs; /* of the document checked */
    const char *doc;   /* its name */
    char path[256];    /* "lease.id", "checkpoints[2].key" */
    int code;          /* what a broken rule returns */
} where_t;

static int broken(const where_t *w, prpc_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int broken(const where_t *w, prpc_error_t *err, const char *fmt, ...)
{
    char words[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(words, sizeof(words), fmt, ap);
    va_end(ap);
    return prpc_error_set(err, w->code, "%s: \"%s\" %s", w->needs, w->path, words);
}

/* Append ".name" or "[i]" to w's path; returns its length before, for
 * path_pop. */
static size_t path_push(where_t *w, const char *name, size_t index)
{
    size_t n = strlen(w->path);
    if (name != NULL)
        snprintf(w->path + n, sizeof(w->path) - n, "%s%s", n ? "." : "", name);
    else
        snprintf(w->path + n, sizeof(w->path) - n, "[%zu]", index);
    return n;
}

static void path_pop(where_t *w, size_t n)
{
    w->path[n] = '\0';
}

static const char *const STATE_NAMES[] = {"queued", "leased", "done", "failed", "terminated"};

static void put_key(prpc_buf_t *out, int *first, const char *name)
{
    prpc_buf_printf(out, "%s\"%s\": ", *first ? "" : ", ", name);
    *first = 0;
}

static int canon_doc(int doc, const bson_t *d, where_t *w, prpc_buf_t *out, prpc_error_t *err);

/* A nested object: errors inside it start with its own words when it has
 * some (a lease request's function entries), else with its parent's. */
static int canon_nested(int doc, const bson_t *d, where_t *w, prpc_buf_t *out, prpc_error_t *err)
{
    const char *parent = w->needs;
    int rc;
    if (DOCS[doc].needs != NULL)
        w->needs = DOCS[doc].needs;
    rc = canon_doc(doc, d, w, out, err);
    w->needs = parent;
    return rc;
}

/* Check (and write, when out) the list at it: its count and each entry. */
static int canon_list(const wire_field_t *f, const bson_iter_t *it, where_t *w, prpc_buf_t *out,
                      prpc_error_t *err)
{
    bson_iter_t arr;
    size_t count = 0, i = 0;
    int rc;
    if (!BSON_ITER_HOLDS_ARRAY(it) || !bson_iter_recurse(it, &arr))
        return broken(w, err, "must be an array");
    while (bson_iter_next(&arr))
        count++;
    if (count < f->min || count > f->max) {
        where_t lw = *w;
        if (f->flags & F_LIMIT)
            lw.code = PRPC_ELIMIT;
        return broken(&lw, err, "must hold %u to %u entries, got %zu", f->min, f->max, count);
    }
    bson_iter_recurse(it, &arr);
    if (out != NULL)
        prpc_buf_puts(out, "[");
    while (bson_iter_next(&arr)) {
        size_t at = path_push(w, NULL, i);
        uint32_t len = 0;
        const char *s = BSON_ITER_HOLDS_UTF8(&arr) ? bson_iter_utf8(&arr, &len) : NULL;
        bson_t sub;
        if (out != NULL && i > 0)
            prpc_buf_puts(out, ", ");
        if (f->kind == K_HEX64S) {
            if (s == NULL || len != PRPC_CALL_ID_HEX || !prpc_wire_valid_call_id(s))
                return broken(w, err, "must be a call id (64 lowercase hex digits)");
            if (out != NULL)
                prpc_buf_printf(out, "\"%s\"", s);
        } else if (f->kind == K_STRS) {
            if (s == NULL)
                return broken(w, err, "must be a string");
            if (out != NULL)
                prpc_buf_json_str(out, s, len);
        } else {
            if (!prpc__wire_iter_doc(&arr, &sub))
                return broken(w, err, "must be an object");
            if ((rc = canon_nested(f->sub, &sub, w, out, err)) != 0)
                return rc;
        }
        path_pop(w, at);
        i++;
    }
    if (out != NULL)
        prpc_buf_puts(out, "]");
    return 0;
}

/* Check (and write) the value of field f at it. Returns 0, an error, or 1
 * when the value counts as absent (F_LAX). */
static int canon_value(const wire_field_t *f, const bson_iter_t *it, where_t *w, prpc_buf_t *out,
                       prpc_error_t *err)
{
    uint32_t len = 0;
    const char *s = BSON_ITER_HOLDS_UTF8(it) ? bson_iter_utf8(it, &len) : NULL;
    double d = 0;
    int num = prpc__wire_iter_num(it, &d), lax = (f->flags & F_LAX) != 0;
    bson_t sub;
    int rc;

    switch (f->kind) {
    case K_HEX64:
        if (s == NULL || len != PRPC_CALL_ID_HEX || !prpc_wire_valid_call_id(s))
            return lax ? 1 : broken(w, err, "must be 64 lowercase hex digits");
        break;
    case K_LEASE_ID:
        if (s == NULL || len != PRPC_LEASE_ID_HEX || !prpc_wire_valid_lease_id(s))
            return lax ? 1 : broken(w, err, "must be a lease id (%d lowercase hex digits)",
                                    PRPC_LEASE_ID_HEX);
        break;
    case K_KEY:
        if (s == NULL || strlen(s) != len)
            return lax ? 1 : broken(w, err, "must be a checkpoint key (a string)");
        if (prpc_store_check_checkpoint_key(s, err) != 0) {
            if (lax)
                return 1;
            if (err != NULL) {
                char why[PRPC_ERROR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err->message);
                prpc_error_set(err, w->code, "%s: \"%s\": %s", w->needs, w->path, why);
            }
            return w->code;
        }
        break;
    case K_NAME:
        if (s == NULL || len == 0 || len > PRPC_WIRE_NAME_MAX || strlen(s) != len)
            return lax ? 1 : broken(w, err, "must be a name (1 to %d bytes)", PRPC_WIRE_NAME_MAX);
        break;
    case K_STR:
        if (s == NULL)
            return lax ? 1 : broken(w, err, "must be a string");
        break;
    case K_STATE:
        if (!prpc__wire_one_of(s, STATE_NAMES, PRPC_ARRAY_LEN(STATE_NAMES)))
            return lax ? 1 : broken(w, err, "must be queued, leased, done, failed or terminated");
        break;
    case K_END:
        if (!prpc__wire_one_of(s, STATE_NAMES + 2, 3))
            return lax ? 1 : broken(w, err, "must be done, failed or terminated");
        break;
    case K_KIND:
        if (s == NULL || prpc__wire_kind_tag(s) == 0)
            return lax ? 1 : broken(w, err, "must be int, float, bool, str or file");
        break;
    case K_BOOL:
        if (!BSON_ITER_HOLDS_BOOL(it))
            return lax ? 1 : broken(w, err, "must be true or false");
        if (out != NULL)
            prpc_buf_puts(out, bson_iter_bool(it) ? "true" : "false");
        return 0;
    case K_INT:
        if (!num || (BSON_ITER_HOLDS_DOUBLE(it) &&
                     !(d >= -9223372036854775808.0 && d < 9223372036854775808.0)))
            return lax ? 1 : broken(w, err, "must be a number");
        if (out != NULL)
            prpc_buf_printf(out, "%lld",
                            BSON_ITER_HOLDS_DOUBLE(it) ? (long long)d
                                                       : (long long)bson_iter_as_int64(it));
        return 0;
    case K_PROGRESS:
        if (!num || !(d >= 0 && d <= 100))
            return lax ? 1 : broken(w, err, "must be a number from 0 to 100");
        if (out != NULL)
            prpc_buf_printf(out, "%.*f", (int)f->decimals, d);
        return 0;
    case K_SIZE:
        if (!num || !(d >= 0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d)
            return lax ? 1 : broken(w, err, "must be a byte count (an integer from 0 to 2^53)");
        if (out != NULL)
            prpc_buf_printf(out, "%llu", (unsigned long long)d);
        return 0;
    case K_TYPED:
        if (lax && !BSON_ITER_HOLDS_ARRAY(it))
            return 1;
        return prpc__wire_entries_canon((bson_iter_t *)it, w->path, w->doc, w->code, out, err);
    case K_OBJ:
        if (!prpc__wire_iter_doc(it, &sub))
            return lax ? 1 : broken(w, err, "must be an object");
        return canon_nested(f->sub, &sub, w, out, err);
    default:
        if (lax && !BSON_ITER_HOLDS_ARRAY(it))
            return 1;
        rc = canon_list(f, it, w, out, err);
        return rc;
    }
    if (out != NULL)
        prpc_buf_json_str(out, s, len);
    return 0;
}

static int canon_doc(int doc, const bson_t *d, where_t *w, prpc_buf_t *out, prpc_error_t *err)
{
    const wire_doc_t *t = &DOCS[doc];
    size_t mark = out != NULL ? out->len : 0;
    int first = 1, rc;
    if (out != NULL)
        prpc_buf_puts(out, "{");
    for (size_t i = 0; i < t->n; i++) {
        const wire_field_t *f = &t->fields[i];
        bson_iter_t it;
        int have = bson_iter_init_find(&it, d, f->name);
        size_t at = path_push(w, f->name, 0);
        if (have && BSON_ITER_HOLDS_NULL(&it) && (f->flags & F_NULL)) {
            if (out != NULL) {
                put_key(out, &first, f->name);
                prpc_buf_puts(out, "null");
            }
            path_pop(w, at);
            continue;
        }
        if (have && BSON_ITER_HOLDS_NULL(&it) && (f->flags & F_LAX))
            have = 0;
        if (!have) {
            if (f->flags & F_REQ)
                return broken(w, err, "is missing");
            path_pop(w, at);
            continue;
        }
        if (out != NULL) {
            /* A value that turns out to count as absent takes its key back. */
            mark = out->len;
            put_key(out, &first, f->name);
        }
        rc = canon_value(f, &it, w, out, err);
        if (rc == 1) {
            if (f->flags & F_REQ)
                return broken(w, err, "is missing");
            if (out != NULL) {
                out->len = mark;
                if (out->data != NULL)
                    out->data[mark] = '\0';
                first = mark == 0 || out->data[mark - 1] == '{';
            }
            path_pop(w, at);
            continue;
        }
        if (rc != 0)
            return rc;
        path_pop(w, at);
    }
    /* The one rule across fields: a result that is done brings its outputs. */
    if (doc == PRPC_WIRE_RESULT) {
        const char *state = prpc_doc_str(d, "state");
        bson_iter_t it;
        if (state != NULL && strcmp(state, "done") == 0 && !bson_iter_init_find(&it, d, "outputs"))
            return prpc_error_set(err, w->code, "a done result needs \"outputs\"");
    }
    if (out != NULL)
        prpc_buf_puts(out, "}");
    return 0;
}

int prpc_wire_check(prpc_wire_doc_t doc, const bson_t *d, int code, prpc_error_t *err)
{
    return prpc_wire_canonical(doc, d, code, NULL, err);
}

int prpc_wire_canonical(prpc_wire_doc_t doc, const bson_t *d, int code, prpc_buf_t *out,
                        prpc_error_t *err)
{
    where_t w;
    if ((int)doc < 0 || doc >= PRPC_WIRE_NDOCS || d == NULL)
        return prpc_error_set(err, PRPC_EINVAL, "no such document (%d)", (int)doc);
    memset(&w, 0, sizeof(w));
    w.needs = DOCS[doc].needs != NULL ? DOCS[doc].needs : DOCS[doc].name;
    w.doc = DOCS[doc].name;
    w.code = code;
    return canon_doc(doc, d, &w, out, err);
}

bson_t *prpc_wire_decode(prpc_wire_doc_t doc, const char *json, size_t len, int code,
                         prpc_error_t *err)
{
    bson_t *d = prpc_json_parse(json, len, prpc_wire_doc_name(doc) ? prpc_wire_doc_name(doc)
                                                                   : "document",
                                err);
    if (d == NULL) {
        if (err != NULL && err->code == PRPC_EINVAL)
            err->code = code;
        return NULL;
    }
    if (prpc_wire_check(doc, d, code, err) != 0) {
        bson_destroy(d);
        return NULL;
    }
    return d;
}

/* ---- encoders ----------------------------------------------------------- */

/* A value to write for one field of a document table: the encoders fill an
 * array of these in the table's order, so the bytes of every document come
 * from one writer (write_vals) and one table. */
enum { V_ABSENT, V_NULL, V_STR, V_INT, V_NUM, V_BOOL, V_RAW, V_OBJ, V_LIST };

typedef struct wire_val {
    unsigned char t;             /* V_*; V_ABSENT (0) leaves the field out */
    const char *s;               /* V_STR: len bytes; V_RAW: JSON text */
    size_t len;
    int64_t i;                   /* V_INT, V_BOOL */
    double d;                    /* V_NUM */
    const struct wire_val *vals; /* V_OBJ: the sub-document's values; V_LIST: its entries */
    size_t n;                    /* V_LIST: entries (each the sub-document's n values for
                                    K_OBJS, one value otherwise) */
} wire_val_t;

static wire_val_t v_strn(const char *s, size_t len)
{
    wire_val_t v = {V_STR, s, len, 0, 0, NULL, 0};
    return v;
}

static wire_val_t v_str(const char *s)
{
    return v_strn(s, strlen(s));
}

static wire_val_t v_int(int64_t i)
{
    wire_val_t v = {V_INT, NULL, 0, i, 0, NULL, 0};
    return v;
}

static wire_val_t v_num(double d)
{
    wire_val_t v = {V_NUM, NULL, 0, 0, d, NULL, 0};
    return v;
}

static wire_val_t v_bool(int b)
{
    wire_val_t v = {V_BOOL, NULL, 0, b != 0, 0, NULL, 0};
    return v;
}

/* JSON text as it is; NULL is null. */
static wire_val_t v_raw(const char *json)
{
    wire_val_t v = {json != NULL ? V_RAW : V_NULL, json, 0, 0, 0, NULL, 0};
    return v;
}

static wire_val_t v_obj(const wire_val_t *vals)
{
    wire_val_t v = {V_OBJ, NULL, 0, 0, 0, vals, 0};
    return v;
}

static wire_val_t v_list(const wire_val_t *vals, size_t n)
{
    wire_val_t v = {V_LIST, NULL, 0, 0, 0, vals, n};
    return v;
}

static void write_vals(prpc_buf_t *out, int doc, const wire_val_t *vals);

static void write_val(prpc_buf_t *out, const wire_field_t *f, const wire_val_t *v)
{
    switch (v->t) {
    case V_NULL:
        prpc_buf_puts(out, "null");
        break;
    case V_STR:
        prpc_buf_json_str(out, v->s, v->len);
        break;
    case V_INT:
        prpc_buf_printf(out, "%lld", (long long)v->i);
        break;
    case V_NUM:
        prpc_buf_printf(out, "%.*f", (int)f->decimals, v->d);
        break;
    case V_BOOL:
        prpc_buf_puts(out, v->i ? "true" : "false");
        break;
    case V_RAW:
        prpc_buf_puts(out, v->s);
        break;
    case V_OBJ:
        write_vals(out, f->sub, v->vals);
        break;
    case V_LIST:
        prpc_buf_puts(out, "[");
        for (size_t j = 0; j < v->n; j++) {
            if (j > 0)
                prpc_buf_puts(out, ", ");
            if (f->kind == K_OBJS)
                write_vals(out, f->sub, v->vals + j * DOCS[f->sub].n);
            else
                write_val(out, f, &v->vals[j]);
        }
        prpc_buf_puts(out, "]");
        break;
    default:
        break;
    }
}

static void write_vals(prpc_buf_t *out, int doc, const wire_val_t *vals)
{
    const wire_doc_t *t = &DOCS[doc];
    int first = 1;
    prpc_buf_puts(out, "{");
    for (size_t i = 0; i < t->n; i++) {
        if (vals[i].t == V_ABSENT)
            continue;
        put_key(out, &first, t->fields[i].name);
        write_val(out, &t->fields[i], &vals[i]);
    }
    prpc_buf_puts(out, "}");
}

static int write_doc(prpc_buf_t *out, int doc, const wire_val_t *vals)
{
    write_vals(out, doc, vals);
    return out->failed;
}

/* n entries of the document doc's values, zeroed (all absent); NULL when out
 * of memory, which is then the buffer's failure too. */
static wire_val_t *vals_new(prpc_buf_t *out, int doc, size_t n)
{
    wire_val_t *v = calloc(n ? n * DOCS[doc].n : 1, sizeof(*v));
    if (v == NULL)
        out->failed = PRPC_ENOMEM;
    return v;
}

/* A call record's values (CALL_F's order). */
static void call_vals(wire_val_t v[PRPC_ARRAY_LEN(CALL_F)], const prpc_call_t *c, int with_args,
                      const char *arriving_json)
{
    memset(v, 0, sizeof(wire_val_t) * PRPC_ARRAY_LEN(CALL_F));
    v[0] = v_str(c->id);
    v[1] = v_str(c->function);
    v[2] = v_str(c->version);
    v[3] = v_str(prpc_call_state_name(c->state));
    v[4] = v_num(c->progress);
    v[5] = v_int(c->attempts);
    v[6] = v_int(c->created_ms);
    v[7] = v_int(c->updated_ms);
    v[8] = v_int(c->finished_ms);
    v[9] = v_bool(c->terminate_requested);
    v[10] = v_raw(c->outputs_json);
    v[11] = v_raw(c->error_json);
    if (with_args)
        v[12] = v_raw(c->args_json != NULL ? c->args_json : "[]");
    if (arriving_json != NULL)
        v[13] = v_raw(arriving_json);
}

int prpc_wire_write_error(prpc_buf_t *out, int code, const char *message)
{
    wire_val_t e[] = {v_str(prpc_strerror(code)), v_str(message != NULL ? message : "")};
    wire_val_t v[] = {v_obj(e)};
    return write_doc(out, PRPC_WIRE_ERROR, v);
}

int prpc_wire_write_call(prpc_buf_t *out, const prpc_call_t *c, int with_args,
                         const char *arriving_json)
{
    wire_val_t v[PRPC_ARRAY_LEN(CALL_F)];
    call_vals(v, c, with_args, arriving_json);
    return write_doc(out, PRPC_WIRE_CALL, v);
}

int prpc_wire_write_call_answer(prpc_buf_t *out, const prpc_call_t *c, const char *arriving_json)
{
    wire_val_t cv[PRPC_ARRAY_LEN(CALL_F)], v[1];
    call_vals(cv, c, 0, arriving_json);
    v[0] = v_obj(cv);
    return write_doc(out, PRPC_WIRE_CALL_ANSWER, v);
}

int prpc_wire_write_submitted(prpc_buf_t *out, int created, const prpc_call_t *c)
{
    wire_val_t cv[PRPC_ARRAY_LEN(CALL_F)], v[2];
    call_vals(cv, c, 0, NULL);
    v[0] = v_bool(created);
    v[1] = v_obj(cv);
    return write_doc(out, PRPC_WIRE_SUBMITTED, v);
}

int prpc_wire_write_batch_answer(prpc_buf_t *out, const prpc_wire_batch_result_t *r, size_t n)
{
    const size_t nc = PRPC_ARRAY_LEN(CALL_F);
    wire_val_t *entries = vals_new(out, PRPC_WIRE_BATCH_ENTRY, n);
    wire_val_t *calls = calloc(n ? n * nc : 1, sizeof(*calls));
    wire_val_t *codes = calloc(n ? n * 2 : 1, sizeof(*codes));
    wire_val_t v[1];
    if (entries == NULL || calls == NULL || codes == NULL) {
        out->failed = PRPC_ENOMEM;
    } else {
        for (size_t i = 0; i < n; i++) {
            wire_val_t *e = &entries[i * PRPC_ARRAY_LEN(BATCH_ENTRY_F)];
            if (r[i].code != 0) {
                codes[2 * i] = v_str(prpc_strerror(r[i].code));
                codes[2 * i + 1] = v_str(r[i].message != NULL ? r[i].message : "");
                e[2] = v_obj(&codes[2 * i]);
            } else {
                call_vals(&calls[i * nc], r[i].call, 0, NULL);
                e[0] = v_bool(r[i].created);
                e[1] = v_obj(&calls[i * nc]);
            }
        }
        v[0] = v_list(entries, n);
        write_vals(out, PRPC_WIRE_BATCH_ANSWER, v);
    }
    free(entries);
    free(calls);
    free(codes);
    return out->failed;
}

int prpc_wire_write_wait_answer(prpc_buf_t *out, const prpc_call_t *calls, size_t ncalls,
                                const char (*missing)[PRPC_CALL_ID_HEX + 1], size_t nmissing)
{
    wire_val_t *cv = vals_new(out, PRPC_WIRE_CALL, ncalls);
    wire_val_t *mv = calloc(nmissing ? nmissing : 1, sizeof(*mv));
    wire_val_t v[2];
    if (cv == NULL || mv == NULL) {
        out->failed = PRPC_ENOMEM;
    } else {
        for (size_t i = 0; i < ncalls; i++)
            call_vals(&cv[i * PRPC_ARRAY_LEN(CALL_F)], &calls[i], 0, NULL);
        for (size_t i = 0; i < nmissing; i++)
            mv[i] = v_str(missing[i]);
        v[0] = v_list(cv, ncalls);
        v[1] = v_list(mv, nmissing);
        write_vals(out, PRPC_WIRE_WAIT_ANSWER, v);
    }
    free(cv);
    free(mv);
    return out->failed;
}

int prpc_wire_write_deleted(prpc_buf_t *out)
{
    wire_val_t v[] = {v_bool(1)};
    return write_doc(out, PRPC_WIRE_DELETED, v);
}

int prpc_wire_write_lease(prpc_buf_t *out, const prpc_call_t *c, int heartbeat_ms,
                          const prpc_checkpoint_t *ck, size_t nck)
{
    wire_val_t head[] = {v_str(c->lease_id), v_str(c->id), v_int(c->lease_deadline_ms),
                         v_int(heartbeat_ms)};
    wire_val_t cv[PRPC_ARRAY_LEN(CALL_F)], v[3];
    wire_val_t *kv = vals_new(out, PRPC_WIRE_CHECKPOINT_ENTRY, nck);
    if (kv == NULL)
        return out->failed;
    for (size_t i = 0; i < nck; i++) {
        kv[3 * i] = v_str(ck[i].key);
        kv[3 * i + 1] = v_str(ck[i].sha256);
        kv[3 * i + 2] = v_int((int64_t)ck[i].size);
    }
    call_vals(cv, c, 1, NULL);
    v[0] = v_obj(head);
    v[1] = v_obj(cv);
    v[2] = v_list(kv, nck);
    write_vals(out, PRPC_WIRE_LEASE, v);
    free(kv);
    return out->failed;
}

int prpc_wire_write_heartbeat_answer(prpc_buf_t *out, int terminate, int64_t deadline_ms)
{
    wire_val_t v[] = {v_bool(terminate), v_int(deadline_ms)};
    return write_doc(out, PRPC_WIRE_HEARTBEAT_ANSWER, v);
}

int prpc_wire_write_outputs_answer(prpc_buf_t *out, const char *call_id)
{
    wire_val_t v[] = {v_str(call_id)};
    return write_doc(out, PRPC_WIRE_OUTPUTS_ANSWER, v);
}

int prpc_wire_write_partial(prpc_buf_t *out, uint64_t partial)
{
    wire_val_t v[] = {v_int((int64_t)partial)};
    return write_doc(out, PRPC_WIRE_PARTIAL, v);
}

int prpc_wire_write_committed(prpc_buf_t *out, uint64_t size)
{
    wire_val_t v[] = {v_int((int64_t)size)};
    return write_doc(out, PRPC_WIRE_COMMITTED, v);
}

int prpc_wire_write_health(prpc_buf_t *out)
{
    wire_val_t v[] = {v_bool(1), v_str("broker"), v_str(PRPC_WIRE_VERSION)};
    return write_doc(out, PRPC_WIRE_HEALTH, v);
}

int prpc_wire_write_stats(prpc_buf_t *out, const char *function,
                          const int64_t counts[PRPC_CALL_NSTATES])
{
    wire_val_t v[1 + PRPC_CALL_NSTATES];
    v[0] = v_str(function);
    for (int i = 0; i < PRPC_CALL_NSTATES; i++)
        v[1 + i] = v_int(counts[i]);
    return write_doc(out, PRPC_WIRE_STATS, v);
}

int prpc_wire_write_nodes(prpc_buf_t *out, const char *const *addrs, size_t n)
{
    wire_val_t *a = calloc(n ? n : 1, sizeof(*a)), v[1];
    if (a == NULL)
        return out->failed = PRPC_ENOMEM;
    for (size_t i = 0; i < n; i++)
        a[i] = v_str(addrs[i]);
    v[0] = v_list(a, n);
    write_vals(out, PRPC_WIRE_NODES, v);
    free(a);
    return out->failed;
}

int prpc_wire_write_metrics(prpc_buf_t *out, const prpc_wire_metrics_t *m)
{
    const uint64_t c[] = {m->requests,
                          m->bytes_received,
                          m->chunks_received,
                          m->chunks_refused,
                          m->blobs_committed,
                          m->bytes_served,
                          m->bytes_followed,
                          m->bytes_followed_from_memory,
                          m->corrupt_blobs_dropped,
                          m->calls_submitted,
                          m->leases_granted,
                          m->results_accepted,
                          m->results_refused,
                          m->auth_refused};
    wire_val_t v[PRPC_ARRAY_LEN(METRICS_F)];
    for (size_t i = 0; i < PRPC_ARRAY_LEN(v); i++)
        v[i] = v_int((int64_t)c[i]);
    return write_doc(out, PRPC_WIRE_METRICS, v);
}

int prpc_wire_write_checkpoint(prpc_buf_t *out, const char *call_id, const char *key,
                               const char *blob, uint64_t size)
{
    wire_val_t v[] = {v_str(call_id), v_str(key), v_str(blob), v_int((int64_t)size)};
    return write_doc(out, PRPC_WIRE_CHECKPOINT, v);
}

int prpc_wire_write_lease_request(prpc_buf_t *out, const char *worker,
                                  const prpc_wire_function_ref_t *fns, size_t nfns,
                                  int64_t wait_ms, const prpc_gpu_info_t *gpus, size_t ngpus)
{
    wire_val_t *fv = vals_new(out, PRPC_WIRE_FUNCTION_REF, nfns);
    wire_val_t *gv = vals_new(out, PRPC_WIRE_GPU, ngpus);
    wire_val_t v[4];
    if (fv != NULL && gv != NULL) {
        for (size_t i = 0; i < nfns; i++) {
            fv[2 * i] = v_str(fns[i].name);
            fv[2 * i + 1] = v_str(fns[i].version);
        }
        for (size_t i = 0; i < ngpus; i++) {
            wire_val_t *g = &gv[i * PRPC_ARRAY_LEN(GPU_F)];
            g[0] = v_int(gpus[i].index);
            g[1] = v_str(gpus[i].name);
            g[2] = v_str(gpus[i].uuid);
            g[3] = v_int((int64_t)gpus[i].total_bytes);
            g[4] = v_int((int64_t)gpus[i].free_bytes);
        }
        v[0] = v_str(worker);
        v[1] = v_list(fv, nfns);
        v[2] = v_int(wait_ms);
        v[3] = v_list(gv, ngpus);
        write_vals(out, PRPC_WIRE_LEASE_REQUEST, v);
    }
    free(fv);
    free(gv);
    return out->failed;
}

int prpc_wire_write_heartbeat(prpc_buf_t *out, const char *call_id, double progress)
{
    wire_val_t v[] = {v_str(call_id), v_num(progress)};
    return write_doc(out, PRPC_WIRE_HEARTBEAT, v);
}

int prpc_wire_write_outputs(prpc_buf_t *out, const char *call_id, const char *outputs_json)
{
    wire_val_t v[] = {v_str(call_id), v_raw(outputs_json != NULL ? outputs_json : "[]")};
    return write_doc(out, PRPC_WIRE_OUTPUTS, v);
}

int prpc_wire_write_result(prpc_buf_t *out, const char *call_id, const char *state,
                           const char *outputs_json, const char *error_json)
{
    wire_val_t v[] = {v_str(call_id), v_str(state),
                      v_raw(outputs_json != NULL ? outputs_json : "[]"), v_raw(error_json)};
    return write_doc(out, PRPC_WIRE_RESULT, v);
}

int prpc_wire_write_error_record(prpc_buf_t *out, const char *type, const char *message,
                                 const char *traceback)
{
    wire_val_t v[] = {
        type != NULL ? v_strn(type, strnlen(type, 256)) : v_str("Error"),
        v_strn(message != NULL ? message : "", message != NULL ? strnlen(message, 65536) : 0),
        v_strn(traceback != NULL ? traceback : "",
               traceback != NULL ? strnlen(traceback, 262144) : 0),
    };
    return write_doc(out, PRPC_WIRE_ERROR_RECORD, v);
}

static void submit_vals(wire_val_t v[4], const prpc_wire_submit_ref_t *s)
{
    v[0] = v_str(s->id);
    v[1] = v_str(s->function);
    v[2] = v_str(s->version);
    v[3] = v_raw(s->args_json != NULL ? s->args_json : "[]");
}

int prpc_wire_write_submit(prpc_buf_t *out, const prpc_wire_submit_ref_t *s)
{
    wire_val_t v[4];
    submit_vals(v, s);
    return write_doc(out, PRPC_WIRE_SUBMIT, v);
}

int prpc_wire_write_batch(prpc_buf_t *out, const prpc_wire_submit_ref_t *s, size_t n)
{
    wire_val_t *sv = vals_new(out, PRPC_WIRE_SUBMIT, n), v[1];
    if (sv == NULL)
        return out->failed;
    for (size_t i = 0; i < n; i++)
        submit_vals(&sv[4 * i], &s[i]);
    v[0] = v_list(sv, n);
    write_vals(out, PRPC_WIRE_BATCH, v);
    free(sv);
    return out->failed;
}

int prpc_wire_write_wait(prpc_buf_t *out, const char (*ids)[PRPC_CALL_ID_HEX + 1], size_t n,
                         int64_t wait_ms)
{
    wire_val_t *iv = calloc(n ? n : 1, sizeof(*iv)), v[2];
    if (iv == NULL)
        return out->failed = PRPC_ENOMEM;
    for (size_t i = 0; i < n; i++)
        iv[i] = v_str(ids[i]);
    v[0] = v_list(iv, n);
    v[1] = v_int(wait_ms);
    write_vals(out, PRPC_WIRE_WAIT, v);
    free(iv);
    return out->failed;
}

/* ---- JSON carried through ----------------------------------------------- */

int prpc_wire_write_json_iter(prpc_buf_t *out, const bson_iter_t *it)
{
    bson_t d;
    uint32_t len = 0;
    const char *s;
    switch (bson_iter_type(it)) {
    case BSON_TYPE_UTF8:
        s = bson_iter_utf8(it, &len);
        prpc_buf_json_str(out, s, len);
        break;
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        prpc_buf_printf(out, "%lld", (long long)bson_iter_as_int64(it));
        break;
    case BSON_TYPE_DOUBLE:
        prpc_buf_printf(out, "%.17g", bson_iter_double(it));
        break;
    case BSON_TYPE_BOOL:
        prpc_buf_puts(out, bson_iter_bool(it) ? "true" : "false");
        break;
    case BSON_TYPE_DOCUMENT:
    case BSON_TYPE_ARRAY: {
        const uint8_t *data = NULL;
        if (BSON_ITER_HOLDS_DOCUMENT(it))
            bson_iter_document(it, &len, &data);
        else
            bson_iter_array(it, &len, &data);
        if (!bson_init_static(&d, data, len))
            return out->failed = PRPC_EINVAL;
        return prpc_wire_write_json_doc(out, &d, BSON_ITER_HOLDS_ARRAY(it));
    }
    default:
        prpc_buf_puts(out, "null");
        break;
    }
    return out->failed;
}

int prpc_wire_write_json_doc(prpc_buf_t *out, const bson_t *d, int as_array)
{
    bson_iter_t it;
    int first = 1;
    prpc_buf_puts(out, as_array ? "[" : "{");
    if (bson_iter_init(&it, d)) {
        while (bson_iter_next(&it)) {
            if (!first)
                prpc_buf_puts(out, ", ");
            first = 0;
            if (!as_array) {
                prpc_buf_json_str(out, bson_iter_key(&it), bson_iter_key_len(&it));
                prpc_buf_puts(out, ": ");
            }
            prpc_wire_write_json_iter(out, &it);
        }
    }
    prpc_buf_puts(out, as_array ? "]" : "}");
    return out->failed;
}

/* ---- decoders for the worker -------------------------------------------- */

int prpc_wire_decode_lease(const bson_t *d, prpc_wire_lease_t *out, prpc_error_t *err)
{
    const char *id = prpc_doc_str(d, "lease.id"), *call_id = prpc_doc_str(d, "lease.call_id");
    double n = 0;
    memset(out, 0, sizeof(*out));
    if (!prpc_wire_valid_lease_id(id))
        return prpc_error_set(err, PRPC_EPROTO,
                              "a lease answer: \"lease.id\" must be a lease id (%d lowercase hex "
                              "digits)",
                              PRPC_LEASE_ID_HEX);
    if (!prpc_wire_valid_call_id(call_id))
        return prpc_error_set(err, PRPC_EPROTO,
                              "a lease answer: \"lease.call_id\" must be 64 lowercase hex digits");
    memcpy(out->id, id, sizeof(out->id));
    memcpy(out->call_id, call_id, sizeof(out->call_id));
    if (prpc_doc_num(d, "lease.deadline_ms", &n))
        out->deadline_ms = (int64_t)n;
    if (prpc_doc_num(d, "lease.heartbeat_ms", &n))
        out->heartbeat_ms = (int64_t)n;
    return 0;
}

int prpc_wire_heartbeat_terminates(const char *json, size_t len)
{
    bson_t *d = json != NULL && len > 0
                    ? bson_new_from_json((const uint8_t *)json, (ssize_t)len, NULL)
                    : NULL;
    bson_iter_t it;
    int yes = d != NULL && bson_iter_init_find(&it, d, "terminate") &&
              BSON_ITER_HOLDS_BOOL(&it) && bson_iter_bool(&it);
    if (d != NULL)
        bson_destroy(d);
    return yes;
}

void prpc__wire_write_listing(prpc_buf_t *out, const prpc_functions_t *fs)
{
    const size_t nf = PRPC_ARRAY_LEN(FUNCTION_F);
    size_t ndecls = 0, d = 0;
    wire_val_t *fv, *dv, v[1];
    for (size_t i = 0; i < fs->n; i++)
        ndecls += fs->fns[i].nargs + fs->fns[i].nreturns;
    fv = vals_new(out, PRPC_WIRE_FUNCTION, fs->n);
    dv = vals_new(out, PRPC_WIRE_DECL, ndecls);
    if (fv != NULL && dv != NULL) {
        for (size_t i = 0; i < fs->n; i++) {
            const prpc_fn_t *f = &fs->fns[i];
            wire_val_t *x = &fv[i * nf];
            x[0] = v_str(f->name);
            x[1] = v_str(f->version);
            x[2] = v_list(&dv[2 * d], f->nargs);
            for (size_t j = 0; j < f->nargs; j++, d++) {
                dv[2 * d] = v_str(f->args[j].name);
                dv[2 * d + 1] = v_str(prpc__wire_tag_kind(f->args[j].kind));
            }
            x[3] = v_list(&dv[2 * d], f->nreturns);
            for (size_t j = 0; j < f->nreturns; j++, d++) {
                dv[2 * d] = v_str(f->returns[j].name);
                dv[2 * d + 1] = v_str(prpc__wire_tag_kind(f->returns[j].kind));
            }
        }
        v[0] = v_list(fv, fs->n);
        write_vals(out, PRPC_WIRE_FUNCTIONS, v);
    }
    free(fv);
    free(dv);
}
