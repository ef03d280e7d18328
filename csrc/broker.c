/*
 * broker.c - the broker node (broker.h): the route table, authentication, the
 * tick and the life cycle. What a route does is in the layers below, drawn
 * in broker_int.h; routes[] names the handler of every route of docs/API.md.
 *
 * Thread safety: after prpc_broker_start everything runs on the httpd loop
 * thread, but the blob thread's jobs (broker_blobs.c). The store is
 * thread-safe on its own. Store calls block the loop for the length of one
 * durable commit; that is the price of acknowledging only what is durable.
 */
#include "broker.h"
#include "broker_blobs.h"
#include "broker_calls.h"
#include "broker_leases.h"
#include "broker_reply.h"
#include "broker_serve.h"
#include "broker_waiters.h"
#include "hash.h"
#include "version.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONCE_CACHE_MAX (4u << 20) /* live nonces remembered: ~64 MiB at most */
#define EXPIRE_EVERY_MS 250         /* lapsed leases are looked for this often */
#define RETENTION_EVERY_MS 10000    /* finished calls and unused blobs, this often */
#define RETENTION_DEFAULT_MS (7LL * 24 * 3600 * 1000)

/* ---- the route table ---------------------------------------------------- */

/* A route's handler: arg is the path's {parameter}, NULL when it has none. */
typedef void (*handler_fn)(prpc_broker_t *b, h2o_req_t *req, const char *arg);

static void on_health(prpc_broker_t *b, h2o_req_t *req, const char *unused);
static void on_functions(prpc_broker_t *b, h2o_req_t *req, const char *unused);
static void on_metrics(prpc_broker_t *b, h2o_req_t *req, const char *unused);
static void on_nodes(prpc_broker_t *b, h2o_req_t *req, const char *unused);

typedef struct route {
    const char *method;
    const char *pattern;
    handler_fn handler;
    int open; /* answered before authentication, and not counted */
} route_t;

/* Every route of docs/API.md, and what answers it: a prpc__on_* handler is
 * declared in the broker_<layer>.h of the file that defines it, the others
 * are below. params[] says what a {parameter} matches. No two patterns
 * match the same request, so their order does not matter. */
static const route_t routes[] = {
    {"GET", "/v1/health", on_health, 1},
    {"POST", "/v1/calls", prpc__on_submit, 0},
    {"POST", "/v1/calls/batch", prpc__on_submit_batch, 0},
    {"POST", "/v1/calls/wait", prpc__on_wait, 0},
    {"GET", "/v1/calls/{call}", prpc__on_get_call, 0},
    {"DELETE", "/v1/calls/{call}", prpc__on_delete, 0},
    {"POST", "/v1/calls/{call}/terminate", prpc__on_terminate, 0},
    {"POST", "/v1/calls/{call}/restart", prpc__on_restart, 0},
    {"POST", "/v1/leases", prpc__on_lease, 0},
    {"POST", "/v1/leases/{lease}/heartbeat", prpc__on_heartbeat, 0},
    {"POST", "/v1/leases/{lease}/result", prpc__on_result, 0},
    {"POST", "/v1/leases/{lease}/outputs", prpc__on_outputs, 0},
    {"POST", "/v1/leases/{lease}/checkpoints", prpc__on_checkpoint, 0},
    {"HEAD", "/v1/blobs/{blob}", prpc__on_blob_head, 0},
    {"GET", "/v1/blobs/{blob}", prpc__on_blob_get, 0},
    {"PUT", "/v1/blobs/{blob}", prpc__on_blob_put, 0},
    {"POST", "/v1/blobs/{blob}/commit", prpc__on_blob_commit, 0},
    {"GET", "/v1/functions", on_functions, 0},
    {"GET", "/v1/functions/{name}/stats", prpc__on_stats, 0},
    {"GET", "/v1/metrics", on_metrics, 0},
    {"GET", "/v1/nodes", on_nodes, 0},
};

/* ---- the broker's own routes ------------------------------------------- */

static void on_health(prpc_broker_t *b, h2o_req_t *req, const char *unused)
{
    static const char ok[] =
        "{\"ok\": true, \"node\": \"broker\", \"version\": \"" PRPC_VERSION "\"}";
    PRPC_UNUSED(b);
    PRPC_UNUSED(unused);
    prpc_httpd_send_json(req, 200, ok, sizeof(ok) - 1);
}

