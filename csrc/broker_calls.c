/*
 * broker_calls.c - the calls' routes (broker_calls.h): submits, one or a
 * batch, reads and long-polls of calls, terminate, restart, delete, and a
 * function's counts of calls by state.
 */
#include "broker_calls.h"
#include "broker_blobs.h"
#include "broker_reply.h"
#include "broker_waiters.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Back to queued, from scratch: its checkpoints and their blobs go. */
static int restart_call(prpc_broker_t *b, const char *id, prpc_error_t *err)
{
    prpc_checkpoint_t *ck = NULL;
    size_t nck = prpc__checkpoint_blobs(b, id, &ck);
    int rc = prpc_store_call_restart(b->store, id, prpc_now_ms(), err);
    if (rc != 0) {
        free(ck);
        return rc;
    }
    prpc__drop_checkpoint_blobs(b, ck, nck);
    prpc__notify_calls(b, id, 0);
    return 0;
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

/* Submit decoded calls in one durable transaction and append each one's
 * answer ({"created", "call"}) to out. */
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
        prpc__write_call(out, &items[k].current, 0);
        prpc_buf_puts(out, "}");
        created += (size_t)items[k].created;
        prpc_call_cleanup(&items[k].current);
        k++;
    }
    b->metrics.calls_submitted += created;
    if (created + requeued > 0)
        prpc__dispatch_leases(b);
out:
    free(calls);
    free(items);
    return rc;
}

/* POST /v1/calls[?wait_ms=N]: with wait_ms the answer comes when the call
 * ends (or after wait_ms, with the record as it is then), so a caller that
 * wants the result at once pays one round trip, not a submit and a read. */
void prpc__on_submit(prpc_broker_t *b, h2o_req_t *req, const char *unused)
{
    prpc_error_t err;
    bson_t *doc = prpc__parse_body(b, req, "submit", &err);
    prpc_submit_t sub;
    prpc_buf_t out = PRPC_BUF_INIT;
    int64_t wait_ms = prpc__query_int(req, "wait_ms", 0);
    int created = 0, state = PRPC_CALL_QUEUED;

    PRPC_UNUSED(unused);
    memset(&sub, 0, sizeof(sub));
    if (doc == NULL ||
        prpc_wire_decode_submit(&b->functions, doc, prpc__holds_or_receives_blob, b, &sub,
                                &err) != 0 ||
        submit_decoded(b, &sub, 1, &out, NULL, &created, &state, &err) != 0) {
        prpc_buf_cleanup(&out);
        prpc__send_err(req, &err);
    } else if (wait_ms > 0 && !prpc_call_state_is_terminal(state)) {
        call_waiter_t *w = h2o_mem_alloc_shared(&req->pool, sizeof(*w), prpc__call_waiter_dispose);
        prpc_buf_cleanup(&out);
        memset(w, 0, sizeof(*w));
        w->req = req;
        memcpy(w->id, sub.id, sizeof(w->id));
        w->until_end = 1;
        w->created = created;
        w->deadline_ms =
            prpc_now_ms() + (wait_ms > PRPC_WIRE_WAIT_MAX_MS ? PRPC_WIRE_WAIT_MAX_MS : wait_ms);
        h2o_linklist_insert(&b->call_waiters, &w->link);
    } else {
        /* One call: its answer object is the whole body. */
        prpc__send_buf(req, 200, &out);
    }
    prpc_submit_cleanup(&sub);
    if (doc != NULL)
        bson_destroy(doc);
}

/* POST /v1/calls/batch: many submits, one durable transaction. A call that
 * does not decode gets its own error entry; the others are stored. */
