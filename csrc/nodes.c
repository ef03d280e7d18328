/*
 * nodes.c - brokers learning of each other (nodes.h).
 */
#include "nodes.h"
#include "auth.h"
#include "httpc.h"
#include "json.h"
#include "util.h"
#include "wire.h"

#include <bson/bson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct node {
    char addr[PRPC_NODES_ADDR_MAX + 1];
    int configured;     /* given with --peer: never forgotten */
    int64_t last_ok_ms; /* last answer; 0 = never */
    int64_t added_ms;
} node_t;

struct prpc_nodes {
    char self[PRPC_NODES_ADDR_MAX + 1];
    uint8_t key[PRPC_AUTH_KEY_LEN];
    int has_key;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    node_t nodes[PRPC_NODES_MAX];
    size_t n;
    int stop;
    int started;
    pthread_t thread;
};

static int valid_addr(const char *a, size_t len)
{
    if (len == 0 || len > PRPC_NODES_ADDR_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = a[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == ':' || c == '-' || c == '[' || c == ']' || c == '/' || c == '_'))
            return 0;
    }
    return 1;
}

static node_t *find_locked(prpc_nodes_t *n, const char *addr)
{
    for (size_t i = 0; i < n->n; i++)
        if (strcmp(n->nodes[i].addr, addr) == 0)
            return &n->nodes[i];
    return NULL;
}

static node_t *add_locked(prpc_nodes_t *n, const char *addr, size_t len, int64_t now_ms)
{
    node_t *x;
    char buf[PRPC_NODES_ADDR_MAX + 1];
    if (!valid_addr(addr, len))
        return NULL;
    memcpy(buf, addr, len);
    buf[len] = '\0';
    if (strcmp(buf, n->self) == 0)
        return NULL;
    if ((x = find_locked(n, buf)) != NULL)
        return x;
    if (n->n == PRPC_NODES_MAX)
        return NULL;
    x = &n->nodes[n->n++];
    memset(x, 0, sizeof(*x));
    memcpy(x->addr, buf, len + 1);
    x->added_ms = now_ms;
    return x;
}

prpc_nodes_t *prpc_nodes_new(const char *self, const char *const *peers, const uint8_t *key,
                             prpc_error_t *err)
{
    prpc_nodes_t *n = calloc(1, sizeof(*n));
    if (n == NULL) {
        prpc_error_set(err, PRPC_ENOMEM, "out of memory for the node list");
        return NULL;
    }
    if (self == NULL || !valid_addr(self, strlen(self))) {
        free(n);
        prpc_error_set(err, PRPC_EINVAL, "invalid advertised address \"%.100s\"",
                       self ? self : "(null)");
        return NULL;
    }
    snprintf(n->self, sizeof(n->self), "%s", self);
    if (key != NULL) {
        memcpy(n->key, key, PRPC_AUTH_KEY_LEN);
        n->has_key = 1;
    }
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->wake, NULL);
    for (size_t i = 0; peers != NULL && peers[i] != NULL; i++) {
        node_t *x = add_locked(n, peers[i], strlen(peers[i]), prpc_now_ms());
        if (x == NULL && strcmp(peers[i], self) != 0) {
            prpc_error_set(err, PRPC_EINVAL, "invalid peer address \"%.100s\" (or more than %d)",
                           peers[i], PRPC_NODES_MAX);
            prpc_nodes_free(n);
            return NULL;
        }
        if (x != NULL)
            x->configured = 1;
    }
    return n;
}

/* Record that addr answered at now_ms; a node that did not answer keeps its
 * last answer's time, so it ages out (PRPC_NODES_ALIVE_MS). */
static void nodes_seen(prpc_nodes_t *n, const char *addr, int answered, int64_t now_ms)
{
    node_t *x;
    pthread_mutex_lock(&n->lock);
    x = find_locked(n, addr);
    if (x != NULL && answered)
        x->last_ok_ms = now_ms;
    pthread_mutex_unlock(&n->lock);
}

/* Merge the addresses of a /v1/nodes answer (JSON text). */
static void nodes_merge(prpc_nodes_t *n, const char *json, size_t len, int64_t now_ms)
{
    bson_t *doc = bson_new_from_json((const uint8_t *)json, (ssize_t)len, NULL);
    bson_iter_t it, arr;
    if (doc == NULL)
        return;
    pthread_mutex_lock(&n->lock);
    if (bson_iter_init_find(&it, doc, "nodes") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr)) {
        while (bson_iter_next(&arr)) {
            uint32_t l = 0;
            const char *a;
            if (!BSON_ITER_HOLDS_UTF8(&arr))
                continue;
            a = bson_iter_utf8(&arr, &l);
            add_locked(n, a, l, now_ms);
        }
    }
    pthread_mutex_unlock(&n->lock);
    bson_destroy(doc);
}