static void on_functions(prpc_broker_t *b, h2o_req_t *req, const char *unused)
{
    PRPC_UNUSED(unused);
    prpc_httpd_send_json(req, 200, b->functions.listing_json, strlen(b->functions.listing_json));
}

static void on_metrics(prpc_broker_t *b, h2o_req_t *req, const char *unused)
{
    prpc_buf_t out = PRPC_BUF_INIT;
    PRPC_UNUSED(unused);
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
    prpc__send_buf(req, 200, &out);
}

static void on_nodes(prpc_broker_t *b, h2o_req_t *req, const char *unused)
{
    prpc_error_t err;
    size_t len = 0;
    const char *from = prpc_httpd_query(req, "from");
    char *text;
    PRPC_UNUSED(unused);
    if (from != NULL)
        prpc_nodes_learn(b->nodes, from);
    text = prpc_nodes_json(b->nodes, &len, &err);
    if (text == NULL) {
        prpc__send_err(req, &err);
    } else {
        prpc_httpd_send_json(req, 200, text, len);
        free(text);
    }
}

/* ---- routing ------------------------------------------------------------ */

static int valid_call(const char *id)
{
    return prpc_valid_hex(id, PRPC_CALL_ID_HEX);
}

static int valid_lease(const char *id)
{
    return prpc_valid_hex(id, PRPC_LEASE_ID_HEX);
}

/* What a pattern's {parameter} matches. A path that reaches a call's, a
 * lease's or a blob's id names that thing: a malformed id, or an operation
 * no route of it has, gets that thing's own answer, not "no such route". */
typedef struct param {
    const char *name;      /* as the patterns write it */
    size_t len;            /* characters of an id; 0: a name, one or more of any */
    int (*valid)(const char *id);
    const char *malformed; /* the 400's message when the id is not valid */
    const char *method;    /* the only method that reaches the thing; NULL: any */
    int bare;              /* a path may end at the id */
    int miss_status, miss_code; /* no route of it has the method and the rest */
    const char *miss;
} param_t;

static const param_t params[] = {
    {"{call}", PRPC_CALL_ID_HEX, valid_call, "a call id is 64 lowercase hex digits", NULL, 1,
     405, PRPC_EINVAL, "no such operation on a call"},
    {"{lease}", PRPC_LEASE_ID_HEX, valid_lease, "a lease id is 32 lowercase hex digits", "POST",
     0, 404, PRPC_ENOTFOUND, "no such operation on a lease"},
    {"{blob}", PRPC_CALL_ID_HEX, prpc_blob_valid_sha, "a blob is named by 64 lowercase hex digits",
     NULL, 1, 405, PRPC_EINVAL, "method not allowed on a blob"},
    {"{name}", 0, NULL, NULL, NULL, 0, 0, 0, NULL},
};

static int is_method(h2o_req_t *req, const char *method)
{
    return h2o_memis(req->method.base, req->method.len, method, strlen(method));
}

static const param_t *param_at(const char *brace)
{
    for (size_t i = 0; i < PRPC_ARRAY_LEN(params); i++)
        if (strncmp(brace, params[i].name, strlen(params[i].name)) == 0)
            return &params[i];
    return NULL;
}

/* The route of req's method and path, or NULL. Its parameter goes to arg
 * (*argp points at it; NULL when the route has none). *reached: the thing
 * whose id the path reaches, route or not, else NULL. */
static const route_t *route_find(h2o_req_t *req, const char *path, char *arg, size_t argsz,
                                 const char **argp, const param_t **reached)
{
    size_t len = strlen(path);
    *argp = NULL;
    *reached = NULL;
    for (size_t i = 0; i < PRPC_ARRAY_LEN(routes); i++) {
        const route_t *r = &routes[i];
        const char *brace = strchr(r->pattern, '{'), *suffix, *rest;
        const param_t *pm;
        size_t pre;
        if (brace == NULL) {
            if (strcmp(path, r->pattern) == 0 && is_method(req, r->method))
                return r;
            continue;
        }
        pre = (size_t)(brace - r->pattern);
        if (strncmp(path, r->pattern, pre) != 0 || (pm = param_at(brace)) == NULL)
            continue;
        suffix = brace + strlen(pm->name);
        if (pm->len == 0) {
            /* A name: all between the prefix and the suffix. */
            size_t slen = strlen(suffix);
            if (len - pre <= slen || strcmp(path + len - slen, suffix) != 0 ||
                !is_method(req, r->method))
                continue;
            snprintf(arg, argsz, "%.*s", (int)(len - pre - slen), path + pre);
            *argp = arg;
            return r;
        }
        if (len - pre < pm->len)
            continue;
        rest = path + pre + pm->len;
        if ((pm->method != NULL && !is_method(req, pm->method)) || (!pm->bare && rest[0] == '\0'))
            continue;
        snprintf(arg, argsz, "%.*s", (int)pm->len, path + pre);
        *reached = pm;
        if (strcmp(rest, suffix) == 0 && is_method(req, r->method)) {
            *argp = arg;
            return r;
        }
    }
    return NULL;
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
        prpc__send_err(req, &err);
        return -1;
    }
    return 0;
}

