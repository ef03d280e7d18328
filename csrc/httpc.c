/*
 * httpc.c - the HTTP client of the wire on libcurl (see httpc.h).
 *
 * Each request resets the easy handle's options (curl_easy_reset keeps the
 * live connection, DNS cache and TLS sessions) and sets them again, so no
 * option of one request leaks into the next. Answers go to a sink: a capped
 * memory buffer for metadata, or a file descriptor for blob downloads, where
 * only a 200/206 answer reaches the file and an error answer stays in memory.
 * With a key, an answer is checked against the broker's signature before any
 * caller sees its status or body (verify_answer).
 *
 * Damage in flight is retried a bounded number of times, never kept: a chunk
 * the broker refuses as ECORRUPT is sent again from the broker's partial
 * (HTTPC_CHUNK_SENDS sends per chunk), and a download whose commit fails the
 * hash, which drops the partial file, is fetched again from zero
 * (HTTPC_DOWNLOAD_TRIES). The corrupt_chunk and corrupt_download faults
 * (fault.h) exercise both.
 *
 * Thread safety: see httpc.h; nothing here is shared between handles.
 */
#include "httpc.h"
#include "fault.h"

#include "auth.h"
#include "hash.h"
#include "util.h"

#include <bson/bson.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define HTTPC_BULK_BUFFER (256 * 1024) /* libcurl receive buffer for blob transfers */
#define HTTPC_ERROR_SNIPPET 200        /* bytes of a non-JSON error answer quoted */
#define HTTPC_CHUNK_SENDS 5            /* times one chunk is sent before ECORRUPT */
#define HTTPC_DOWNLOAD_TRIES 5         /* downloads of one blob before ECORRUPT */

struct prpc_httpc {
    CURL *curl;                      /* the persistent easy handle, owned */
    char base[PRPC_HTTPC_URL_MAX];   /* "http://host:port", no trailing '/' */
    uint8_t key[PRPC_AUTH_KEY_LEN];  /* signing key when has_key */
    int has_key;                     /* 1 when requests are signed */
    int connect_timeout_ms;          /* for every connection attempt */
    char *ca;                        /* CA file for https, owned; NULL = system store */
    const atomic_int *cancel;        /* borrowed; non-zero aborts requests */
    struct prpc_httpc *twin;         /* a second connection for chunk uploads, owned */
    char errbuf[CURL_ERROR_SIZE];    /* libcurl's detail of the last failure */
};

/* Where an answer's body goes. */
typedef struct sink {
    CURL *curl;         /* to read the status once headers are in */
    char *buf;          /* memory copy (error answers of a download too) */
    size_t len, cap;    /* used / allocated bytes of buf */
    size_t max;         /* cap on len: more is PRPC_ELIMIT */
    int fd;             /* download target, -1 for a memory sink */
    int decided;        /* 1 once we know whether the body goes to fd */
    int to_file;        /* 1 when the answer is 200/206 and fd >= 0 */
    uint64_t file_off;  /* next byte of fd to write */
    uint64_t start_off; /* what fd held when the request started */
    int64_t partial;    /* X-P2PRPC-Partial when the answer carried it, else -1 */
    int corrupt;        /* corrupt_download fault: flip a byte of the next file write */
    prpc_blobdir_t *bd; /* when set, file writes feed sha's running hash there */
    const char *sha;
    prpc_blob_writer_t writer; /* writes fd's bytes (file_off counts staged ones) */
    /* A request body given through libcurl's read callback (chunk uploads):
     * on_handed(handed_arg) is called once libcurl has taken its last byte,
     * after which the body's buffer is no longer read. */
    const char *body;
    size_t body_len, body_off;
    int handed;
    void (*on_handed)(void *);
    void *handed_arg;
    char sig[PRPC_AUTH_SIG_HEX]; /* X-P2PRPC-Signature as received (64 hex), or "" */
    int sig_malformed;  /* 1 when the header was there but not 64 hex digits */
    int fail_code;      /* set when the sink refused data... */
    int fail_errno;     /* ...because of this errno (0: not a system error) */
    char fail_msg[256]; /* what it was doing, for the caller's error */
} sink_t;

static void sink_init(sink_t *s, CURL *curl, int fd, uint64_t offset)
{
    memset(s, 0, sizeof(*s));
    s->curl = curl;
    s->max = PRPC_HTTPC_MAX_BODY;
    s->fd = fd;
    s->file_off = offset;
    s->start_off = offset;
    s->partial = -1;
}

static void sink_cleanup(sink_t *s)
{
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
}

/* Decide, on the first body byte (or at the end for an empty body), whether
 * the answer is the blob. A 200 to a ranged request means the server sent the
 * whole blob: start the file again. */
static int sink_decide(sink_t *s)
{
    long st = 0;
    if (s->decided)
        return 0;
    s->decided = 1;
    if (s->fd < 0)
        return 0;
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &st);
    s->to_file = st == 200 || st == 206;
    if (st == 200 && s->start_off > 0) {
        if (ftruncate(s->fd, 0) != 0) {
            s->fail_code = PRPC_EIO;
            s->fail_errno = errno;
            snprintf(s->fail_msg, sizeof(s->fail_msg), "truncating the partial blob");
            return -1;
        }
        s->file_off = 0;
        s->start_off = 0;
        s->writer.off = 0; /* nothing staged yet: this is the first body byte */
    }
    return 0;
}

/* The error the sink recorded, naming the request. */
static int sink_error(const sink_t *s, prpc_error_t *err, const char *method, const char *url)
{
    if (s->fail_errno != 0)
        return prpc_error_errno(err, s->fail_errno, "%s %s: %s", method, url, s->fail_msg);
    return prpc_error_set(err, s->fail_code, "%s %s: %s", method, url, s->fail_msg);
}

static size_t on_read_body(char *data, size_t size, size_t nmemb, void *ud)
{
    sink_t *s = ud;
    size_t n = size * nmemb;
    if (n > s->body_len - s->body_off)
        n = s->body_len - s->body_off;
    memcpy(data, s->body + s->body_off, n);
    s->body_off += n;
    if (s->body_off == s->body_len && !s->handed) {
        s->handed = 1;
        s->on_handed(s->handed_arg);
    }
    return n;
}

/* libcurl rewinds a body to send it again on a fresh connection when a kept
 * one turned out closed; possible only before the buffer was handed back. */
