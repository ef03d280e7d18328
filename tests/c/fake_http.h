/*
 * fake_http.h - a tiny threaded HTTP/1.1 server for the client-side tests
 * (test_httpc.c, test_worker.c). It listens on 127.0.0.1, serves each
 * connection on its own thread with keep-alive, answers "Expect:
 * 100-continue", and hands every parsed request to the test's handler, which
 * fills the answer. It counts accepted connections and requests so tests can
 * check connection reuse. fake_sign() signs an answer the way the broker
 * does, so tests can also send answers that are unsigned, wrongly signed or
 * replayed. Header-only: each test program includes it once.
 */
#ifndef PRPC_FAKE_HTTP_H
#define PRPC_FAKE_HTTP_H

#include "auth.h"
#include "blob.h"
#include "common.h"
#include "hash.h"
#include "util.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define FAKE_FN static __attribute__((unused))
#define FAKE_MAX_CONNS 64
#define FAKE_HEAD_MAX 16384

typedef struct fake_req {
    char method[16];
    char path[2048];            /* path and query as sent */
    char head[FAKE_HEAD_MAX];   /* the header lines, raw */
    char *body;                 /* NUL-terminated copy, body_len bytes */
    size_t body_len;
} fake_req_t;

typedef struct fake_resp {
    int status;
    char headers[1024]; /* extra header lines, each ending "\r\n" */
    char *body;         /* malloc'd by the handler (freed by the server) or NULL */
    size_t body_len;
    int delay_ms;       /* wait this long before answering (ends early on stop) */
    int close;          /* close the connection after this answer */
} fake_resp_t;

typedef void (*fake_handler_fn)(void *ud, const fake_req_t *req, fake_resp_t *resp);

typedef struct fake_server {
    int listen_fd;
    int port;
    int stop_pipe[2];
    pthread_t thread;
    fake_handler_fn handler;
    void *ud;
    pthread_mutex_t mu;
    int accepts;  /* connections accepted */
    int requests; /* requests answered */
    int nconns;
    pthread_t conns[FAKE_MAX_CONNS];
    int conn_fds[FAKE_MAX_CONNS];
} fake_server_t;

struct fake_conn_arg {
    fake_server_t *srv;
    int fd;
};

/* Copy header `name`'s value into out (empty when absent); returns 1 if found. */
FAKE_FN int fake_header(const fake_req_t *req, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = req->head;
    out[0] = '\0';
    while (*p) {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            size_t vl = len - nl - 1;
            while (vl > 0 && *v == ' ')
                v++, vl--;
            if (vl >= cap)
                vl = cap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return 1;
        }
        if (eol == NULL)
            break;
        p = eol + 2;
    }
    return 0;
}

/* Wait up to ms for fd to become readable or the server to stop: 1 readable,
 * 0 timeout, -1 stopping. */
FAKE_FN int fake_wait(fake_server_t *srv, int fd, int ms)
{
    struct pollfd p[2] = {{srv->stop_pipe[0], POLLIN, 0}, {fd, POLLIN, 0}};
    int n = poll(p, fd >= 0 ? 2 : 1, ms);
    if (n > 0 && p[0].revents)
        return -1;
    return n > 0 ? 1 : 0;
}

FAKE_FN int fake_send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t w = send(fd, data, len, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        data += w;
        len -= (size_t)w;
    }
    return 0;
}

