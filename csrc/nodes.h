/*
 * nodes.h - the brokers a broker knows: itself, the peers it was told of, and
 * those it learned from their /v1/nodes answers. A gossip thread asks each
 * known broker for its list every PRPC_NODES_EVERY_MS; a broker is listed while
 * it answered within PRPC_NODES_ALIVE_MS and forgotten after PRPC_NODES_DEAD_MS
 * of silence (configured peers are kept and retried, listed only while they
 * answer).
 *
 * Thread safety: prpc_nodes_json may be called from any thread while the
 * gossip thread runs; the list is guarded by a mutex.
 */
#ifndef PRPC_NODES_H
#define PRPC_NODES_H

#include "common.h"

#define PRPC_NODES_MAX 64
#define PRPC_NODES_ADDR_MAX 255
#define PRPC_NODES_EVERY_MS 2000
#define PRPC_NODES_ALIVE_MS (3 * PRPC_NODES_EVERY_MS) /* listed while it answered this recently */
#define PRPC_NODES_DEAD_MS 30000                      /* forgotten after this long silent */

typedef struct prpc_nodes prpc_nodes_t;

/* self: this broker's advertised host:port. peers: NULL-terminated list of
 * host:port (or http(s)://host:port) to start from; may be NULL. key: the
 * network key for signed requests, or NULL. */
prpc_nodes_t *prpc_nodes_new(const char *self, const char *const *peers, const uint8_t *key,
                             prpc_error_t *err);

/* Learn of a broker that announced itself (GET /v1/nodes?from=ADDR); it is
 * listed once it answers our own ask. */
void prpc_nodes_learn(prpc_nodes_t *n, const char *addr);

/* Start the gossip thread. */
int prpc_nodes_start(prpc_nodes_t *n, prpc_error_t *err);

/* Stop and join the gossip thread; release everything. Accepts NULL. */
void prpc_nodes_free(prpc_nodes_t *n);

/* The /v1/nodes answer: {"nodes": [self, live others...]}; caller frees. */
char *prpc_nodes_json(prpc_nodes_t *n, size_t *len, prpc_error_t *err);

#endif
