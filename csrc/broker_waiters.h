/*
 * broker_waiters.h - parked long-polls (broker_int.h's waiter layer): readers
 * of a call, of a batch of calls, and workers asking for a lease, answered
 * when what they wait for happens or at their deadline; and the outputs
 * workers announced before their result. Loop thread only.
 */
#ifndef PRPC_BROKER_WAITERS_H
#define PRPC_BROKER_WAITERS_H

#include "broker_int.h"

/* Disposers for waiters allocated in their request's pool: a request h2o
 * lets go of leaves its list. */
void prpc__call_waiter_dispose(void *p);
void prpc__batch_waiter_dispose(void *p);
void prpc__lease_waiter_dispose(void *p);

/* Answer every parked reader of call id (all calls when id is NULL) whose
 * view is out of date; force_all answers them all (the call is gone). */
void prpc__notify_calls(prpc_broker_t *b, const char *id, int force_all);
/* Answer the batch readers concerned by call id (all when NULL; "" for none
 * but those past their deadline at now). */
void prpc__notify_batches(prpc_broker_t *b, const char *id, int64_t now);
/* Answer a batch read if one of its calls is terminal or gone (or always,
 * when force). Returns 1 when it answered. */
int prpc__answer_batch(prpc_broker_t *b, h2o_req_t *req, char (*ids)[PRPC_CALL_ID_HEX + 1],
                       size_t n, int force);
/* Answer the GET readers of call id parked on its record: its announced
 * outputs are news although the record itself did not change. */
void prpc__notify_arriving(prpc_broker_t *b, const char *id);

/* Answer req with the lease of call c (leased), and its checkpoints. */
int prpc__send_lease(prpc_broker_t *b, h2o_req_t *req, const prpc_call_t *c);
/* Hand queued calls to parked workers, oldest waiter first. */
void prpc__dispatch_leases(prpc_broker_t *b);

/* Outputs announced for a call under its current lease (cut-through of
 * results). _put takes outputs_json; _drop with NULL drops them all. */
void prpc__arriving_put(prpc_broker_t *b, const char *call_id, const char *lease_id,
                        char *outputs_json);
const char *prpc__arriving_for(const prpc_broker_t *b, const prpc_call_t *c);
void prpc__arriving_drop(prpc_broker_t *b, const char *call_id);

/* The tick: answer the waiters whose deadline passed by now. */
void prpc__waiters_tick(prpc_broker_t *b, int64_t now);
/* The broker stops: every parked waiter is answered 503. */
void prpc__waiters_stop(prpc_broker_t *b);

#endif