static void *fake_conn_main(void *arg)
{
    struct fake_conn_arg *ca = arg;
    fake_server_t *srv = ca->srv;
    int fd = ca->fd;
    size_t cap = FAKE_HEAD_MAX * 2, have = 0;
    char *buf = malloc(cap);
    free(ca);
    for (;;) {
        fake_req_t *req = calloc(1, sizeof(*req));
        fake_resp_t resp;
        char *end = NULL, cl[32], expect[64], line[4096];
        size_t head_len, want, hl;
        int n;
        /* Read the head. */
        while ((end = memmem(buf, have, "\r\n\r\n", 4)) == NULL) {
            ssize_t r;
            if (have == cap || fake_wait(srv, fd, -1) < 0)
                goto done_req;
            r = recv(fd, buf + have, cap - have, 0);
            if (r <= 0)
                goto done_req;
            have += (size_t)r;
        }
        head_len = (size_t)(end - buf) + 4;
        {
            char *sp1 = memchr(buf, ' ', head_len), *sp2, *eol = memmem(buf, head_len, "\r\n", 2);
            if (sp1 == NULL || eol == NULL)
                goto done_req;
            sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
            if (sp2 == NULL || (size_t)(sp1 - buf) >= sizeof(req->method) ||
                (size_t)(sp2 - sp1 - 1) >= sizeof(req->path))
                goto done_req;
            memcpy(req->method, buf, (size_t)(sp1 - buf));
            memcpy(req->path, sp1 + 1, (size_t)(sp2 - sp1 - 1));
            hl = head_len - (size_t)(eol + 2 - buf);
            if (hl >= sizeof(req->head))
                goto done_req;
            memcpy(req->head, eol + 2, hl);
        }
        memmove(buf, buf + head_len, have - head_len);
        have -= head_len;
        want = fake_header(req, "Content-Length", cl, sizeof(cl)) ? strtoull(cl, NULL, 10) : 0;
        if (fake_header(req, "Expect", expect, sizeof(expect)) && strcasecmp(expect,
                                                                             "100-continue") == 0)
            fake_send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        req->body = malloc(want + 1);
        while (have < want && req->body != NULL) {
            ssize_t r;
            memcpy(req->body + req->body_len, buf, have);
            req->body_len += have;
            want -= have;
            have = 0;
            if (fake_wait(srv, fd, -1) < 0)
                goto done_req;
            r = recv(fd, buf, cap < want ? cap : want, 0);
            if (r <= 0)
                goto done_req;
            have = (size_t)r;
        }
        if (req->body == NULL)
            goto done_req;
        memcpy(req->body + req->body_len, buf, want);
        req->body_len += want;
        req->body[req->body_len] = '\0';
        memmove(buf, buf + want, have - want);
        have -= want;

        memset(&resp, 0, sizeof(resp));
        resp.status = 200;
        srv->handler(srv->ud, req, &resp);
        if (resp.delay_ms > 0 && fake_wait(srv, -1, resp.delay_ms) < 0) {
            free(resp.body);
            goto done_req;
        }
        n = snprintf(line, sizeof(line),
                     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s%s\r\n", resp.status,
                     resp.body_len, resp.headers, resp.close ? "Connection: close\r\n" : "");
        pthread_mutex_lock(&srv->mu);
        srv->requests++;
        pthread_mutex_unlock(&srv->mu);
        if (fake_send_all(fd, line, (size_t)n) != 0 ||
            (strcmp(req->method, "HEAD") != 0 && resp.body_len > 0 &&
             fake_send_all(fd, resp.body, resp.body_len) != 0) ||
            resp.close) {
            free(resp.body);
            goto done_req;
        }
        free(resp.body);
        free(req->body);
        free(req);
        continue;
    done_req:
        free(req->body);
        free(req);
        break;
    }
    free(buf);
    close(fd);
    return NULL;
}

static void *fake_accept_main(void *arg)
{
    fake_server_t *srv = arg;
    for (;;) {
        struct fake_conn_arg *ca;
        int fd;
        if (fake_wait(srv, srv->listen_fd, -1) < 0)
            break;
        fd = accept(srv->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&srv->mu);
        if (srv->nconns == FAKE_MAX_CONNS) {
            pthread_mutex_unlock(&srv->mu);
            close(fd);
            continue;
        }
        srv->accepts++;
        ca = malloc(sizeof(*ca));
        ca->srv = srv;
        ca->fd = fd;
        pthread_create(&srv->conns[srv->nconns++], NULL, fake_conn_main, ca);
        pthread_mutex_unlock(&srv->mu);
    }
    return NULL;
}