static int on_seek_body(void *ud, curl_off_t offset, int origin)
{
    sink_t *s = ud;
    if (s->handed || origin != SEEK_SET || offset < 0 || (uint64_t)offset > s->body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    s->body_off = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    sink_t *s = ud;
    size_t len = size * nmemb;
    if (sink_decide(s) != 0)
        return 0;
    if (s->to_file) {
        if (s->corrupt && len > 0) {
            data[len / 2] ^= 0x01; /* curl's buffer, handed to us to consume */
            s->corrupt = 0;
        }
        if (prpc_blob_writer_write(&s->writer, data, len, NULL) != 0) {
            s->fail_code = PRPC_EIO;
            s->fail_errno = errno;
            snprintf(s->fail_msg, sizeof(s->fail_msg), "writing the partial blob");
            return 0;
        }
        prpc_blobdir_feed(s->bd, s->sha, s->file_off, data, len);
        s->file_off += (uint64_t)len;
        return len;
    }
    if (len > s->max - s->len) {
        s->fail_code = PRPC_ELIMIT;
        snprintf(s->fail_msg, sizeof(s->fail_msg), "answer larger than %zu bytes", s->max);
        return 0;
    }
    if (s->len + len + 1 > s->cap) {
        size_t ncap = s->cap ? s->cap : 1024;
        char *nb;
        while (ncap < s->len + len + 1)
            ncap *= 2;
        nb = realloc(s->buf, ncap);
        if (nb == NULL) {
            s->fail_code = PRPC_ENOMEM;
            snprintf(s->fail_msg, sizeof(s->fail_msg), "out of memory for the answer");
            return 0;
        }
        s->buf = nb;
        s->cap = ncap;
    }
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    s->buf[s->len] = '\0';
    return len;
}

/* Keep the signature header's value: exactly 64 hex digits, else malformed. */
static void header_signature(sink_t *s, const char *p, size_t n)
{
    size_t i = 0;
    while (n > 0 && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n > 0 && isspace((unsigned char)p[n - 1]))
        n--;
    s->sig[0] = '\0';
    s->sig_malformed = 1;
    if (n != PRPC_AUTH_SIG_HEX - 1)
        return;
    for (i = 0; i < n; i++)
        if (prpc_hex_digit((unsigned char)p[i]) < 0)
            return;
    memcpy(s->sig, p, n);
    s->sig[n] = '\0';
    s->sig_malformed = 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    static const char name[] = "x-p2prpc-partial:";
    static const char sig_name[] = "x-p2prpc-signature:";
    sink_t *s = ud;
    size_t len = size * nmemb;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* A new response begins (after a "100 Continue"): forget the last one's headers. */
        s->partial = -1;
        s->sig[0] = '\0';
        s->sig_malformed = 0;
    } else if (len > sizeof(sig_name) - 1 &&
               strncasecmp(data, sig_name, sizeof(sig_name) - 1) == 0) {
        header_signature(s, data + sizeof(sig_name) - 1, len - (sizeof(sig_name) - 1));
    } else if (len > sizeof(name) - 1 && strncasecmp(data, name, sizeof(name) - 1) == 0) {
        char tmp[32];
        size_t n = len - (sizeof(name) - 1), i = 0;
        const char *p = data + sizeof(name) - 1;
        char *end;
        unsigned long long v;
        while (n > 0 && (*p == ' ' || *p == '\t'))
            p++, n--;
        while (i < n && i < sizeof(tmp) - 1 && isdigit((unsigned char)p[i])) {
            tmp[i] = p[i];
            i++;
        }
        tmp[i] = '\0';
        errno = 0;
        v = strtoull(tmp, &end, 10);
        if (i > 0 && errno == 0 && v <= INT64_MAX)
            s->partial = (int64_t)v;
    }
    return len;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    const prpc_httpc_t *h = ud;
    PRPC_UNUSED(dt);
    PRPC_UNUSED(dn);
    PRPC_UNUSED(ut);
    PRPC_UNUSED(un);
    return h->cancel != NULL && atomic_load(h->cancel) != 0;
}

prpc_httpc_t *prpc_httpc_new(const char *base_url, const uint8_t *key, int connect_timeout_ms,
                             prpc_error_t *err)
{
    prpc_httpc_t *h = NULL;
    const char *p, *hostpart;
    size_t n;
    int has_scheme;

    if (base_url == NULL) {
        prpc_error_set(err, PRPC_EINVAL, "broker URL missing");
        return NULL;
    }
    p = base_url;
    while (isspace((unsigned char)*p))
        p++;
    n = strlen(p);
    while (n > 0 && isspace((unsigned char)p[n - 1]))
        n--;
    if (n > 0 && p[n - 1] == '/')
        n--;
    has_scheme = (n >= 7 && strncasecmp(p, "http://", 7) == 0) ||
                 (n >= 8 && strncasecmp(p, "https://", 8) == 0);
    hostpart = has_scheme ? strstr(p, "://") + 3 : p;
    if (n == 0 || (size_t)(hostpart - p) >= n ||
        memchr(hostpart, '/', n - (size_t)(hostpart - p)) || n + 8 >= PRPC_HTTPC_URL_MAX) {
        prpc_error_set(err, PRPC_EINVAL,
                       "bad broker URL '%s': expected host:port, http://host:port or "
                       "https://host:port",
                       base_url);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)p[i] < 0x21 || (unsigned char)p[i] == 0x7f) {
            prpc_error_set(err, PRPC_EINVAL, "bad broker URL '%s': control character", base_url);
            return NULL;
        }
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL) {
        prpc_error_set(err, PRPC_ENOMEM, "out of memory for a connection to %s", base_url);
        return NULL;
    }
    snprintf(h->base, sizeof(h->base), "%s%.*s", has_scheme ? "" : "http://", (int)n, p);
    if (key != NULL) {
        memcpy(h->key, key, PRPC_AUTH_KEY_LEN);
        h->has_key = 1;
    }
    h->connect_timeout_ms = connect_timeout_ms > 0 ? connect_timeout_ms : 5000;
    h->curl = curl_easy_init();
    if (h->curl == NULL) {
        free(h);
        prpc_error_set(err, PRPC_ENOMEM, "curl_easy_init failed for %s", base_url);
        return NULL;
    }
    return h;
}

