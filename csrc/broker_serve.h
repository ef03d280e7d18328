/*
 * broker_serve.h - GET /v1/blobs/{sha} (broker_int.h's serving layer): a held
 * blob streamed from disk and verified on the way, whole or a Range; a blob
 * still arriving followed as its chunks are written (cut-through). Loop
 * thread only.
 */
#ifndef PRPC_BROKER_SERVE_H
#define PRPC_BROKER_SERVE_H

#include "broker_int.h"

/* Set the blob thread's hooks (b->blob_news, b->follow_start) and the
 * followers' list: at once after prpc__blobs_init. */
void prpc__serve_init(prpc_broker_t *b);
/* GET /v1/blobs/{sha}[?follow=SIZE] (sha already checked). */
void prpc__on_blob_get(prpc_broker_t *b, h2o_req_t *req, const char *sha);
/* The tick: cut off followers whose upload sent nothing for upload_stall_ms. */
void prpc__follow_expire(prpc_broker_t *b, int64_t now);
/* The broker stops: every follower is cut off (after prpc__blobs_drain). */
void prpc__serve_stop(prpc_broker_t *b);

#endif
