/*
 * store.c - the store's public face: picks the backend from the uri, checks
 * every argument once (so backends see only well-formed input), makes lease
 * ids, and dispatches through the backend's prpc_store_ops table.
 *
 * Thread safety: nothing here keeps state; the backends serialise their own
 * connections (see store.h).
 */
#include "store.h"
#include "fault.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

const char prpc__store_terminated_json[] =
    "{\"type\":\"Terminated\",\"message\":\"the call was terminated at a client's request\"}";

const char *prpc_call_state_name(int state)
{
    static const char *const names[PRPC_CALL_NSTATES] = {"queued", "leased", "done", "failed",
                                                          "terminated"};
    if (state < 0 || state >= PRPC_CALL_NSTATES)
        return "unknown";
    return names[state];
}

int prpc_call_state_is_terminal(int state)
{
    return state == PRPC_CALL_DONE || state == PRPC_CALL_FAILED || state == PRPC_CALL_TERMINATED;
}

void prpc_call_cleanup(prpc_call_t *c)
{
    if (c == NULL)
        return;
    free(c->args_json);
    free(c->outputs_json);
    free(c->error_json);
    memset(c, 0, sizeof(*c));
}

static int check_id(const char *s, const char *field, prpc_error_t *err)
{
    return prpc_check_hex(s, PRPC_CALL_ID_HEX, PRPC_CALL_ID_HEX, field, err);
}

static int check_lease_id(const char *s, prpc_error_t *err)
{
    return prpc_check_hex(s, PRPC_LEASE_ID_HEX, PRPC_LEASE_ID_HEX, "lease_id", err);
}

/* Function and worker names: stored and echoed in messages, so no control
 * characters. */
