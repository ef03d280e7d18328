/*
 * broker.h - the broker node: the wire API of docs/API.md served by httpd.c,
 * with the store as its durable truth and the blob directory for files.
 * Everything runs on the httpd loop thread; Python only starts and stops it.
 */
#ifndef PRPC_BROKER_H
#define PRPC_BROKER_H

#include "common.h"

typedef struct prpc_broker prpc_broker_t;

typedef struct prpc_broker_config {
    const char *host;           /* bind address; NULL = 127.0.0.1 */
    int port;                   /* 0 = pick a free one */
    const char *advertise;      /* host:port for /v1/nodes; NULL = host:port */
    const char *data_dir;       /* store and blobs live here; created when missing */
    const char *store_uri;      /* NULL = sqlite:<data_dir>/broker.db */
    const char *synchronous;    /* store durability: NULL/"full", "normal", "off" */
    const char *functions_json; /* [{"name","version","args":[{"name","kind"}],"returns":[...]}] */
    const uint8_t *key;         /* 32-byte network key; NULL = no authentication */
    int64_t lease_ms;           /* 0 = 30000 */
    int heartbeat_ms;           /* told to workers; 0 = 2000 */
    int max_attempts;           /* leases before a call fails; 0 = 3 */
    int64_t upload_stall_ms;    /* a download following an upload still arriving is cut off
                                   after this long without a new chunk; 0 = 25000 (under
                                   httpc's PRPC_HTTPC_STALL_S, so the cut, not the
                                   receiver's timeout, is what the receiver sees) */
    int64_t expire_ms;          /* finished calls and unreferenced blobs older than this are
                                   removed; 0 = 7 days, < 0 = never */
    int insecure;               /* allow a non-loopback address without a key */
    const char *tls_cert;       /* PEM certificate chain: serve HTTPS; NULL = plain HTTP */
    const char *tls_key;        /* PEM private key of tls_cert */
    const char *const *peers;   /* NULL-terminated host:port of other brokers; may be NULL */
    /* Limits (0 = the default): */
    size_t max_body;            /* metadata (JSON) body bytes; default and at most 1 MiB */
    int64_t request_timeout_ms; /* reading one request, and keep-alive idle; default 120000 */
    size_t max_connections;     /* open connections; default 1024 */
    int max_leases_per_worker;  /* calls one worker (by name) may hold; default 64 */
    size_t max_headers;         /* request headers; default 64 */
    size_t max_header_bytes;    /* bytes of request headers; default 64 KiB */
    int max_depth;              /* nesting of a JSON body; default 32 */
} prpc_broker_config_t;

/* Open the store and blob directory, parse the functions, bind the port.
 * Nothing is served until prpc_broker_start. Errors name what was wrong.
 * Without a key the broker binds only loopback addresses (anyone who can
 * connect could run calls) unless cfg->insecure is set. */
prpc_broker_t *prpc_broker_new(const prpc_broker_config_t *cfg, prpc_error_t *err);
int prpc_broker_start(prpc_broker_t *b, prpc_error_t *err);
int prpc_broker_port(const prpc_broker_t *b);
/* Answer parked long-polls (503), stop serving and join the loop thread. */
void prpc_broker_stop(prpc_broker_t *b);
void prpc_broker_free(prpc_broker_t *b); /* stops first; accepts NULL */

#endif