void prpc_httpc_free(prpc_httpc_t *h)
{
    if (h == NULL)
        return;
    prpc_httpc_free(h->twin);
    curl_easy_cleanup(h->curl);
    memset(h->key, 0, sizeof(h->key));
    free(h->ca);
    free(h);
}

int prpc_httpc_set_ca(prpc_httpc_t *h, const char *ca_path, prpc_error_t *err)
{
    FILE *f = NULL;
    X509 *cert = NULL;
    char *copy = NULL;
    int rc = 0;

    prpc_httpc_free(h->twin); /* made again, with this CA, when next needed */
    h->twin = NULL;
    if (ca_path == NULL || ca_path[0] == '\0') {
        free(h->ca);
        h->ca = NULL;
        return 0;
    }
    if (strlen(ca_path) >= PRPC_HTTPC_CA_PATH_MAX)
        return prpc_error_set(err, PRPC_EINVAL, "CA file path longer than %d bytes: %.64s...",
                              PRPC_HTTPC_CA_PATH_MAX - 1, ca_path);
    f = fopen(ca_path, "re");
    if (f == NULL) {
        /* EINVAL like every unusable TLS file (the broker's too): it is a
         * configuration mistake, not a missing call or blob. */
        rc = prpc_error_set(err, PRPC_EINVAL, "cannot open the CA file %s: %s", ca_path,
                            strerror(errno));
        goto out;
    }
    /* libcurl would only find a useless file at the first https request;
     * saying so now names the file while the user is still configuring. */
    cert = PEM_read_X509(f, NULL, NULL, NULL);
    if (cert == NULL) {
        ERR_clear_error(); /* leave no stale error for the next TLS call on this thread */
        rc = prpc_error_set(err, PRPC_EINVAL,
                            "the CA file %s holds no PEM certificate (expected \"-----BEGIN "
                            "CERTIFICATE-----\")",
                            ca_path);
        goto out;
    }
    copy = strdup(ca_path);
    if (copy == NULL) {
        rc = prpc_error_set(err, PRPC_ENOMEM, "out of memory for the CA file path");
        goto out;
    }
    free(h->ca);
    h->ca = copy;
out:
    X509_free(cert);
    if (f != NULL)
        fclose(f);
    return rc;
}

const char *prpc_httpc_base_url(const prpc_httpc_t *h)
{
    return h->base;
}

void prpc_httpc_set_cancel(prpc_httpc_t *h, const atomic_int *flag)
{
    h->cancel = flag;
}

static int valid_request_line(const char *method, const char *pq)
{
    if (method == NULL || method[0] == '\0' || pq == NULL || pq[0] != '/')
        return 0;
    for (const char *c = method; *c; c++)
        if (!isupper((unsigned char)*c))
            return 0;
    for (const char *c = pq; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c == 0x7f)
            return 0;
    return 1;
}