static int check_name(const char *s, const char *field, prpc_error_t *err)
{
    size_t n;
    if (s == NULL || s[0] == '\0')
        return prpc_error_set(err, PRPC_EINVAL, "%s is empty", field);
    n = strnlen(s, PRPC_STORE_NAME_MAX + 1);
    if (n > PRPC_STORE_NAME_MAX)
        return prpc_error_set(err, PRPC_EINVAL, "%s is longer than %d bytes", field,
                              PRPC_STORE_NAME_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return prpc_error_set(err, PRPC_EINVAL, "%s has a control character at byte %zu",
                                  field, i);
    return 0;
}

static int check_json(const char *s, const char *field, prpc_error_t *err)
{
    if (s == NULL)
        return prpc_error_set(err, PRPC_EINVAL, "%s is missing", field);
    if (strnlen(s, PRPC_STORE_JSON_MAX + 1) > PRPC_STORE_JSON_MAX)
        return prpc_error_set(err, PRPC_ELIMIT,
                              "%s is longer than %u bytes: pass large values as files", field,
                              PRPC_STORE_JSON_MAX);
    return 0;
}

static int check_store(prpc_store_t *s, prpc_error_t *err)
{
    if (s == NULL)
        return prpc_error_set(err, PRPC_EINVAL, "store handle is NULL");
    return 0;
}

static int check_deadline(int64_t now_ms, int64_t lease_ms, int64_t *deadline, prpc_error_t *err)
{
    if (lease_ms <= 0)
        return prpc_error_set(err, PRPC_EINVAL, "lease_ms must be positive, got %lld",
                              (long long)lease_ms);
    if (now_ms < 0 || now_ms > INT64_MAX - lease_ms)
        return prpc_error_set(err, PRPC_EINVAL, "now_ms %lld + lease_ms %lld is out of range",
                              (long long)now_ms, (long long)lease_ms);
    *deadline = now_ms + lease_ms;
    return 0;
}

static int new_lease_id(char out[PRPC_LEASE_ID_HEX + 1], prpc_error_t *err)
{
    unsigned char raw[PRPC_LEASE_ID_HEX / 2];
    if (RAND_bytes(raw, (int)sizeof(raw)) != 1)
        return prpc_error_set(err, PRPC_EIO, "the random generator failed to make a lease id");
    prpc_hex_encode(raw, sizeof(raw), out);
    return 0;
}

prpc_store_t *prpc_store_open(const char *uri, const prpc_store_options_t *opts,
                              prpc_error_t *err)
{
    prpc_store_options_t o = {0};
    if (opts != NULL)
        o = *opts;
    if (o.synchronous == NULL)
        o.synchronous = "full";
    if (strcmp(o.synchronous, "full") != 0 && strcmp(o.synchronous, "normal") != 0 &&
        strcmp(o.synchronous, "off") != 0) {
        prpc_error_set(err, PRPC_EINVAL,
                       "store option synchronous must be \"full\", \"normal\" or \"off\", got "
                       "\"%.40s\"",
                       o.synchronous);
        return NULL;
    }
    if (o.busy_timeout_ms < 0) {
        prpc_error_set(err, PRPC_EINVAL, "store option busy_timeout_ms must be >= 0, got %d",
                       o.busy_timeout_ms);
        return NULL;
    }
    if (o.busy_timeout_ms == 0)
        o.busy_timeout_ms = PRPC_STORE_BUSY_TIMEOUT_MS;
    if (uri == NULL || uri[0] == '\0') {
        prpc_error_set(err, PRPC_EINVAL, "store uri is empty");
        return NULL;
    }
    if (strncmp(uri, "mongodb://", 10) == 0 || strncmp(uri, "mongodb+srv://", 14) == 0)
        return prpc__store_mongo_open(uri, &o, err);
    if (strncmp(uri, "sqlite:", 7) == 0) {
        if (uri[7] == '\0') {
            prpc_error_set(err, PRPC_EINVAL, "store uri \"sqlite:\" names no file");
            return NULL;
        }
        return prpc__store_sqlite_open(uri + 7, &o, err);
    }
    if (strstr(uri, "://") != NULL) {
        /* Not echoed: a uri may carry a password. */
        prpc_error_set(err, PRPC_EINVAL,
                       "store uri has an unknown scheme: use sqlite:PATH, a path, or mongodb://");
        return NULL;
    }
    return prpc__store_sqlite_open(uri, &o, err);
}

void prpc_store_close(prpc_store_t *s)
{
    if (s != NULL)
        s->ops->close(s);
}

/* The store_write fault (fault.h): a write that fails before it reaches the
 * backend, as a full or failing disk would make it. */
static int injected_write_failure(const char *what, prpc_error_t *err)
{
    if (!prpc_fault("store_write", NULL))
        return 0;
    prpc_error_set(err, PRPC_EIO, "store: %s failed (injected fault)", what);
    return 1;
}

int prpc_store_call_submit_many(prpc_store_t *s, prpc_submit_item_t *items, size_t n,
                                int64_t now_ms, prpc_error_t *err)
{
    int rc = check_store(s, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const prpc_call_t *c = items[i].call;
        memset(&items[i].current, 0, sizeof(items[i].current));
        items[i].created = 0;
        if (c == NULL) {
            rc = prpc_error_set(err, PRPC_EINVAL, "call %zu of the batch is NULL", i);
            break;
        }
        rc = check_id(c->id, "call id", err);
        if (rc == 0)
            rc = check_name(c->function, "function", err);
        if (rc == 0)
            rc = prpc_check_hex(c->version, 0, PRPC_CALL_ID_HEX, "version", err);
        if (rc == 0)
            rc = check_json(c->args_json, "args_json", err);
        for (size_t j = 0; rc == 0 && j < items[i].nblobs; j++)
            rc = check_id(items[i].blobs[j], "blob sha256", err);
    }
    if (rc < 0)
        return rc;
    if (n == 0)
        return 0;
    if (injected_write_failure("call submit", err))
        return PRPC_EIO;
    return s->ops->call_submit_many(s, items, n, now_ms, err);
}

int prpc_store_calls_states(prpc_store_t *s, const char (*ids)[PRPC_CALL_ID_HEX + 1], size_t n,
                            int *states, prpc_error_t *err)
{
    int rc = check_store(s, err);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = check_id(ids[i], "call id", err);
    if (rc < 0)
        return rc;
    if (n == 0)
        return 0;
    return s->ops->calls_states(s, ids, n, states, err);
}

int prpc_store_leases_held(prpc_store_t *s, const char *worker, int64_t *n, prpc_error_t *err)
{
    int rc = check_store(s, err);
    if (rc == 0)
        rc = check_name(worker, "worker", err);
    if (rc < 0)
        return rc;
    *n = 0;
    return s->ops->leases_held(s, worker, n, err);
}

int prpc_store_call_get(prpc_store_t *s, const char *id, prpc_call_t *out, prpc_error_t *err)
{
    int rc;
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    rc = check_store(s, err);
    if (rc == 0)
        rc = check_id(id, "call id", err);
    if (rc == 0 && out == NULL)
        rc = prpc_error_set(err, PRPC_EINVAL, "out is NULL");
    if (rc < 0)
        return rc;
    return s->ops->call_get(s, id, out, err);
}

int prpc_store_lease_next(prpc_store_t *s, const char *const *functions,
                          const char *const *versions, size_t n, const char *worker,
                          int64_t lease_ms, int64_t now_ms, prpc_call_t *out, prpc_error_t *err)
{
    char lease_id[PRPC_LEASE_ID_HEX + 1];
    int64_t deadline = 0;
    int rc;
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    rc = check_store(s, err);
    if (rc == 0 && out == NULL)
        rc = prpc_error_set(err, PRPC_EINVAL, "out is NULL");
    if (rc == 0 && (n == 0 || functions == NULL || versions == NULL))
        rc = prpc_error_set(err, PRPC_EINVAL, "no functions given to lease work for");
    if (rc == 0 && n > PRPC_STORE_LEASE_FUNCTIONS_MAX)
        rc = prpc_error_set(err, PRPC_ELIMIT, "%zu functions in one lease request, at most %d", n,
                            PRPC_STORE_LEASE_FUNCTIONS_MAX);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = check_name(functions[i], "function", err);
        if (rc == 0)
            rc = prpc_check_hex(versions[i], 0, PRPC_CALL_ID_HEX, "version", err);
    }
    if (rc == 0)
        rc = check_name(worker, "worker", err);
    if (rc == 0)
        rc = check_deadline(now_ms, lease_ms, &deadline, err);
    if (rc == 0)
        rc = new_lease_id(lease_id, err);
    if (rc < 0)
        return rc;
    if (injected_write_failure("lease next", err))
        return PRPC_EIO;
    return s->ops->lease_next(s, functions, versions, n, worker, lease_id, deadline, now_ms, out,
                              err);
}