void prpc__on_submit_batch(prpc_broker_t *b, h2o_req_t *req, const char *unused)
{
    prpc_error_t err;
    bson_t *doc = prpc__parse_body(b, req, "batch submit", &err);
    bson_iter_t it, arr;
    prpc_submit_t *subs = NULL;
    char **errors = NULL;
    size_t n = 0, i = 0;
    prpc_buf_t out = PRPC_BUF_INIT;

    PRPC_UNUSED(unused);
    if (doc == NULL)
        goto fail;
    if (!bson_iter_init_find(&it, doc, "calls") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr)) {
        prpc_error_set(&err, PRPC_EINVAL, "a batch submit needs \"calls\": [submit, ...]");
        goto fail;
    }
    while (bson_iter_next(&arr))
        n++;
    if (n == 0 || n > PRPC_WIRE_BATCH_MAX) {
        prpc_error_set(&err, PRPC_ELIMIT, "a batch holds 1 to %d calls, got %zu",
                       PRPC_WIRE_BATCH_MAX, n);
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
                rc = prpc_wire_decode_submit(&b->functions, &one, prpc__holds_or_receives_blob, b,
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
    prpc__send_buf(req, 200, &out);
    goto out;
fail:
    prpc_buf_cleanup(&out);
    prpc__send_err(req, &err);
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
void prpc__on_wait(prpc_broker_t *b, h2o_req_t *req, const char *unused)
{
    prpc_error_t err;
    bson_t *doc = prpc__parse_body(b, req, "wait", &err);
    bson_iter_t it, arr;
    double wait = 0;
    size_t n = 0;
    batch_waiter_t *w;

    PRPC_UNUSED(unused);
    if (doc == NULL) {
        prpc__send_err(req, &err);
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
    if (n == 0 || n > PRPC_WIRE_BATCH_MAX) {
        prpc_httpd_send_error(req, 413, PRPC_ELIMIT, "a wait names 1 to %d calls, got %zu",
                              PRPC_WIRE_BATCH_MAX, n);
        goto out;
    }
    w = h2o_mem_alloc_shared(&req->pool, sizeof(*w), prpc__batch_waiter_dispose);
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
    w->deadline_ms = prpc_now_ms() + (wait > PRPC_WIRE_WAIT_MAX_MS ? PRPC_WIRE_WAIT_MAX_MS
                                      : wait > 0                    ? (int64_t)wait
                                                                    : 0);
    if (!prpc__answer_batch(b, req, w->ids, w->n, wait <= 0))
        h2o_linklist_insert(&b->batch_waiters, &w->link);
out:
    bson_destroy(doc);
}

void prpc__on_get_call(prpc_broker_t *b, h2o_req_t *req, const char *id)
{
    prpc_error_t err;
    prpc_call_t c;
    int64_t wait_ms = prpc__query_int(req, "wait_ms", 0);
    int64_t since = prpc__query_int(req, "since", -1);
    int unseen;
    memset(&c, 0, sizeof(c));
    if (prpc_store_call_get(b->store, id, &c, &err) != 0) {
        prpc__send_err(req, &err);
        return;
    }
    /* arriving=0: the reader has not seen this lease's announced outputs yet;
     * they are news even though the record did not change. */
    unseen = prpc__arriving_for(b, &c) != NULL && prpc__query_int(req, "arriving", 1) == 0;
    if (wait_ms > 0 && since == c.updated_ms && !unseen &&
        !prpc_call_state_is_terminal(c.state)) {
        call_waiter_t *w = h2o_mem_alloc_shared(&req->pool, sizeof(*w), prpc__call_waiter_dispose);
        memset(w, 0, sizeof(*w));
        w->req = req;
        memcpy(w->id, c.id, sizeof(w->id));
        w->since = since;
        w->deadline_ms =
            prpc_now_ms() + (wait_ms > PRPC_WIRE_WAIT_MAX_MS ? PRPC_WIRE_WAIT_MAX_MS : wait_ms);
        h2o_linklist_insert(&b->call_waiters, &w->link);
    } else {
        prpc__send_call_arriving(req, &c, NULL, prpc__arriving_for(b, &c));
    }
    prpc_call_cleanup(&c);
}

void prpc__on_delete(prpc_broker_t *b, h2o_req_t *req, const char *id)
{
    prpc_error_t err;
    prpc_checkpoint_t *ck = NULL;
    size_t nck = prpc__checkpoint_blobs(b, id, &ck);
    int state = 0;
    /* A running call is told to stop first, as the seed's delete did. */
    if (prpc_store_call_terminate(b->store, id, prpc_now_ms(), &state, &err) != 0 ||
        prpc_store_call_delete(b->store, id, &err) != 0) {
        free(ck);
        prpc__send_err(req, &err);
        return;
    }
    prpc__drop_checkpoint_blobs(b, ck, nck);
    /* Blobs uploaded in the last minute may belong to a submit on its way. */
    prpc__remove_unreferenced_blobs(b, prpc_now_ms() - 60000);
    prpc_httpd_send_json(req, 200, "{\"deleted\": true}", 17);
    prpc__notify_calls(b, id, 1);
}

void prpc__on_terminate(prpc_broker_t *b, h2o_req_t *req, const char *id)
{
    prpc_error_t err;
    int state = 0;
    if (prpc_store_call_terminate(b->store, id, prpc_now_ms(), &state, &err) != 0) {
        prpc__send_err(req, &err);
        return;
    }
    prpc__reply_call(b, req, id);
    prpc__notify_calls(b, id, 0);
}

void prpc__on_restart(prpc_broker_t *b, h2o_req_t *req, const char *id)
{
    prpc_error_t err;
    if (restart_call(b, id, &err) != 0) {
        prpc__send_err(req, &err);
        return;
    }
    prpc__reply_call(b, req, id);
    prpc__dispatch_leases(b);
}

void prpc__on_stats(prpc_broker_t *b, h2o_req_t *req, const char *name)
{
    prpc_error_t err;
    int64_t counts[PRPC_CALL_NSTATES] = {0};
    prpc_buf_t out = PRPC_BUF_INIT;
    if (prpc__find_fn(b, name) == NULL) {
        prpc_httpd_send_error(req, 404, PRPC_ENOTFOUND, "function %.128s is not registered", name);
        return;
    }
    if (prpc_store_function_stats(b->store, name, counts, &err) != 0) {
        prpc__send_err(req, &err);
        return;
    }
    prpc_buf_puts(&out, "{\"function\": ");
    prpc_buf_json_str(&out, name, strlen(name));
    for (int i = 0; i < PRPC_CALL_NSTATES; i++)
        prpc_buf_printf(&out, ", \"%s\": %lld", prpc_call_state_name(i), (long long)counts[i]);
    prpc_buf_puts(&out, "}");
    prpc__send_buf(req, 200, &out);
}
