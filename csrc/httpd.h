/*
 * httpd.h - the HTTP server under the broker: one h2o event loop on its own
 * engine thread, HTTP/1.1 only, a periodic tick, and a way for other threads
 * to wake the loop. Routing and everything a request means live in broker.c;
 * this file only owns h2o's configuration, the listener and the loop.
 *
 * Thread safety: prpc_httpd_new/start/stop/free are called from one owner
 * thread; prpc_httpd_wake may be called from any thread. Every callback runs
 * on the loop thread, and h2o_req_t objects are only touched there.
 */
#ifndef PRPC_HTTPD_H
#define PRPC_HTTPD_H

#include "common.h"

#include <h2o.h>

#define PRPC_HTTPD_TICK_MS 50

typedef struct prpc_httpd prpc_httpd_t;

typedef struct prpc_httpd_config {
    const char *host;    /* address to bind, e.g. "127.0.0.1" */
    int port;            /* 0 picks a free port (see prpc_httpd_port) */
    const char *tmp_dir; /* where h2o spills large request bodies; a real disk */
    size_t max_request_body; /* larger bodies get 413 before they are read */
    size_t body_buffer;      /* a connection's input buffer starts this big (0 = h2o's
                                8 KiB), so a request body up to about it is read
                                without regrowing the buffer. Each connection with a
                                request in progress (a parked long poll too) holds
                                one: address space, resident only as far as filled */
    uint64_t request_timeout_ms; /* reading one request; also the keep-alive idle time */
    size_t max_connections;      /* open connections; more are answered 503 and closed;
                                    0 = no limit */
    size_t max_headers;          /* request headers; more are answered 431; 0 = h2o's 100 */
    size_t max_header_bytes;     /* bytes of all header names and values; 0 = h2o's own */
    void *ud;            /* passed to every callback */
    int (*on_req)(void *ud, h2o_req_t *req); /* 0 when it took the request */
    void (*on_tick)(void *ud, uint64_t now_ms); /* every PRPC_HTTPD_TICK_MS */
    void (*on_wake)(void *ud);  /* after prpc_httpd_wake, on the loop thread */
    void (*on_stop)(void *ud);  /* once, on the loop thread, before it exits:
                                   answer parked requests here */
    /* Called for every JSON answer before it starts, to add headers (the
     * broker signs answers here). May be NULL. */
    void (*on_respond)(void *ud, h2o_req_t *req, int status, const char *body, size_t len);
    const char *tls_cert; /* PEM certificate chain file; NULL = plain HTTP */
    const char *tls_key;  /* PEM private key file */
} prpc_httpd_config_t;

/* Bind the listener and prepare the loop (nothing runs yet). Errors name the
 * address (e.g. "address 127.0.0.1:5001 already in use"). If this returns
 * NULL, no callback is ever called. */
prpc_httpd_t *prpc_httpd_new(const prpc_httpd_config_t *cfg, prpc_error_t *err);

/* Start the loop thread. */
int prpc_httpd_start(prpc_httpd_t *h, prpc_error_t *err);

/* The bound port (useful after asking for port 0). */
int prpc_httpd_port(const prpc_httpd_t *h);

/* Wake the loop: on_wake runs soon on the loop thread. Any thread. */
void prpc_httpd_wake(prpc_httpd_t *h);

/* Call on_stop on the loop thread, flush, stop and join it. Idempotent. */
void prpc_httpd_stop(prpc_httpd_t *h);

/* Stop (when running) and release everything. Accepts NULL. */
void prpc_httpd_free(prpc_httpd_t *h);

/* Response helpers (loop thread). The body is copied. A status of 204 sends
 * no body. */
void prpc_httpd_send_json(h2o_req_t *req, int status, const char *json, size_t len);
void prpc_httpd_send_error(h2o_req_t *req, int status, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A request header's value, NUL-terminated in the request's pool, or NULL. */
const char *prpc_httpd_header(h2o_req_t *req, const char *name);

/* A query parameter's value (URL-decoded), NUL-terminated in the pool, or NULL. */
const char *prpc_httpd_query(h2o_req_t *req, const char *name);

#endif