int prpc_store_lease_renew(prpc_store_t *s, const char *call_id, const char *lease_id,
                           double progress, int64_t lease_ms, int64_t now_ms,
                           int *terminate_requested, prpc_error_t *err)
{
    int64_t deadline = 0;
    int term = 0, rc;
    if (terminate_requested != NULL)
        *terminate_requested = 0;
    rc = check_store(s, err);
    if (rc == 0)
        rc = check_id(call_id, "call id", err);
    if (rc == 0)
        rc = check_lease_id(lease_id, err);
    if (rc == 0)
        rc = check_deadline(now_ms, lease_ms, &deadline, err);
    if (rc == 0 && !(progress >= 0.0 && progress <= 100.0))
        rc = prpc_error_set(err, PRPC_EINVAL, "progress must be within 0..100, got %g", progress);
    if (rc < 0)
        return rc;
    if (injected_write_failure("lease renew", err))
        return PRPC_EIO;
    rc = s->ops->lease_renew(s, call_id, lease_id, progress, deadline, now_ms, &term, err);
    if (rc == 0 && terminate_requested != NULL)
        *terminate_requested = term;
    return rc;
}

int prpc_store_call_finish(prpc_store_t *s, const char *call_id, const char *lease_id, int state,
                           const char *outputs_json, const char *error_json, int64_t now_ms,
                           prpc_error_t *err)
{
    int rc;
    rc = check_store(s, err);
    if (rc == 0)
        rc = check_id(call_id, "call id", err);
    if (rc == 0 && lease_id != NULL)
        rc = check_lease_id(lease_id, err);
    if (rc < 0)
        return rc;
    switch (state) {
    case PRPC_CALL_DONE:
        rc = check_json(outputs_json, "outputs_json", err);
        error_json = NULL;
        break;
    case PRPC_CALL_FAILED:
        rc = check_json(error_json, "error_json", err);
        outputs_json = NULL;
        break;
    case PRPC_CALL_TERMINATED:
        if (error_json == NULL)
            error_json = prpc__store_terminated_json;
        rc = check_json(error_json, "error_json", err);
        outputs_json = NULL;
        break;
    default:
        rc = prpc_error_set(err, PRPC_EINVAL,
                            "a call can only be finished as done, failed or terminated, not %s",
                            prpc_call_state_name(state));
    }
    if (rc < 0)
        return rc;
    if (injected_write_failure("call finish", err))
        return PRPC_EIO;
    return s->ops->call_finish(s, call_id, lease_id, state, outputs_json, error_json, now_ms, err);
}

