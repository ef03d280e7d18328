/*
 * broker_reply.h - the broker's lowest layer (broker_int.h): answers and
 * request parsing shared by every handler. Loop thread only.
 */
#ifndef PRPC_BROKER_REPLY_H
#define PRPC_BROKER_REPLY_H

#include "broker_int.h"
#include "json.h"

#include <bson/bson.h>

/* An error answer: the status its code means, and its message. */
void prpc__send_err(h2o_req_t *req, const prpc_error_t *err);
/* A JSON answer of status from b's text (taken; an append that failed
 * answers 500 instead). */
void prpc__send_buf(h2o_req_t *req, int status, prpc_buf_t *b);

/* The function named name among those the broker serves, or NULL. */
const prpc_fn_t *prpc__find_fn(const prpc_broker_t *b, const char *name);
/* The request's JSON body parsed within --max-body and --max-depth; NULL and
 * err naming what (e.g. "submit") when it is not. */
bson_t *prpc__parse_body(prpc_broker_t *b, h2o_req_t *req, const char *what,
                         prpc_error_t *err);
/* The query parameter name as an integer; dflt when absent or not one. */
int64_t prpc__query_int(h2o_req_t *req, const char *name, int64_t dflt);

/* Call records (docs/API.md's CALL): with_args adds its arguments. */
void prpc__write_call(prpc_buf_t *out, const prpc_call_t *c, int with_args);
/* {prefix "call": CALL}, with "arriving_outputs" when arriving is not NULL. */
void prpc__send_call_arriving(h2o_req_t *req, const prpc_call_t *c, const char *prefix,
                              const char *arriving);
void prpc__send_call(h2o_req_t *req, const prpc_call_t *c, const char *prefix);
/* {"call": CALL} of call id as stored now, or its error. */
void prpc__reply_call(prpc_broker_t *b, h2o_req_t *req, const char *id);

#endif