/* Append a header line to *list; the list owns a copy. */
static int add_header(struct curl_slist **list, prpc_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int add_header(struct curl_slist **list, prpc_error_t *err, const char *fmt, ...)
{
    char line[256];
    struct curl_slist *n;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    n = curl_slist_append(*list, line);
    if (n == NULL)
        return prpc_error_set(err, PRPC_ENOMEM, "out of memory for request headers");
    *list = n;
    return 0;
}

/* With a key, the answer counts only if the broker signed it for the request
 * that carried nonce (docs/API.md "Authentication"). The words name what was
 * missing, never what the signature should have been. */
static int verify_answer(const prpc_httpc_t *h, const sink_t *s, long status, const char *nonce,
                         const char *method, const char *url, prpc_error_t *err)
{
    uint8_t d[PRPC_SHA256_LEN];
    char body_hex[PRPC_SHA256_HEX_LEN + 1], want[PRPC_AUTH_SIG_HEX], got[PRPC_AUTH_SIG_HEX];
    int rc;

    if (s->sig[0] == '\0')
        return prpc_error_set(err, PRPC_EUNSIGNED,
                              "the broker's answer is not signed by a holder of the password "
                              "(%s %s: HTTP %ld %s X-P2PRPC-Signature)",
                              method, url, status,
                              s->sig_malformed ? "with a malformed" : "without");
    rc = prpc_sha256(s->buf != NULL ? s->buf : "", s->len, d, err);
    if (rc != 0)
        return rc;
    prpc_hex_encode(d, sizeof(d), body_hex);
    prpc_auth_sign_response(h->key, (int)status, nonce, body_hex, want);
    for (size_t i = 0; i < sizeof(got); i++)
        got[i] = (char)tolower((unsigned char)s->sig[i]);
    if (CRYPTO_memcmp(want, got, PRPC_AUTH_SIG_HEX - 1) != 0)
        return prpc_error_set(err, PRPC_EUNSIGNED,
                              "the broker's answer is not signed by a holder of the password "
                              "(%s %s: HTTP %ld whose X-P2PRPC-Signature does not match this "
                              "request and its body: altered, replayed, or another password)",
                              method, url, status);
    return 0;
}

/*
 * The one place a request is made. body_sha_hex, when not NULL, is the
 * body's SHA-256 already known to the caller (chunk uploads). bulk selects
 * stall detection instead of a total cap. extra (may be NULL) is appended to
 * the headers and stays the caller's.
 */
static int httpc_perform(prpc_httpc_t *h, const char *method, const char *pq, const void *body,
                         size_t body_len, const char *body_sha_hex, const char *content_type,
                         const char *extra, int timeout_ms, int bulk, sink_t *s, long *status,
                         prpc_error_t *err)
{
    struct curl_slist *hdrs = NULL;
    char *url = NULL;
    size_t url_len;
    CURL *c = h->curl;
    CURLcode cc;
    char nonce[PRPC_AUTH_NONCE_HEX] = "";
    int rc = 0, delay_ms = 0;

    *status = 0;
    if (!valid_request_line(method, pq))
        return prpc_error_set(err, PRPC_EINVAL, "bad request line '%s %s'",
                              method ? method : "(null)", pq ? pq : "(null)");
    url_len = strlen(h->base) + strlen(pq) + 1;
    url = malloc(url_len);
    if (url == NULL)
        return prpc_error_set(err, PRPC_ENOMEM, "out of memory for a URL");
    snprintf(url, url_len, "%s%s", h->base, pq);

    curl_easy_reset(c);
    h->errbuf[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)h->connect_timeout_ms);
    /* libcurl's defaults already verify; set them anyway so that no other
     * code path can leave them off. */
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (h->ca != NULL) {
        /* Only this CA: the system's directory of public CAs must not vouch
         * for a private broker's name as well. */
        curl_easy_setopt(c, CURLOPT_CAINFO, h->ca);
        curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
    }
    if (timeout_ms > 0)
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    if (bulk) {
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, (long)PRPC_HTTPC_STALL_BYTES);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)PRPC_HTTPC_STALL_S);
        curl_easy_setopt(c, CURLOPT_BUFFERSIZE, (long)HTTPC_BULK_BUFFER);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, s);
    if (h->cancel != NULL) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
    }

    if (strcmp(method, "GET") == 0 && body_len == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (body_len > 0 && s->on_handed != NULL) {
        s->body = body;
        s->body_len = body_len;
        s->body_off = 0;
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read_body);
        curl_easy_setopt(c, CURLOPT_READDATA, s);
        curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek_body);
        curl_easy_setopt(c, CURLOPT_SEEKDATA, s);
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    } else if (body_len > 0 || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body_len > 0 ? (const char *)body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }

    if (body_len > 0 && content_type != NULL)
        rc = add_header(&hdrs, err, "Content-Type: %s", content_type);
    /* libcurl asks a body over 1 MiB to wait for "100 Continue": a round trip
     * per chunk, which across a WAN costs more than sending a chunk that a
     * rare refusal makes useless. */
    if (rc == 0 && body_len > 0)
        rc = add_header(&hdrs, err, "Expect:");
    if (rc == 0 && h->has_key) {
        char sig[PRPC_AUTH_SIG_HEX];
        char sha_hex[PRPC_SHA256_HEX_LEN + 1];
        int64_t now = prpc_now_ms();
        if (body_sha_hex == NULL) {
            uint8_t d[PRPC_SHA256_LEN];
            rc = prpc_sha256(body, body_len, d, err);
            if (rc == 0)
                prpc_hex_encode(d, sizeof(d), sha_hex);
        } else {
            snprintf(sha_hex, sizeof(sha_hex), "%s", body_sha_hex);
        }
        if (rc == 0)
            rc = prpc_auth_nonce(nonce, err);
        if (rc == 0) {
            prpc_auth_sign(h->key, method, pq, now, nonce, sha_hex, sig);
            rc = add_header(&hdrs, err, "X-P2PRPC-Time: %" PRId64, now);
        }
        if (rc == 0)
            rc = add_header(&hdrs, err, "X-P2PRPC-Nonce: %s", nonce);
        if (rc == 0)
            rc = add_header(&hdrs, err, "X-P2PRPC-Signature: %s", sig);
    }
    if (rc == 0 && extra != NULL)
        rc = add_header(&hdrs, err, "%s", extra);
    if (rc != 0)
        goto out;
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);

    if (prpc_fault("delay_request", &delay_ms) && delay_ms > 0) {
        struct timespec ts = {delay_ms / 1000, (long)(delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    cc = curl_easy_perform(c);
    if (cc == CURLE_OK && prpc_fault("drop_reply", NULL)) {
        rc = prpc_error_set(err, PRPC_ECONN, "%s %s: the reply was lost (injected fault)", method,
                            url);
        goto out;
    }
    if (cc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
        if (sink_decide(s) != 0) {
            rc = sink_error(s, err, method, url);
        } else if (h->has_key && *status != 401 && !s->to_file && strcmp(method, "HEAD") != 0) {
            /* Blob bytes (to_file) are checked by their hash, HEAD answers
             * are not signed by the broker (see httpc.h), and a 401 stays the
             * broker's refusal. */
            rc = verify_answer(h, s, *status, nonce, method, url, err);
            if (rc != 0)
                *status = 0;
        }
        goto out;
    }
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT:
        rc = prpc_error_set(err, PRPC_ETIMEDOUT, "%s %s: timed out (%s)", method, url,
                            h->errbuf[0] ? h->errbuf : curl_easy_strerror(cc));
        break;
    case CURLE_WRITE_ERROR:
        if (s->fail_code != 0) {
            rc = sink_error(s, err, method, url);
            break;
        }
        rc = prpc_error_set(err, PRPC_EIO, "%s %s: %s", method, url, curl_easy_strerror(cc));
        break;
    case CURLE_ABORTED_BY_CALLBACK:
        rc = prpc_error_set(err, PRPC_ESTATE, "%s %s: cancelled", method, url);
        break;
    case CURLE_OUT_OF_MEMORY:
        rc = prpc_error_set(err, PRPC_ENOMEM, "%s %s: out of memory", method, url);
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
        rc = prpc_error_set(err, PRPC_ECONN,
                            "%s %s: TLS certificate verify failed (%s); %s%s", method, url,
                            h->errbuf[0] ? h->errbuf : curl_easy_strerror(cc),
                            h->ca != NULL ? "the broker's certificate is not valid for this "
                                            "host under the CA file "
                                          : "give the CA file that signed the broker's "
                                            "certificate (ca=)",
                            h->ca != NULL ? h->ca : "");
        break;
    case CURLE_SSL_CACERT_BADFILE:
        rc = prpc_error_set(err, PRPC_EINVAL, "%s %s: the CA file %s cannot be used (%s)", method,
                            url, h->ca != NULL ? h->ca : "(the system store)",
                            h->errbuf[0] ? h->errbuf : curl_easy_strerror(cc));
        break;
    case CURLE_SSL_CONNECT_ERROR:
        rc = prpc_error_set(err, PRPC_ECONN,
                            "%s %s: TLS handshake failed (%s); is the broker serving https?",
                            method, url, h->errbuf[0] ? h->errbuf : curl_easy_strerror(cc));
        break;
    case CURLE_GOT_NOTHING:
        /* What a TLS listener does with a plain HTTP request. */
        rc = prpc_error_set(err, PRPC_ECONN, "%s %s: cannot reach the broker (%s)%s", method, url,
                            h->errbuf[0] ? h->errbuf : curl_easy_strerror(cc),
                            strncasecmp(h->base, "http://", 7) == 0
                                ? "; if the broker serves TLS, use https://host:port"
                                : "");
        break;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        rc = prpc_error_set(err, PRPC_EINVAL, "%s %s: bad URL (%s)", method, url,
                            h->errbuf[0] ? h->errbuf : curl_easy_strerror(cc));
        break;
    default:
        rc = prpc_error_set(err, PRPC_ECONN, "%s %s: cannot reach the broker (%s)", method, url,
                            h->errbuf[0] ? h->errbuf : curl_easy_strerror(cc));
        break;
    }
out:
    /* The handle must not keep pointers into this call's stack or heap. */
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    free(url);
    return rc;
}

int prpc_httpc_retryable_status(long status)
{
    return status == 500 || status == 502 || status == 503 || status == 504;
}

int64_t prpc_httpc_backoff_ms(int attempt, int64_t first_ms, int64_t max_ms, double u)
{
    int64_t ms = first_ms > 0 ? first_ms : 1;
    for (int i = 1; i < attempt && ms < max_ms; i++)
        ms *= 2;
    if (ms > max_ms)
        ms = max_ms;
    if (!(u >= 0 && u < 1))
        u = 0;
    return ms / 2 + (int64_t)(u * (double)(ms - ms / 2));
}

int prpc_httpc_status_error(long status, const char *body, size_t len, const char *what,
                            prpc_error_t *err)
{
    bson_t *doc = NULL;
    bson_iter_t it, sub;
    const char *name = NULL, *msg = NULL;
    int code = 0, rc;

    if (body != NULL && len > 0 && len < PRPC_HTTPC_MAX_BODY)
        doc = bson_new_from_json((const uint8_t *)body, (ssize_t)len, NULL);
    if (doc != NULL && bson_iter_init_find(&it, doc, "error") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
        bson_iter_recurse(&it, &sub)) {
        while (bson_iter_next(&sub)) {
            if (strcmp(bson_iter_key(&sub), "code") == 0 && BSON_ITER_HOLDS_UTF8(&sub))
                name = bson_iter_utf8(&sub, NULL);
            else if (strcmp(bson_iter_key(&sub), "message") == 0 && BSON_ITER_HOLDS_UTF8(&sub))
                msg = bson_iter_utf8(&sub, NULL);
        }
    }
    code = prpc_error_code_by_name(name);
    if (code == 0)
        code = prpc_error_from_http_status(status);
    if (msg != NULL) {
        rc = prpc_error_set(err, code, "%s: %s", what, msg);
    } else {
        char snippet[HTTPC_ERROR_SNIPPET + 1];
        size_t n = 0;
        for (size_t i = 0; body != NULL && i < len && n < HTTPC_ERROR_SNIPPET; i++)
            snippet[n++] = isprint((unsigned char)body[i]) ? body[i] : '.';
        snippet[n] = '\0';
        rc = prpc_error_set(err, code, "%s: HTTP %ld from the broker%s%s", what, status,
                            n ? ": " : "", snippet);
    }
    if (doc != NULL)
        bson_destroy(doc);
    return rc;
}

int prpc_httpc_request(prpc_httpc_t *h, const char *method, const char *path_and_query,
                       const char *body, size_t body_len, int timeout_ms, long *status,
                       char **resp_body, size_t *resp_len, prpc_error_t *err)
{
    sink_t s;
    int rc;

    if (resp_body != NULL)
        *resp_body = NULL;
    if (resp_len != NULL)
        *resp_len = 0;
    sink_init(&s, h->curl, -1, 0);
    rc = httpc_perform(h, method, path_and_query, body, body_len, NULL, "application/json", NULL,
                       timeout_ms, 0, &s, status, err);
    if (rc == 0 && *status == 401) {
        char what[PRPC_HTTPC_URL_MAX + 64];
        snprintf(what, sizeof(what), "%s %s%s refused", method, h->base, path_and_query);
        prpc_httpc_status_error(401, s.buf, s.len, what, err);
        rc = err != NULL ? (err->code = PRPC_EAUTH) : PRPC_EAUTH;
    }
    if (rc == 0 && resp_body != NULL) {
        if (s.buf == NULL) {
            s.buf = calloc(1, 1);
            if (s.buf == NULL)
                rc = prpc_error_set(err, PRPC_ENOMEM, "out of memory for the answer");
        }
        if (rc == 0) {
            *resp_body = s.buf;
            if (resp_len != NULL)
                *resp_len = s.len;
            s.buf = NULL;
        }
    }
    sink_cleanup(&s);
    return rc;
}

/* HEAD a blob: *held = 1 when the broker has it whole, else *partial = bytes
 * it already has. */
static int blob_head(prpc_httpc_t *h, const char *sha, int *held, uint64_t *partial,
                     prpc_error_t *err)
{
    char pq[128], what[192];
    long status;
    sink_t s;
    int rc;

    snprintf(pq, sizeof(pq), "/v1/blobs/%s", sha);
    sink_init(&s, h->curl, -1, 0);
    rc = httpc_perform(h, "HEAD", pq, NULL, 0, NULL, NULL, NULL, 0, 1, &s, &status, err);
    if (rc != 0)
        goto out;
    *held = status == 200;
    *partial = 0;
    if (status == 404) {
        *partial = s.partial > 0 ? (uint64_t)s.partial : 0;
    } else if (status != 200) {
        snprintf(what, sizeof(what), "asking the broker for blob %s", sha);
        rc = prpc_httpc_status_error(status, s.buf, s.len, what, err);
    }
out:
    sink_cleanup(&s);
    return rc;
}

/* Read exactly len bytes of fd at off. */
static int pread_full(int fd, void *buf, size_t len, uint64_t off, const char *sha,
                      prpc_error_t *err)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return prpc_error_errno(err, errno, "reading fd %d for blob %s at offset %" PRIu64,
                                    fd, sha, off + done);
        if (r == 0) /* not EIO: another try reads the same file, and meets the same end */
            return prpc_error_set(err, PRPC_EINVAL,
                                  "the file (fd %d) ends at %" PRIu64 " bytes, shorter than "
                                  "blob %s it was hashed as: it changed since",
                                  fd, off + done, sha);
        done += (size_t)r;
    }
    return 0;
}