int prpc_store_call_terminate(prpc_store_t *s, const char *id, int64_t now_ms, int *state_out,
                              prpc_error_t *err)
{
    int st = 0, rc;
    rc = check_store(s, err);
    if (rc == 0)
        rc = check_id(id, "call id", err);
    if (rc < 0)
        return rc;
    if (injected_write_failure("call terminate", err))
        return PRPC_EIO;
    rc = s->ops->call_terminate(s, id, now_ms, &st, err);
    if (rc == 0 && state_out != NULL)
        *state_out = st;
    return rc;
}

int prpc_store_call_restart(prpc_store_t *s, const char *id, int64_t now_ms, prpc_error_t *err)
{
    int rc = check_store(s, err);
    if (rc == 0)
        rc = check_id(id, "call id", err);
    if (rc < 0)
        return rc;
    if (injected_write_failure("call restart", err))
        return PRPC_EIO;
    return s->ops->call_restart(s, id, now_ms, err);
}

int prpc_store_call_delete(prpc_store_t *s, const char *id, prpc_error_t *err)
{
    int rc = check_store(s, err);
    if (rc == 0)
        rc = check_id(id, "call id", err);
    if (rc < 0)
        return rc;
    if (injected_write_failure("call delete", err))
        return PRPC_EIO;
    return s->ops->call_delete(s, id, err);
}

int prpc_store_leases_expire(prpc_store_t *s, int64_t now_ms, int max_attempts, int *requeued,
                             int *failed, prpc_error_t *err)
{
    int rq = 0, fl = 0, rc;
    if (requeued != NULL)
        *requeued = 0;
    if (failed != NULL)
        *failed = 0;
    rc = check_store(s, err);
    if (rc == 0 && max_attempts < 1)
        rc = prpc_error_set(err, PRPC_EINVAL, "max_attempts must be at least 1, got %d",
                            max_attempts);
    if (rc < 0)
        return rc;
    if (injected_write_failure("leases expire", err))
        return PRPC_EIO;
    rc = s->ops->leases_expire(s, now_ms, max_attempts, &rq, &fl, err);
    if (rc == 0 && requeued != NULL)
        *requeued = rq;
    if (rc == 0 && failed != NULL)
        *failed = fl;
    return rc;
}

int prpc_store_blob_add(prpc_store_t *s, const char *sha256_hex, uint64_t size, int64_t now_ms,
                        prpc_error_t *err)
{
    int rc = check_store(s, err);
    if (rc == 0)
        rc = check_id(sha256_hex, "blob sha256", err);
    if (rc == 0 && size > (uint64_t)INT64_MAX)
        rc = prpc_error_set(err, PRPC_EINVAL, "blob size %llu is out of range",
                            (unsigned long long)size);
    if (rc < 0)
        return rc;
    if (injected_write_failure("blob add", err))
        return PRPC_EIO;
    return s->ops->blob_add(s, sha256_hex, size, now_ms, err);
}

