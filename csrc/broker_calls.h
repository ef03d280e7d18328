/*
 * broker_calls.h - the handlers of the calls' routes (broker_int.h's call
 * layer), each named in broker.c's route table. arg is the route's {call} or
 * {name}; unused by routes without one.
 */
#ifndef PRPC_BROKER_CALLS_H
#define PRPC_BROKER_CALLS_H

#include "broker_int.h"

void prpc__on_submit(prpc_broker_t *b, h2o_req_t *req, const char *unused);
void prpc__on_submit_batch(prpc_broker_t *b, h2o_req_t *req, const char *unused);
void prpc__on_wait(prpc_broker_t *b, h2o_req_t *req, const char *unused);
void prpc__on_get_call(prpc_broker_t *b, h2o_req_t *req, const char *id);
void prpc__on_delete(prpc_broker_t *b, h2o_req_t *req, const char *id);
void prpc__on_terminate(prpc_broker_t *b, h2o_req_t *req, const char *id);
void prpc__on_restart(prpc_broker_t *b, h2o_req_t *req, const char *id);
void prpc__on_stats(prpc_broker_t *b, h2o_req_t *req, const char *name);

#endif