/* One chunk made ready to send: read from the file and hashed. */
typedef struct chunk {
    int fd;
    const char *sha;
    uint64_t off;
    size_t n;
    char *buf;
    char hex[PRPC_SHA256_HEX_LEN + 1];
    const prpc_chunk_digests_t *cd; /* the file's piece digests, or NULL */
    prpc_error_t err;
} chunk_t;

/* Read and hash the chunk of fd at off: while the orchestrator does this,
 * the chunks before it are on the wire. */
static int chunk_read(chunk_t *c, uint64_t off, uint64_t size)
{
    uint8_t digest[PRPC_SHA256_LEN];
    int rc;
    c->off = off;
    c->n = size - off < PRPC_BLOB_UPLOAD_CHUNK ? (size_t)(size - off)
                                                : PRPC_BLOB_UPLOAD_CHUNK;
    prpc_error_clear(&c->err);
    rc = pread_full(c->fd, c->buf, c->n, c->off, c->sha, &c->err);
    if (rc != 0)
        return rc;
    if (c->cd != NULL && c->cd->chunk == PRPC_BLOB_UPLOAD_CHUNK &&
        off / PRPC_BLOB_UPLOAD_CHUNK < c->cd->n && off % PRPC_BLOB_UPLOAD_CHUNK == 0) {
        /* Digested when the file was named; were the file to change since,
         * the broker refuses the chunk and the retry hashes what it reads. */
        prpc_hex_encode(c->cd->d[off / PRPC_BLOB_UPLOAD_CHUNK], PRPC_SHA256_LEN, c->hex);
        return 0;
    }
    rc = prpc_sha256(c->buf, c->n, digest, &c->err);
    if (rc == 0)
        prpc_hex_encode(digest, sizeof(digest), c->hex);
    return rc;
}

