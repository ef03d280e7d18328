/*
 * broker_leases.h - the handlers of the leases' routes (broker_int.h's lease
 * layer), each named in broker.c's route table. arg is the route's {lease};
 * unused by POST /v1/leases.
 */
#ifndef PRPC_BROKER_LEASES_H
#define PRPC_BROKER_LEASES_H

#include "broker_int.h"

void prpc__on_lease(prpc_broker_t *b, h2o_req_t *req, const char *unused);
void prpc__on_heartbeat(prpc_broker_t *b, h2o_req_t *req, const char *lease);
void prpc__on_outputs(prpc_broker_t *b, h2o_req_t *req, const char *lease);
void prpc__on_result(prpc_broker_t *b, h2o_req_t *req, const char *lease);
void prpc__on_checkpoint(prpc_broker_t *b, h2o_req_t *req, const char *lease);

#endif
