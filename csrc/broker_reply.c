/*
 * broker_reply.c - answers and request parsing for the broker's handlers
 * (broker_reply.h): the lowest layer of broker_int.h.
 */
#include "broker_reply.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void prpc__send_err(h2o_req_t *req, const prpc_error_t *err)
{
    /* The status comes from error_map.h; lease limits answer 429 themselves. */
    prpc_httpd_send_error(req, prpc_error_http_status(err->code), err->code, "%s",
                          err->message);
}

void prpc__send_buf(h2o_req_t *req, int status, prpc_buf_t *b)
{
    prpc_error_t err;
    size_t len = 0;
    char *text = prpc_buf_take(b, &len, &err);
    if (text == NULL) {
        prpc__send_err(req, &err);
        return;
    }
    prpc_httpd_send_json(req, status, text, len);
    free(text);
}

const prpc_fn_t *prpc__find_fn(const prpc_broker_t *b, const char *name)
{
    return prpc_functions_find(&b->functions, name);
}

bson_t *prpc__parse_body(prpc_broker_t *b, h2o_req_t *req, const char *what,
                         prpc_error_t *err)
{
    if (req->entity.len <= b->max_body) {
        int depth = prpc_json_depth(req->entity.base, req->entity.len);
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

int64_t prpc__query_int(h2o_req_t *req, const char *name, int64_t dflt)
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

void prpc__write_call(prpc_buf_t *out, const prpc_call_t *c, int with_args)
{
    write_call_arriving(out, c, with_args, NULL);
}

void prpc__send_call_arriving(h2o_req_t *req, const prpc_call_t *c, const char *prefix,
                              const char *arriving)
{
    prpc_buf_t out = PRPC_BUF_INIT;
    prpc_buf_printf(&out, "{%s\"call\": ", prefix ? prefix : "");
    write_call_arriving(&out, c, 0, arriving);
    prpc_buf_puts(&out, "}");
    prpc__send_buf(req, 200, &out);
}

void prpc__send_call(h2o_req_t *req, const prpc_call_t *c, const char *prefix)
{
    prpc__send_call_arriving(req, c, prefix, NULL);
}

void prpc__reply_call(prpc_broker_t *b, h2o_req_t *req, const char *id)
{
    prpc_error_t err;
    prpc_call_t c;
    memset(&c, 0, sizeof(c));
    if (prpc_store_call_get(b->store, id, &c, &err) != 0)
        prpc__send_err(req, &err);
    else
        prpc__send_call(req, &c, NULL);
    prpc_call_cleanup(&c);
}
