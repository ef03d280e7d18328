/*
 * broker_blobs.h - the broker's blob thread and the blobs it keeps
 * (broker_int.h's blob layer): chunk writes, commits, a HEAD's look at a
 * partial upload and a follower's start run on the blob thread, in order,
 * and are answered from the loop; deciding on and removing blobs. The only
 * layer that takes blob_mu or blob_gc_mu.
 */
#ifndef PRPC_BROKER_BLOBS_H
#define PRPC_BROKER_BLOBS_H

#include "broker_int.h"

/* Life cycle, in broker.c's order: _init at once after the broker is
 * allocated, _start before the server, _drain on the loop as it stops (jobs
 * queued or set aside are done and answered), _join after it stopped (the
 * thread ends), _cleanup when the broker is freed. */
void prpc__blobs_init(prpc_broker_t *b);
int prpc__blobs_start(prpc_broker_t *b, prpc_error_t *err);
void prpc__blobs_drain(prpc_broker_t *b);
void prpc__blobs_join(prpc_broker_t *b);
void prpc__blobs_cleanup(prpc_broker_t *b);
/* The httpd's wake-up (on the loop thread): answer the jobs the blob thread
 * finished. ud is the broker. */
void prpc__blobs_answer_done(void *ud);

/* HEAD /v1/blobs/{sha}, PUT /v1/blobs/{sha}?offset=N, POST
 * /v1/blobs/{sha}/commit?size=N (sha already checked). */
void prpc__on_blob_head(prpc_broker_t *b, h2o_req_t *req, const char *sha);
void prpc__on_blob_put(prpc_broker_t *b, h2o_req_t *req, const char *sha);
void prpc__on_blob_commit(prpc_broker_t *b, h2o_req_t *req, const char *sha);
/* Park a GET ?follow=size of a blob not held: the blob thread looks at its
 * upload in order with its chunks, then b->follow_start answers it. */
void prpc__blob_follow(prpc_broker_t *b, h2o_req_t *req, const char *sha, uint64_t size);

/* 1 when blob sha is held (*size its size, when not NULL). */
int prpc__blob_held(prpc_broker_t *b, const char *sha, uint64_t *size);
/* prpc_blob_check_fn over the broker's blobs (ud is the broker): held whole,
 * or held or still arriving (an argument a worker may follow). */
int prpc__holds_blob(void *ud, const char *sha, uint64_t size);
int prpc__holds_or_receives_blob(void *ud, const char *sha, uint64_t size);

/* Removing blobs. */
size_t prpc__checkpoint_blobs(prpc_broker_t *b, const char *id, prpc_checkpoint_t **out);
void prpc__drop_checkpoint_blobs(prpc_broker_t *b, prpc_checkpoint_t *ck, size_t n);
void prpc__drop_blob(prpc_broker_t *b, const char *sha);
void prpc__remove_unreferenced_blobs(prpc_broker_t *b, int64_t older_than_ms);
void prpc__drop_corrupt_blob(prpc_broker_t *b, const char *sha, const char *why);

#endif
