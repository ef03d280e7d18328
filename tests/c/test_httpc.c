/* test_httpc.c - the wire's client side against a fake broker in this process. */
#include "auth.h"
#include "blob.h"
#include "common.h"
#include "fault.h"
#include "hash.h"
#include "httpc.h"
#include "test.h"
#include "util.h"

#include "fake_http.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <time.h>

static const uint8_t KEY[PRPC_AUTH_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9};

/* How the fake broker signs its answers to signed requests. */
enum sign_mode {
    SIGN_OK,        /* as the broker does: for this request's nonce */
    SIGN_NONE,      /* no X-P2PRPC-Signature */
    SIGN_BAD,       /* one hex digit of the right signature changed */
    SIGN_MALFORMED, /* a header that is not 64 hex digits */
    SIGN_REPLAY,    /* the previous signed answer again, signature and all */
};

typedef struct state {
    pthread_mutex_t mu;
    fake_blobs_t blobs;     /* the fake broker's blob store */
    int require_auth;       /* refuse requests that do not verify with KEY */
    int signed_ok;          /* requests whose signature verified */
    int unsigned_seen;      /* requests without a signature header */
    enum sign_mode sign;    /* applied to answers whose path contains sign_match */
    const char *sign_match; /* NULL: every path */
    int last_status;        /* the last answer signed correctly, for SIGN_REPLAY */
    char *last_body;
    size_t last_len;
    char last_sig[PRPC_AUTH_SIG_HEX];
} state_t;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void route_request(state_t *st, const fake_req_t *req, fake_resp_t *resp);

/* Sign the answer like the broker's on_respond, or misbehave as st->sign says.
 * Like the broker, HEAD answers and a blob's bytes are never signed. */
static void sign_answer(state_t *st, const fake_req_t *req, fake_resp_t *resp)
{
    char nonce[64], sig[PRPC_AUTH_SIG_HEX];
    enum sign_mode mode = SIGN_OK;
    if (!fake_header(req, "X-P2PRPC-Nonce", nonce, sizeof(nonce)) ||
        strcmp(req->method, "HEAD") == 0 ||
        (strcmp(req->method, "GET") == 0 && strncmp(req->path, "/v1/blobs/", 10) == 0 &&
         (resp->status == 200 || resp->status == 206)))
        return;
    pthread_mutex_lock(&st->mu);
    if (st->sign_match == NULL || strstr(req->path, st->sign_match) != NULL)
        mode = st->sign;
    switch (mode) {
    case SIGN_OK:
        fake_sign(resp, KEY, nonce, sig);
        free(st->last_body);
        st->last_body = malloc(resp->body_len + 1);
        memcpy(st->last_body, resp->body != NULL ? resp->body : "", resp->body_len);
        st->last_len = resp->body_len;
        st->last_status = resp->status;
        memcpy(st->last_sig, sig, sizeof(sig));
        break;
    case SIGN_NONE:
        break;
    case SIGN_BAD:
        fake_signature(resp, KEY, nonce, sig);
        sig[0] = sig[0] == '0' ? '1' : '0';
        fake_add_signature(resp, sig);
        break;
    case SIGN_MALFORMED:
        fake_add_signature(resp, "not-a-signature");
        break;
    case SIGN_REPLAY:
        free(resp->body);
        resp->body = malloc(st->last_len + 1);
        memcpy(resp->body, st->last_body, st->last_len);
        resp->body_len = st->last_len;
        resp->status = st->last_status;
        fake_add_signature(resp, st->last_sig);
        break;
    }
    pthread_mutex_unlock(&st->mu);
}

static void handler(void *ud, const fake_req_t *req, fake_resp_t *resp)
{
    route_request(ud, req, resp);
    sign_answer(ud, req, resp);
}

static void route_request(state_t *st, const fake_req_t *req, fake_resp_t *resp)
{
    char t[64], nonce[64], sig[128], body_hex[65];
    uint8_t d[PRPC_SHA256_LEN];
    prpc_error_t err;

    if (fake_header(req, "X-P2PRPC-Signature", sig, sizeof(sig))) {
        fake_header(req, "X-P2PRPC-Time", t, sizeof(t));
        fake_header(req, "X-P2PRPC-Nonce", nonce, sizeof(nonce));
        prpc_sha256(req->body, req->body_len, d, NULL);
        prpc_hex_encode(d, sizeof(d), body_hex);
        if (prpc_auth_verify(KEY, req->method, req->path, t, nonce, body_hex, sig, prpc_now_ms(),
                             &err) == 0) {
            pthread_mutex_lock(&st->mu);
            st->signed_ok++;
            pthread_mutex_unlock(&st->mu);
        } else if (st->require_auth) {
            fake_error(resp, 401, "EAUTH", err.message);
            return;
        }
    } else {
        pthread_mutex_lock(&st->mu);
        st->unsigned_seen++;
        pthread_mutex_unlock(&st->mu);
        if (st->require_auth) {
            fake_error(resp, 401, "EAUTH", "missing signature");
            return;
        }
    }
    if (strncmp(req->path, "/v1/blobs/", 10) == 0) {
        fake_blob_route(&st->blobs, req, resp);
    } else if (strcmp(req->path, "/hello") == 0) {
        fake_body(resp, "{\"hello\": true}");
    } else if (strncmp(req->path, "/echo", 5) == 0) {
        resp->body = malloc(req->body_len + 1);
        memcpy(resp->body, req->body, req->body_len + 1);
        resp->body_len = req->body_len;
        snprintf(resp->headers, sizeof(resp->headers), "X-Method: %s\r\n", req->method);
    } else if (strcmp(req->path, "/slow") == 0) {
        resp->delay_ms = 3000;
        fake_body(resp, "late");
    } else if (strcmp(req->path, "/big") == 0) {
        resp->body_len = PRPC_HTTPC_MAX_BODY + 1;
        resp->body = calloc(1, resp->body_len);
    } else if (strcmp(req->path, "/full") == 0) {
        resp->body_len = PRPC_HTTPC_MAX_BODY;
        resp->body = malloc(resp->body_len);
        memset(resp->body, 'x', resp->body_len);
    } else if (strcmp(req->path, "/denied") == 0) {
        fake_error(resp, 401, "EAUTH", "signature does not verify");
    } else if (strcmp(req->path, "/conflict") == 0) {
        fake_error(resp, 409, "EVERSION", "client has v1, broker has v2");
    } else {
        fake_error(resp, 404, "ENOTFOUND", "no such path");
    }
}

