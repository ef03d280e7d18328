/*
 * test_store.c - the store conformance suite (every backend must pass the
 * cases in `conformance[]`, each run on an empty store), then what only the
 * SQLite backend promises: files on disk, refusing damaged or foreign files,
 * surviving SIGKILL mid-write, many threads on one handle.
 *
 * MongoDB runs only when P2PRPC_TEST_MONGO_URI is set (each case then needs an
 * empty database behind that uri).
 */
#include "store.h"
#include "test.h"

#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define V1 "aa11"
#define V2 "bb22"

static char root[128];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    PRPC_UNUSED(sb);
    PRPC_UNUSED(flag);
    PRPC_UNUSED(ftw);
    return remove(path);
}

static void rm_root(void)
{
    if (root[0] != '\0')
        nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A path under this run's temporary directory. */
static const char *tmp_path(char *buf, size_t size, const char *name)
{
    if (root[0] == '\0') {
        snprintf(root, sizeof(root), "/tmp/prpc-test-store-XXXXXX");
        if (mkdtemp(root) == NULL) {
            perror("mkdtemp");
            exit(2);
        }
        atexit(rm_root);
    }
    snprintf(buf, size, "%s/%s", root, name);
    return buf;
}

static void idn(char out[PRPC_CALL_ID_HEX + 1], unsigned n)
{
    snprintf(out, PRPC_CALL_ID_HEX + 1, "%064x", n);
}

static int put(prpc_store_t *s, unsigned n, const char *function, const char *version,
               int64_t now)
{
    prpc_call_t c = {0};
    idn(c.id, n);
    snprintf(c.function, sizeof(c.function), "%s", function);
    snprintf(c.version, sizeof(c.version), "%s", version);
    c.args_json = "{\"x\":1}";
    return prpc_store_call_submit(s, &c, now, NULL, NULL, NULL);
}

static int lease1(prpc_store_t *s, const char *function, const char *version, int64_t now,
                  prpc_call_t *out, prpc_error_t *err)
{
    const char *f[] = {function}, *v[] = {version};
    return prpc_store_lease_next(s, f, v, 1, "w1", 1000, now, out, err);
}

static int state_of(prpc_store_t *s, unsigned n)
{
    char id[PRPC_CALL_ID_HEX + 1];
    prpc_call_t c = {0};
    int state;
    idn(id, n);
    if (prpc_store_call_get(s, id, &c, NULL) < 0)
        return -1;
    state = c.state;
    prpc_call_cleanup(&c);
    return state;
}

#define CHECK_ERR(expr, want, words)                                                       \
    do {                                                                                   \
        prpc_error_clear(&err);                                                            \
        CHECK_EQ_INT((expr), (want));                                                      \
        CHECK_EQ_INT(err.code, (want));                                                    \
        if (strstr(err.message, (words)) == NULL) {                                        \
            fprintf(stderr, "  FAIL %s:%d: \"%s\" not in \"%s\"\n", __FILE__, __LINE__,    \
                    (words), err.message);                                                 \
            test_failed_ = 1;                                                              \
            return;                                                                        \
        }                                                                                  \
    } while (0)

/* ---- conformance cases: each gets an empty store ---- */

static void case_submit_get(prpc_store_t *s)
{
    prpc_call_t c = {0}, cur = {0}, got = {0};
    prpc_error_t err;
    int created = -1;
    idn(c.id, 1);
    strcpy(c.function, "p2prpc_add");
    strcpy(c.version, V1);
    c.args_json = "{\"a\":1,\"b\":\"two\"}";
    CHECK_EQ_INT(prpc_store_call_submit(s, &c, 1000, &created, &cur, &err), 0);
    CHECK_EQ_INT(created, 1);
    CHECK_EQ_STR(cur.id, c.id);
    CHECK_EQ_INT(cur.state, PRPC_CALL_QUEUED);
    CHECK_EQ_INT(cur.created_ms, 1000);
    prpc_call_cleanup(&cur);

    CHECK_EQ_INT(prpc_store_call_get(s, c.id, &got, &err), 0);
    CHECK_EQ_STR(got.function, "p2prpc_add");
    CHECK_EQ_STR(got.version, V1);
    CHECK_EQ_STR(got.args_json, "{\"a\":1,\"b\":\"two\"}");
    CHECK(got.outputs_json == NULL && got.error_json == NULL);
    CHECK_EQ_INT(got.attempts, 0);
    CHECK_EQ_INT(got.updated_ms, 1000);
    CHECK_EQ_INT(got.finished_ms, 0);
    CHECK_EQ_STR(got.lease_id, "");
    CHECK_EQ_STR(got.worker, "");
    CHECK(got.progress == 0.0);
    prpc_call_cleanup(&got);

    /* Same id = same call: the stored arguments win, nothing changes. */
    c.args_json = "{\"other\":true}";
    CHECK_EQ_INT(prpc_store_call_submit(s, &c, 2000, &created, &cur, &err), 0);
    CHECK_EQ_INT(created, 0);
    CHECK_EQ_STR(cur.args_json, "{\"a\":1,\"b\":\"two\"}");
    CHECK_EQ_INT(cur.updated_ms, 1000);
    prpc_call_cleanup(&cur);

    strcpy(c.function, "p2prpc_other");
    CHECK_ERR(prpc_store_call_submit(s, &c, 2000, &created, NULL, &err), PRPC_EEXIST,
              "p2prpc_add");
    CHECK_EQ_INT(created, 0);

    idn(c.id, 99);
    CHECK_ERR(prpc_store_call_get(s, c.id, &got, &err), PRPC_ENOTFOUND, c.id);
    CHECK(got.args_json == NULL);
}

static void case_bad_inputs(prpc_store_t *s)
{
    prpc_call_t c = {0}, out = {0};
    prpc_error_t err;
    char id[PRPC_CALL_ID_HEX + 1], upper[PRPC_CALL_ID_HEX + 1], sha[PRPC_CALL_ID_HEX + 1];
    char longname[200];
    const char *f[] = {"f"}, *v[] = {V1}, *badv[] = {"XYZ"}, *longf[] = {longname};
    char *big;
    int64_t counts[PRPC_CALL_NSTATES];
    idn(id, 1);
    idn(sha, 2);
    strcpy(upper, id);
    upper[10] = 'A';

    strcpy(c.function, "f");
    strcpy(c.version, V1);
    c.args_json = "{}";
    strcpy(c.id, upper);
    CHECK_ERR(prpc_store_call_submit(s, &c, 1, NULL, NULL, &err), PRPC_EINVAL, "call id");
    strcpy(c.id, "abc");
    CHECK_ERR(prpc_store_call_submit(s, &c, 1, NULL, NULL, &err), PRPC_EINVAL,
              "call id must be 64 lowercase hex characters, got 3");
    strcpy(c.id, id);
    c.function[0] = '\0';
    CHECK_ERR(prpc_store_call_submit(s, &c, 1, NULL, NULL, &err), PRPC_EINVAL,
              "function is empty");
    strcpy(c.function, "bad\nname");
    CHECK_ERR(prpc_store_call_submit(s, &c, 1, NULL, NULL, &err), PRPC_EINVAL,
              "function has a control character");
    strcpy(c.function, "f");
    strcpy(c.version, "v1");
    CHECK_ERR(prpc_store_call_submit(s, &c, 1, NULL, NULL, &err), PRPC_EINVAL, "version");
    strcpy(c.version, V1);
    c.args_json = NULL;
    CHECK_ERR(prpc_store_call_submit(s, &c, 1, NULL, NULL, &err), PRPC_EINVAL,
              "args_json is missing");
    big = malloc(PRPC_STORE_JSON_MAX + 2);
    CHECK(big != NULL);
    memset(big, ' ', PRPC_STORE_JSON_MAX + 1);
    big[PRPC_STORE_JSON_MAX + 1] = '\0';
    c.args_json = big;
    prpc_error_clear(&err);
    CHECK_EQ_INT(prpc_store_call_submit(s, &c, 1, NULL, NULL, &err), PRPC_ELIMIT);
    free(big);
    CHECK(strstr(err.message, "args_json is longer") != NULL);
    CHECK_ERR(prpc_store_call_submit(s, NULL, 1, NULL, NULL, &err), PRPC_EINVAL, "call is NULL");
    CHECK_ERR(prpc_store_call_get(s, NULL, &out, &err), PRPC_EINVAL, "call id is missing");
    CHECK_ERR(prpc_store_call_get(NULL, id, &out, &err), PRPC_EINVAL, "store handle");

    CHECK_ERR(prpc_store_lease_next(s, f, v, 0, "w", 10, 1, &out, &err), PRPC_EINVAL,
              "no functions");
    memset(longname, 'f', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    CHECK_ERR(prpc_store_lease_next(s, longf, v, 1, "w", 10, 1, &out, &err), PRPC_EINVAL,
              "function is longer than 127");
    CHECK_ERR(prpc_store_lease_next(s, f, badv, 1, "w", 10, 1, &out, &err), PRPC_EINVAL,
              "version");
    CHECK_ERR(prpc_store_lease_next(s, f, v, 1, "", 10, 1, &out, &err), PRPC_EINVAL,
              "worker is empty");
    CHECK_ERR(prpc_store_lease_next(s, f, v, 1, "w", 0, 1, &out, &err), PRPC_EINVAL,
              "lease_ms must be positive");
    CHECK_ERR(prpc_store_lease_next(s, f, v, 1, "w", INT64_MAX, 5, &out, &err), PRPC_EINVAL,
              "out of range");
    CHECK_ERR(prpc_store_lease_next(s, f, v, PRPC_STORE_LEASE_FUNCTIONS_MAX + 1, "w", 10, 1, &out,
                                    &err),
              PRPC_ELIMIT, "functions in one lease request");
    CHECK_ERR(prpc_store_lease_renew(s, id, "123", 1, 10, 1, NULL, &err), PRPC_EINVAL,
              "lease_id must be 32");
    CHECK_ERR(prpc_store_lease_renew(s, id, "0123456789abcdef0123456789abcdef", 101, 10, 1, NULL,
                                     &err),
              PRPC_EINVAL, "progress must be within 0..100, got 101");
    CHECK_ERR(prpc_store_lease_renew(s, id, "0123456789abcdef0123456789abcdef", NAN, 10, 1, NULL,
                                     &err),
              PRPC_EINVAL, "progress");
    CHECK_ERR(prpc_store_call_finish(s, id, NULL, PRPC_CALL_QUEUED, "{}", NULL, 1, &err),
              PRPC_EINVAL, "not queued");
    CHECK_ERR(prpc_store_call_finish(s, id, NULL, PRPC_CALL_DONE, NULL, "{}", 1, &err),
              PRPC_EINVAL, "outputs_json is missing");
    CHECK_ERR(prpc_store_call_finish(s, id, NULL, PRPC_CALL_FAILED, "{}", NULL, 1, &err),
              PRPC_EINVAL, "error_json is missing");
    CHECK_ERR(prpc_store_call_finish(s, id, "nothex!", PRPC_CALL_DONE, "{}", NULL, 1, &err),
              PRPC_EINVAL, "lease_id");
    CHECK_ERR(prpc_store_call_terminate(s, upper, 1, NULL, &err), PRPC_EINVAL, "call id");
    CHECK_ERR(prpc_store_call_restart(s, "", 1, &err), PRPC_EINVAL, "call id");
    CHECK_ERR(prpc_store_call_delete(s, upper, &err), PRPC_EINVAL, "call id");
    CHECK_ERR(prpc_store_leases_expire(s, 1, 0, NULL, NULL, &err), PRPC_EINVAL,
              "max_attempts must be at least 1");
    CHECK_ERR(prpc_store_blob_add(s, "ab", 1, 1, &err), PRPC_EINVAL, "blob sha256");
    CHECK_ERR(prpc_store_blob_get(s, upper, NULL, &err), PRPC_EINVAL, "blob sha256");
    CHECK_ERR(prpc_store_blob_link(s, id, upper, &err), PRPC_EINVAL, "blob sha256");
    CHECK_ERR(prpc_store_blob_link(s, upper, sha, &err), PRPC_EINVAL, "call id");
    CHECK_ERR(prpc_store_blob_remove(s, NULL, &err), PRPC_EINVAL, "blob sha256 is missing");
    CHECK_ERR(prpc_store_blobs_unreferenced(s, 1, NULL, 4, NULL, &err), PRPC_EINVAL, "n is NULL");
    CHECK_ERR(prpc_store_function_stats(s, "", counts, &err), PRPC_EINVAL, "function is empty");
    CHECK_ERR(prpc_store_next_lease_deadline(s, NULL, &err), PRPC_EINVAL, "deadline_ms");
    /* Nothing above was stored. */
    CHECK_EQ_INT(prpc_store_function_stats(s, NULL, counts, &err), 0);
    for (int i = 0; i < PRPC_CALL_NSTATES; i++)
        CHECK_EQ_INT(counts[i], 0);
}

static void case_lease_oldest(prpc_store_t *s)
{
    const char *f[] = {"f1", "f2"}, *v[] = {V1, V1};
    prpc_call_t a = {0}, b = {0};
    prpc_error_t err;
    char id[PRPC_CALL_ID_HEX + 1];
    CHECK_EQ_INT(put(s, 1, "f1", V1, 200), 0);
    CHECK_EQ_INT(put(s, 2, "f1", V1, 100), 0);
    CHECK_EQ_INT(put(s, 3, "f1", V2, 50), 0); /* other version: never leased for V1 */
    CHECK_EQ_INT(put(s, 4, "f2", V1, 150), 0);

    CHECK_EQ_INT(prpc_store_lease_next(s, f, v, 1, "gpu-box", 5000, 1000, &a, &err), 0);
    idn(id, 2);
    CHECK_EQ_STR(a.id, id);
    CHECK_EQ_INT(a.state, PRPC_CALL_LEASED);
    CHECK_EQ_INT(a.attempts, 1);
    CHECK_EQ_INT(a.lease_deadline_ms, 6000);
    CHECK_EQ_STR(a.worker, "gpu-box");
    CHECK_EQ_INT(strlen(a.lease_id), PRPC_LEASE_ID_HEX);
    CHECK_EQ_INT(strspn(a.lease_id, "0123456789abcdef"), PRPC_LEASE_ID_HEX);

    /* With both functions the oldest across them comes first. */
    CHECK_EQ_INT(prpc_store_lease_next(s, f, v, 2, "gpu-box", 5000, 1000, &b, &err), 0);
    idn(id, 4);
    CHECK_EQ_STR(b.id, id);
    CHECK(strcmp(a.lease_id, b.lease_id) != 0);
    prpc_call_cleanup(&a);
    prpc_call_cleanup(&b);
    CHECK_EQ_INT(prpc_store_lease_next(s, f, v, 2, "gpu-box", 5000, 1000, &a, &err), 0);
    idn(id, 1);
    CHECK_EQ_STR(a.id, id);
    prpc_call_cleanup(&a);
    CHECK_ERR(prpc_store_lease_next(s, f, v, 2, "gpu-box", 5000, 1000, &a, &err),
              PRPC_ENOTFOUND, "no queued call");
    CHECK(a.args_json == NULL);
    CHECK_EQ_INT(state_of(s, 3), PRPC_CALL_QUEUED);
}

static void case_renew(prpc_store_t *s)
{
    prpc_call_t a = {0}, got = {0};
    prpc_error_t err;
    char other[PRPC_CALL_ID_HEX + 1];
    int term = -1;
    CHECK_EQ_INT(put(s, 1, "f", V1, 10), 0);
    CHECK_EQ_INT(lease1(s, "f", V1, 100, &a, &err), 0);
    CHECK_EQ_INT(prpc_store_lease_renew(s, a.id, a.lease_id, 42.5, 3000, 500, &term, &err), 0);
    CHECK_EQ_INT(term, 0);
    CHECK_EQ_INT(prpc_store_call_get(s, a.id, &got, &err), 0);
    CHECK(got.progress == 42.5);
    CHECK_EQ_INT(got.lease_deadline_ms, 3500);
    CHECK_EQ_INT(got.updated_ms, 500);
    prpc_call_cleanup(&got);

    CHECK_ERR(prpc_store_lease_renew(s, a.id, "0123456789abcdef0123456789abcdef", 50, 3000, 600,
                                     &term, &err),
              PRPC_ESTATE, "was replaced");
    CHECK(strstr(err.message, a.id) != NULL);
    idn(other, 77);
    CHECK_ERR(prpc_store_lease_renew(s, other, a.lease_id, 50, 3000, 600, &term, &err),
              PRPC_ENOTFOUND, other);
    CHECK_EQ_INT(prpc_store_call_finish(s, a.id, a.lease_id, PRPC_CALL_DONE, "{\"r\":1}", NULL,
                                        700, &err),
                 0);
    CHECK_ERR(prpc_store_lease_renew(s, a.id, a.lease_id, 50, 3000, 800, &term, &err),
              PRPC_ESTATE, "lapsed: the call is now done");
    prpc_call_cleanup(&a);
}

static void case_finish_idempotent(prpc_store_t *s)
{
    prpc_call_t a = {0}, got = {0};
    prpc_error_t err;
    char id2[PRPC_CALL_ID_HEX + 1];
    CHECK_EQ_INT(put(s, 1, "f", V1, 10), 0);
    CHECK_EQ_INT(lease1(s, "f", V1, 100, &a, &err), 0);
    CHECK_EQ_INT(prpc_store_lease_renew(s, a.id, a.lease_id, 30, 1000, 150, NULL, &err), 0);
    CHECK_ERR(prpc_store_call_finish(s, a.id, "0123456789abcdef0123456789abcdef", PRPC_CALL_DONE,
                                     "{}", NULL, 200, &err),
              PRPC_ESTATE, "was replaced");
    CHECK_EQ_INT(prpc_store_call_finish(s, a.id, a.lease_id, PRPC_CALL_DONE, "{\"sum\":3}", "{}",
                                        200, &err),
                 0);
    CHECK_EQ_INT(prpc_store_call_get(s, a.id, &got, &err), 0);
    CHECK_EQ_INT(got.state, PRPC_CALL_DONE);
    CHECK_EQ_STR(got.outputs_json, "{\"sum\":3}");
    CHECK(got.error_json == NULL);
    CHECK(got.progress == 100.0);
    CHECK_EQ_INT(got.finished_ms, 200);
    CHECK_EQ_STR(got.lease_id, "");
    CHECK_EQ_INT(got.lease_deadline_ms, 0);
    prpc_call_cleanup(&got);

    /* A retried request: accepted, nothing changes. */
    CHECK_EQ_INT(prpc_store_call_finish(s, a.id, a.lease_id, PRPC_CALL_DONE, "{\"sum\":4}", NULL,
                                        300, &err),
                 0);
    CHECK_EQ_INT(prpc_store_call_get(s, a.id, &got, &err), 0);
    CHECK_EQ_STR(got.outputs_json, "{\"sum\":3}");
    CHECK_EQ_INT(got.updated_ms, 200);
    prpc_call_cleanup(&got);
    CHECK_ERR(prpc_store_call_finish(s, a.id, a.lease_id, PRPC_CALL_FAILED, NULL, "{}", 300,
                                     &err),
              PRPC_ESTATE, "already finished as done under lease");
    CHECK_ERR(prpc_store_call_finish(s, a.id, NULL, PRPC_CALL_FAILED, NULL, "{}", 300, &err),
              PRPC_ESTATE, "is already done");
    idn(id2, 2);
    CHECK_ERR(prpc_store_call_finish(s, id2, NULL, PRPC_CALL_DONE, "{}", NULL, 300, &err),
              PRPC_ENOTFOUND, id2);
    prpc_call_cleanup(&a);

    /* The broker itself fails a queued call, no lease involved. */
    CHECK_EQ_INT(put(s, 2, "f", V1, 10), 0);
    CHECK_EQ_INT(prpc_store_call_finish(s, id2, NULL, PRPC_CALL_FAILED, NULL,
                                        "{\"type\":\"BadArgs\"}", 400, &err),
                 0);
    CHECK_EQ_INT(prpc_store_call_get(s, id2, &got, &err), 0);
    CHECK_EQ_INT(got.state, PRPC_CALL_FAILED);
    CHECK_EQ_STR(got.error_json, "{\"type\":\"BadArgs\"}");
    CHECK(got.outputs_json == NULL);
    CHECK(got.progress == 0.0);
    prpc_call_cleanup(&got);
}

static void case_lease_expiry(prpc_store_t *s)
{
    prpc_call_t a = {0}, b = {0}, got = {0};
    prpc_error_t err;
    int64_t deadline = -1;
    int rq = -1, fl = -1;
    CHECK_ERR(prpc_store_next_lease_deadline(s, &deadline, &err), PRPC_ENOTFOUND, "no call");
    CHECK_EQ_INT(put(s, 1, "f", V1, 10), 0);
    CHECK_EQ_INT(put(s, 2, "f", V1, 20), 0);
    CHECK_EQ_INT(lease1(s, "f", V1, 100, &a, &err), 0); /* deadline 1100 */
    CHECK_EQ_INT(lease1(s, "f", V1, 500, &b, &err), 0); /* deadline 1500 */
    CHECK_EQ_INT(prpc_store_next_lease_deadline(s, &deadline, &err), 0);
    CHECK_EQ_INT(deadline, 1100);

    CHECK_EQ_INT(prpc_store_leases_expire(s, 1099, 2, &rq, &fl, &err), 0);
    CHECK_EQ_INT(rq, 0);
    CHECK_EQ_INT(fl, 0);
    CHECK_EQ_INT(prpc_store_leases_expire(s, 1100, 2, &rq, &fl, &err), 0);
    CHECK_EQ_INT(rq, 1);
    CHECK_EQ_INT(fl, 0);
    CHECK_EQ_INT(state_of(s, 1), PRPC_CALL_QUEUED);
    CHECK_EQ_INT(state_of(s, 2), PRPC_CALL_LEASED);
    CHECK_EQ_INT(prpc_store_next_lease_deadline(s, &deadline, &err), 0);
    CHECK_EQ_INT(deadline, 1500);

    /* The old holder learns its lease lapsed; nothing it sends is taken. */
    CHECK_ERR(prpc_store_lease_renew(s, a.id, a.lease_id, 10, 1000, 1200, NULL, &err),
              PRPC_ESTATE, "lapsed: the call is now queued");
    CHECK_ERR(prpc_store_call_finish(s, a.id, a.lease_id, PRPC_CALL_DONE, "{}", NULL, 1200, &err),
              PRPC_ESTATE, "lapsed");
    prpc_call_cleanup(&a);
    CHECK_EQ_INT(lease1(s, "f", V1, 1300, &a, &err), 0);
    CHECK_EQ_INT(a.attempts, 2);
    CHECK_EQ_INT(prpc_store_call_finish(s, a.id, b.lease_id, PRPC_CALL_DONE, "{}", NULL, 1300,
                                        &err),
                 PRPC_ESTATE);

    /* Second expiry of call 1 reaches max_attempts 2: failed, with the reason. */
    CHECK_EQ_INT(prpc_store_leases_expire(s, 2300, 2, &rq, &fl, &err), 0);
    CHECK_EQ_INT(fl, 1);
    CHECK_EQ_INT(rq, 1); /* call 2, first attempt */
    CHECK_EQ_INT(prpc_store_call_get(s, a.id, &got, &err), 0);
    CHECK_EQ_INT(got.state, PRPC_CALL_FAILED);
    CHECK_EQ_INT(got.finished_ms, 2300);
    CHECK_EQ_STR(got.lease_id, "");
    CHECK(got.error_json != NULL);
    CHECK(strstr(got.error_json, "\"type\":\"p2prpc.LeaseExpired\"") != NULL);
    CHECK(strstr(got.error_json, "expired 2 times (max_attempts 2)") != NULL);
    CHECK(strstr(got.error_json, "\"worker\":\"w1\"") != NULL);
    prpc_call_cleanup(&got);
    CHECK_ERR(prpc_store_call_finish(s, a.id, a.lease_id, PRPC_CALL_DONE, "{}", NULL, 2400, &err),
              PRPC_ESTATE, "lapsed: the call is now failed");
    CHECK_EQ_INT(state_of(s, 2), PRPC_CALL_QUEUED);
    CHECK_ERR(prpc_store_next_lease_deadline(s, &deadline, &err), PRPC_ENOTFOUND, "no call");
    prpc_call_cleanup(&a);
    prpc_call_cleanup(&b);
}

static void case_terminate(prpc_store_t *s)
{
    prpc_call_t a = {0}, got = {0};
    prpc_error_t err;
    char id[PRPC_CALL_ID_HEX + 1];
    int st = -1, term = -1;

    CHECK_EQ_INT(put(s, 1, "f", V1, 10), 0);
    idn(id, 1);
    CHECK_EQ_INT(prpc_store_call_terminate(s, id, 50, &st, &err), 0);
    CHECK_EQ_INT(st, PRPC_CALL_TERMINATED);
    CHECK_EQ_INT(prpc_store_call_get(s, id, &got, &err), 0);
    CHECK_EQ_INT(got.state, PRPC_CALL_TERMINATED);
    CHECK_EQ_INT(got.finished_ms, 50);
    CHECK(got.error_json != NULL && strstr(got.error_json, "\"Terminated\"") != NULL);
    prpc_call_cleanup(&got);
    CHECK_EQ_INT(prpc_store_call_terminate(s, id, 60, &st, &err), 0);
    CHECK_EQ_INT(st, PRPC_CALL_TERMINATED);
    /* Submitting it again does not bring it back. */
    CHECK_EQ_INT(put(s, 1, "f", V1, 70), 0);
    CHECK_EQ_INT(state_of(s, 1), PRPC_CALL_TERMINATED);

    /* Leased: the worker is told through its heartbeat, then reports back. */
    CHECK_EQ_INT(put(s, 2, "f", V1, 10), 0);
    CHECK_EQ_INT(lease1(s, "f", V1, 100, &a, &err), 0);
    CHECK_EQ_INT(prpc_store_call_terminate(s, a.id, 150, &st, &err), 0);
    CHECK_EQ_INT(st, PRPC_CALL_LEASED);
    CHECK_EQ_INT(prpc_store_lease_renew(s, a.id, a.lease_id, 5, 1000, 160, &term, &err), 0);
    CHECK_EQ_INT(term, 1);
    CHECK_EQ_INT(prpc_store_call_finish(s, a.id, a.lease_id, PRPC_CALL_TERMINATED, NULL, NULL,
                                        170, &err),
                 0);
    CHECK_EQ_INT(prpc_store_call_get(s, a.id, &got, &err), 0);
    CHECK_EQ_INT(got.state, PRPC_CALL_TERMINATED);
    CHECK_EQ_INT(got.terminate_requested, 1);
    CHECK_EQ_STR(got.error_json, prpc__store_terminated_json);
    prpc_call_cleanup(&got);
    prpc_call_cleanup(&a);

    /* Done and failed calls stay as they are. */
    CHECK_EQ_INT(put(s, 3, "f", V1, 10), 0);
    idn(id, 3);
    CHECK_EQ_INT(prpc_store_call_finish(s, id, NULL, PRPC_CALL_DONE, "{}", NULL, 10, &err), 0);
    CHECK_EQ_INT(prpc_store_call_terminate(s, id, 200, &st, &err), 0);
    CHECK_EQ_INT(st, PRPC_CALL_DONE);
    CHECK_EQ_INT(put(s, 4, "f", V1, 10), 0);
    idn(id, 4);
    CHECK_EQ_INT(prpc_store_call_finish(s, id, NULL, PRPC_CALL_FAILED, NULL, "{}", 10, &err), 0);
    CHECK_EQ_INT(prpc_store_call_terminate(s, id, 200, &st, &err), 0);
    CHECK_EQ_INT(st, PRPC_CALL_FAILED);
    CHECK_EQ_INT(state_of(s, 4), PRPC_CALL_FAILED);
    idn(id, 5);
    CHECK_ERR(prpc_store_call_terminate(s, id, 200, &st, &err), PRPC_ENOTFOUND, id);
}

static void case_restart(prpc_store_t *s)
{
    prpc_call_t a = {0}, got = {0};
    prpc_error_t err;
    char id[PRPC_CALL_ID_HEX + 1];
    CHECK_EQ_INT(put(s, 1, "f", V1, 10), 0);
    CHECK_EQ_INT(lease1(s, "f", V1, 100, &a, &err), 0);
    CHECK_EQ_INT(prpc_store_call_terminate(s, a.id, 110, NULL, &err), 0);
    CHECK_EQ_INT(prpc_store_call_finish(s, a.id, a.lease_id, PRPC_CALL_DONE, "{\"r\":1}", NULL,
                                        120, &err),
                 0);
    CHECK_EQ_INT(prpc_store_call_restart(s, a.id, 130, &err), 0);
    CHECK_EQ_INT(prpc_store_call_get(s, a.id, &got, &err), 0);
    CHECK_EQ_INT(got.state, PRPC_CALL_QUEUED);
    CHECK(got.outputs_json == NULL && got.error_json == NULL);
    CHECK(got.progress == 0.0);
    CHECK_EQ_INT(got.attempts, 0);
    CHECK_EQ_INT(got.terminate_requested, 0);
    CHECK_EQ_INT(got.finished_ms, 0);
    CHECK_EQ_INT(got.updated_ms, 130);
    CHECK_EQ_INT(got.created_ms, 10);
    prpc_call_cleanup(&got);
    /* The finish of the previous run is no longer "the same finish". */
    CHECK_ERR(prpc_store_call_finish(s, a.id, a.lease_id, PRPC_CALL_DONE, "{}", NULL, 140, &err),
              PRPC_ESTATE, "lapsed: the call is now queued");
    prpc_call_cleanup(&a);

    /* Restarting a leased call takes the lease away. */
    CHECK_EQ_INT(lease1(s, "f", V1, 200, &a, &err), 0);
    CHECK_EQ_INT(a.attempts, 1);
    CHECK_EQ_INT(prpc_store_call_restart(s, a.id, 210, &err), 0);
    CHECK_ERR(prpc_store_lease_renew(s, a.id, a.lease_id, 1, 100, 220, NULL, &err), PRPC_ESTATE,
              "lapsed");
    prpc_call_cleanup(&a);
    idn(id, 9);
    CHECK_ERR(prpc_store_call_restart(s, id, 1, &err), PRPC_ENOTFOUND, id);
}

static void case_delete(prpc_store_t *s)
{
    prpc_call_t got = {0};
    prpc_error_t err;
    char id[PRPC_CALL_ID_HEX + 1], sha[PRPC_CALL_ID_HEX + 1], out[4][PRPC_CALL_ID_HEX + 1];
    size_t n = 9;
    idn(id, 1);
    idn(sha, 0xb1);
    CHECK_EQ_INT(put(s, 1, "f", V1, 10), 0);
    CHECK_EQ_INT(prpc_store_blob_add(s, sha, 5, 10, &err), 0);
    CHECK_EQ_INT(prpc_store_blob_link(s, id, sha, &err), 0);
    CHECK_EQ_INT(prpc_store_blobs_unreferenced(s, 1000, out, 4, &n, &err), 0);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(prpc_store_call_delete(s, id, &err), 0);
    CHECK_ERR(prpc_store_call_get(s, id, &got, &err), PRPC_ENOTFOUND, id);
    CHECK_EQ_INT(prpc_store_blobs_unreferenced(s, 1000, out, 4, &n, &err), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_STR(out[0], sha);
    CHECK_ERR(prpc_store_call_delete(s, id, &err), PRPC_ENOTFOUND, id);
    /* The same id may be submitted anew afterwards. */
    CHECK_EQ_INT(put(s, 1, "f", V1, 20), 0);
    CHECK_EQ_INT(state_of(s, 1), PRPC_CALL_QUEUED);
}

static void case_blobs(prpc_store_t *s)
{
    prpc_error_t err;
    char id[PRPC_CALL_ID_HEX + 1], b1[PRPC_CALL_ID_HEX + 1], b2[PRPC_CALL_ID_HEX + 1],
        b3[PRPC_CALL_ID_HEX + 1], missing[PRPC_CALL_ID_HEX + 1], out[4][PRPC_CALL_ID_HEX + 1];
    uint64_t size = 0;
    size_t n = 0;
    idn(id, 1);
    idn(b1, 0xb1);
    idn(b2, 0xb2);
    idn(b3, 0xb3);
    idn(missing, 0xbf);
    CHECK_EQ_INT(prpc_store_blob_add(s, b1, 5000000000ull, 100, &err), 0);
    CHECK_EQ_INT(prpc_store_blob_add(s, b1, 5000000000ull, 150, &err), 0);
    CHECK_ERR(prpc_store_blob_add(s, b1, 7, 150, &err), PRPC_EEXIST, "size 5000000000, not 7");
    CHECK_EQ_INT(prpc_store_blob_get(s, b1, &size, &err), 0);
    CHECK_EQ_INT(size, 5000000000ull);
    CHECK_ERR(prpc_store_blob_get(s, missing, &size, &err), PRPC_ENOTFOUND, missing);
    CHECK_EQ_INT(size, 0);
    CHECK_EQ_INT(prpc_store_blob_add(s, b2, 0, 300, &err), 0);
    CHECK_EQ_INT(prpc_store_blob_add(s, b3, 1, 200, &err), 0);

    CHECK_ERR(prpc_store_blob_link(s, id, b1, &err), PRPC_ENOTFOUND, "no call");
    CHECK_EQ_INT(put(s, 1, "f", V1, 10), 0);
    CHECK_ERR(prpc_store_blob_link(s, id, missing, &err), PRPC_ENOTFOUND, "no blob");
    CHECK_EQ_INT(prpc_store_blob_link(s, id, b1, &err), 0);
    CHECK_EQ_INT(prpc_store_blob_link(s, id, b1, &err), 0);

    /* Unreferenced, added before the grace time, oldest first, at most max. */
    CHECK_EQ_INT(prpc_store_blobs_unreferenced(s, 1000, out, 4, &n, &err), 0);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_STR(out[0], b3);
    CHECK_EQ_STR(out[1], b2);
    CHECK_EQ_INT(prpc_store_blobs_unreferenced(s, 1000, out, 1, &n, &err), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(prpc_store_blobs_unreferenced(s, 250, out, 4, &n, &err), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_STR(out[0], b3);
    CHECK_EQ_INT(prpc_store_blobs_unreferenced(s, 250, NULL, 0, &n, &err), 0);
    CHECK_EQ_INT(n, 0);

    CHECK_ERR(prpc_store_blob_remove(s, b1, &err), PRPC_ESTATE, "referenced by 1 call");
    CHECK_EQ_INT(prpc_store_blob_get(s, b1, NULL, &err), 0);
    CHECK_EQ_INT(prpc_store_blob_remove(s, b3, &err), 0);
    CHECK_ERR(prpc_store_blob_get(s, b3, NULL, &err), PRPC_ENOTFOUND, b3);
    CHECK_ERR(prpc_store_blob_remove(s, b3, &err), PRPC_ENOTFOUND, b3);
}

static void case_submit_many(prpc_store_t *s)
{
    prpc_call_t c[3];
    prpc_submit_item_t items[3];
    char blob[PRPC_CALL_ID_HEX + 1], missing[PRPC_CALL_ID_HEX + 1];
    char links[1][PRPC_CALL_ID_HEX + 1];
    char (*unref)[PRPC_CALL_ID_HEX + 1] = NULL;
    prpc_call_t got = {0};
    prpc_error_t err;
    size_t n = 0;
    memset(c, 0, sizeof(c));
    memset(items, 0, sizeof(items));
    idn(blob, 900);
    idn(missing, 901);
    CHECK_EQ_INT(prpc_store_blob_add(s, blob, 10, 1, &err), 0);
    memcpy(links[0], blob, sizeof(links[0]));
    for (int i = 0; i < 3; i++) {
        idn(c[i].id, 800 + (unsigned)i);
        strcpy(c[i].function, "p2prpc_many");
        strcpy(c[i].version, V1);
        c[i].args_json = "[]";
        items[i].call = &c[i];
    }
    items[1].blobs = (const char(*)[PRPC_CALL_ID_HEX + 1])links;
    items[1].nblobs = 1;
    CHECK_EQ_INT(prpc_store_call_submit_many(s, items, 3, 50, &err), 0);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(items[i].created, 1);
        CHECK_EQ_STR(items[i].current.id, c[i].id);
        CHECK_EQ_INT(items[i].current.state, PRPC_CALL_QUEUED);
        prpc_call_cleanup(&items[i].current);
    }
    /* The link holds: the blob is referenced, not offered for removal. */
    unref = calloc(8, sizeof(*unref));
    CHECK(unref != NULL);
    CHECK_EQ_INT(prpc_store_blobs_unreferenced(s, 1000, unref, 8, &n, &err), 0);
    CHECK_EQ_INT(n, 0);
    free(unref);
    /* Again: the same calls, nothing created. */
    CHECK_EQ_INT(prpc_store_call_submit_many(s, items, 3, 60, &err), 0);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(items[i].created, 0);
        prpc_call_cleanup(&items[i].current);
    }
    /* All or nothing: one bad link (unknown blob) and no new call is stored. */
    idn(c[0].id, 810);
    idn(c[1].id, 811);
    memcpy(links[0], missing, sizeof(links[0]));
    CHECK_ERR(prpc_store_call_submit_many(s, items, 2, 70, &err), PRPC_ENOTFOUND, missing);
    CHECK_EQ_INT(items[0].created, 0);
    CHECK_EQ_INT(prpc_store_call_get(s, c[0].id, &got, &err), PRPC_ENOTFOUND);
    /* Bad input is refused before anything is written, naming the field. */
    c[0].args_json = NULL;
    CHECK_ERR(prpc_store_call_submit_many(s, items, 2, 80, &err), PRPC_EINVAL, "args_json");
    CHECK_EQ_INT(prpc_store_call_submit_many(s, items, 0, 80, &err), 0);
}

static void case_calls_states(prpc_store_t *s)
{
    prpc_call_t c = {0}, got = {0};
    prpc_error_t err;
    char ids[3][PRPC_CALL_ID_HEX + 1];
    int states[3] = {7, 7, 7};
    const char *fns[] = {"p2prpc_states"}, *vers[] = {V1};
    idn(ids[0], 700);
    idn(ids[1], 701); /* never stored */
    idn(ids[2], 702);
    strcpy(c.function, "p2prpc_states");
    strcpy(c.version, V1);
    c.args_json = "[]";
    memcpy(c.id, ids[0], sizeof(c.id));
    CHECK_EQ_INT(prpc_store_call_submit(s, &c, 10, NULL, NULL, &err), 0);
    memcpy(c.id, ids[2], sizeof(c.id));
    CHECK_EQ_INT(prpc_store_call_submit(s, &c, 11, NULL, NULL, &err), 0);
    CHECK_EQ_INT(prpc_store_calls_states(s, (const char(*)[PRPC_CALL_ID_HEX + 1])ids, 3, states,
                                         &err),
                 0);
    CHECK_EQ_INT(states[0], PRPC_CALL_QUEUED);
    CHECK_EQ_INT(states[1], -1);
    CHECK_EQ_INT(states[2], PRPC_CALL_QUEUED);
    CHECK_EQ_INT(prpc_store_lease_next(s, fns, vers, 1, "w", 1000, 20, &got, &err), 0);
    CHECK_EQ_STR(got.id, ids[0]);
    prpc_call_cleanup(&got);
    CHECK_EQ_INT(prpc_store_calls_states(s, (const char(*)[PRPC_CALL_ID_HEX + 1])ids, 3, states,
                                         &err),
                 0);
    CHECK_EQ_INT(states[0], PRPC_CALL_LEASED);
    strcpy(ids[1], "nothex");
    CHECK_ERR(prpc_store_calls_states(s, (const char(*)[PRPC_CALL_ID_HEX + 1])ids, 3, states,
                                      &err),
              PRPC_EINVAL, "call id");
}

static void case_calls_expire(prpc_store_t *s)
{
    prpc_call_t a = {0};
    prpc_error_t err;
    char id[PRPC_CALL_ID_HEX + 1], sha[PRPC_CALL_ID_HEX + 1], out[2][PRPC_CALL_ID_HEX + 1];
    size_t n = 0;
    int removed = -1;
    idn(sha, 0xb1);
    for (unsigned i = 1; i <= 5; i++)
        CHECK_EQ_INT(put(s, i, "f", V1, 10), 0);
    idn(id, 1);
    CHECK_EQ_INT(prpc_store_call_finish(s, id, NULL, PRPC_CALL_DONE, "{}", NULL, 100, &err), 0);
    CHECK_EQ_INT(prpc_store_blob_add(s, sha, 3, 10, &err), 0);
    CHECK_EQ_INT(prpc_store_blob_link(s, id, sha, &err), 0);
    idn(id, 2);
    CHECK_EQ_INT(prpc_store_call_finish(s, id, NULL, PRPC_CALL_FAILED, NULL, "{}", 200, &err), 0);
    idn(id, 3);
    CHECK_EQ_INT(prpc_store_call_terminate(s, id, 900, NULL, &err), 0); /* finished later */
    idn(id, 4);
    CHECK_EQ_INT(prpc_store_call_restart(s, id, 50, &err), 0); /* queued */
    CHECK_EQ_INT(lease1(s, "f", V1, 60, &a, &err), 0);         /* leases call 4 */
    prpc_call_cleanup(&a);

    CHECK_EQ_INT(prpc_store_calls_expire(s, 500, &removed, &err), 0);
    CHECK_EQ_INT(removed, 2);
    CHECK_EQ_INT(state_of(s, 1), -1);
    CHECK_EQ_INT(state_of(s, 2), -1);
    CHECK_EQ_INT(state_of(s, 3), PRPC_CALL_TERMINATED);
    CHECK_EQ_INT(state_of(s, 4), PRPC_CALL_LEASED);
    CHECK_EQ_INT(state_of(s, 5), PRPC_CALL_QUEUED);
    CHECK_EQ_INT(prpc_store_blobs_unreferenced(s, 1000, out, 2, &n, &err), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_STR(out[0], sha);
    CHECK_EQ_INT(prpc_store_calls_expire(s, 500, &removed, &err), 0);
    CHECK_EQ_INT(removed, 0);
}

static void case_stats(prpc_store_t *s)
{
    prpc_call_t a = {0};
    prpc_error_t err;
    char id[PRPC_CALL_ID_HEX + 1];
    int64_t c[PRPC_CALL_NSTATES];
    for (unsigned i = 1; i <= 6; i++)
        CHECK_EQ_INT(put(s, i, i <= 5 ? "f" : "g", V1, 10 + i), 0);
    CHECK_EQ_INT(lease1(s, "f", V1, 20, &a, &err), 0);
    prpc_call_cleanup(&a);
    CHECK_EQ_INT(lease1(s, "f", V1, 20, &a, &err), 0);
    CHECK_EQ_INT(prpc_store_call_finish(s, a.id, a.lease_id, PRPC_CALL_DONE, "{}", NULL, 30, &err),
                 0);
    prpc_call_cleanup(&a);
    idn(id, 3);
    CHECK_EQ_INT(prpc_store_call_finish(s, id, NULL, PRPC_CALL_FAILED, NULL, "{}", 30, &err), 0);
    idn(id, 4);
    CHECK_EQ_INT(prpc_store_call_terminate(s, id, 30, NULL, &err), 0);

    CHECK_EQ_INT(prpc_store_function_stats(s, "f", c, &err), 0);
    CHECK_EQ_INT(c[PRPC_CALL_QUEUED], 1);
    CHECK_EQ_INT(c[PRPC_CALL_LEASED], 1);
    CHECK_EQ_INT(c[PRPC_CALL_DONE], 1);
    CHECK_EQ_INT(c[PRPC_CALL_FAILED], 1);
    CHECK_EQ_INT(c[PRPC_CALL_TERMINATED], 1);
    CHECK_EQ_INT(prpc_store_function_stats(s, NULL, c, &err), 0);
    CHECK_EQ_INT(c[PRPC_CALL_QUEUED], 2);
    CHECK_EQ_INT(prpc_store_function_stats(s, "nobody", c, &err), 0);
    for (int i = 0; i < PRPC_CALL_NSTATES; i++)
        CHECK_EQ_INT(c[i], 0);
    CHECK_EQ_INT(prpc_store_check_integrity(s, &err), 0);
}

/* Count of checkpoints call n holds (-1 on error). */
static int ckpt_count(prpc_store_t *s, unsigned n)
{
    static prpc_checkpoint_t ck[PRPC_CHECKPOINTS_MAX];
    char id[PRPC_CALL_ID_HEX + 1];
    size_t got = 0;
    idn(id, n);
    if (prpc_store_checkpoints_list(s, id, ck, PRPC_CHECKPOINTS_MAX, &got, NULL) < 0)
        return -1;
    return (int)got;
}

static void case_checkpoints(prpc_store_t *s)
{
    prpc_call_t a = {0}, b = {0};
    prpc_checkpoint_t ck[PRPC_CHECKPOINTS_MAX];
    prpc_error_t err;
    char id[PRPC_CALL_ID_HEX + 1], id2[PRPC_CALL_ID_HEX + 1], id3[PRPC_CALL_ID_HEX + 1];
    char b1[PRPC_CALL_ID_HEX + 1], b2[PRPC_CALL_ID_HEX + 1], b3[PRPC_CALL_ID_HEX + 1];
    char missing[PRPC_CALL_ID_HEX + 1], old[PRPC_CALL_ID_HEX + 1], key[160];
    char out[4][PRPC_CALL_ID_HEX + 1];
    const char *zero_lease = "00000000000000000000000000000000";
    size_t n = 9;
    int rq = 0, fl = 0, removed = 0;
    idn(id, 1);
    idn(id2, 2);
    idn(id3, 3);
    idn(b1, 0xc1);
    idn(b2, 0xc2);
    idn(b3, 0xc3);
    idn(missing, 0xcf);
    CHECK_EQ_INT(put(s, 1, "f", V1, 10), 0);
    CHECK_EQ_INT(put(s, 2, "f", V1, 11), 0);
    CHECK_EQ_INT(prpc_store_blob_add(s, b1, 5, 10, &err), 0);
    CHECK_EQ_INT(prpc_store_blob_add(s, b2, 7, 10, &err), 0);
    CHECK_EQ_INT(prpc_store_blob_add(s, b3, 9, 10, &err), 0);

    /* Only the holder of the current lease saves. */
    CHECK_ERR(prpc_store_checkpoint_put(s, id, zero_lease, "step", b1, 5, 15, old, &err),
              PRPC_ESTATE, "lapsed: the call is now queued");
    CHECK_EQ_INT(lease1(s, "f", V1, 20, &a, &err), 0);
    CHECK_EQ_STR(a.id, id);
    CHECK_EQ_INT(prpc_store_checkpoints_list(s, id, ck, PRPC_CHECKPOINTS_MAX, &n, &err), 0);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(prpc_store_checkpoint_put(s, id, a.lease_id, "step", b1, 5, 20, old, &err), 0);
    CHECK_EQ_STR(old, "");
    CHECK_EQ_INT(prpc_store_checkpoints_list(s, id, ck, PRPC_CHECKPOINTS_MAX, &n, &err), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_STR(ck[0].key, "step");
    CHECK_EQ_STR(ck[0].sha256, b1);
    CHECK_EQ_INT(ck[0].size, 5);
    CHECK_EQ_INT(ck[0].updated_ms, 20);

    /* A later save of the key replaces it and names the blob it replaced; the
     * same save again (a retry) replaces nothing. */
    CHECK_EQ_INT(prpc_store_checkpoint_put(s, id, a.lease_id, "step", b2, 7, 30, old, &err), 0);
    CHECK_EQ_STR(old, b1);
    CHECK_EQ_INT(prpc_store_checkpoint_put(s, id, a.lease_id, "step", b2, 7, 31, old, &err), 0);
    CHECK_EQ_STR(old, "");
    CHECK_EQ_INT(prpc_store_checkpoint_put(s, id, a.lease_id, "model.pt", b3, 9, 32, NULL, &err),
                 0);
    CHECK_EQ_INT(prpc_store_checkpoints_list(s, id, ck, PRPC_CHECKPOINTS_MAX, &n, &err), 0);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_STR(ck[0].key, "model.pt");
    CHECK_EQ_STR(ck[1].key, "step");
    CHECK_EQ_STR(ck[1].sha256, b2);
    CHECK_EQ_INT(ck[1].updated_ms, 31);
    CHECK_EQ_INT(prpc_store_checkpoints_list(s, id, ck, 1, &n, &err), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(prpc_store_checkpoints_list(s, id2, ck, PRPC_CHECKPOINTS_MAX, &n, &err), 0);
    CHECK_EQ_INT(n, 0);

    /* A checkpoint references its blob: kept by expiry, refused to removal. */
    CHECK_EQ_INT(prpc_store_blobs_unreferenced(s, 1000, out, 4, &n, &err), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_STR(out[0], b1);
    CHECK_ERR(prpc_store_blob_remove(s, b2, &err), PRPC_ESTATE, "1 checkpoint");

    /* Bad input is refused, naming what was wrong. */
    CHECK_ERR(prpc_store_checkpoint_put(s, id, a.lease_id, "bad/key", b1, 5, 40, old, &err),
              PRPC_EINVAL, "\"bad/key\"");
    CHECK_ERR(prpc_store_checkpoint_put(s, id, a.lease_id, "", b1, 5, 40, old, &err),
              PRPC_EINVAL, "key is empty");
    memset(key, 'k', PRPC_CHECKPOINT_KEY_MAX + 1);
    key[PRPC_CHECKPOINT_KEY_MAX + 1] = '\0';
    CHECK_ERR(prpc_store_checkpoint_put(s, id, a.lease_id, key, b1, 5, 40, old, &err),
              PRPC_EINVAL, "longer than 128");
    key[PRPC_CHECKPOINT_KEY_MAX] = '\0';
    CHECK_EQ_INT(prpc_store_checkpoint_put(s, id, a.lease_id, key, b1, 5, 40, old, &err), 0);
    CHECK_ERR(prpc_store_checkpoint_put(s, id, a.lease_id, "step", missing, 5, 40, old, &err),
              PRPC_ENOTFOUND, missing);
    CHECK_ERR(prpc_store_checkpoint_put(s, id, a.lease_id, "step", b1, 8, 40, old, &err),
              PRPC_EINVAL, "size 8");
    CHECK_ERR(prpc_store_checkpoint_put(s, id3, a.lease_id, "step", b1, 5, 40, old, &err),
              PRPC_ENOTFOUND, id3);
    CHECK_ERR(prpc_store_checkpoint_put(s, id, "XYZ", "step", b1, 5, 40, old, &err),
              PRPC_EINVAL, "lease_id");
    CHECK_ERR(prpc_store_checkpoints_list(s, "nope", ck, 4, &n, &err), PRPC_EINVAL, "call id");
    CHECK_EQ_INT(ckpt_count(s, 1), 3);

    /* At most PRPC_CHECKPOINTS_MAX keys; replacing one at the limit is fine. */
    for (int i = 3; i < PRPC_CHECKPOINTS_MAX; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        CHECK_EQ_INT(prpc_store_checkpoint_put(s, id, a.lease_id, key, b3, 9, 50, old, &err), 0);
    }
    CHECK_ERR(prpc_store_checkpoint_put(s, id, a.lease_id, "one-more", b3, 9, 50, old, &err),
              PRPC_ELIMIT, "one-more");
    CHECK_EQ_INT(prpc_store_checkpoint_put(s, id, a.lease_id, "step", b1, 5, 50, old, &err), 0);
    CHECK_EQ_STR(old, b2);
    CHECK_EQ_INT(ckpt_count(s, 1), PRPC_CHECKPOINTS_MAX);

    /* A lapsed lease returns the call to the queue with its checkpoints; the
     * old holder can no longer save, the next one can. */
    CHECK_EQ_INT(prpc_store_leases_expire(s, 1020, 3, &rq, &fl, &err), 0);
    CHECK_EQ_INT(rq, 1);
    CHECK_EQ_INT(ckpt_count(s, 1), PRPC_CHECKPOINTS_MAX);
    CHECK_ERR(prpc_store_checkpoint_put(s, id, a.lease_id, "step", b2, 7, 1030, old, &err),
              PRPC_ESTATE, "lapsed");
    CHECK_EQ_INT(lease1(s, "f", V1, 1040, &b, &err), 0);
    CHECK_EQ_STR(b.id, id);
    CHECK_ERR(prpc_store_checkpoint_put(s, id, a.lease_id, "step", b2, 7, 1050, old, &err),
              PRPC_ESTATE, "replaced");
    CHECK_EQ_INT(prpc_store_checkpoint_put(s, id, b.lease_id, "step", b2, 7, 1050, old, &err), 0);

    /* Restart runs from scratch: no checkpoints. */
    CHECK_EQ_INT(prpc_store_call_restart(s, id, 1060, &err), 0);
    CHECK_EQ_INT(ckpt_count(s, 1), 0);
    CHECK_EQ_INT(prpc_store_blobs_unreferenced(s, 1000, out, 4, &n, &err), 0);
    CHECK_EQ_INT(n, 3);

    /* Finishing drops them. */
    prpc_call_cleanup(&a);
    CHECK_EQ_INT(lease1(s, "f", V1, 1070, &a, &err), 0);
    CHECK_EQ_STR(a.id, id);
    CHECK_EQ_INT(prpc_store_checkpoint_put(s, id, a.lease_id, "step", b1, 5, 1070, old, &err), 0);
    CHECK_EQ_INT(prpc_store_call_finish(s, id, a.lease_id, PRPC_CALL_DONE, "[]", NULL, 1080, &err),
                 0);
    CHECK_EQ_INT(ckpt_count(s, 1), 0);

    /* Deleting drops them. */
    prpc_call_cleanup(&b);
    CHECK_EQ_INT(lease1(s, "f", V1, 1090, &b, &err), 0);
    CHECK_EQ_STR(b.id, id2);
    CHECK_EQ_INT(prpc_store_checkpoint_put(s, id2, b.lease_id, "x", b2, 7, 1090, old, &err), 0);
    CHECK_EQ_INT(prpc_store_call_delete(s, id2, &err), 0);
    CHECK_EQ_INT(ckpt_count(s, 2), 0);
    CHECK_EQ_INT(prpc_store_blob_remove(s, b2, &err), 0);

    /* A call failed by lease expiry keeps them until it expires. */
    CHECK_EQ_INT(put(s, 3, "f", V1, 1100), 0);
    prpc_call_cleanup(&a);
    CHECK_EQ_INT(lease1(s, "f", V1, 1100, &a, &err), 0);
    CHECK_EQ_STR(a.id, id3);
    CHECK_EQ_INT(prpc_store_checkpoint_put(s, id3, a.lease_id, "x", b3, 9, 1100, old, &err), 0);
    CHECK_EQ_INT(prpc_store_leases_expire(s, 2100, 1, &rq, &fl, &err), 0);
    CHECK_EQ_INT(fl, 1);
    CHECK_EQ_INT(ckpt_count(s, 3), 1);
    CHECK_EQ_INT(prpc_store_calls_expire(s, 3000, &removed, &err), 0);
    CHECK_EQ_INT(removed, 2);
    CHECK_EQ_INT(ckpt_count(s, 3), 0);
    CHECK_EQ_INT(prpc_store_blob_remove(s, b3, &err), 0);
    prpc_call_cleanup(&a);
    prpc_call_cleanup(&b);
}

static const struct store_case {
    const char *name;
    void (*fn)(prpc_store_t *s);
} conformance[] = {
    {"submit_get", case_submit_get},
    {"bad_inputs", case_bad_inputs},
    {"lease_oldest", case_lease_oldest},
    {"renew", case_renew},
    {"finish_idempotent", case_finish_idempotent},
    {"lease_expiry", case_lease_expiry},
    {"terminate", case_terminate},
    {"restart", case_restart},
    {"delete", case_delete},
    {"blobs", case_blobs},
    {"calls_expire", case_calls_expire},
    {"stats", case_stats},
    {"submit_many", case_submit_many},
    {"calls_states", case_calls_states},
    {"checkpoints", case_checkpoints},
};

/* Run every case on a store from open_case(case name); report each. */
static int run_conformance(const char *backend,
                           prpc_store_t *(*open_case)(const char *name, prpc_error_t *err))
{
    int failed = 0;
    for (size_t i = 0; i < PRPC_ARRAY_LEN(conformance); i++) {
        prpc_error_t err = {0};
        prpc_store_t *s = open_case(conformance[i].name, &err);
        test_failed_ = 0;
        if (s == NULL) {
            fprintf(stderr, "  FAIL cannot open %s store: %s\n", backend, err.message);
            test_failed_ = 1;
        } else {
            conformance[i].fn(s);
            prpc_store_close(s);
        }
        printf("#   %s %s/%s\n", test_failed_ ? "not ok" : "ok", backend, conformance[i].name);
        failed |= test_failed_;
    }
    return failed;
}

static prpc_store_t *open_sqlite_case(const char *name, prpc_error_t *err)
{
    char path[256], file[160];
    snprintf(file, sizeof(file), "conformance/%s.db", name);
    return prpc_store_open(tmp_path(path, sizeof(path), file), NULL, err);
}

static prpc_store_t *open_mongo_case(const char *name, prpc_error_t *err)
{
    PRPC_UNUSED(name);
    return prpc_store_open(getenv("P2PRPC_TEST_MONGO_URI"), NULL, err);
}

TEST(sqlite_conformance)
{
    test_failed_ = run_conformance("sqlite", open_sqlite_case);
}

TEST(mongo_conformance)
{
    /* Opt-in, not an environment CI has: it needs a MongoDB server to empty. */
    if (getenv("P2PRPC_TEST_MONGO_URI") == NULL)
        SKIP_OPTIN("P2PRPC_TEST_MONGO_URI is not set (a MongoDB whose database each case may empty)");
    test_failed_ = run_conformance("mongodb", open_mongo_case);
}

/* ---- SQLite backend: the file ---- */

/* First column of the first row of sql on the file at path, opened directly. */
static int64_t sqlite_int(const char *path, const char *sql, char *text, size_t size)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int64_t v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) {
        v = sqlite3_column_int64(q, 0);
        if (text != NULL)
            snprintf(text, size, "%s", (const char *)sqlite3_column_text(q, 0));
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

static int sqlite_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

TEST(open_uris_and_options)
{
    prpc_store_options_t o = {0};
    prpc_error_t err;
    prpc_store_t *s;
    char path[256], uri[300], mode[16] = "";
    tmp_path(path, sizeof(path), "deep/er/dirs/store.db");
    snprintf(uri, sizeof(uri), "sqlite:%s", path);
    s = prpc_store_open(uri, NULL, &err);
    CHECK(s != NULL);
    CHECK_EQ_STR(prpc_store_backend(s), "sqlite");
    CHECK_EQ_INT(put(s, 7, "f", V1, 1), 0);
    prpc_store_close(s);
    /* On disk: WAL, our application_id and schema version. */
    CHECK_EQ_INT(sqlite_int(path, "PRAGMA journal_mode", mode, sizeof(mode)), 0);
    CHECK_EQ_STR(mode, "wal");
    CHECK_EQ_INT(sqlite_int(path, "PRAGMA application_id", NULL, 0), PRPC_STORE_APPLICATION_ID);
    CHECK_EQ_INT(sqlite_int(path, "PRAGMA user_version", NULL, 0), PRPC_STORE_SCHEMA_VERSION);

    /* Reopened as a plain path, with relaxed durability: the call is there. */
    o.synchronous = "normal";
    o.busy_timeout_ms = 100;
    s = prpc_store_open(path, &o, &err);
    CHECK(s != NULL);
    CHECK_EQ_INT(state_of(s, 7), PRPC_CALL_QUEUED);
    prpc_store_close(s);
    o.synchronous = "off";
    o.skip_open_check = 1;
    s = prpc_store_open(path, &o, &err);
    CHECK(s != NULL);
    prpc_store_close(s);
    prpc_store_close(NULL);

    o.synchronous = "sometimes";
    CHECK(prpc_store_open(path, &o, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(strstr(err.message, "synchronous") != NULL);
    o.synchronous = NULL;
    o.busy_timeout_ms = -1;
    CHECK(prpc_store_open(path, &o, &err) == NULL);
    CHECK(strstr(err.message, "busy_timeout_ms") != NULL);
    CHECK(prpc_store_open("", NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(prpc_store_open(NULL, NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(prpc_store_open("sqlite:", NULL, &err) == NULL);
    CHECK(strstr(err.message, "names no file") != NULL);
    CHECK(prpc_store_open("redis://user:secret@host/0", NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(strstr(err.message, "unknown scheme") != NULL);
    CHECK(strstr(err.message, "secret") == NULL);
    CHECK(prpc_store_open("mongodb://user:secret@localhost:1/db", NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_ENOTSUP);
    CHECK(strstr(err.message, "use sqlite:PATH") != NULL);
    CHECK(strstr(err.message, "secret") == NULL);

    /* A directory where the file should be. */
    tmp_path(path, sizeof(path), "deep/er");
    CHECK(prpc_store_open(path, NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EIO);
    CHECK(strstr(err.message, path) != NULL);
    /* A file where a directory should be. */
    tmp_path(path, sizeof(path), "deep/er/dirs/store.db/sub/x.db");
    CHECK(prpc_store_open(path, NULL, &err) == NULL);
    CHECK(strstr(err.message, "store.db/sub") != NULL);
}

TEST(state_names)
{
    CHECK_EQ_STR(prpc_call_state_name(PRPC_CALL_QUEUED), "queued");
    CHECK_EQ_STR(prpc_call_state_name(PRPC_CALL_LEASED), "leased");
    CHECK_EQ_STR(prpc_call_state_name(PRPC_CALL_DONE), "done");
    CHECK_EQ_STR(prpc_call_state_name(PRPC_CALL_FAILED), "failed");
    CHECK_EQ_STR(prpc_call_state_name(PRPC_CALL_TERMINATED), "terminated");
    CHECK_EQ_STR(prpc_call_state_name(5), "unknown");
    CHECK_EQ_STR(prpc_call_state_name(-1), "unknown");
    CHECK(!prpc_call_state_is_terminal(PRPC_CALL_LEASED));
    CHECK(prpc_call_state_is_terminal(PRPC_CALL_TERMINATED));
    prpc_call_cleanup(NULL);
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    size_t w;
    if (f == NULL)
        return -1;
    w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

TEST(random_bytes_file_refused)
{
    prpc_error_t err;
    char path[256], wal[270];
    unsigned char junk[8192], back[8192];
    FILE *f;
    srand(12345);
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)rand();
    tmp_path(path, sizeof(path), "junk.db");
    CHECK_EQ_INT(write_file(path, junk, sizeof(junk)), 0);
    CHECK(prpc_store_open(path, NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_ECORRUPT);
    CHECK(strstr(err.message, path) != NULL);
    CHECK(strstr(err.message, "not a database") != NULL);
    /* Left exactly as it was. */
    f = fopen(path, "rb");
    CHECK(f != NULL);
    CHECK_EQ_INT(fread(back, 1, sizeof(back), f), sizeof(back));
    fclose(f);
    CHECK(memcmp(junk, back, sizeof(junk)) == 0);
    snprintf(wal, sizeof(wal), "%s-wal", path);
    CHECK_EQ_INT(file_size(wal), -1);
}

/* A closed store of a few hundred calls, spread over many pages. */
static int make_store(const char *path, unsigned ncalls)
{
    prpc_store_t *s = prpc_store_open(path, NULL, NULL);
    char args[1100];
    int rc = s != NULL ? 0 : -1;
    memset(args, 'z', sizeof(args));
    memcpy(args, "{\"s\":\"", 6);
    memcpy(args + sizeof(args) - 3, "\"}", 3);
    for (unsigned i = 0; rc == 0 && i < ncalls; i++) {
        prpc_call_t c = {0};
        idn(c.id, 1000 + i);
        strcpy(c.function, "f");
        strcpy(c.version, V1);
        c.args_json = args;
        rc = prpc_store_call_submit(s, &c, i, NULL, NULL, NULL);
    }
    prpc_store_close(s);
    return rc;
}

TEST(truncated_file_refused)
{
    prpc_error_t err;
    char path[256];
    long size;
    tmp_path(path, sizeof(path), "truncated.db");
    CHECK_EQ_INT(make_store(path, 300), 0);
    size = file_size(path);
    CHECK(size > 100000);
    CHECK_EQ_INT(truncate(path, size / 2 + 1234), 0);
    CHECK(prpc_store_open(path, NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_ECORRUPT);
    CHECK(strstr(err.message, path) != NULL);
    /* Cut inside the 100-byte header. */
    CHECK_EQ_INT(truncate(path, 60), 0);
    CHECK(prpc_store_open(path, NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_ECORRUPT);
    CHECK(strstr(err.message, path) != NULL);
}

TEST(damaged_page_found_by_integrity_check)
{
    prpc_store_options_t o = {0};
    prpc_error_t err;
    prpc_store_t *s;
    char path[256], page[4096];
    long size;
    FILE *f;
    tmp_path(path, sizeof(path), "damaged.db");
    CHECK_EQ_INT(make_store(path, 300), 0);
    size = file_size(path);
    /* Scribble over a page in the middle: the header still looks right. */
    memset(page, 0x5a, sizeof(page));
    f = fopen(path, "r+b");
    CHECK(f != NULL);
    CHECK_EQ_INT(fseek(f, (size / 2) & ~4095L, SEEK_SET), 0);
    CHECK_EQ_INT(fwrite(page, 1, sizeof(page), f), sizeof(page));
    CHECK_EQ_INT(fclose(f), 0);
    CHECK(prpc_store_open(path, NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_ECORRUPT);
    CHECK(strstr(err.message, path) != NULL);
    /* Skipping the open check, the damage is still reported, not crashed on. */
    o.skip_open_check = 1;
    s = prpc_store_open(path, &o, &err);
    CHECK(s != NULL);
    CHECK_ERR(prpc_store_check_integrity(s, &err), PRPC_ECORRUPT, path);
    prpc_store_close(s);
}

/* A table row that no longer matches its index entries passes the quick
 * check on open, and the full check names the problem. */
TEST(index_mismatch_found_by_integrity_check)
{
    prpc_error_t err;
    prpc_store_t *s;
    char path[256], needle[80], *data;
    long size;
    size_t hit = 0;
    FILE *f;
    tmp_path(path, sizeof(path), "mismatch.db");
    CHECK_EQ_INT(make_store(path, 3), 0);
    size = file_size(path);
    data = malloc((size_t)size);
    CHECK(data != NULL);
    f = fopen(path, "r+b");
    CHECK(f != NULL);
    CHECK_EQ_INT(fread(data, 1, (size_t)size, f), size);
    /* The table record is id, function, version...; index records differ. */
    idn(needle, 1001);
    strcat(needle, "f" V1);
    for (long i = 0; hit == 0 && i + (long)strlen(needle) <= size; i++)
        if (memcmp(data + i, needle, strlen(needle)) == 0)
            hit = (size_t)i + PRPC_CALL_ID_HEX;
    free(data);
    CHECK(hit != 0);
    CHECK_EQ_INT(fseek(f, (long)hit, SEEK_SET), 0);
    CHECK_EQ_INT(fputc('g', f), 'g');
    CHECK_EQ_INT(fclose(f), 0);

    s = prpc_store_open(path, NULL, &err);
    CHECK(s != NULL);
    CHECK_ERR(prpc_store_check_integrity(s, &err), PRPC_ECORRUPT, "failed its integrity check");
    CHECK(strstr(err.message, path) != NULL);
    CHECK(strstr(err.message, "index") != NULL);
    prpc_store_close(s);
}

TEST(foreign_database_refused)
{
    prpc_error_t err;
    char path[256], mode[16] = "", sql[128];
    tmp_path(path, sizeof(path), "foreign.db");
    CHECK_EQ_INT(sqlite_exec(path, "CREATE TABLE users (name TEXT);"
                                   "INSERT INTO users VALUES ('ada');"),
                 SQLITE_OK);
    CHECK(prpc_store_open(path, NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_ECORRUPT);
    CHECK(strstr(err.message, path) != NULL);
    CHECK(strstr(err.message, "another application's") != NULL);
    /* Untouched: still in its own journal mode, its data there. */
    CHECK_EQ_INT(sqlite_int(path, "PRAGMA journal_mode", mode, sizeof(mode)), 0);
    CHECK_EQ_STR(mode, "delete");
    CHECK_EQ_INT(sqlite_int(path, "SELECT count(*) FROM users", NULL, 0), 1);

    CHECK_EQ_INT(sqlite_exec(path, "PRAGMA application_id = 1234"), SQLITE_OK);
    CHECK(prpc_store_open(path, NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_ECORRUPT);
    CHECK(strstr(err.message, "application_id 0x000004d2") != NULL);
    CHECK(strstr(err.message, path) != NULL);

    /* Ours, but from a newer p2prpc. */
    tmp_path(path, sizeof(path), "newer.db");
    CHECK_EQ_INT(make_store(path, 1), 0);
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", PRPC_STORE_SCHEMA_VERSION + 1);
    CHECK_EQ_INT(sqlite_exec(path, sql), SQLITE_OK);
    CHECK(prpc_store_open(path, NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_ECORRUPT);
    CHECK(strstr(err.message, "newer") != NULL);
    CHECK(strstr(err.message, path) != NULL);
}

/* A store written by the first release (schema 1, no checkpoints) is
 * upgraded in place on open, its calls kept. */
TEST(schema_1_upgraded)
{
    prpc_error_t err;
    prpc_store_t *s;
    prpc_call_t c = {0};
    char path[256], id[PRPC_CALL_ID_HEX + 1], sha[PRPC_CALL_ID_HEX + 1];
    tmp_path(path, sizeof(path), "schema1.db");
    CHECK_EQ_INT(make_store(path, 3), 0);
    CHECK_EQ_INT(sqlite_exec(path, "DROP TABLE checkpoints; PRAGMA user_version = 1"), SQLITE_OK);
    CHECK_EQ_INT(sqlite_int(path, "SELECT count(*) FROM sqlite_schema WHERE name = 'checkpoints'",
                            NULL, 0),
                 0);
    s = prpc_store_open(path, NULL, &err);
    CHECK(s != NULL);
    CHECK_EQ_INT(sqlite_int(path, "PRAGMA user_version", NULL, 0), PRPC_STORE_SCHEMA_VERSION);
    CHECK_EQ_INT(state_of(s, 1001), PRPC_CALL_QUEUED);
    idn(sha, 0xc1);
    CHECK_EQ_INT(prpc_store_blob_add(s, sha, 1, 5, &err), 0);
    CHECK_EQ_INT(lease1(s, "f", V1, 10, &c, &err), 0);
    idn(id, 1000);
    CHECK_EQ_STR(c.id, id);
    CHECK_EQ_INT(prpc_store_checkpoint_put(s, c.id, c.lease_id, "step", sha, 1, 10, NULL, &err), 0);
    prpc_call_cleanup(&c);
    prpc_store_close(s);
    CHECK_EQ_INT(sqlite_int(path, "SELECT count(*) FROM checkpoints", NULL, 0), 1);
}

/* ---- crash safety: SIGKILL mid-write loses nothing acknowledged ---- */

static void crash_child(const char *path, int fd, unsigned round)
{
    prpc_store_t *s = prpc_store_open(path, NULL, NULL);
    char line[PRPC_CALL_ID_HEX + 2];
    if (s == NULL)
        _exit(2);
    for (unsigned i = 0;; i++) {
        prpc_call_t c = {0};
        idn(c.id, (round << 20) | i);
        strcpy(c.function, "f");
        strcpy(c.version, V1);
        c.args_json = "{\"n\":1}";
        if (prpc_store_call_submit(s, &c, i, NULL, NULL, NULL) < 0)
            _exit(3);
        snprintf(line, sizeof(line), "%s\n", c.id);
        if (write(fd, line, PRPC_CALL_ID_HEX + 1) != PRPC_CALL_ID_HEX + 1)
            _exit(4);
    }
}

TEST(sqlite_crash_safety)
{
    static char acked[64 * 1024];
    char path[256];
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    long total = 0;
    tmp_path(path, sizeof(path), "crash/store.db");
    srand(seed);
    printf("# crash seed %u\n", seed);
    for (unsigned round = 1; round <= 20; round++) {
        prpc_error_t err;
        prpc_store_t *s;
        size_t got = 0;
        ssize_t r;
        int fds[2], status = 0;
        pid_t pid;
        CHECK_EQ_INT(pipe(fds), 0);
        fflush(NULL);
        pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_child(path, fds[1], round);
        }
        close(fds[1]);
        usleep(20000 + (useconds_t)(rand() % 80000));
        CHECK_EQ_INT(kill(pid, SIGKILL), 0);
        CHECK_EQ_INT(waitpid(pid, &status, 0), pid);
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
            fprintf(stderr, "  FAIL child ended by itself (status %d): store error\n", status);
            test_failed_ = 1;
            return;
        }
        while (got < sizeof(acked) && (r = read(fds[0], acked + got, sizeof(acked) - got)) > 0)
            got += (size_t)r;
        close(fds[0]);

        s = prpc_store_open(path, NULL, &err);
        if (s == NULL)
            fprintf(stderr, "  reopen after kill %u: %s\n", round, err.message);
        CHECK(s != NULL);
        for (size_t off = 0; off + PRPC_CALL_ID_HEX + 1 <= got; off += PRPC_CALL_ID_HEX + 1) {
            prpc_call_t c = {0};
            char id[PRPC_CALL_ID_HEX + 1];
            memcpy(id, acked + off, PRPC_CALL_ID_HEX);
            id[PRPC_CALL_ID_HEX] = '\0';
            if (prpc_store_call_get(s, id, &c, &err) != 0) {
                fprintf(stderr, "  FAIL acknowledged call %s lost after kill %u: %s\n", id,
                        round, err.message);
                prpc_store_close(s);
                test_failed_ = 1;
                return;
            }
            prpc_call_cleanup(&c);
            total++;
        }
        CHECK_EQ_INT(prpc_store_check_integrity(s, &err), 0);
        prpc_store_close(s);
    }
    printf("# %ld acknowledged calls survived 20 kills\n", total);
    CHECK(total > 0);
}

/* ---- threads: a shared handle (and a second connection), each call leased once ---- */

#define THREADS 4
#define PER_THREAD 50

struct thread_arg {
    prpc_store_t *s;
    unsigned base;
    int failed;
    int nleased;
    unsigned leased[THREADS * PER_THREAD];
};

static void *submitter(void *p)
{
    struct thread_arg *a = p;
    for (unsigned i = 0; i < PER_THREAD; i++)
        if (put(a->s, a->base + i, "f", V1, (int64_t)i) != 0)
            a->failed = 1;
    return NULL;
}

static int leased_total;
static pthread_mutex_t leased_lock = PTHREAD_MUTEX_INITIALIZER;

static void *leaser(void *p)
{
    struct thread_arg *a = p;
    time_t give_up = time(NULL) + 15;
    for (;;) {
        prpc_call_t c = {0};
        prpc_error_t err;
        int rc, done;
        pthread_mutex_lock(&leased_lock);
        done = leased_total >= THREADS * PER_THREAD;
        pthread_mutex_unlock(&leased_lock);
        if (done || time(NULL) > give_up)
            break;
        rc = lease1(a->s, "f", V1, 1, &c, &err);
        if (rc == PRPC_ENOTFOUND)
            continue;
        if (rc != 0) {
            a->failed = 1;
            break;
        }
        a->leased[a->nleased++] = (unsigned)strtoul(c.id + 48, NULL, 16);
        if (prpc_store_call_finish(a->s, c.id, c.lease_id, PRPC_CALL_DONE, "{}", NULL, 2, &err))
            a->failed = 1;
        prpc_call_cleanup(&c);
        pthread_mutex_lock(&leased_lock);
        leased_total++;
        pthread_mutex_unlock(&leased_lock);
    }
    return NULL;
}

TEST(threads_share_one_handle)
{
    static struct thread_arg sub[THREADS], lea[THREADS];
    static int seen[THREADS * PER_THREAD];
    pthread_t t[2 * THREADS];
    prpc_error_t err;
    prpc_store_options_t o = {.synchronous = "normal"};
    char path[256];
    prpc_store_t *s = prpc_store_open(tmp_path(path, sizeof(path), "threads.db"), &o, &err);
    prpc_store_t *s2 = prpc_store_open(path, &o, &err); /* a second connection, as another
                                                           process would have */
    int64_t counts[PRPC_CALL_NSTATES];
    CHECK(s != NULL && s2 != NULL);
    for (int i = 0; i < THREADS; i++) {
        sub[i] = (struct thread_arg){.s = s, .base = (unsigned)i * PER_THREAD};
        lea[i].s = i % 2 ? s2 : s;
        CHECK_EQ_INT(pthread_create(&t[i], NULL, submitter, &sub[i]), 0);
        CHECK_EQ_INT(pthread_create(&t[THREADS + i], NULL, leaser, &lea[i]), 0);
    }
    for (int i = 0; i < 2 * THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++) {
        CHECK_EQ_INT(sub[i].failed, 0);
        CHECK_EQ_INT(lea[i].failed, 0);
        for (int j = 0; j < lea[i].nleased; j++)
            seen[lea[i].leased[j]]++;
    }
    for (int n = 0; n < THREADS * PER_THREAD; n++)
        CHECK_EQ_INT(seen[n], 1);
    CHECK_EQ_INT(prpc_store_function_stats(s, "f", counts, &err), 0);
    CHECK_EQ_INT(counts[PRPC_CALL_DONE], THREADS * PER_THREAD);
    prpc_store_close(s);
    prpc_store_close(s2);
}

TEST_MAIN(TEST_ENTRY(state_names), TEST_ENTRY(sqlite_conformance), TEST_ENTRY(mongo_conformance),
          TEST_ENTRY(open_uris_and_options), TEST_ENTRY(random_bytes_file_refused),
          TEST_ENTRY(truncated_file_refused), TEST_ENTRY(damaged_page_found_by_integrity_check),
          TEST_ENTRY(index_mismatch_found_by_integrity_check),
          TEST_ENTRY(foreign_database_refused), TEST_ENTRY(schema_1_upgraded),
          TEST_ENTRY(sqlite_crash_safety),
          TEST_ENTRY(threads_share_one_handle))
