/*
 * httpd.c - the broker's h2o server (httpd.h): configuration, listener, the
 * loop thread, the tick and cross-thread wake-ups.
 *
 * HTTP/2 is off (no ALPN h2, no h2c upgrade): Debian's h2o 2.2.5 has had no
 * HTTP/2 security fixes since 2019, and HTTP/1.1 keep-alive is all we need.
 */
#include "httpd.h"
#include "util.h"
#include "wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#define HTTPD_BODY_BUFFERS_KEPT 4 /* freed body-sized input buffers h2o keeps for reuse */

typedef struct handler_ext {
    h2o_handler_t super;
    prpc_httpd_t *owner;
} handler_ext_t;

/* The server a request belongs to, for the response helpers. */
static __thread prpc_httpd_t *current_server;

struct prpc_httpd {
    prpc_httpd_config_t cfg;
    h2o_globalconf_t globalconf;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_loop_t *loop;
    h2o_socket_t *listener;
    int listen_fd;
    int port;
    h2o_timeout_t tick_timeout;
    h2o_timeout_entry_t tick_entry;
    h2o_multithread_receiver_t wake_receiver;
    pthread_t thread;
    int started;
    int stopped;
    SSL_CTX *ssl_ctx; /* NULL for plain HTTP */
    atomic_int stop_requested;
};

/* Requests no route should ever see: a NUL in the decoded path (it would cut
 * C strings short: "/v1/blobs/<sha>%00x" is not "/v1/blobs/<sha>"), and
 * Content-Length headers that disagree (h2o 2.2.5 reads the first and would
 * parse the rest of the body as another request: smuggling). */
static const char *refuse_reason(h2o_req_t *req)
{
    ssize_t i = -1;
    h2o_iovec_t first = {NULL, 0};
    if (memchr(req->path_normalized.base, '\0', req->path_normalized.len) != NULL)
        return "the path contains a NUL character";
    while ((i = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_LENGTH, i)) != -1) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (first.base == NULL)
            first = v;
        else if (!h2o_memis(first.base, first.len, v.base, v.len))
            return "conflicting Content-Length headers";
    }
    return NULL;
}

/* The configurable header limits (h2o's own, fixed ones apply first). */
static int headers_over_limit(prpc_httpd_t *h, h2o_req_t *req)
{
    size_t bytes = 0;
    if (h->cfg.max_headers > 0 && req->headers.size > h->cfg.max_headers) {
        req->http1_is_persistent = 0;
        prpc_httpd_send_error(req, 431, PRPC_ELIMIT,
                              "%zu request headers; the limit is %zu (--max-headers)",
                              req->headers.size, h->cfg.max_headers);
        return 1;
    }
    for (size_t i = 0; i < req->headers.size; i++)
        bytes += req->headers.entries[i].name->len + req->headers.entries[i].value.len;
    if (h->cfg.max_header_bytes > 0 && bytes > h->cfg.max_header_bytes) {
        req->http1_is_persistent = 0;
        prpc_httpd_send_error(req, 431, PRPC_ELIMIT,
                              "%zu bytes of request headers; the limit is %zu (--max-header-bytes)",
                              bytes, h->cfg.max_header_bytes);
        return 1;
    }
    return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    prpc_httpd_t *h = ((handler_ext_t *)self)->owner;
    const char *why = refuse_reason(req);
    if (headers_over_limit(h, req))
        return 0;
    if (why != NULL) {
        req->http1_is_persistent = 0;
        prpc_httpd_send_error(req, 400, PRPC_EINVAL, "bad request: %s", why);
        return 0;
    }
    return h->cfg.on_req(h->cfg.ud, req);
}

static int setup_tls(prpc_httpd_t *h, prpc_error_t *err)
{
    SSL_CTX *ctx;
    if (h->cfg.tls_cert == NULL && h->cfg.tls_key == NULL)
        return 0;
    if (h->cfg.tls_cert == NULL || h->cfg.tls_key == NULL)
        return prpc_error_set(err, PRPC_EINVAL, "TLS needs both a certificate and a key file");
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return prpc_error_set(err, PRPC_ENOMEM, "TLS: cannot create a context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, h->cfg.tls_cert) != 1) {
        SSL_CTX_free(ctx);
        return prpc_error_set(err, PRPC_EINVAL, "TLS: cannot load the certificate chain %s",
                              h->cfg.tls_cert);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, h->cfg.tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        SSL_CTX_free(ctx);
        return prpc_error_set(err, PRPC_EINVAL,
                              "TLS: cannot load the private key %s, or it does not match %s",
                              h->cfg.tls_key, h->cfg.tls_cert);
    }
    h->ssl_ctx = ctx;
    return 0;
}

