/*
 * broker_leases.c - the leases' routes (broker_leases.h): workers asking for
 * work, heartbeats, announced outputs, results and checkpoints.
 */
#include "broker_leases.h"
#include "broker_blobs.h"
#include "broker_reply.h"
#include "broker_waiters.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BROKER_ARRIVING_JSON_MAX (64 * 1024) /* bytes of one announcement kept */

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
            prpc__send_lease(b, req, &c);
        prpc_call_cleanup(&c);
        return again;
    }
    return 0;
}

void prpc__on_lease(prpc_broker_t *b, h2o_req_t *req, const char *unused)
{
    prpc_error_t err;
    bson_t *doc = prpc__parse_body(b, req, "lease request", &err);
    bson_iter_t it, arr, field;
    const char *worker, *request;
    double wait = 0;
    lease_waiter_t *w;
    size_t n = 0;

    PRPC_UNUSED(unused);
    if (doc == NULL) {
        prpc__send_err(req, &err);
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
    w = h2o_mem_alloc_shared(&req->pool, sizeof(*w), prpc__lease_waiter_dispose);
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
        f = prpc__find_fn(b, name);
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
    w->deadline_ms = prpc_now_ms() + (wait > PRPC_WIRE_WAIT_MAX_MS ? PRPC_WIRE_WAIT_MAX_MS
                                      : wait > 0                    ? (int64_t)wait
                                                                    : 0);
    /* Park first, then dispatch: one path hands out work, waiting or not. */
    h2o_linklist_insert(&b->lease_waiters, &w->link);
    prpc__dispatch_leases(b);
    if (h2o_linklist_is_linked(&w->link) && wait <= 0) {
        h2o_linklist_unlink(&w->link);
        prpc_httpd_send_json(req, 204, "", 0);
    }
out:
    bson_destroy(doc);
}

void prpc__on_heartbeat(prpc_broker_t *b, h2o_req_t *req, const char *lease)
{
    prpc_error_t err;
    bson_t *doc = prpc__parse_body(b, req, "heartbeat", &err);
    const char *call_id;
    double progress = 0;
    int terminate = 0;
    char body[160];
    int n;
    if (doc == NULL) {
        prpc__send_err(req, &err);
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
        prpc__send_err(req, &err);
        goto out;
    }
    n = snprintf(body, sizeof(body), "{\"terminate\": %s, \"deadline_ms\": %lld}",
                 terminate ? "true" : "false", (long long)(prpc_now_ms() + b->lease_ms));
    prpc_httpd_send_json(req, 200, body, (size_t)n);
    prpc__notify_calls(b, call_id, 0);
out:
    bson_destroy(doc);
}

/* POST /v1/leases/{lease}/outputs: {"call_id", "outputs": [typed...]}. The
 * worker's outputs, announced once each file output's first chunk is on the
 * broker: readers of the call see them as "arriving_outputs" and download
 * each file following its upload (GET ?follow=), so the result's upload and
 * its download overlap. The call stays leased: only the result ends it, and a
 * lease that lapses (the worker died mid-upload) drops the announcement with
 * it. */
void prpc__on_outputs(prpc_broker_t *b, h2o_req_t *req, const char *lease)
{
    prpc_error_t err;
    bson_t *doc = prpc__parse_body(b, req, "outputs", &err);
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
    if ((f = prpc__find_fn(b, c.function)) == NULL) {
        prpc_error_set(&err, PRPC_ENOTFOUND, "function %s is no longer registered", c.function);
        goto fail;
    }
    if ((blobs = calloc(f->nreturns + 1, sizeof(*blobs))) == NULL) {
        prpc_error_set(&err, PRPC_ENOMEM, "out of memory");
        goto fail;
    }
    if (prpc_wire_check_typed(f, f->returns, f->nreturns, "outputs", &it,
                              prpc__holds_or_receives_blob, b, NULL, &outputs, blobs, &nblobs,
                              &err) != 0)
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
    prpc__arriving_put(b, call_id, lease, outputs_json);
    n = snprintf(body, sizeof(body), "{\"call_id\": \"%s\"}", call_id);
    prpc_httpd_send_json(req, 200, body, (size_t)n);
    prpc__notify_arriving(b, call_id);
    goto out;
fail:
    prpc__send_err(req, &err);
out:
    prpc_call_cleanup(&c);
    prpc_buf_cleanup(&outputs);
    free(blobs);
    if (doc != NULL)
        bson_destroy(doc);
}

void prpc__on_result(prpc_broker_t *b, h2o_req_t *req, const char *lease)
{
    prpc_error_t err;
    bson_t *doc = prpc__parse_body(b, req, "result", &err);
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
    f = prpc__find_fn(b, c.function);
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
        if (prpc_wire_check_typed(f, f->returns, f->nreturns, "outputs", &it, prpc__holds_blob, b,
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
    nck = prpc__checkpoint_blobs(b, call_id, &ck);
    if (prpc_store_call_finish(b->store, call_id, lease, state, outputs_json, error_json,
                               prpc_now_ms(), &err) != 0) {
        if (err.code == PRPC_ESTATE)
            b->metrics.results_refused++;
        goto fail;
    }
    /* A finished call never resumes: its checkpoints went with the finish. */
    prpc__drop_checkpoint_blobs(b, ck, nck);
    ck = NULL;
    b->metrics.results_accepted++;
    prpc__arriving_drop(b, call_id);
    prpc_call_cleanup(&c);
    /* Waiting clients first: they wait for this answer, the worker only for
     * its acknowledgement. */
    prpc__notify_calls(b, call_id, 0);
    prpc__reply_call(b, req, call_id);
    goto out;
fail:
    prpc__send_err(req, &err);
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
void prpc__on_checkpoint(prpc_broker_t *b, h2o_req_t *req, const char *lease)
{
    prpc_error_t err;
    bson_t *doc = prpc__parse_body(b, req, "checkpoint", &err);
    const char *call_id, *key, *sha;
    char replaced[PRPC_CALL_ID_HEX + 1] = "";
    prpc_buf_t out = PRPC_BUF_INIT;
    double size = -1;

    if (doc == NULL) {
        prpc__send_err(req, &err);
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
    if (!prpc__holds_blob(b, sha, (uint64_t)size)) {
        prpc_httpd_send_error(req, 404, PRPC_ENOTFOUND,
                              "checkpoint blob %s of %llu bytes is not on this broker: upload it "
                              "first",
                              sha, (unsigned long long)size);
        goto out;
    }
    if (prpc_store_checkpoint_put(b->store, call_id, lease, key, sha, (uint64_t)size,
                                  prpc_now_ms(), replaced, &err) != 0) {
        prpc__send_err(req, &err);
        goto out;
    }
    if (replaced[0] != '\0')
        prpc__drop_blob(b, replaced);
    prpc_buf_printf(&out, "{\"call_id\": \"%s\", \"key\": \"%s\", \"blob\": \"%s\", "
                          "\"size\": %llu}",
                    call_id, key, sha, (unsigned long long)size);
    prpc__send_buf(req, 200, &out);
out:
    bson_destroy(doc);
}
