/*
 * fuzz_router.c - libFuzzer target: the broker's HTTP front door (h2o's
 * request parsing and limits, the router and its header and query checks,
 * authentication) fed raw bytes over a loopback socket.
 *
 * Two brokers run in this process for the whole fuzzing session (started
 * once, port 0): one without a key, where every route is reachable, and one
 * with a key, which gets the inputs that carry an X-P2PRPC-Time header. Each
 * input is sent on a fresh connection, the write side is shut (so a
 * half-sent request ends instead of waiting for the request timeout), and the
 * answer is read with a short timeout.
 *
 * Invariants: no crash, leak or UB in the broker's thread (the sanitizers
 * watch it: it is this process); no answer has a 5xx status; and after every
 * input the broker still answers GET /v1/health on a keep-alive connection.
 * Nothing the inputs write leaves the temporary data directory.
 */
#include "fuzz_util.h"
#include "broker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#define READ_BUDGET_MS 300

static const char FUNCTIONS[] =
    "[{\"name\": \"p2prpc_all\", \"version\": "
    "\"abababababababababababababababababababababababababababababababab\", \"args\": ["
    "{\"name\": \"n\", \"kind\": \"int\"}, {\"name\": \"x\", \"kind\": \"float\"}, "
    "{\"name\": \"b\", \"kind\": \"bool\"}, {\"name\": \"s\", \"kind\": \"str\"}, "
    "{\"name\": \"f\", \"kind\": \"file\"}], \"returns\": [{\"name\": \"m\", \"kind\": \"int\"}]}, "
    "{\"name\": \"p2prpc_small\", \"version\": "
    "\"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\", \"args\": ["
    "{\"name\": \"n\", \"kind\": \"int\"}], \"returns\": [{\"name\": \"m\", \"kind\": \"int\"}]}]";

static const uint8_t KEY[32] = "0123456789abcdef0123456789abcde";

typedef struct node {
    prpc_broker_t *broker;
    int port;
    int health_fd; /* keep-alive connection for the health check */
    char dir[700];
} node_t;

static char parent[512];
static node_t open_node, keyed_node;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int connect_to(int port)
{
    struct sockaddr_in sa;
    int fd = -1, one = 1, rc = -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* libFuzzer's timers send signals: a connect they interrupt (EINTR) is
     * started over on a fresh socket, not counted as a finding. */
    for (int attempt = 0; attempt < 20; attempt++) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        FUZZ_CHECK(fd >= 0, "socket: %s", strerror(errno));
        rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        if (rc == 0 || errno != EINTR)
            break;
        close(fd);
    }
    FUZZ_CHECK(rc == 0, "connect to port %d: %s", port, strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Read what arrives until EOF, the budget runs out or cap bytes. */
static size_t read_some(int fd, char *out, size_t cap, int budget_ms)
{
    int64_t deadline = mono_ms() + budget_ms;
    size_t got = 0;
    while (got < cap) {
        struct pollfd p = {fd, POLLIN, 0};
        int64_t left = deadline - mono_ms();
        ssize_t n;
        int pr;
        if (left <= 0)
            break;
        pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue; /* a libFuzzer timer signal, not an answer */
        if (pr <= 0)
            break;
        n = recv(fd, out + got, cap - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

/* Read one whole answer (headers and Content-Length bytes) from a keep-alive
 * connection; its length, or 0 when it did not come within budget_ms. */
static size_t read_answer(int fd, char *out, size_t cap, int budget_ms)
{
    int64_t deadline = mono_ms() + budget_ms;
    size_t got = 0;
    while (got < cap - 1) {
        struct pollfd p = {fd, POLLIN, 0};
        int64_t left = deadline - mono_ms();
        const char *end, *cl;
        ssize_t n;
        int pr;
        if (left <= 0)
            return 0;
        pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return 0;
        n = recv(fd, out + got, cap - 1 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        got += (size_t)n;
        out[got] = '\0';
        end = strstr(out, "\r\n\r\n");
        cl = strcasestr(out, "content-length:");
        if (end != NULL && cl != NULL && cl < end &&
            got >= (size_t)(end + 4 - out) + strtoull(cl + 15, NULL, 10))
            return got;
    }
    return 0;
}

static void start_node(node_t *n, const char *name, const uint8_t *key)
{
    prpc_broker_config_t cfg;
    prpc_error_t err;
    snprintf(n->dir, sizeof(n->dir), "%s/%s", parent, name);
    memset(&cfg, 0, sizeof(cfg));
    cfg.host = "127.0.0.1";
    cfg.data_dir = n->dir;
    cfg.synchronous = "off"; /* durability is not what is fuzzed here */
    cfg.functions_json = FUNCTIONS;
    cfg.key = key;
    cfg.lease_ms = 1000;
    n->broker = prpc_broker_new(&cfg, &err);
    FUZZ_CHECK(n->broker != NULL, "broker: %s", err.message);
    FUZZ_CHECK(prpc_broker_start(n->broker, &err) == 0, "start: %s", err.message);
    n->port = prpc_broker_port(n->broker);
    n->health_fd = -1;
}

static void stop_all(void)
{
    /* Stopped, not freed: a stopped server with clients still connected keeps
     * its loop memory (httpd.c), and it stays reachable from here. */
    prpc_broker_stop(open_node.broker);
    prpc_broker_stop(keyed_node.broker);
    fuzz_rmtree(parent);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_mkdtemp("fuzz-router", parent, sizeof(parent));
    start_node(&open_node, "open", NULL);
    start_node(&keyed_node, "keyed", KEY);
    atexit(stop_all);
    return 0;
}

/* Every status line in the answer is below 500. */
static void check_statuses(const char *r, size_t len, const uint8_t *in, size_t in_len)
{
    for (size_t i = 0; i + 12 <= len; i++) {
        if (memcmp(r + i, "HTTP/1.", 7) != 0 || (i > 0 && r[i - 1] != '\n'))
            continue;
        FUZZ_CHECK(r[i + 9] != '5', "a 5xx answer to a %zu-byte request: %.200s", in_len,
                   r + i);
    }
    (void)in;
}

static void check_health(node_t *n)
{
    static const char req[] = "GET /v1/health HTTP/1.1\r\nHost: fuzz\r\n\r\n";
    char buf[1024];
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t got;
        if (n->health_fd < 0)
            n->health_fd = connect_to(n->port);
        if (send(n->health_fd, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(req) - 1)) {
            got = read_answer(n->health_fd, buf, sizeof(buf), 5000);
            if (got > 0) {
                FUZZ_CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0 && strstr(buf, "\"ok\": true"),
                           "health: %.200s", buf);
                return;
            }
        }
        /* The keep-alive connection may have been closed while idle: once more. */
        close(n->health_fd);
        n->health_fd = -1;
    }
    FUZZ_CHECK(0, "the broker on port %d stopped answering GET /v1/health", n->port);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char answer[1 << 16];
    node_t *n = memmem(data, size, "P2PRPC-Time", 11) || memmem(data, size, "p2prpc-time", 11)
                    ? &keyed_node
                    : &open_node;
    size_t sent = 0, got;
    int fd = connect_to(n->port);
    while (sent < size) {
        ssize_t w = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* the broker closed early (e.g. 413 before the body): fine */
        sent += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    got = read_some(fd, answer, sizeof(answer), READ_BUDGET_MS);
    close(fd);
    check_statuses(answer, got, data, size);
    check_health(n);
    return 0;
}