static size_t open_connections(prpc_httpd_t *h)
{
    size_t n = 0;
    for (h2o_linklist_t *l = h->ctx.http1._conns.next; l != &h->ctx.http1._conns; l = l->next)
        n++;
    return n;
}

/* Over the connection limit: a short 503 naming the limit, written straight
 * to the new socket (a few hundred bytes fit its empty send buffer), then
 * close. A client retries later; the connections already open are served. */
static void refuse_connection(prpc_httpd_t *h, h2o_socket_t *sock)
{
    char body[256], msg[512];
    int fd = h2o_socket_get_fd(sock);
    int nb = snprintf(body, sizeof(body),
                      "{\"error\": {\"code\": \"ELIMIT\", \"message\": \"too many open "
                      "connections (the limit is %zu: --max-connections); retry later\"}}",
                      h->cfg.max_connections);
    int nm = snprintf(msg, sizeof(msg),
                      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s",
                      nb, body);
    if (fd >= 0 && write(fd, msg, (size_t)nm) < 0) {
        /* The peer is gone already: nothing to tell it. */
    }
    h2o_socket_close(sock);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    prpc_httpd_t *h = listener->data;
    h2o_socket_t *sock;
    if (err != NULL)
        return;
    sock = h2o_evloop_socket_accept(listener);
    if (sock == NULL)
        return;
    if (h->cfg.max_connections > 0 && open_connections(h) >= h->cfg.max_connections) {
        refuse_connection(h, sock);
        return;
    }
    h2o_accept(&h->accept_ctx, sock);
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    prpc_httpd_t *h = H2O_STRUCT_FROM_MEMBER(prpc_httpd_t, tick_entry, entry);
    if (h->cfg.on_tick != NULL)
        h->cfg.on_tick(h->cfg.ud, (uint64_t)prpc_now_ms());
    h2o_timeout_link(h->loop, &h->tick_timeout, &h->tick_entry);
}

static void on_wake(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    prpc_httpd_t *h = H2O_STRUCT_FROM_MEMBER(prpc_httpd_t, wake_receiver, receiver);
    /* Messages are only wake-up tokens: unlink and free each (h2o asserts the
     * list is empty afterwards). */
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&m->link);
        free(m);
    }
    if (h->cfg.on_wake != NULL)
        h->cfg.on_wake(h->cfg.ud);
}

static int bind_listener(prpc_httpd_t *h, prpc_error_t *err)
{
    struct addrinfo hints, *res = NULL;
    char portbuf[16];
    int fd = -1, one = 1, rc;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portbuf, sizeof(portbuf), "%d", h->cfg.port);
    rc = getaddrinfo(h->cfg.host, portbuf, &hints, &res);
    if (rc != 0)
        return prpc_error_set(err, PRPC_EINVAL, "cannot resolve listen address %s: %s",
                              h->cfg.host, gai_strerror(rc));
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = prpc_error_errno(err, errno, "creating the listening socket");
        goto out;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
        int e = errno;
        rc = prpc_error_set(err, e == EADDRINUSE ? PRPC_EEXIST : PRPC_EIO,
                            "cannot listen on %s:%d: %s", h->cfg.host, h->cfg.port, strerror(e));
        goto out;
    }
    if (listen(fd, 1024) != 0) {
        rc = prpc_error_errno(err, errno, "listen on %s:%d", h->cfg.host, h->cfg.port);
        goto out;
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0)
        h->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                           : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    h->listen_fd = fd;
    fd = -1;
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return rc;
}