typedef struct fixture {
    state_t st;
    fake_server_t srv;
    char dir[64];    /* scratch directory */
    char url[64];
} fixture_t;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    PRPC_UNUSED(sb);
    PRPC_UNUSED(flag);
    PRPC_UNUSED(f);
    return remove(p);
}

static int fixture_up(fixture_t *fx)
{
    char sub[128];
    memset(fx, 0, sizeof(*fx));
    pthread_mutex_init(&fx->st.mu, NULL);
    pthread_mutex_init(&fx->st.blobs.mu, NULL);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/prpc-httpc-XXXXXX");
    if (mkdtemp(fx->dir) == NULL)
        return -1;
    snprintf(sub, sizeof(sub), "%s/broker", fx->dir);
    fx->st.blobs.bd = prpc_blobdir_open(sub, NULL);
    if (fx->st.blobs.bd == NULL || fake_start(&fx->srv, handler, &fx->st) != 0)
        return -1;
    snprintf(fx->url, sizeof(fx->url), "127.0.0.1:%d", fx->srv.port);
    return 0;
}

static void fixture_down(fixture_t *fx)
{
    fake_stop(&fx->srv);
    prpc_blobdir_free(fx->st.blobs.bd);
    nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    pthread_mutex_destroy(&fx->st.mu);
    pthread_mutex_destroy(&fx->st.blobs.mu);
    free(fx->st.last_body);
}

/* Write n pseudo-random bytes to a new file under dir; returns an fd and the sha. */
static int make_file(const char *dir, const char *name, size_t n, char sha[65])
{
    char path[256];
    uint8_t d[PRPC_SHA256_LEN];
    unsigned char *b = malloc(n ? n : 1);
    uint32_t x = 2463534242u;
    int fd;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        b[i] = (unsigned char)x;
    }
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, b, n) != (ssize_t)n) {
        free(b);
        return -1;
    }
    prpc_sha256(b, n, d, NULL);
    prpc_hex_encode(d, sizeof(d), sha);
    free(b);
    return fd;
}