int prpc_httpc_upload_blob(prpc_httpc_t *h, int fd, const char *sha_hex, uint64_t size,
                           prpc_error_t *err)
{
    return prpc_httpc_upload_blob_until(h, fd, sha_hex, size, UINT64_MAX, NULL, err);
}

/* The second connection of h, for a second chunk on the wire; NULL when it
 * cannot be made (the upload then sends one chunk at a time). */
static prpc_httpc_t *httpc_twin(prpc_httpc_t *h)
{
    if (h->twin == NULL) {
        h->twin = prpc_httpc_new(h->base, h->has_key ? h->key : NULL, h->connect_timeout_ms,
                                 NULL);
        if (h->twin != NULL && h->ca != NULL && (h->twin->ca = strdup(h->ca)) == NULL) {
            prpc_httpc_free(h->twin);
            h->twin = NULL;
        }
    }
    if (h->twin != NULL)
        h->twin->cancel = h->cancel;
    return h->twin;
}

/* Chunk PUTs in flight, oldest first. Each lane is a connection and a thread
 * sending one chunk; the next chunk starts as soon as the one before has
 * handed its last byte to libcurl, so it reaches the broker behind it (were it
 * to arrive first, the broker refuses it with 409 and the upload resyncs). */
typedef struct upload_pipe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned events; /* bumped when a lane hands its body over or ends */
} upload_pipe_t;

typedef struct put_lane {
    upload_pipe_t *pipe;
    prpc_httpc_t *h;
    const char *sha;
    const char *buf;
    uint64_t off;
    size_t n;
    char hex[PRPC_SHA256_HEX_LEN + 1];
    char pq[160], hdr[128];
    sink_t sink;
    long status;
    int rc;
    prpc_error_t err;
    pthread_t thread;
    int threaded;
    int handed, done; /* under pipe->mu */
} put_lane_t;

static void lane_event(put_lane_t *l, int done)
{
    pthread_mutex_lock(&l->pipe->mu);
    l->handed = 1;
    l->done |= done;
    l->pipe->events++;
    pthread_cond_broadcast(&l->pipe->cv);
    pthread_mutex_unlock(&l->pipe->mu);
}

static void lane_handed(void *arg)
{
    lane_event(arg, 0);
}

static void lane_run(put_lane_t *l)
{
    l->rc = httpc_perform(l->h, "PUT", l->pq, l->buf, l->n, l->hex, "application/octet-stream",
                          l->hdr, 0, 1, &l->sink, &l->status, &l->err);
    lane_event(l, 1);
}

static void *lane_main(void *arg)
{
    lane_run(arg);
    return NULL;
}

/* Send chunk c on lane l (in its own thread when one can be started). */
static void lane_start(put_lane_t *l, const chunk_t *c)
{
    l->buf = c->buf;
    l->off = c->off;
    l->n = c->n;
    memcpy(l->hex, c->hex, sizeof(l->hex));
    snprintf(l->pq, sizeof(l->pq), "/v1/blobs/%s?offset=%" PRIu64, l->sha, l->off);
    snprintf(l->hdr, sizeof(l->hdr), "X-P2PRPC-Chunk-Sha256: %s", l->hex);
    sink_cleanup(&l->sink);
    sink_init(&l->sink, l->h->curl, -1, 0);
    l->sink.on_handed = lane_handed;
    l->sink.handed_arg = l;
    l->status = 0;
    prpc_error_clear(&l->err);
    pthread_mutex_lock(&l->pipe->mu);
    l->handed = l->done = 0;
    pthread_mutex_unlock(&l->pipe->mu);
    l->threaded = pthread_create(&l->thread, NULL, lane_main, l) == 0;
    if (!l->threaded)
        lane_run(l);
}

static void lane_join(put_lane_t *l)
{
    if (l->threaded) {
        pthread_join(l->thread, NULL);
        l->threaded = 0;
    }
}

int prpc_httpc_upload_blob_until(prpc_httpc_t *h, int fd, const char *sha_hex, uint64_t size,
                                 uint64_t until, int *complete, prpc_error_t *err)
{
    return prpc_httpc_upload_blob_hashed(h, fd, sha_hex, size, until, complete, NULL, err);
}