prpc_httpd_t *prpc_httpd_new(const prpc_httpd_config_t *cfg, prpc_error_t *err)
{
    prpc_httpd_t *h = calloc(1, sizeof(*h));
    h2o_hostconf_t *host;
    h2o_pathconf_t *path;
    handler_ext_t *handler;
    size_t n;

    if (h == NULL) {
        prpc_error_set(err, PRPC_ENOMEM, "out of memory creating the HTTP server");
        return NULL;
    }
    h->cfg = *cfg;
    h->listen_fd = -1;
    if (setup_tls(h, err) != 0) {
        free(h);
        return NULL;
    }
    if (bind_listener(h, err) != 0) {
        SSL_CTX_free(h->ssl_ctx);
        free(h);
        return NULL;
    }
    /* h2o spills big bodies to files named from this template; keep them on
     * the data disk, not /tmp (often tmpfs). The setting is process-global. */
    if (cfg->tmp_dir != NULL) {
        n = sizeof(h2o_socket_buffer_mmap_settings.fn_template);
        if (strlen(cfg->tmp_dir) + 16 < n)
            snprintf(h2o_socket_buffer_mmap_settings.fn_template, n, "%s/h2o.b.XXXXXX",
                     cfg->tmp_dir);
    }
    signal(SIGPIPE, SIG_IGN);

    h2o_config_init(&h->globalconf);
    h->globalconf.max_request_entity_size = cfg->max_request_body;
    h->globalconf.http1.req_timeout = cfg->request_timeout_ms;
    h->globalconf.http1.upgrade_to_http2 = 0;
    h->globalconf.server_name = h2o_iovec_init(H2O_STRLIT("p2prpc"));
    host = h2o_config_register_host(&h->globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    path = h2o_config_register_path(host, "/", 0);
    handler = (handler_ext_t *)h2o_create_handler(path, sizeof(*handler));
    handler->super.on_req = on_req;
    handler->owner = h;

    h->loop = h2o_evloop_create();
    h2o_context_init(&h->ctx, h->loop, &h->globalconf);
    h->accept_ctx.ctx = &h->ctx;
    h->accept_ctx.hosts = h->globalconf.hosts;
    h->accept_ctx.ssl_ctx = h->ssl_ctx;
    h->listener = h2o_evloop_socket_create(h->loop, h->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    h->listener->data = h;
    h2o_socket_read_start(h->listener, on_accept);

    h2o_timeout_init(h->loop, &h->tick_timeout, PRPC_HTTPD_TICK_MS);
    h->tick_entry.cb = on_tick;
    h2o_timeout_link(h->loop, &h->tick_timeout, &h->tick_entry);
    h2o_multithread_register_receiver(h->ctx.queue, &h->wake_receiver, on_wake);
    return h;
}

int prpc_httpd_port(const prpc_httpd_t *h)
{
    return h->port;
}

static void close_listener(prpc_httpd_t *h)
{
    if (h->listener != NULL) {
        h2o_socket_read_stop(h->listener);
        h2o_socket_close(h->listener);
        h->listener = NULL;
    }
}

/* Free the input buffers h2o keeps for reuse on this thread: h2o never does,
 * and at the body_buffer size they are 4 MiB each (a stopped server would
 * leave them behind with its thread). */
static void drain_body_buffers(void)
{
    h2o_mem_recycle_t *r = &h2o_socket_buffer_prototype.allocator;
    r->max = 0;
    while (r->cnt > 0)
        free(h2o_mem_alloc_recycle(r, 0));
}

static void *loop_main(void *arg)
{
    prpc_httpd_t *h = arg;
    current_server = h;
    /* h2o keeps a request body in the connection's input buffer, which it
     * grows by doubling from 8 KiB: a 4 MiB chunk meant ten allocations, two
     * body-sized copies and fresh pages every time. Starting at the chunk's
     * size it is read in place into a buffer h2o recycles (per thread, this
     * thread's copy). Few are kept: each one once filled stays resident. */
    if (h->cfg.body_buffer > h2o_socket_buffer_prototype._initial_buf.capacity) {
        h2o_socket_buffer_prototype._initial_buf.capacity = h->cfg.body_buffer;
        h2o_socket_buffer_prototype.allocator.max = HTTPD_BODY_BUFFERS_KEPT;
    }
    while (!atomic_load(&h->stop_requested))
        h2o_evloop_run(h->loop, INT32_MAX);
    if (h->cfg.on_stop != NULL)
        h->cfg.on_stop(h->cfg.ud);
    /* Let the answers given in on_stop reach their sockets. */
    for (int i = 0; i < 10; i++)
        h2o_evloop_run(h->loop, 10);
    /* The last passes run here, not on the thread that frees the server: a
     * socket accepted here takes its buffers from this thread's allocator
     * (h2o_socket_buffer_prototype is per thread), which no other thread may
     * touch, and which is gone with this thread. Connections still open then
     * stay as they are (prpc_httpd_free). */
    close_listener(h);
    for (int i = 0; i < 3; i++)
        h2o_evloop_run(h->loop, 0);
    drain_body_buffers();
    return NULL;
}

int prpc_httpd_start(prpc_httpd_t *h, prpc_error_t *err)
{
    int rc = pthread_create(&h->thread, NULL, loop_main, h);
    if (rc != 0)
        return prpc_error_errno(err, rc, "starting the HTTP loop thread");
    h->started = 1;
    return 0;
}

void prpc_httpd_wake(prpc_httpd_t *h)
{
    h2o_multithread_message_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return; /* a lost wake-up is recovered by the next tick */
    h2o_multithread_send_message(&h->wake_receiver, m);
}

void prpc_httpd_stop(prpc_httpd_t *h)
{
    if (h == NULL || !h->started || h->stopped)
        return;
    atomic_store(&h->stop_requested, 1);
    prpc_httpd_wake(h);
    pthread_join(h->thread, NULL);
    h->stopped = 1;
}

void prpc_httpd_free(prpc_httpd_t *h)
{
    if (h == NULL)
        return;
    prpc_httpd_stop(h);
    /* Stop accepting first; connections still open are closed with the loop.
     * h2o 2.2.5 cannot dispose a context that still has live connections
     * safely, so a stopped server keeps its loop memory until process exit
     * when clients are still connected. */
    h2o_timeout_unlink(&h->tick_entry);
    if (!h->started) { /* else the loop thread did this on its way out */
        close_listener(h);
        for (int i = 0; i < 3; i++)
            h2o_evloop_run(h->loop, 0);
    }
    h2o_multithread_unregister_receiver(h->ctx.queue, &h->wake_receiver);
    if (h2o_linklist_is_empty(&h->ctx.http1._conns)) {
        h2o_timeout_dispose(h->loop, &h->tick_timeout);
        h2o_context_dispose(&h->ctx);
        h2o_evloop_destroy(h->loop);
        h2o_config_dispose(&h->globalconf);
    }
    SSL_CTX_free(h->ssl_ctx);
    free(h);
}

void prpc_httpd_send_json(h2o_req_t *req, int status, const char *json, size_t len)
{
    static h2o_generator_t generator = {NULL, NULL};
    h2o_iovec_t body = h2o_strdup(&req->pool, json, len);
    prpc_httpd_t *h = current_server;
    req->res.status = status;
    req->res.reason = status < 300 ? "OK" : "Error";
    req->res.content_length = body.len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    if (h != NULL && h->cfg.on_respond != NULL)
        h->cfg.on_respond(h->cfg.ud, req, status, body.base, body.len);
    h2o_start_response(req, &generator);
    h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
}

void prpc_httpd_send_error(h2o_req_t *req, int status, int code, const char *fmt, ...)
{
    static const char nomem[] =
        "{\"error\": {\"code\": \"ENOMEM\", \"message\": \"out of memory\"}}";
    char msg[PRPC_ERROR_MSG_MAX];
    prpc_buf_t body = PRPC_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (prpc_wire_write_error(&body, code, msg) == 0)
        prpc_httpd_send_json(req, status, body.data, body.len);
    else
        prpc_httpd_send_json(req, 500, nomem, sizeof(nomem) - 1);
    prpc_buf_cleanup(&body);
}

const char *prpc_httpd_header(h2o_req_t *req, const char *name)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
    h2o_iovec_t v;
    if (i < 0)
        return NULL;
    v = h2o_strdup(&req->pool, req->headers.entries[i].value.base,
                   req->headers.entries[i].value.len);
    return v.base;
}

const char *prpc_httpd_query(h2o_req_t *req, const char *name)
{
    size_t nlen = strlen(name);
    const char *q, *end;
    if (req->query_at == SIZE_MAX)
        return NULL;
    q = req->path.base + req->query_at + 1;
    end = req->path.base + req->path.len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp != NULL ? amp : end;
        if ((size_t)(stop - q) > nlen && memcmp(q, name, nlen) == 0 && q[nlen] == '=') {
            const char *v = q + nlen + 1;
            char *out = h2o_mem_alloc_pool(&req->pool, (size_t)(stop - v) + 1);
            size_t o = 0;
            while (v < stop) {
                if (*v == '%' && stop - v >= 3 && prpc_hex_digit(v[1]) >= 0 && prpc_hex_digit(v[2]) >= 0) {
                    out[o++] = (char)(prpc_hex_digit(v[1]) * 16 + prpc_hex_digit(v[2]));
                    v += 3;
                } else {
                    out[o++] = *v == '+' ? ' ' : *v;
                    v++;
                }
            }
            out[o] = '\0';
            /* A decoded NUL would cut the value short: treat the parameter as
             * absent, so the request is refused as malformed. */
            return memchr(out, '\0', o) != NULL ? NULL : out;
        }
        q = stop + 1;
    }
    return NULL;
}