static int route(void *ud, h2o_req_t *req)
{
    prpc_broker_t *b = ud;
    char path[512], arg[PRPC_STORE_NAME_MAX + 1];
    const char *a;
    const param_t *reached;
    const route_t *r;

    if (req->path_normalized.len >= sizeof(path)) {
        prpc_httpd_send_error(req, 414, PRPC_ELIMIT, "path too long");
        return 0;
    }
    memcpy(path, req->path_normalized.base, req->path_normalized.len);
    path[req->path_normalized.len] = '\0';
    r = route_find(req, path, arg, sizeof(arg), &a, &reached);
    if (r != NULL && r->open) {
        r->handler(b, req, a);
        return 0;
    }
    if (strncmp(path, "/v1/", 4) != 0) {
        prpc_httpd_send_error(req, 404, PRPC_ENOTFOUND, "no such route");
        return 0;
    }
    b->metrics.requests++;
    if (authenticate(b, req) != 0)
        return 0;
    if (reached != NULL && !reached->valid(arg))
        prpc_httpd_send_error(req, 400, PRPC_EINVAL, "%s", reached->malformed);
    else if (r != NULL)
        r->handler(b, req, a);
    else if (reached != NULL)
        prpc_httpd_send_error(req, reached->miss_status, reached->miss_code, "%s", reached->miss);
    else
        prpc_httpd_send_error(req, 404, PRPC_ENOTFOUND, "no such route");
    return 0;
}

/* ---- the tick ----------------------------------------------------------- */

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
    prpc__remove_unreferenced_blobs(b, now - b->expire_ms);
    if (removed > 0) {
        prpc__notify_calls(b, NULL, 1);
        prpc__notify_batches(b, NULL, 0);
    }
}

static void on_tick(void *ud, uint64_t now_ms)
{
    prpc_broker_t *b = ud;
    int64_t now = (int64_t)now_ms;

    prpc__waiters_tick(b, now);
    if (now - b->last_expire_ms >= EXPIRE_EVERY_MS) {
        int requeued = 0, failed = 0;
        prpc_error_t err;
        b->last_expire_ms = now;
        if (prpc_store_leases_expire(b->store, now, b->max_attempts, &requeued, &failed, &err) ==
                0 &&
            requeued + failed > 0) {
            prpc__notify_calls(b, NULL, 0);
            if (failed > 0)
                prpc__notify_batches(b, NULL, 0);
            if (requeued > 0)
                prpc__dispatch_leases(b);
        }
    }
    prpc__follow_expire(b, now);
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
    prpc__blobs_drain(b);
    prpc__serve_stop(b);
    prpc__waiters_stop(b);
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
    prpc__blobs_init(b);
    prpc__serve_init(b);
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
    hc.on_wake = prpc__blobs_answer_done;
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
    int rc = prpc__blobs_start(b, err);
    if (rc == 0)
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
    if (b == NULL)
        return;
    if (b->httpd != NULL)
        prpc_httpd_stop(b->httpd);
    prpc__blobs_join(b);
}

void prpc_broker_free(prpc_broker_t *b)
{
    if (b == NULL)
        return;
    prpc_broker_stop(b);
    prpc_nodes_free(b->nodes);
    prpc_httpd_free(b->httpd);
    prpc__arriving_drop(b, NULL);
    prpc__blobs_cleanup(b);
    prpc_store_close(b->store);
    prpc_blobdir_free(b->blobs);
    prpc_nonce_cache_free(b->nonces);
    prpc_functions_cleanup(&b->functions);
    free(b);
}