/* A node is listed while it answers; a learned one that has not answered
 * for PRPC_NODES_DEAD_MS (or never, since it was learned that long ago) is
 * forgotten. */
static void age_locked(prpc_nodes_t *n, int64_t now_ms)
{
    size_t j = 0;
    for (size_t i = 0; i < n->n; i++) {
        node_t *x = &n->nodes[i];
        int64_t since = x->last_ok_ms ? x->last_ok_ms : x->added_ms;
        if (!x->configured && now_ms - since > PRPC_NODES_DEAD_MS)
            continue;
        n->nodes[j++] = *x;
    }
    n->n = j;
}

char *prpc_nodes_json(prpc_nodes_t *n, size_t *len, prpc_error_t *err)
{
    prpc_buf_t out = PRPC_BUF_INIT;
    const char *addrs[PRPC_NODES_MAX + 1];
    size_t count = 0;
    int64_t now = prpc_now_ms();
    addrs[count++] = n->self;
    pthread_mutex_lock(&n->lock);
    for (size_t i = 0; i < n->n; i++) {
        const node_t *x = &n->nodes[i];
        if (x->last_ok_ms == 0 || now - x->last_ok_ms > PRPC_NODES_ALIVE_MS)
            continue;
        addrs[count++] = x->addr;
    }
    /* Written under the lock: the addresses are the table's own. */
    prpc_wire_write_nodes(&out, addrs, count);
    pthread_mutex_unlock(&n->lock);
    return prpc_buf_take(&out, len, err);
}

static void *gossip_main(void *arg)
{
    prpc_nodes_t *n = arg;
    char path[PRPC_NODES_ADDR_MAX * 3 + 32];
    size_t o = (size_t)snprintf(path, sizeof(path), "/v1/nodes?from=");
    /* Announce ourselves: the asked broker learns of us and checks us back. */
    for (const char *p = n->self; *p != '\0' && o + 4 < sizeof(path); p++) {
        if (*p == ':' || *p == '/' || *p == '[' || *p == ']')
            o += (size_t)snprintf(path + o, sizeof(path) - o, "%%%02X", (unsigned char)*p);
        else
            path[o++] = *p;
    }
    path[o] = '\0';
    pthread_mutex_lock(&n->lock);
    while (!n->stop) {
        char addrs[PRPC_NODES_MAX][PRPC_NODES_ADDR_MAX + 1];
        size_t count = n->n;
        struct timespec until;
        for (size_t i = 0; i < count; i++)
            memcpy(addrs[i], n->nodes[i].addr, sizeof(addrs[i]));
        pthread_mutex_unlock(&n->lock);
        for (size_t i = 0; i < count; i++) {
            prpc_httpc_t *h = prpc_httpc_new(addrs[i], n->has_key ? n->key : NULL, 1000, NULL);
            long status = 0;
            char *body = NULL;
            size_t len = 0;
            int ok = h != NULL && prpc_httpc_request(h, "GET", path, NULL, 0, 2000, &status,
                                                     &body, &len, NULL) == 0 &&
                     status == 200;
            nodes_seen(n, addrs[i], ok, prpc_now_ms());
            if (ok)
                nodes_merge(n, body, len, prpc_now_ms());
            free(body);
            prpc_httpc_free(h);
        }
        pthread_mutex_lock(&n->lock);
        age_locked(n, prpc_now_ms());
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += PRPC_NODES_EVERY_MS / 1000;
        until.tv_nsec += (long)(PRPC_NODES_EVERY_MS % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        if (!n->stop)
            pthread_cond_timedwait(&n->wake, &n->lock, &until);
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

void prpc_nodes_learn(prpc_nodes_t *n, const char *addr)
{
    pthread_mutex_lock(&n->lock);
    add_locked(n, addr, strlen(addr), prpc_now_ms());
    pthread_mutex_unlock(&n->lock);
}

int prpc_nodes_start(prpc_nodes_t *n, prpc_error_t *err)
{
    int rc = pthread_create(&n->thread, NULL, gossip_main, n);
    if (rc != 0)
        return prpc_error_errno(err, rc, "starting the node gossip thread");
    n->started = 1;
    return 0;
}

void prpc_nodes_free(prpc_nodes_t *n)
{
    if (n == NULL)
        return;
    if (n->started) {
        pthread_mutex_lock(&n->lock);
        n->stop = 1;
        pthread_cond_signal(&n->wake);
        pthread_mutex_unlock(&n->lock);
        pthread_join(n->thread, NULL);
    }
    pthread_cond_destroy(&n->wake);
    pthread_mutex_destroy(&n->lock);
    free(n);
}