int prpc_httpc_upload_blob_hashed(prpc_httpc_t *h, int fd, const char *sha_hex, uint64_t size,
                                  uint64_t until, int *complete, const prpc_chunk_digests_t *cd,
                                  prpc_error_t *err)
{
    char pq[160], what[192];
    chunk_t chunks[2], *prep = NULL;
    put_lane_t lanes[2], *q[2] = {NULL, NULL};
    upload_pipe_t pipe;
    uint64_t off = 0, send_off = 0, refused_off = 0;
    int held = 0, resyncs = 0, refused = 0, empty_sent = 0, rc = 0, nlanes, nq = 0;
    long status;
    sink_t s;
    prpc_error_t why;

    prpc_error_clear(&why);
    memset(chunks, 0, sizeof(chunks));
    memset(lanes, 0, sizeof(lanes));
    sink_init(&s, h->curl, -1, 0);
    if (!prpc_blob_valid_sha(sha_hex))
        return prpc_error_set(err, PRPC_EINVAL, "bad blob name '%s': expected 64 lowercase hex",
                              sha_hex ? sha_hex : "(null)");
    if (fd < 0)
        return prpc_error_set(err, PRPC_EINVAL, "bad fd %d for blob %s", fd, sha_hex);
    if (complete != NULL)
        *complete = 1;
    rc = blob_head(h, sha_hex, &held, &off, err);
    if (rc != 0 || held)
        return rc;
    if (off > size)
        off = 0; /* the broker's partial is longer than the blob: PUT at 0 makes it say so */
    if (off >= until && off < size) {
        *complete = 0;
        return 0;
    }
    for (int i = 0; i < 2; i++) {
        chunks[i].fd = fd;
        chunks[i].sha = sha_hex;
        chunks[i].cd = cd;
        if (size > 0 && (chunks[i].buf = malloc(size < PRPC_BLOB_UPLOAD_CHUNK
                                                    ? (size_t)size
                                                    : PRPC_BLOB_UPLOAD_CHUNK)) == NULL) {
            free(chunks[0].buf);
            return prpc_error_set(err, PRPC_ENOMEM, "out of memory for a chunk of blob %s",
                                  sha_hex);
        }
    }
    pthread_mutex_init(&pipe.mu, NULL);
    pthread_cond_init(&pipe.cv, NULL);
    pipe.events = 0;
    /* A blob of one chunk has nothing to overlap: no second connection. */
    nlanes = size > PRPC_BLOB_UPLOAD_CHUNK && until > PRPC_BLOB_UPLOAD_CHUNK &&
                     httpc_twin(h) != NULL
                 ? 2
                 : 1;
    for (int i = 0; i < 2; i++) {
        lanes[i].pipe = &pipe;
        lanes[i].h = i == 0 ? h : h->twin;
        lanes[i].sha = sha_hex;
    }
    send_off = off;
    /* While chunks are on the wire (and the broker hashes and syncs them) the
     * next is read and hashed, so the two ends work at the same time. */
    for (;;) {
        int progress = 0, more, oldest_done;
        unsigned seen;
        pthread_mutex_lock(&pipe.mu);
        seen = pipe.events;
        oldest_done = nq > 0 && q[0]->done;
        pthread_mutex_unlock(&pipe.mu);

        /* An empty blob still sends one empty chunk, so the broker has a file to commit. */
        more = (send_off < size || (size == 0 && !empty_sent)) &&
               (until >= size || send_off < until);
        if (prep == NULL && more) {
            /* A buffer is free when no lane still reads it. */
            for (int i = 0; i < 2 && prep == NULL; i++) {
                int busy = 0;
                pthread_mutex_lock(&pipe.mu);
                for (int k = 0; k < nq; k++)
                    busy |= q[k]->buf == chunks[i].buf && !q[k]->handed && chunks[i].buf != NULL;
                pthread_mutex_unlock(&pipe.mu);
                if (busy)
                    continue;
                if ((rc = chunk_read(&chunks[i], send_off, size)) != 0) {
                    if (err != NULL)
                        *err = chunks[i].err;
                    goto out;
                }
                /* After the hash, so the broker sees a chunk that does not
                 * match its header, as with damage on the wire. Each send
                 * reads its chunk again. */
                if (chunks[i].n > 0 && prpc_fault("corrupt_chunk", NULL))
                    chunks[i].buf[chunks[i].n / 2] ^= 0x01;
                prep = &chunks[i];
                progress = 1;
            }
        }
        if (prep != NULL && nq < nlanes) {
            int wire_free = nq == 0;
            if (!wire_free) {
                pthread_mutex_lock(&pipe.mu);
                wire_free = q[nq - 1]->handed;
                pthread_mutex_unlock(&pipe.mu);
            }
            if (wire_free) {
                put_lane_t *l = nq == 0 || q[0] != &lanes[0] ? &lanes[0] : &lanes[1];
                lane_start(l, prep);
                q[nq++] = l;
                send_off += prep->n;
                empty_sent = 1;
                prep = NULL;
                continue;
            }
        }
        if (oldest_done) {
            put_lane_t *l = q[0];
            lane_join(l);
            q[0] = q[1];
            nq--;
            if (l->rc != 0) {
                rc = l->rc;
                if (err != NULL)
                    *err = l->err;
                goto out;
            }
            if (l->status == 200) {
                off = l->off + l->n;
                resyncs = 0; /* moving on: a later 409 is news, not a loop */
                continue;
            }
            /* Not written. What was sent behind it cannot continue it. */
            while (nq > 0) {
                lane_join(q[0]);
                q[0] = q[1];
                nq--;
            }
            prep = NULL;
            status = l->status;
            off = l->off;
            if (status == 409 && resyncs < PRPC_HTTPC_UPLOAD_RESYNCS) {
                /* Another uploader (or an earlier try of ours) moved the broker's
                 * copy on: ask where it is now. */
                resyncs++;
            } else {
                snprintf(what, sizeof(what), "uploading blob %s at offset %" PRIu64, sha_hex,
                         off);
                rc = prpc_httpc_status_error(status, l->sink.buf, l->sink.len, what, &why);
                if (rc != PRPC_ECORRUPT) {
                    if (err != NULL)
                        *err = why;
                    goto out;
                }
                /* The chunk did not match its hash when it arrived: the broker
                 * kept nothing of it. Send it again, from where the broker's copy
                 * ends, a bounded number of times: a chunk that is always damaged
                 * (bad memory, a broken link) must end the upload, not loop. */
                chunks[0].cd = chunks[1].cd = NULL; /* from now on hash what is read */
                if (off != refused_off)
                    refused = 0;
                refused_off = off;
                if (++refused >= HTTPC_CHUNK_SENDS) {
                    rc = prpc_error_set(err, PRPC_ECORRUPT,
                                        "uploading blob %s: the chunk at offset %" PRIu64
                                        " was refused as corrupt %d times in a row; nothing of "
                                        "it was kept (%s)",
                                        sha_hex, off, refused, why.message);
                    goto out;
                }
            }
            if ((rc = blob_head(h, sha_hex, &held, &off, err)) != 0 || held)
                goto out;
            if (off > size)
                off = 0;
            send_off = off;
            empty_sent = 0;
            continue;
        }
        if (nq == 0 && prep == NULL && !more)
            break;
        if (!progress) {
            pthread_mutex_lock(&pipe.mu);
            while (pipe.events == seen)
                pthread_cond_wait(&pipe.cv, &pipe.mu);
            pthread_mutex_unlock(&pipe.mu);
        }
    }
    if (off < size && off >= until) {
        *complete = 0;
        goto out;
    }
    snprintf(pq, sizeof(pq), "/v1/blobs/%s/commit?size=%" PRIu64, sha_hex, size);
    sink_cleanup(&s);
    sink_init(&s, h->curl, -1, 0);
    rc = httpc_perform(h, "POST", pq, NULL, 0, NULL, NULL, NULL, 0, 1, &s, &status, err);
    if (rc == 0 && status != 200) {
        snprintf(what, sizeof(what), "committing blob %s (%" PRIu64 " bytes)", sha_hex, size);
        rc = prpc_httpc_status_error(status, s.buf, s.len, what, err);
    }
out:
    while (nq > 0) {
        lane_join(q[0]);
        q[0] = q[1];
        nq--;
    }
    for (int i = 0; i < 2; i++) {
        sink_cleanup(&lanes[i].sink);
        free(chunks[i].buf);
    }
    sink_cleanup(&s);
    pthread_cond_destroy(&pipe.cv);
    pthread_mutex_destroy(&pipe.mu);
    return rc;
}

