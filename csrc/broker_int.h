/*
 * broker_int.h - the broker's private header: its struct and the types its
 * files share. Only csrc/broker*.c include it; the API is broker.h.
 *
 * The broker is cut by layer: a file calls only into the layers below it,
 * each of which declares its functions in its own broker_<layer>.h (so the
 * include graph, tools/include_graph.py, shows the layers). Top to bottom:
 *
 *   broker.c          the route table (every route of docs/API.md and its
 *                     handler), authentication, the tick, life cycle
 *   broker_calls.c    call handlers: submit, batch, wait, get, terminate,
 *                     restart, delete, function stats
 *   broker_leases.c   lease handlers: lease, heartbeat, outputs, result,
 *                     checkpoints
 *   broker_serve.c    GET of a blob: verified streaming with Range, and
 *                     following an upload still arriving (cut-through)
 *   broker_blobs.c    the blob thread and its jobs (chunks, commits, HEAD, a
 *                     follower's start), chunks set aside, removing blobs;
 *                     the only file that takes blob_mu or blob_gc_mu
 *   broker_waiters.c  parked long-polls (call, batch and lease waiters) and
 *                     the outputs workers announced
 *   broker_reply.c    answers and request parsing: error statuses, JSON
 *                     bodies, call records
 *
 * calls and leases do not call each other, nor do blobs and waiters. Where
 * a lower layer must reach up, the upper one leaves a hook in the struct: a
 * job the blob thread finished reaches broker_serve.c's followers through
 * b->blob_news and b->follow_start.
 *
 * broker.h is broker.c's own header, the top of the graph, so the layers
 * below do not include it: they get prpc_broker_t from here.
 */
#ifndef PRPC_BROKER_INT_H
#define PRPC_BROKER_INT_H

#include "common.h"
#include "auth.h"
#include "blob.h"
#include "httpd.h"
#include "nodes.h"
#include "store.h"
#include "wire.h"

#include <pthread.h>

/* The longest long-poll and the calls in one batch are the wire's limits
 * (PRPC_WIRE_WAIT_MAX_MS, PRPC_WIRE_BATCH_MAX in wire.h), which the client
 * reads from _core. */
#define GRANTED_MAX 1024 /* leases remembered for retried lease requests */
#define BROKER_ARRIVING_MAX 64        /* calls with announced outputs remembered */

/* The same typedef as broker.h's (C11 allows the repetition). */
typedef struct prpc_broker prpc_broker_t;

typedef struct call_waiter {
    h2o_linklist_t link;
    h2o_req_t *req;
    char id[PRPC_CALL_ID_HEX + 1];
    int64_t since;
    int64_t deadline_ms;
    /* A submit that waits (POST /v1/calls?wait_ms=N) is answered when its call
     * ends, not when it changes, and its answer keeps the submit's shape. */
    int until_end;
    int created;
} call_waiter_t;

/* A reader of many calls (POST /v1/calls/wait): answered as soon as one of
 * them is terminal or gone. */
typedef struct batch_waiter {
    h2o_linklist_t link;
    h2o_req_t *req;
    char (*ids)[PRPC_CALL_ID_HEX + 1]; /* in the request's pool */
    size_t n;
    int64_t deadline_ms;
} batch_waiter_t;

/* A chunk write or a commit, done on the blob thread. The request stays
 * parked meanwhile; job->req is NULL once h2o let go of it (blob_hold_dispose
 * waits for a job in progress first, so its body stays readable). */
typedef struct blob_job {
    h2o_linklist_t link; /* in blob_queue or blob_done, under blob_mu */
    struct blob_hold *hold;
    h2o_req_t *req;
    /* PARTIAL: a HEAD's answer; FOLLOW: the start of a GET ?follow=SIZE */
    enum { BLOB_CHUNK, BLOB_COMMIT, BLOB_PARTIAL, BLOB_FOLLOW } kind;
    char sha[PRPC_CALL_ID_HEX + 1];
    char chunk_sha[PRPC_CALL_ID_HEX + 1];
    uint64_t offset, size, partial;
    const void *data;
    size_t len;
    int running, ran, rc, held;
    int deferred;           /* CHUNK: once set aside to wait for the chunk before it */
    int64_t defer_until_ms; /* ...until then at most */
    int fd; /* FOLLOW: the partial file, opened behind the chunks queued before it */
    prpc_error_t err;
} blob_job_t;

typedef struct blob_hold {
    struct prpc_broker *b;
    blob_job_t *job; /* NULL once answered */
} blob_hold_t;