int prpc_store_blob_get(prpc_store_t *s, const char *sha256_hex, uint64_t *size,
                        prpc_error_t *err)
{
    uint64_t sz = 0;
    int rc;
    if (size != NULL)
        *size = 0;
    rc = check_store(s, err);
    if (rc == 0)
        rc = check_id(sha256_hex, "blob sha256", err);
    if (rc < 0)
        return rc;
    rc = s->ops->blob_get(s, sha256_hex, &sz, err);
    if (rc == 0 && size != NULL)
        *size = sz;
    return rc;
}

int prpc_store_blob_link(prpc_store_t *s, const char *call_id, const char *sha256_hex,
                         prpc_error_t *err)
{
    int rc = check_store(s, err);
    if (rc == 0)
        rc = check_id(call_id, "call id", err);
    if (rc == 0)
        rc = check_id(sha256_hex, "blob sha256", err);
    if (rc < 0)
        return rc;
    if (injected_write_failure("blob link", err))
        return PRPC_EIO;
    return s->ops->blob_link(s, call_id, sha256_hex, err);
}

int prpc_store_blobs_unreferenced(prpc_store_t *s, int64_t older_than_ms,
                                  char (*out)[PRPC_CALL_ID_HEX + 1], size_t max, size_t *n,
                                  prpc_error_t *err)
{
    int rc = check_store(s, err);
    if (rc == 0 && n == NULL)
        rc = prpc_error_set(err, PRPC_EINVAL, "n is NULL");
    if (rc == 0 && out == NULL && max > 0)
        rc = prpc_error_set(err, PRPC_EINVAL, "out is NULL");
    if (n != NULL)
        *n = 0;
    if (rc < 0 || max == 0)
        return rc;
    return s->ops->blobs_unreferenced(s, older_than_ms, out, max, n, err);
}

int prpc_store_blob_remove(prpc_store_t *s, const char *sha256_hex, prpc_error_t *err)
{
    int rc = check_store(s, err);
    if (rc == 0)
        rc = check_id(sha256_hex, "blob sha256", err);
    if (rc < 0)
        return rc;
    if (injected_write_failure("blob remove", err))
        return PRPC_EIO;
    return s->ops->blob_remove(s, sha256_hex, err);
}

int prpc_store_checkpoint_put(prpc_store_t *s, const char *call_id, const char *lease_id,
                              const char *key, const char *sha256_hex, uint64_t size,
                              int64_t now_ms, char replaced[PRPC_CALL_ID_HEX + 1],
                              prpc_error_t *err)
{
    char old[PRPC_CALL_ID_HEX + 1] = "";
    int rc;
    if (replaced != NULL)
        replaced[0] = '\0';
    rc = check_store(s, err);
    if (rc == 0)
        rc = check_id(call_id, "call id", err);
    if (rc == 0)
        rc = check_lease_id(lease_id, err);
    if (rc == 0)
        rc = prpc_store_check_checkpoint_key(key, err);
    if (rc == 0)
        rc = check_id(sha256_hex, "blob sha256", err);
    if (rc == 0 && size > (uint64_t)INT64_MAX)
        rc = prpc_error_set(err, PRPC_EINVAL, "blob size %llu is out of range",
                            (unsigned long long)size);
    if (rc < 0)
        return rc;
    if (injected_write_failure("checkpoint put", err))
        return PRPC_EIO;
    rc = s->ops->checkpoint_put(s, call_id, lease_id, key, sha256_hex, size, now_ms, old, err);
    if (rc == 0 && replaced != NULL)
        memcpy(replaced, old, sizeof(old));
    return rc;
}

int prpc_store_checkpoints_list(prpc_store_t *s, const char *call_id, prpc_checkpoint_t *out,
                                size_t max, size_t *n, prpc_error_t *err)
{
    int rc = check_store(s, err);
    if (rc == 0 && n == NULL)
        rc = prpc_error_set(err, PRPC_EINVAL, "n is NULL");
    if (rc == 0 && out == NULL && max > 0)
        rc = prpc_error_set(err, PRPC_EINVAL, "out is NULL");
    if (rc == 0)
        rc = check_id(call_id, "call id", err);
    if (n != NULL)
        *n = 0;
    if (rc < 0 || max == 0)
        return rc;
    rc = s->ops->checkpoints_list(s, call_id, out, max, n, err);
    if (rc < 0)
        *n = 0;
    return rc;
}