/* One download attempt into bd's partial file; commits when complete. */
static int download_once(prpc_httpc_t *h, const char *sha, int64_t follow, prpc_blobdir_t *bd,
                         prpc_error_t *err)
{
    char pq[160], what[PRPC_HTTPC_URL_MAX + 128], range[64];
    uint64_t offset = 0;
    long status = 0;
    int fd = -1, rc;
    sink_t s;

    sink_init(&s, h->curl, -1, 0);
    if ((rc = prpc_blobdir_partial_open(bd, sha, &fd, &offset, err)) != 0)
        return rc;
    sink_init(&s, h->curl, fd, offset);
    prpc_blob_writer_init(&s.writer, fd, offset, NULL);
    s.corrupt = prpc_fault("corrupt_download", NULL);
    s.bd = bd;
    s.sha = sha;
    if (follow >= 0)
        snprintf(pq, sizeof(pq), "/v1/blobs/%s?follow=%" PRId64, sha, follow);
    else
        snprintf(pq, sizeof(pq), "/v1/blobs/%s", sha);
    snprintf(range, sizeof(range), "Range: bytes=%" PRIu64 "-", offset);
    rc = httpc_perform(h, "GET", pq, NULL, 0, NULL, NULL, offset > 0 ? range : NULL, 0, 1, &s,
                       &status, err);
    /* Whatever arrived is kept, even when the transfer broke off: it is where
     * the next try resumes. */
    if (prpc_blob_writer_flush(&s.writer, NULL) != 0 && rc == 0)
        rc = prpc_error_errno(err, errno, "writing partial blob %s", sha);
    prpc_blob_writer_cleanup(&s.writer);
    if (s.file_off > s.start_off && fsync(fd) != 0 && rc == 0)
        rc = prpc_error_errno(err, errno, "syncing partial blob %s", sha);
    if (close(fd) != 0 && rc == 0)
        rc = prpc_error_errno(err, errno, "closing partial blob %s", sha);
    fd = -1;
    if (rc != 0)
        goto out;
    if (status == 200 || status == 206) {
        rc = prpc_blobdir_commit(bd, sha, s.file_off, err);
    } else if (status == 416) {
        /* What we hold already reaches the end: it is either the whole blob
         * (a download interrupted before its commit) or garbage, which the
         * commit drops. */
        rc = prpc_blobdir_commit(bd, sha, offset, err);
    } else {
        snprintf(what, sizeof(what), "downloading blob %s from %s", sha, h->base);
        rc = prpc_httpc_status_error(status, s.buf, s.len, what, err);
    }
out:
    sink_cleanup(&s);
    return rc;
}

static int download(prpc_httpc_t *h, const char *sha_hex, int64_t follow, prpc_blobdir_t *bd,
                    prpc_error_t *err)
{
    prpc_error_t last;
    int rc = 0;
    if (!prpc_blob_valid_sha(sha_hex))
        return prpc_error_set(err, PRPC_EINVAL, "bad blob name '%s': expected 64 lowercase hex",
                              sha_hex ? sha_hex : "(null)");
    if (prpc_blobdir_stat(bd, sha_hex, NULL, NULL) == 0)
        return 0;
    prpc_error_clear(&last);
    /* A commit that fails the hash has dropped the partial file, so each
     * retry starts from zero; a blob that never arrives whole ends with
     * ECORRUPT rather than an endless refetch. */
    for (int i = 0; i < HTTPC_DOWNLOAD_TRIES; i++) {
        rc = download_once(h, sha_hex, follow, bd, &last);
        if (rc != PRPC_ECORRUPT)
            break;
    }
    if (rc == PRPC_ECORRUPT)
        return prpc_error_set(err, PRPC_ECORRUPT,
                              "downloading blob %s from %s: it arrived corrupt %d times in a "
                              "row and nothing was kept (last: %s)",
                              sha_hex, h->base, HTTPC_DOWNLOAD_TRIES, last.message);
    if (rc != 0 && err != NULL)
        *err = last;
    return rc;
}

int prpc_httpc_download_blob(prpc_httpc_t *h, const char *sha_hex, prpc_blobdir_t *bd,
                             prpc_error_t *err)
{
    return download(h, sha_hex, -1, bd, err);
}

int prpc_httpc_follow_blob(prpc_httpc_t *h, const char *sha_hex, uint64_t size,
                           prpc_blobdir_t *bd, prpc_error_t *err)
{
    if (size > (uint64_t)INT64_MAX)
        return prpc_error_set(err, PRPC_EINVAL, "blob %s: size %" PRIu64 " is too large",
                              sha_hex ? sha_hex : "(null)", size);
    return download(h, sha_hex, (int64_t)size, bd, err);
}