/* Start a server on an ephemeral port. Returns 0 or -1. */
FAKE_FN int fake_start(fake_server_t *srv, fake_handler_fn handler, void *ud)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int one = 1;
    memset(srv, 0, sizeof(*srv));
    srv->handler = handler;
    srv->ud = ud;
    pthread_mutex_init(&srv->mu, NULL);
    if (pipe(srv->stop_pipe) != 0)
        return -1;
    srv->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(srv->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(srv->listen_fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(srv->listen_fd, 64) != 0 ||
        getsockname(srv->listen_fd, (struct sockaddr *)&a, &alen) != 0)
        return -1;
    srv->port = ntohs(a.sin_port);
    return pthread_create(&srv->thread, NULL, fake_accept_main, srv) == 0 ? 0 : -1;
}

FAKE_FN void fake_stop(fake_server_t *srv)
{
    if (write(srv->stop_pipe[1], "x", 1) != 1)
        return;
    pthread_join(srv->thread, NULL);
    for (int i = 0; i < srv->nconns; i++)
        pthread_join(srv->conns[i], NULL);
    close(srv->listen_fd);
    close(srv->stop_pipe[0]);
    close(srv->stop_pipe[1]);
    pthread_mutex_destroy(&srv->mu);
}

FAKE_FN int fake_count(fake_server_t *srv, int *field)
{
    int v;
    pthread_mutex_lock(&srv->mu);
    v = *field;
    pthread_mutex_unlock(&srv->mu);
    return v;
}

/* Set a malloc'd copy of a string as the answer's body. */
FAKE_FN void fake_body(fake_resp_t *resp, const char *s)
{
    resp->body_len = strlen(s);
    resp->body = malloc(resp->body_len + 1);
    memcpy(resp->body, s, resp->body_len + 1);
}

/* Append an X-P2PRPC-Signature header line with value sig to the answer. */
FAKE_FN void fake_add_signature(fake_resp_t *resp, const char *sig)
{
    size_t n = strlen(resp->headers);
    snprintf(resp->headers + n, sizeof(resp->headers) - n, "X-P2PRPC-Signature: %s\r\n", sig);
}

/* The broker's signature of the answer to the request that carried nonce
 * (docs/API.md "Authentication": status, nonce, SHA-256 of the body). */
FAKE_FN void fake_signature(const fake_resp_t *resp, const uint8_t *key, const char *nonce,
                            char sig[PRPC_AUTH_SIG_HEX])
{
    uint8_t d[PRPC_SHA256_LEN];
    char body_hex[PRPC_SHA256_HEX_LEN + 1];
    prpc_sha256(resp->body != NULL ? resp->body : "", resp->body_len, d, NULL);
    prpc_hex_encode(d, sizeof(d), body_hex);
    prpc_auth_sign_response(key, resp->status, nonce, body_hex, sig);
}

/* Sign the answer as the broker does and add the header. sig_out (may be
 * NULL) receives the hex signature. */
FAKE_FN void fake_sign(fake_resp_t *resp, const uint8_t *key, const char *nonce,
                       char sig_out[PRPC_AUTH_SIG_HEX])
{
    char sig[PRPC_AUTH_SIG_HEX];
    fake_signature(resp, key, nonce, sig);
    fake_add_signature(resp, sig);
    if (sig_out != NULL)
        memcpy(sig_out, sig, sizeof(sig));
}

/* ---- a broker's blob endpoints (docs/API.md "Blobs") over a prpc_blobdir ---- */

typedef struct fake_blobs {
    pthread_mutex_t mu;
    prpc_blobdir_t *bd;
    int heads, puts, gets, commits;
    uint64_t first_put_offset;
    int corrupt_gets; /* GETs still to answer with a flipped byte */
    char last_range[64];
} fake_blobs_t;

FAKE_FN void fake_error(fake_resp_t *resp, int status, const char *code, const char *msg)
{
    char b[700];
    snprintf(b, sizeof(b), "{\"error\": {\"code\": \"%s\", \"message\": \"%s\"}}", code, msg);
    resp->status = status;
    fake_body(resp, b);
}