int prpc_store_calls_expire(prpc_store_t *s, int64_t finished_before_ms, int *removed,
                            prpc_error_t *err)
{
    int r = 0, rc;
    if (removed != NULL)
        *removed = 0;
    rc = check_store(s, err);
    if (rc < 0)
        return rc;
    if (injected_write_failure("calls expire", err))
        return PRPC_EIO;
    rc = s->ops->calls_expire(s, finished_before_ms, &r, err);
    if (rc == 0 && removed != NULL)
        *removed = r;
    return rc;
}

int prpc_store_function_stats(prpc_store_t *s, const char *function,
                              int64_t counts[PRPC_CALL_NSTATES], prpc_error_t *err)
{
    int rc = check_store(s, err);
    if (rc == 0 && counts == NULL)
        rc = prpc_error_set(err, PRPC_EINVAL, "counts is NULL");
    if (rc == 0 && function != NULL)
        rc = check_name(function, "function", err);
    if (counts != NULL)
        memset(counts, 0, sizeof(int64_t) * PRPC_CALL_NSTATES);
    if (rc < 0)
        return rc;
    return s->ops->function_stats(s, function, counts, err);
}

#ifdef PRPC_UNITTEST
/* For tests/c only (store.h says why). */

const char *prpc_store_backend(const prpc_store_t *s)
{
    return s != NULL ? s->ops->name : "none";
}

int prpc_store_call_submit(prpc_store_t *s, const prpc_call_t *c, int64_t now_ms, int *created,
                           prpc_call_t *current, prpc_error_t *err)
{
    /* One call is a batch of one: the same checks, the same transaction. */
    prpc_submit_item_t item;
    int rc;
    memset(&item, 0, sizeof(item));
    item.call = c;
    if (current != NULL)
        memset(current, 0, sizeof(*current));
    if (created != NULL)
        *created = 0;
    if (check_store(s, err) == 0 && c == NULL)
        return prpc_error_set(err, PRPC_EINVAL, "call is NULL");
    rc = prpc_store_call_submit_many(s, &item, 1, now_ms, err);
    if (rc == 0 && created != NULL)
        *created = item.created;
    if (rc == 0 && current != NULL)
        *current = item.current;
    else
        prpc_call_cleanup(&item.current);
    return rc;
}

int prpc_store_next_lease_deadline(prpc_store_t *s, int64_t *deadline_ms, prpc_error_t *err)
{
    int rc = check_store(s, err);
    if (rc == 0 && deadline_ms == NULL)
        rc = prpc_error_set(err, PRPC_EINVAL, "deadline_ms is NULL");
    if (rc < 0)
        return rc;
    *deadline_ms = 0;
    return s->ops->next_lease_deadline(s, deadline_ms, err);
}

int prpc_store_check_integrity(prpc_store_t *s, prpc_error_t *err)
{
    int rc = check_store(s, err);
    if (rc < 0)
        return rc;
    return s->ops->check_integrity(s, err);
}
#endif

int prpc_store_check_checkpoint_key(const char *s, prpc_error_t *err)
{
    size_t n;
    if (s == NULL || s[0] == '\0')
        return prpc_error_set(err, PRPC_EINVAL, "checkpoint key is empty");
    n = strnlen(s, PRPC_CHECKPOINT_KEY_MAX + 1);
    if (n > PRPC_CHECKPOINT_KEY_MAX)
        return prpc_error_set(err, PRPC_EINVAL,
                              "checkpoint key \"%.40s...\" is longer than %d bytes", s,
                              PRPC_CHECKPOINT_KEY_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return prpc_error_set(err, PRPC_EINVAL,
                                  "checkpoint key \"%.*s\" has a character outside "
                                  "[A-Za-z0-9._-] at byte %zu",
                                  (int)n, s, i);
    }
    return 0;
}