/* Outputs a worker announced while their upload goes on (cut-through of
 * results, POST /v1/leases/{lease}/outputs): a hint to the call's readers,
 * valid while the call is leased under that lease. Kept in memory only: after
 * a broker restart the call's result still comes, only without the head
 * start. Touched on the loop thread only. */
typedef struct arriving_outputs {
    char call_id[PRPC_CALL_ID_HEX + 1]; /* "" when the slot is free */
    char lease_id[PRPC_LEASE_ID_HEX + 1];
    char *outputs_json; /* owned */
    int64_t at_ms;      /* when announced, for eviction */
} arriving_outputs_t;

typedef struct lease_waiter {
    h2o_linklist_t link;
    h2o_req_t *req;
    char request[33]; /* the worker's request id ("" when none): a retry gets the same lease */
    char worker[PRPC_STORE_NAME_MAX + 1];
    const char **functions;
    const char **versions;
    size_t n;
    int64_t deadline_ms;
} lease_waiter_t;

struct prpc_broker {
    prpc_store_t *store;
    prpc_blobdir_t *blobs;
    prpc_httpd_t *httpd;
    prpc_functions_t functions; /* what this broker serves */
    uint8_t key[PRPC_AUTH_KEY_LEN];
    int has_key;
    char advertise[300];
    prpc_nodes_t *nodes; /* the brokers this one knows */
    int64_t lease_ms;
    int heartbeat_ms;
    int max_attempts;
    size_t max_body;
    int max_leases_per_worker;
    int max_depth;
    int64_t last_expire_ms;
    int64_t expire_ms;          /* retention of finished calls; < 0 = forever */
    int64_t last_retention_ms;
    int64_t retention_every_ms; /* short retentions are enforced promptly */
    /* broker_waiters.c: parked long-polls, announced outputs */
    h2o_linklist_t call_waiters;
    h2o_linklist_t lease_waiters;
    h2o_linklist_t batch_waiters; /* POST /v1/calls/wait */
    arriving_outputs_t arriving[BROKER_ARRIVING_MAX];
    /* broker_serve.c: downloads following an upload */
    h2o_linklist_t followers;     /* GET ?follow= answers of blobs still arriving */
    int follow_tails;             /* followers holding a chunk copy (BROKER_FOLLOW_TAILS) */
    int64_t upload_stall_ms;      /* a follower with nothing new this long is cut off */
    /* broker_blobs.c only: the blob thread and its jobs */
    pthread_t blob_thread;
    int blob_thread_started;
    pthread_mutex_t blob_mu;
    pthread_cond_t blob_cv; /* a job was queued or finished, or blob_quit */
    h2o_linklist_t blob_queue, blob_done;
    h2o_linklist_t blob_deferred; /* chunks that came before the chunk they continue */
    int ndeferred;
    int blob_flush; /* the broker stops: chunks set aside are answered now */
    int blob_quit;
    int blob_busy; /* the blob thread is doing a job */
    /* Held by the blob thread for a commit and by the loop while it decides on
     * and removes blobs, so a blob committed again (its added time refreshed)
     * is never removed on the strength of its old time. */
    pthread_mutex_t blob_gc_mu;
    /* Set by broker_serve.c (prpc__serve_init), called by the blob thread's
     * answers on the loop thread: a chunk or commit it finished is news to
     * the downloads following that blob, and a GET ?follow= it looked at
     * starts its answer. */
    void (*blob_news)(prpc_broker_t *b, const blob_job_t *j);
    void (*follow_start)(prpc_broker_t *b, h2o_req_t *req, blob_job_t *j);
    struct {
        uint64_t requests;
        uint64_t bytes_received; /* blob chunk bytes accepted */
        uint64_t chunks_received;
        uint64_t chunks_refused;
        uint64_t blobs_committed;
        uint64_t bytes_served;   /* blob bytes sent by verified GETs */
        uint64_t bytes_followed; /* blob bytes sent while their upload was still arriving */
        uint64_t bytes_followed_from_memory; /* ...of them, sent from the chunk as it arrived */
        uint64_t corrupt_blobs_dropped;
        uint64_t calls_submitted;
        uint64_t leases_granted;
        uint64_t results_accepted;
        uint64_t results_refused;
        uint64_t auth_refused;
    } metrics;
    prpc_nonce_cache_t *nonces; /* replay protection, when there is a key */
    /* Leases recently granted per request id: a worker that lost the answer
     * asks again with the same id and gets the same lease, instead of the call
     * waiting for a lease nobody holds to lapse. */
    struct granted {
        char request[33];
        char call_id[PRPC_CALL_ID_HEX + 1];
        char lease_id[PRPC_LEASE_ID_HEX + 1];
    } granted[GRANTED_MAX];
    size_t granted_next;
};

#endif