FAKE_FN void fake_blob_route(fake_blobs_t *st, const fake_req_t *req, fake_resp_t *resp)
{
    char sha[65], hdr[128], b[128];
    const char *rest = req->path + strlen("/v1/blobs/");
    prpc_error_t err;
    uint64_t size = 0, n = 0;
    int rc;
    snprintf(sha, sizeof(sha), "%.64s", rest);
    rest += strlen(sha);
    pthread_mutex_lock(&st->mu);
    if (strcmp(req->method, "HEAD") == 0) {
        st->heads++;
        if (prpc_blobdir_stat(st->bd, sha, &size, NULL) == 0) {
            resp->body_len = size; /* HEAD: the length without the bytes */
        } else {
            prpc_blobdir_partial(st->bd, sha, &n, NULL);
            resp->status = 404;
            snprintf(resp->headers, sizeof(resp->headers), "X-P2PRPC-Partial: %" PRIu64 "\r\n", n);
        }
    } else if (strcmp(req->method, "PUT") == 0) {
        uint64_t off = strtoull(rest + strlen("?offset="), NULL, 10), partial = 0;
        /* As the broker does: a chunk that came before the one it continues
         * (two on the wire at once) waits a while for it. */
        for (int i = 0; i < 2000 && prpc_blobdir_partial(st->bd, sha, &n, NULL) == 0 &&
                        off == n + PRPC_BLOB_UPLOAD_CHUNK;
             i++) {
            pthread_mutex_unlock(&st->mu);
            usleep(1000);
            pthread_mutex_lock(&st->mu);
        }
        if (st->puts++ == 0)
            st->first_put_offset = off;
        fake_header(req, "X-P2PRPC-Chunk-Sha256", hdr, sizeof(hdr));
        rc = prpc_blobdir_write_chunk(st->bd, sha, off, req->body, req->body_len, hdr, &partial,
                                      &err);
        if (rc == 0) {
            snprintf(b, sizeof(b), "{\"partial\": %" PRIu64 "}", partial);
            fake_body(resp, b);
        } else {
            fake_error(resp, rc == PRPC_ESTATE ? 409 : 400, prpc_strerror(rc), err.message);
        }
    } else if (strcmp(req->method, "POST") == 0 && strncmp(rest, "/commit?size=", 13) == 0) {
        st->commits++;
        rc = prpc_blobdir_commit(st->bd, sha, strtoull(rest + 13, NULL, 10), &err);
        if (rc == 0)
            fake_body(resp, "{}");
        else
            fake_error(resp, 400, prpc_strerror(rc), err.message);
    } else if (strcmp(req->method, "GET") == 0) {
        char path[PRPC_BLOB_PATH_MAX], range[64];
        uint64_t from = 0;
        FILE *f;
        st->gets++;
        fake_header(req, "Range", range, sizeof(range));
        snprintf(st->last_range, sizeof(st->last_range), "%s", range);
        if (range[0])
            from = strtoull(range + strlen("bytes="), NULL, 10);
        prpc_blobdir_path(st->bd, sha, path, NULL);
        f = fopen(path, "rb");
        if (f == NULL) {
            fake_error(resp, 404, "ENOTFOUND", "no such blob");
        } else {
            fseek(f, 0, SEEK_END);
            size = (uint64_t)ftell(f);
            if (from >= size && size > 0) {
                resp->status = 416;
            } else {
                resp->body_len = size - from;
                resp->body = malloc(resp->body_len + 1);
                fseek(f, (long)from, SEEK_SET);
                if (fread(resp->body, 1, resp->body_len, f) != resp->body_len)
                    resp->status = 500;
                if (st->corrupt_gets > 0 && resp->body_len > 0) {
                    st->corrupt_gets--;
                    resp->body[resp->body_len / 2] ^= 0x55;
                }
                if (range[0]) {
                    resp->status = 206;
                    snprintf(resp->headers, sizeof(resp->headers),
                             "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64 "\r\n", from,
                             size - 1, size);
                }
            }
            fclose(f);
        }
    }
    pthread_mutex_unlock(&st->mu);
}


#endif