TEST(base_url_forms)
{
    prpc_error_t err;
    prpc_httpc_t *h = prpc_httpc_new("  10.0.0.1:8080/\n", NULL, 0, &err);
    CHECK(h != NULL);
    CHECK_EQ_STR(prpc_httpc_base_url(h), "http://10.0.0.1:8080");
    prpc_httpc_free(h);
    h = prpc_httpc_new("https://b.example:443", NULL, 0, &err);
    CHECK(h != NULL);
    CHECK_EQ_STR(prpc_httpc_base_url(h), "https://b.example:443");
    prpc_httpc_free(h);
    CHECK(prpc_httpc_new("http://h:1/api", NULL, 0, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(strstr(err.message, "'http://h:1/api'") != NULL);
    CHECK(prpc_httpc_new("   ", NULL, 0, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(prpc_httpc_new("h:1\tx", NULL, 0, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
}

TEST(refused_is_econn_naming_url)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    char url[64], *body = (char *)"x";
    prpc_error_t err;
    long status = -1;
    int64_t t0;
    int fd = socket(AF_INET, SOCK_STREAM, 0), rc;
    prpc_httpc_t *h;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
    close(fd); /* nothing listens there now */
    snprintf(url, sizeof(url), "127.0.0.1:%d", ntohs(a.sin_port));
    h = prpc_httpc_new(url, NULL, 2000, &err);
    CHECK(h != NULL);
    t0 = now_ms();
    rc = prpc_httpc_request(h, "GET", "/v1/health", NULL, 0, 5000, &status, &body, NULL, &err);
    prpc_httpc_free(h);
    CHECK_EQ_INT(rc, PRPC_ECONN);
    CHECK(body == NULL);
    CHECK(now_ms() - t0 < 1000);
    CHECK(strstr(err.message, url) != NULL);
    CHECK(strstr(err.message, "/v1/health") != NULL);
}

TEST(timeout_is_etimedout)
{
    fixture_t fx;
    prpc_error_t err;
    long status;
    int64_t t0;
    int rc;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    t0 = now_ms();
    rc = prpc_httpc_request(h, "GET", "/slow", NULL, 0, 300, &status, NULL, NULL, &err);
    prpc_httpc_free(h);
    fixture_down(&fx);
    CHECK_EQ_INT(rc, PRPC_ETIMEDOUT);
    CHECK(now_ms() - t0 < 2000);
    CHECK(strstr(err.message, "/slow") != NULL);
}

TEST(cancel_flag_ends_a_long_poll)
{
    fixture_t fx;
    prpc_error_t err;
    atomic_int flag = 1;
    long status;
    int64_t t0;
    int rc;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    prpc_httpc_set_cancel(h, &flag);
    t0 = now_ms();
    rc = prpc_httpc_request(h, "GET", "/slow", NULL, 0, 0, &status, NULL, NULL, &err);
    prpc_httpc_set_cancel(h, NULL);
    CHECK_EQ_INT(rc, PRPC_ESTATE);
    CHECK(strstr(err.message, "cancelled") != NULL);
    CHECK(now_ms() - t0 < 2500);
    /* The handle still works once the flag is cleared. */
    rc = prpc_httpc_request(h, "GET", "/hello", NULL, 0, 2000, &status, NULL, NULL, &err);
    prpc_httpc_free(h);
    fixture_down(&fx);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(status, 200);
}

TEST(keep_alive_reuses_one_connection)
{
    fixture_t fx;
    prpc_error_t err;
    char *body = NULL, sent[64];
    size_t len = 0;
    long status = 0;
    int rc = 0;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    for (int i = 0; i < 25 && rc == 0; i++) {
        const char *method = i % 3 == 0 ? "POST" : i % 3 == 1 ? "PUT" : "GET";
        snprintf(sent, sizeof(sent), "{\"i\": %d}", i);
        free(body);
        body = NULL;
        rc = prpc_httpc_request(h, method, "/echo", i % 3 == 2 ? NULL : sent,
                                i % 3 == 2 ? 0 : strlen(sent), 2000, &status, &body, &len, &err);
        if (rc == 0 && i % 3 != 2 && (len != strlen(sent) || strcmp(body, sent) != 0))
            rc = -100;
        if (rc == 0 && i % 3 == 2 && (len != 0 || body[0] != '\0'))
            rc = -101;
    }
    free(body);
    prpc_httpc_free(h);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(status, 200);
    CHECK_EQ_INT(fake_count(&fx.srv, &fx.srv.requests), 25);
    CHECK_EQ_INT(fake_count(&fx.srv, &fx.srv.accepts), 1);
    fixture_down(&fx);
}

TEST(status_is_not_an_error_but_401_is)
{
    fixture_t fx;
    prpc_error_t err;
    char *body = NULL;
    long status = 0;
    int rc, rc401;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    rc = prpc_httpc_request(h, "DELETE", "/nope", NULL, 0, 2000, &status, &body, NULL, &err);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(status, 404);
    CHECK(strstr(body, "ENOTFOUND") != NULL);
    free(body);
    body = NULL;
    rc401 = prpc_httpc_request(h, "GET", "/denied", NULL, 0, 2000, &status, &body, NULL, &err);
    prpc_httpc_free(h);
    fixture_down(&fx);
    CHECK_EQ_INT(rc401, PRPC_EAUTH);
    CHECK_EQ_INT(status, 401);
    CHECK(body == NULL);
    CHECK(strstr(err.message, "signature does not verify") != NULL);
    CHECK(strstr(err.message, "/denied") != NULL);
}

TEST(answer_over_cap_is_elimit)
{
    fixture_t fx;
    prpc_error_t err;
    char *body = NULL;
    size_t len = 0;
    long status;
    int rc_big, rc_full;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    rc_big = prpc_httpc_request(h, "GET", "/big", NULL, 0, 5000, &status, &body, &len, &err);
    CHECK_EQ_INT(rc_big, PRPC_ELIMIT);
    CHECK(body == NULL);
    CHECK(strstr(err.message, "/big") != NULL);
    CHECK(strstr(err.message, "4194304") != NULL);
    rc_full = prpc_httpc_request(h, "GET", "/full", NULL, 0, 5000, &status, &body, &len, &err);
    prpc_httpc_free(h);
    fixture_down(&fx);
    CHECK_EQ_INT(rc_full, 0);
    CHECK_EQ_INT(len, PRPC_HTTPC_MAX_BODY);
    CHECK(body[len - 1] == 'x' && body[len] == '\0');
    free(body);
}

TEST(requests_are_signed_and_verify)
{
    fixture_t fx;
    prpc_error_t err;
    const char *json = "{\"worker\": \"w1\"}";
    long status = 0;
    int rc1, rc2, rc3;
    prpc_httpc_t *h, *open_h, *bad;
    uint8_t wrong[PRPC_AUTH_KEY_LEN] = {9};
    CHECK(fixture_up(&fx) == 0);
    fx.st.require_auth = 1;
    h = prpc_httpc_new(fx.url, KEY, 1000, &err);
    rc1 = prpc_httpc_request(h, "POST", "/echo?x=1", json, strlen(json), 2000, &status, NULL,
                             NULL, &err);
    CHECK_EQ_INT(rc1, 0);
    CHECK_EQ_INT(status, 200);
    rc1 = prpc_httpc_request(h, "GET", "/hello", NULL, 0, 2000, &status, NULL, NULL, &err);
    CHECK_EQ_INT(rc1, 0);
    CHECK_EQ_INT(fx.st.signed_ok, 2);
    open_h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    rc2 = prpc_httpc_request(open_h, "GET", "/hello", NULL, 0, 2000, &status, NULL, NULL, &err);
    CHECK_EQ_INT(rc2, PRPC_EAUTH);
    CHECK(strstr(err.message, "missing signature") != NULL);
    CHECK_EQ_INT(fx.st.unsigned_seen, 1);
    bad = prpc_httpc_new(fx.url, wrong, 1000, &err);
    rc3 = prpc_httpc_request(bad, "GET", "/hello", NULL, 0, 2000, &status, NULL, NULL, &err);
    prpc_httpc_free(h);
    prpc_httpc_free(open_h);
    prpc_httpc_free(bad);
    fixture_down(&fx);
    CHECK_EQ_INT(rc3, PRPC_EAUTH);
    CHECK_EQ_INT(status, 401);
}

TEST(status_error_maps_broker_codes)
{
    prpc_error_t err;
    const char *e = "{\"error\": {\"code\": \"EVERSION\", \"message\": \"client v1, broker v2\"}}";
    CHECK_EQ_INT(prpc_httpc_status_error(409, e, strlen(e), "submitting f", &err), PRPC_EVERSION);
    CHECK_EQ_STR(err.message, "submitting f: client v1, broker v2");
    CHECK_EQ_INT(prpc_httpc_status_error(404, "gone\n", 5, "x", &err), PRPC_ENOTFOUND);
    CHECK_EQ_STR(err.message, "x: HTTP 404 from the broker: gone.");
    CHECK_EQ_INT(prpc_httpc_status_error(502, NULL, 0, "y", &err), PRPC_EPROTO);
    CHECK(strstr(err.message, "HTTP 502") != NULL);
    e = "{\"error\": {\"code\": \"EWHAT\", \"message\": \"m\"}}";
    CHECK_EQ_INT(prpc_httpc_status_error(409, e, strlen(e), "z", &err), PRPC_ESTATE);
}

TEST(bad_request_line_is_einval)
{
    prpc_error_t err;
    long status;
    prpc_httpc_t *h = prpc_httpc_new("127.0.0.1:1", NULL, 100, &err);
    CHECK_EQ_INT(prpc_httpc_request(h, "GET", "v1/x", NULL, 0, 100, &status, NULL, NULL, &err),
                 PRPC_EINVAL);
    CHECK(strstr(err.message, "v1/x") != NULL);
    CHECK_EQ_INT(prpc_httpc_request(h, "get", "/x", NULL, 0, 100, &status, NULL, NULL, &err),
                 PRPC_EINVAL);
    CHECK_EQ_INT(prpc_httpc_request(h, "GET", "/a b\r\nX: y", NULL, 0, 100, &status, NULL, NULL,
                                    &err),
                 PRPC_EINVAL);
    prpc_httpc_free(h);
}

TEST(upload_chunks_dedups_and_resumes)
{
    fixture_t fx;
    prpc_error_t err;
    char sha[65];
    size_t n = 2 * PRPC_BLOB_UPLOAD_CHUNK + 12345;
    uint64_t size = 0, partial = 0;
    char *chunk;
    int fd, rc;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    fx.st.require_auth = 1;
    fd = make_file(fx.dir, "big.bin", n, sha);
    CHECK(fd >= 0);
    lseek(fd, 7, SEEK_SET);
    h = prpc_httpc_new(fx.url, KEY, 1000, &err);
    rc = prpc_httpc_upload_blob(h, fd, sha, n, &err);
    if (rc != 0)
        fprintf(stderr, "  %s\n", err.message);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(fx.st.blobs.puts, 3);
    CHECK_EQ_INT(fx.st.blobs.commits, 1);
    CHECK_EQ_INT(prpc_blobdir_stat(fx.st.blobs.bd, sha, &size, &err), 0);
    CHECK_EQ_INT(size, n);
    CHECK_EQ_INT(lseek(fd, 0, SEEK_CUR), 7); /* pread only */
    /* Held already: one HEAD, nothing sent. */
    CHECK_EQ_INT(prpc_httpc_upload_blob(h, fd, sha, n, &err), 0);
    CHECK_EQ_INT(fx.st.blobs.heads, 2);
    CHECK_EQ_INT(fx.st.blobs.puts, 3);
    CHECK_EQ_INT(fx.st.blobs.commits, 1);
    /* Resume: the broker already has the first chunk of a new blob. */
    close(fd);
    fd = make_file(fx.dir, "big2.bin", n - 1, sha);
    chunk = malloc(PRPC_BLOB_UPLOAD_CHUNK);
    CHECK(pread(fd, chunk, PRPC_BLOB_UPLOAD_CHUNK, 0) == PRPC_BLOB_UPLOAD_CHUNK);
    CHECK_EQ_INT(prpc_blobdir_write_chunk(fx.st.blobs.bd, sha, 0, chunk, PRPC_BLOB_UPLOAD_CHUNK, NULL,
                                          &partial, &err),
                 0);
    free(chunk);
    fx.st.blobs.puts = 0;
    CHECK_EQ_INT(prpc_httpc_upload_blob(h, fd, sha, n - 1, &err), 0);
    CHECK_EQ_INT(fx.st.blobs.puts, 2);
    CHECK_EQ_INT(fx.st.blobs.first_put_offset, PRPC_BLOB_UPLOAD_CHUNK);
    CHECK_EQ_INT(prpc_blobdir_verify(fx.st.blobs.bd, sha, &err), 0);
    CHECK(fx.st.signed_ok >= 10);
    prpc_httpc_free(h);
    close(fd);
    fixture_down(&fx);
}

TEST(upload_until_stops_once_the_broker_has_that_much)
{
    fixture_t fx;
    prpc_error_t err;
    char sha[65];
    size_t n = 2 * PRPC_BLOB_UPLOAD_CHUNK + 12345;
    uint64_t partial = 0;
    int fd, complete = -1;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    fd = make_file(fx.dir, "big.bin", n, sha);
    CHECK(fd >= 0);
    h = prpc_httpc_new(fx.url, KEY, 1000, &err);
    /* The first chunk, synced, not committed: a call naming it can go now. */
    CHECK_EQ_INT(prpc_httpc_upload_blob_until(h, fd, sha, n, 1, &complete, &err), 0);
    CHECK_EQ_INT(complete, 0);
    CHECK_EQ_INT(fx.st.blobs.puts, 1);
    CHECK_EQ_INT(fx.st.blobs.commits, 0);
    CHECK_EQ_INT(prpc_blobdir_partial(fx.st.blobs.bd, sha, &partial, &err), 0);
    CHECK_EQ_INT(partial, PRPC_BLOB_UPLOAD_CHUNK);
    /* The broker has that much already: one HEAD, nothing sent. */
    CHECK_EQ_INT(prpc_httpc_upload_blob_until(h, fd, sha, n, PRPC_BLOB_UPLOAD_CHUNK, &complete, &err),
                 0);
    CHECK_EQ_INT(complete, 0);
    CHECK_EQ_INT(fx.st.blobs.puts, 1);
    /* A bound past the end finishes the upload from where the broker is. */
    CHECK_EQ_INT(prpc_httpc_upload_blob_until(h, fd, sha, n, n, &complete, &err), 0);
    CHECK_EQ_INT(complete, 1);
    CHECK_EQ_INT(fx.st.blobs.puts, 3);
    CHECK_EQ_INT(fx.st.blobs.commits, 1);
    CHECK_EQ_INT(prpc_blobdir_verify(fx.st.blobs.bd, sha, &err), 0);
    /* Held: complete at once, whatever the bound. */
    complete = -1;
    CHECK_EQ_INT(prpc_httpc_upload_blob_until(h, fd, sha, n, 1, &complete, &err), 0);
    CHECK_EQ_INT(complete, 1);
    CHECK_EQ_INT(fx.st.blobs.puts, 3);
    prpc_httpc_free(h);
    close(fd);
    fixture_down(&fx);
}

TEST(upload_errors_name_the_blob)
{
    fixture_t fx;
    prpc_error_t err;
    char sha[65], other[65];
    int fd, rc;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    fd = make_file(fx.dir, "small.bin", 1000, sha);
    h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    /* The file is shorter than the size claimed. */
    rc = prpc_httpc_upload_blob(h, fd, sha, 5000, &err);
    CHECK_EQ_INT(rc, PRPC_EINVAL);
    CHECK(strstr(err.message, sha) != NULL && strstr(err.message, "shorter") != NULL);
    /* Content that does not hash to the name: the commit refuses it. */
    memset(other, 'a', 64);
    other[64] = '\0';
    rc = prpc_httpc_upload_blob(h, fd, other, 1000, &err);
    CHECK_EQ_INT(rc, PRPC_ECORRUPT);
    CHECK(strstr(err.message, "committing blob aaaa") != NULL);
    CHECK_EQ_INT(prpc_httpc_upload_blob(h, fd, "not-a-sha", 1000, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "not-a-sha") != NULL);
    prpc_httpc_free(h);
    close(fd);
    fixture_down(&fx);
}

TEST(empty_blob_round_trip)
{
    fixture_t fx;
    prpc_error_t err;
    char sha[65], sub[128];
    uint64_t size = 1;
    prpc_blobdir_t *mine;
    int fd;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    fd = make_file(fx.dir, "empty.bin", 0, sha);
    h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    CHECK_EQ_INT(prpc_httpc_upload_blob(h, fd, sha, 0, &err), 0);
    snprintf(sub, sizeof(sub), "%s/mine", fx.dir);
    mine = prpc_blobdir_open(sub, &err);
    CHECK_EQ_INT(prpc_httpc_download_blob(h, sha, mine, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_stat(mine, sha, &size, &err), 0);
    CHECK_EQ_INT(size, 0);
    prpc_blobdir_free(mine);
    prpc_httpc_free(h);
    close(fd);
    fixture_down(&fx);
}

TEST(download_streams_resumes_and_retries)
{
    fixture_t fx;
    prpc_error_t err;
    char sha[65], sub[128], *part;
    size_t n = PRPC_BLOB_UPLOAD_CHUNK + 777;
    uint64_t size = 0, partial = 0;
    prpc_blobdir_t *mine;
    int fd;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    fd = make_file(fx.dir, "d.bin", n, sha);
    h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    CHECK_EQ_INT(prpc_httpc_upload_blob(h, fd, sha, n, &err), 0);
    snprintf(sub, sizeof(sub), "%s/mine", fx.dir);
    mine = prpc_blobdir_open(sub, &err);
    CHECK(mine != NULL);
    /* Fresh download. */
    CHECK_EQ_INT(prpc_httpc_download_blob(h, sha, mine, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_verify(mine, sha, &err), 0);
    CHECK_EQ_INT(fx.st.blobs.gets, 1);
    CHECK_EQ_STR(fx.st.blobs.last_range, "");
    /* Present already: no request. */
    CHECK_EQ_INT(prpc_httpc_download_blob(h, sha, mine, &err), 0);
    CHECK_EQ_INT(fx.st.blobs.gets, 1);
    /* Resume after 1000 bytes left by an earlier attempt. */
    CHECK_EQ_INT(prpc_blobdir_remove(mine, sha, &err), 0);
    part = malloc(1000);
    CHECK(pread(fd, part, 1000, 0) == 1000);
    CHECK_EQ_INT(prpc_blobdir_write_chunk(mine, sha, 0, part, 1000, NULL, &partial, &err), 0);
    free(part);
    CHECK_EQ_INT(prpc_httpc_download_blob(h, sha, mine, &err), 0);
    CHECK_EQ_STR(fx.st.blobs.last_range, "bytes=1000-");
    CHECK_EQ_INT(prpc_blobdir_stat(mine, sha, &size, &err), 0);
    CHECK_EQ_INT(size, n);
    CHECK_EQ_INT(prpc_blobdir_verify(mine, sha, &err), 0);
    /* One corrupt answer: dropped, fetched again from zero. */
    CHECK_EQ_INT(prpc_blobdir_remove(mine, sha, &err), 0);
    fx.st.blobs.corrupt_gets = 1;
    fx.st.blobs.gets = 0;
    CHECK_EQ_INT(prpc_httpc_download_blob(h, sha, mine, &err), 0);
    CHECK_EQ_INT(fx.st.blobs.gets, 2);
    CHECK_EQ_INT(prpc_blobdir_verify(mine, sha, &err), 0);
    /* Always corrupt (httpc.c tries 5 times): ECORRUPT and nothing kept. */
    CHECK_EQ_INT(prpc_blobdir_remove(mine, sha, &err), 0);
    fx.st.blobs.corrupt_gets = 5;
    fx.st.blobs.gets = 0;
    CHECK_EQ_INT(prpc_httpc_download_blob(h, sha, mine, &err), PRPC_ECORRUPT);
    CHECK_EQ_INT(fx.st.blobs.gets, 5);
    CHECK(strstr(err.message, sha) != NULL);
    CHECK(strstr(err.message, "arrived corrupt 5 times") != NULL);
    CHECK_EQ_INT(prpc_blobdir_stat(mine, sha, NULL, NULL), PRPC_ENOTFOUND);
    CHECK_EQ_INT(prpc_blobdir_partial(mine, sha, &partial, &err), 0);
    CHECK_EQ_INT(partial, 0);
    prpc_blobdir_free(mine);
    prpc_httpc_free(h);
    close(fd);
    fixture_down(&fx);
}

TEST(download_missing_is_enotfound)
{
    fixture_t fx;
    prpc_error_t err;
    char sub[128], sha[65];
    prpc_blobdir_t *mine;
    prpc_httpc_t *h;
    int rc;
    CHECK(fixture_up(&fx) == 0);
    memset(sha, 'b', 64);
    sha[64] = '\0';
    snprintf(sub, sizeof(sub), "%s/mine", fx.dir);
    mine = prpc_blobdir_open(sub, &err);
    h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    rc = prpc_httpc_download_blob(h, sha, mine, &err);
    prpc_blobdir_free(mine);
    prpc_httpc_free(h);
    fixture_down(&fx);
    CHECK_EQ_INT(rc, PRPC_ENOTFOUND);
    CHECK(strstr(err.message, "downloading blob bbbb") != NULL);
    CHECK(strstr(err.message, "no such blob") != NULL);
}

/* Set P2PRPC_FAULTS (NULL: unset) with a fixed seed, so draws repeat. */
static void faults(const char *spec)
{
    if (spec != NULL) {
        setenv(PRPC_FAULTS_ENV, spec, 1);
        setenv(PRPC_FAULTS_SEED_ENV, "1", 1);
    } else {
        unsetenv(PRPC_FAULTS_ENV);
        unsetenv(PRPC_FAULTS_SEED_ENV);
    }
    prpc_fault_reload();
}

TEST(corrupt_chunks_are_sent_again)
{
    fixture_t fx;
    prpc_error_t err;
    char sha[65];
    size_t n = 3 * PRPC_BLOB_UPLOAD_CHUNK + 99;
    uint64_t size = 0;
    int fd, rc;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    fd = make_file(fx.dir, "c.bin", n, sha);
    h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    faults("corrupt_chunk=0.5");
    rc = prpc_httpc_upload_blob(h, fd, sha, n, &err);
    faults(NULL);
    if (rc != 0)
        fprintf(stderr, "  %s\n", err.message);
    CHECK_EQ_INT(rc, 0);
    /* Four chunks, some refused by the fake's hash check and sent again. */
    CHECK(fx.st.blobs.puts > 4);
    CHECK_EQ_INT(fx.st.blobs.commits, 1);
    CHECK_EQ_INT(prpc_blobdir_stat(fx.st.blobs.bd, sha, &size, &err), 0);
    CHECK_EQ_INT(size, n);
    CHECK_EQ_INT(prpc_blobdir_verify(fx.st.blobs.bd, sha, &err), 0);
    /* The file itself was never touched: it still hashes to its name. */
    CHECK_EQ_INT(prpc_blobdir_remove(fx.st.blobs.bd, sha, &err), 0);
    fx.st.blobs.puts = 0;
    CHECK_EQ_INT(prpc_httpc_upload_blob(h, fd, sha, n, &err), 0);
    CHECK_EQ_INT(fx.st.blobs.puts, 4);
    prpc_httpc_free(h);
    close(fd);
    fixture_down(&fx);
}

/* An upload given the file's piece digests (from naming it) sends them as
 * the chunks' hashes; digests that no longer fit the file (it changed since)
 * get the chunk refused once, and from then on what is read is hashed. */
TEST(upload_with_piece_digests)
{
    fixture_t fx;
    prpc_error_t err;
    char sha[65];
    size_t n = 3 * PRPC_BLOB_UPLOAD_CHUNK + 99;
    uint8_t whole[32];
    prpc_chunk_digests_t cd = {PRPC_BLOB_UPLOAD_CHUNK, 0, NULL};
    int fd, rc, complete = 0;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    fd = make_file(fx.dir, "p.bin", n, sha);
    CHECK(fd >= 0);
    CHECK_EQ_INT(prpc_hash_fd_chunks(fd, whole, NULL, &cd, &err), 0);
    CHECK_EQ_INT(cd.n, 4);
    h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    rc = prpc_httpc_upload_blob_hashed(h, fd, sha, n, UINT64_MAX, &complete, &cd, &err);
    if (rc != 0)
        fprintf(stderr, "  %s\n", err.message);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(complete, 1);
    CHECK_EQ_INT(fx.st.blobs.puts, 4);
    CHECK_EQ_INT(prpc_blobdir_verify(fx.st.blobs.bd, sha, &err), 0);
    /* Stale digests: the third piece's digest is wrong. */
    CHECK_EQ_INT(prpc_blobdir_remove(fx.st.blobs.bd, sha, &err), 0);
    cd.d[2][0] ^= 1;
    fx.st.blobs.puts = 0;
    CHECK_EQ_INT(prpc_httpc_upload_blob_hashed(h, fd, sha, n, UINT64_MAX, &complete, &cd, &err),
                 0);
    /* the third refused and sent again, with the fourth that followed it */
    CHECK_EQ_INT(fx.st.blobs.puts, 6);
    CHECK_EQ_INT(prpc_blobdir_verify(fx.st.blobs.bd, sha, &err), 0);
    prpc_chunk_digests_cleanup(&cd);
    prpc_httpc_free(h);
    close(fd);
    fixture_down(&fx);
}

TEST(a_chunk_always_corrupt_fails_naming_blob_and_offset)
{
    fixture_t fx;
    prpc_error_t err;
    char sha[65], want[96];
    size_t n = PRPC_BLOB_UPLOAD_CHUNK + 10;
    uint64_t partial = 1;
    char *chunk;
    int fd, rc;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    fd = make_file(fx.dir, "bad.bin", n, sha);
    h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    /* The first chunk is on the broker already; the second is always damaged. */
    chunk = malloc(PRPC_BLOB_UPLOAD_CHUNK);
    CHECK(pread(fd, chunk, PRPC_BLOB_UPLOAD_CHUNK, 0) == PRPC_BLOB_UPLOAD_CHUNK);
    CHECK_EQ_INT(prpc_blobdir_write_chunk(fx.st.blobs.bd, sha, 0, chunk, PRPC_BLOB_UPLOAD_CHUNK, NULL,
                                          &partial, &err),
                 0);
    free(chunk);
    faults("corrupt_chunk=1");
    rc = prpc_httpc_upload_blob(h, fd, sha, n, &err);
    faults(NULL);
    CHECK_EQ_INT(rc, PRPC_ECORRUPT);
    CHECK(strstr(err.message, sha) != NULL);
    snprintf(want, sizeof(want), "chunk at offset %d was refused as corrupt 5 times",
             PRPC_BLOB_UPLOAD_CHUNK);
    CHECK(strstr(err.message, want) != NULL);
    CHECK(strstr(err.message, "does not match its SHA-256") != NULL); /* the broker's words */
    CHECK_EQ_INT(fx.st.blobs.puts, 5);
    CHECK_EQ_INT(fx.st.blobs.commits, 0);
    /* The broker still holds exactly the chunk it had: nothing damaged was kept. */
    CHECK_EQ_INT(prpc_blobdir_stat(fx.st.blobs.bd, sha, NULL, NULL), PRPC_ENOTFOUND);
    CHECK_EQ_INT(prpc_blobdir_partial(fx.st.blobs.bd, sha, &partial, &err), 0);
    CHECK_EQ_INT(partial, PRPC_BLOB_UPLOAD_CHUNK);
    /* Without the fault the same upload resumes there and completes. */
    fx.st.blobs.puts = 0;
    CHECK_EQ_INT(prpc_httpc_upload_blob(h, fd, sha, n, &err), 0);
    CHECK_EQ_INT(fx.st.blobs.puts, 1);
    CHECK_EQ_INT(fx.st.blobs.first_put_offset, PRPC_BLOB_UPLOAD_CHUNK);
    CHECK_EQ_INT(prpc_blobdir_verify(fx.st.blobs.bd, sha, &err), 0);
    prpc_httpc_free(h);
    close(fd);
    fixture_down(&fx);
}

TEST(corrupt_downloads_are_fetched_again_never_kept)
{
    fixture_t fx;
    prpc_error_t err;
    char sha[65], sub[128];
    size_t n = 2 * PRPC_BLOB_UPLOAD_CHUNK + 5;
    uint64_t partial = 1;
    prpc_blobdir_t *mine;
    int fd, rc;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    fd = make_file(fx.dir, "dl.bin", n, sha);
    h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    CHECK_EQ_INT(prpc_httpc_upload_blob(h, fd, sha, n, &err), 0);
    snprintf(sub, sizeof(sub), "%s/mine", fx.dir);
    mine = prpc_blobdir_open(sub, &err);
    CHECK(mine != NULL);
    /* Damaged on every try: ECORRUPT naming the blob, nothing kept. */
    faults("corrupt_download=1");
    rc = prpc_httpc_download_blob(h, sha, mine, &err);
    CHECK_EQ_INT(rc, PRPC_ECORRUPT);
    CHECK(strstr(err.message, sha) != NULL);
    CHECK(strstr(err.message, "arrived corrupt 5 times") != NULL);
    CHECK_EQ_INT(fx.st.blobs.gets, 5);
    CHECK_EQ_STR(fx.st.blobs.last_range, ""); /* every try from zero */
    CHECK_EQ_INT(prpc_blobdir_stat(mine, sha, NULL, NULL), PRPC_ENOTFOUND);
    CHECK_EQ_INT(prpc_blobdir_partial(mine, sha, &partial, &err), 0);
    CHECK_EQ_INT(partial, 0);
    /* Damaged some of the time: fetched again until it hashes right. */
    fx.st.blobs.gets = 0;
    faults("corrupt_download=0.5");
    rc = prpc_httpc_download_blob(h, sha, mine, &err);
    faults(NULL);
    if (rc != 0)
        fprintf(stderr, "  %s\n", err.message);
    CHECK_EQ_INT(rc, 0);
    CHECK(fx.st.blobs.gets > 1);
    CHECK_EQ_INT(prpc_blobdir_verify(mine, sha, &err), 0);
    prpc_blobdir_free(mine);
    prpc_httpc_free(h);
    close(fd);
    fixture_down(&fx);
}

/* One signed GET of /hello with the fake in sign mode `mode`; returns rc. */
static int hello_as(fixture_t *fx, prpc_httpc_t *h, enum sign_mode mode, long *status,
                    char **body, prpc_error_t *err)
{
    pthread_mutex_lock(&fx->st.mu);
    fx->st.sign = mode;
    pthread_mutex_unlock(&fx->st.mu);
    return prpc_httpc_request(h, "GET", "/hello", NULL, 0, 2000, status, body, NULL, err);
}

TEST(answers_must_be_signed_for_this_request)
{
    fixture_t fx;
    prpc_error_t err;
    char *body = NULL;
    long status = 0;
    prpc_httpc_t *h, *open_h;
    CHECK(fixture_up(&fx) == 0);
    h = prpc_httpc_new(fx.url, KEY, 1000, &err);
    open_h = prpc_httpc_new(fx.url, NULL, 1000, &err);

    CHECK_EQ_INT(hello_as(&fx, h, SIGN_OK, &status, &body, &err), 0);
    CHECK_EQ_INT(status, 200);
    CHECK_EQ_STR(body, "{\"hello\": true}");
    free(body);
    body = NULL;

    CHECK_EQ_INT(hello_as(&fx, h, SIGN_NONE, &status, &body, &err), PRPC_EUNSIGNED);
    CHECK(body == NULL);
    CHECK_EQ_INT(status, 0);
    CHECK(strstr(err.message, "the broker's answer is not signed by a holder of the password") !=
          NULL);
    CHECK(strstr(err.message, "GET http://127.0.0.1:") != NULL);
    CHECK(strstr(err.message, "/hello: HTTP 200 without X-P2PRPC-Signature") != NULL);

    CHECK_EQ_INT(hello_as(&fx, h, SIGN_BAD, &status, &body, &err), PRPC_EUNSIGNED);
    CHECK(body == NULL);
    CHECK(strstr(err.message, "not signed by a holder of the password") != NULL);
    CHECK(strstr(err.message, "does not match this request") != NULL);

    CHECK_EQ_INT(hello_as(&fx, h, SIGN_MALFORMED, &status, &body, &err), PRPC_EUNSIGNED);
    CHECK(strstr(err.message, "with a malformed X-P2PRPC-Signature") != NULL);

    /* The answer to an earlier request, replayed whole: its signature is
     * genuine but names the other request's nonce. */
    CHECK_EQ_INT(hello_as(&fx, h, SIGN_OK, &status, &body, &err), 0);
    free(body);
    body = NULL;
    CHECK_EQ_INT(hello_as(&fx, h, SIGN_REPLAY, &status, &body, &err), PRPC_EUNSIGNED);
    CHECK(body == NULL);
    CHECK(strstr(err.message, "does not match this request") != NULL);

    /* Error answers are no exception: an unsigned 409 is not the broker's. */
    fx.st.sign = SIGN_NONE;
    CHECK_EQ_INT(prpc_httpc_request(h, "GET", "/conflict", NULL, 0, 2000, &status, &body, NULL,
                                    &err),
                 PRPC_EUNSIGNED);
    CHECK(body == NULL);
    CHECK(strstr(err.message, "HTTP 409 without X-P2PRPC-Signature") != NULL);

    /* A 401 stays the broker's refusal with its own words, signed or not. */
    CHECK_EQ_INT(prpc_httpc_request(h, "GET", "/denied", NULL, 0, 2000, &status, &body, NULL,
                                    &err),
                 PRPC_EAUTH);
    CHECK_EQ_INT(status, 401);
    CHECK(strstr(err.message, "signature does not verify") != NULL);

    /* Without a key nothing is signed and nothing is checked. */
    CHECK_EQ_INT(hello_as(&fx, open_h, SIGN_NONE, &status, &body, &err), 0);
    CHECK_EQ_STR(body, "{\"hello\": true}");
    free(body);
    body = NULL;

    /* A bad answer leaves the handle usable for the next request. */
    CHECK_EQ_INT(hello_as(&fx, h, SIGN_OK, &status, &body, &err), 0);
    CHECK_EQ_INT(status, 200);
    free(body);
    prpc_httpc_free(h);
    prpc_httpc_free(open_h);
    fixture_down(&fx);
}

TEST(blob_answers_must_be_signed)
{
    fixture_t fx;
    prpc_error_t err;
    char sha[65], sha2[65], sha3[65], missing[65], sub[128];
    size_t n = PRPC_BLOB_UPLOAD_CHUNK + 100;
    prpc_blobdir_t *mine;
    prpc_httpc_t *h;
    int fd, fd2, fd3;
    CHECK(fixture_up(&fx) == 0);
    fd = make_file(fx.dir, "s1.bin", n, sha);
    fd2 = make_file(fx.dir, "s2.bin", 5000, sha2);
    fd3 = make_file(fx.dir, "s3.bin", 6000, sha3);
    CHECK(fd >= 0 && fd2 >= 0 && fd3 >= 0);
    snprintf(sub, sizeof(sub), "%s/mine", fx.dir);
    mine = prpc_blobdir_open(sub, &err);
    h = prpc_httpc_new(fx.url, KEY, 1000, &err);

    /* Signed as the broker signs: HEAD answers and the bytes of a GET are
     * not signed and need not be (the hash checks the bytes). */
    CHECK_EQ_INT(prpc_httpc_upload_blob(h, fd, sha, n, &err), 0);
    CHECK_EQ_INT(prpc_httpc_download_blob(h, sha, mine, &err), 0);
    CHECK_EQ_INT(prpc_blobdir_verify(mine, sha, &err), 0);

    fx.st.sign = SIGN_NONE;
    fx.st.sign_match = "?offset=";
    CHECK_EQ_INT(prpc_httpc_upload_blob(h, fd2, sha2, 5000, &err), PRPC_EUNSIGNED);
    CHECK(strstr(err.message, "not signed by a holder of the password") != NULL);
    CHECK(strstr(err.message, "PUT http://") != NULL);
    CHECK(strstr(err.message, sha2) != NULL);
    CHECK_EQ_INT(fx.st.blobs.commits, 1);

    fx.st.sign = SIGN_BAD;
    fx.st.sign_match = "/commit";
    CHECK_EQ_INT(prpc_httpc_upload_blob(h, fd3, sha3, 6000, &err), PRPC_EUNSIGNED);
    CHECK(strstr(err.message, "/commit?size=6000: HTTP 200 whose X-P2PRPC-Signature does not "
                              "match") != NULL);

    /* A download's error answer is JSON, so it must be signed too. */
    memset(missing, 'c', 64);
    missing[64] = '\0';
    fx.st.sign = SIGN_NONE;
    fx.st.sign_match = NULL;
    CHECK_EQ_INT(prpc_httpc_download_blob(h, missing, mine, &err), PRPC_EUNSIGNED);
    CHECK(strstr(err.message, "HTTP 404 without X-P2PRPC-Signature") != NULL);
    fx.st.sign = SIGN_OK;
    CHECK_EQ_INT(prpc_httpc_download_blob(h, missing, mine, &err), PRPC_ENOTFOUND);

    prpc_blobdir_free(mine);
    prpc_httpc_free(h);
    close(fd);
    close(fd2);
    close(fd3);
    fixture_down(&fx);
}

/* Write a self-signed certificate (PEM) to path. Returns 0 or -1. */
static int write_cert(const char *path)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name;
    FILE *f = NULL;
    int rc = -1;
    if (key == NULL || x == NULL)
        goto out;
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"test CA", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    if (X509_sign(x, key, EVP_sha256()) == 0)
        goto out;
    f = fopen(path, "w");
    if (f != NULL && PEM_write_X509(f, x) == 1)
        rc = 0;
out:
    if (f != NULL)
        fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

TEST(ca_file_is_checked_when_set)
{
    fixture_t fx;
    prpc_error_t err;
    char path[128], junk[128], *long_path;
    long status = 0;
    FILE *f;
    prpc_httpc_t *h;
    CHECK(fixture_up(&fx) == 0);
    h = prpc_httpc_new(fx.url, NULL, 1000, &err);
    snprintf(path, sizeof(path), "%s/ca.pem", fx.dir);
    snprintf(junk, sizeof(junk), "%s/junk.pem", fx.dir);

    CHECK_EQ_INT(prpc_httpc_set_ca(h, path, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "cannot open the CA file") != NULL);
    CHECK(strstr(err.message, path) != NULL);
    CHECK(strstr(err.message, "No such file") != NULL);

    f = fopen(junk, "w");
    CHECK(f != NULL);
    fputs("this is not a certificate\n", f);
    fclose(f);
    CHECK_EQ_INT(prpc_httpc_set_ca(h, junk, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, junk) != NULL);
    CHECK(strstr(err.message, "holds no PEM certificate") != NULL);

    long_path = malloc(PRPC_HTTPC_CA_PATH_MAX + 1);
    memset(long_path, 'a', PRPC_HTTPC_CA_PATH_MAX);
    long_path[PRPC_HTTPC_CA_PATH_MAX] = '\0';
    CHECK_EQ_INT(prpc_httpc_set_ca(h, long_path, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "CA file path longer than") != NULL);
    free(long_path);

    CHECK(write_cert(path) == 0);
    CHECK_EQ_INT(prpc_httpc_set_ca(h, path, &err), 0);
    /* A CA changes nothing for plain http. */
    CHECK_EQ_INT(prpc_httpc_request(h, "GET", "/hello", NULL, 0, 2000, &status, NULL, NULL, &err),
                 0);
    CHECK_EQ_INT(status, 200);
    CHECK_EQ_INT(prpc_httpc_set_ca(h, NULL, &err), 0);
    CHECK_EQ_INT(prpc_httpc_set_ca(h, "", &err), 0);
    prpc_httpc_free(h);
    fixture_down(&fx);
}

TEST_MAIN(TEST_ENTRY(base_url_forms), TEST_ENTRY(refused_is_econn_naming_url),
          TEST_ENTRY(timeout_is_etimedout), TEST_ENTRY(cancel_flag_ends_a_long_poll),
          TEST_ENTRY(keep_alive_reuses_one_connection),
          TEST_ENTRY(status_is_not_an_error_but_401_is), TEST_ENTRY(answer_over_cap_is_elimit),
          TEST_ENTRY(requests_are_signed_and_verify), TEST_ENTRY(status_error_maps_broker_codes),
          TEST_ENTRY(bad_request_line_is_einval), TEST_ENTRY(upload_chunks_dedups_and_resumes),
          TEST_ENTRY(upload_until_stops_once_the_broker_has_that_much),
          TEST_ENTRY(upload_errors_name_the_blob), TEST_ENTRY(empty_blob_round_trip),
          TEST_ENTRY(download_streams_resumes_and_retries),
          TEST_ENTRY(download_missing_is_enotfound), TEST_ENTRY(corrupt_chunks_are_sent_again),
          TEST_ENTRY(upload_with_piece_digests),
          TEST_ENTRY(a_chunk_always_corrupt_fails_naming_blob_and_offset),
          TEST_ENTRY(corrupt_downloads_are_fetched_again_never_kept),
          TEST_ENTRY(answers_must_be_signed_for_this_request),
          TEST_ENTRY(blob_answers_must_be_signed), TEST_ENTRY(ca_file_is_checked_when_set))
