/* test_worker.c - the worker loop against a fake broker in this process: a
 * lease with a file argument, heartbeats with progress, output upload and
 * result push; terminate and lost-lease orders; failover; stop. */
#include "blob.h"
#include "common.h"
#include "hash.h"
#include "util.h"
#include "worker.h"
#include "test.h"

#include "fake_http.h"

#include <bson/bson.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <time.h>

#define VERSION "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define CALL_ID "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
#define LEASE_ID "1ea5e1ea5e1ea5e1ea5e1ea5e1ea5e00"

enum { HB_OK, HB_TERMINATE, HB_STALE };

typedef struct broker {
    fake_blobs_t blobs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int leases_to_give;     /* lease answers left to hand out */
    int lease_requests;
    int heartbeats;
    int hb_mode;            /* HB_* */
    double max_progress;    /* highest progress a heartbeat carried */
    int results;
    char *result;           /* last result body */
    char lease_body[2048];  /* last lease request body */
    char in_sha[65];        /* the file argument's blob */
    const char *lease_id;   /* the id lease answers carry; NULL: LEASE_ID */
} broker_t;

typedef struct runner {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    prpc_worker_t *w;
    int mode;               /* 0 produce outputs, 1 wait for cancel, 2 fail */
    int runs, cancels;
    char job[4096];
    char cancelled_id[65];
    char cancelled_lease[65];
    char in_content_ok;     /* the file argument's path held the right bytes */
    char out_path[512];
} runner_t;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 1 when the JSON body's field at dotted (e.g. "functions.0.version") is the
 * string want (want NULL: an array): bodies are checked by what they say,
 * not by how they are spaced. */
static int field_is(const char *json, const char *dotted, const char *want)
{
    bson_t *d = json != NULL ? bson_new_from_json((const uint8_t *)json, -1, NULL) : NULL;
    bson_iter_t it, f;
    int yes = d != NULL && bson_iter_init(&it, d) && bson_iter_find_descendant(&it, dotted, &f);
    if (yes && want == NULL)
        yes = BSON_ITER_HOLDS_ARRAY(&f);
    else if (yes)
        yes = BSON_ITER_HOLDS_UTF8(&f) && strcmp(bson_iter_utf8(&f, NULL), want) == 0;
    if (d != NULL)
        bson_destroy(d);
    return yes;
}

static void broker_handler(void *ud, const fake_req_t *req, fake_resp_t *resp)
{
    broker_t *b = ud;
    char body[1024];
    if (strncmp(req->path, "/v1/blobs/", 10) == 0) {
        fake_blob_route(&b->blobs, req, resp);
        return;
    }
    pthread_mutex_lock(&b->mu);
    if (strncmp(req->path, "/v1/leases", 10) == 0 && (req->path[10] == '\0' || req->path[10] == '?')) {
        b->lease_requests++;
        snprintf(b->lease_body, sizeof(b->lease_body), "%s", req->body);
        if (b->leases_to_give > 0) {
            b->leases_to_give--;
            snprintf(body, sizeof(body),
                     "{\"lease\": {\"id\": \"%s\","
                     " \"call_id\": \"%s\", \"deadline_ms\": 1, \"heartbeat_ms\": 100},"
                     " \"call\": {\"id\": \"%s\", \"function\": \"f\", \"version\": \"%s\","
                     " \"state\": \"leased\", \"args\": ["
                     "{\"name\": \"n\", \"kind\": \"int\", \"value\": \"-5\"},"
                     "{\"name\": \"data\", \"kind\": \"file\", \"blob\": \"%s\", \"size\": 3000,"
                     " \"filename\": \"../../etc/passwd\"}]}}",
                     b->lease_id ? b->lease_id : LEASE_ID, CALL_ID, CALL_ID, VERSION, b->in_sha);
            fake_body(resp, body);
        } else {
            resp->status = 204;
            resp->delay_ms = 150; /* a short long-poll */
        }
    } else if (strstr(req->path, "/heartbeat") != NULL) {
        bson_t *d = bson_new_from_json((const uint8_t *)req->body, -1, NULL);
        bson_iter_t it;
        b->heartbeats++;
        if (d != NULL && bson_iter_init_find(&it, d, "progress") &&
            bson_iter_as_double(&it) > b->max_progress)
            b->max_progress = bson_iter_as_double(&it);
        if (d != NULL)
            bson_destroy(d);
        if (b->hb_mode == HB_STALE)
            fake_error(resp, 409, "ESTATE", "lease lapsed");
        else
            fake_body(resp, b->hb_mode == HB_TERMINATE ? "{\"terminate\": true}"
                                                       : "{\"terminate\": false}");
    } else if (strncmp(req->path, "/v1/leases/", 11) == 0 &&
               strstr(req->path, "/result") != NULL) {
        b->results++;
        free(b->result);
        b->result = strdup(req->body);
        fake_body(resp, "{\"call\": {}}");
        pthread_cond_broadcast(&b->cv);
    } else {
        fake_error(resp, 404, "ENOTFOUND", "no such path");
    }
    pthread_mutex_unlock(&b->mu);
}

static int run_cb(void *ud, const char *job, char **result)
{
    runner_t *r = ud;
    bson_t *d = bson_new_from_json((const uint8_t *)job, -1, NULL);
    bson_iter_t it, f;
    char out[1200];
    int mode;
    pthread_mutex_lock(&r->mu);
    r->runs++;
    mode = r->mode;
    snprintf(r->job, sizeof(r->job), "%s", job);
    pthread_mutex_unlock(&r->mu);
    if (d != NULL && bson_iter_init(&it, d) && bson_iter_find_descendant(&it, "args.1.path", &f)) {
        uint8_t dg[PRPC_SHA256_LEN];
        char hex[65];
        const char *in_sha = NULL;
        bson_iter_t s;
        if (prpc_hash_path(bson_iter_utf8(&f, NULL), dg, NULL, NULL) == 0) {
            prpc_hex_encode(dg, sizeof(dg), hex);
            if (bson_iter_init(&s, d) && bson_iter_find_descendant(&s, "args.1.blob", &s))
                in_sha = bson_iter_utf8(&s, NULL);
            r->in_content_ok = in_sha != NULL && strcmp(in_sha, hex) == 0;
        }
    }
    if (mode == 2) {
        if (d != NULL)
            bson_destroy(d);
        return -1;
    }
    if (mode == 1) {
        pthread_mutex_lock(&r->mu);
        while (r->cancels == 0)
            pthread_cond_wait(&r->cv, &r->mu);
        pthread_mutex_unlock(&r->mu);
        *result = strdup("{\"state\": \"terminated\", \"outputs\": [], \"error\": null}");
    } else {
        const char *wd = NULL;
        bson_iter_t w;
        FILE *fp;
        if (d != NULL && bson_iter_init_find(&w, d, "work_dir"))
            wd = bson_iter_utf8(&w, NULL);
        if (wd != NULL)
            mkdir(wd, 0700); /* the run makes its work dir when it needs one */
        snprintf(r->out_path, sizeof(r->out_path), "%s/result.txt", wd ? wd : "/nonexistent");
        fp = fopen(r->out_path, "w");
        if (fp != NULL) {
            fputs("the answer is 42\n", fp);
            fclose(fp);
        }
        prpc_worker_report_progress(r->w, CALL_ID, 50, NULL);
        usleep(350 * 1000); /* long enough for heartbeats at 100 ms */
        snprintf(out, sizeof(out),
                 "{\"state\": \"done\", \"outputs\": ["
                 "{\"name\": \"report\", \"kind\": \"file\", \"path\": \"%s\"},"
                 "{\"name\": \"count\", \"kind\": \"int\", \"value\": \"7\"}], \"error\": null}",
                 r->out_path);
        *result = strdup(out);
    }
    if (d != NULL)
        bson_destroy(d);
    return 0;
}

static void cancel_cb(void *ud, const char *call_id, const char *lease_id)
{
    runner_t *r = ud;
    pthread_mutex_lock(&r->mu);
    r->cancels++;
    snprintf(r->cancelled_id, sizeof(r->cancelled_id), "%s", call_id);
    snprintf(r->cancelled_lease, sizeof(r->cancelled_lease), "%s", lease_id);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void quiet_log(void *ud, int level, const char *msg)
{
    PRPC_UNUSED(ud);
    if (getenv("TEST_VERBOSE"))
        fprintf(stderr, "  log %d: %s\n", level, msg);
}

typedef struct fixture {
    broker_t b;
    runner_t r;
    fake_server_t srv;
    char dir[64];
    char url[64];
    char data_dir[128];
    prpc_worker_function_t fn;
    prpc_worker_config_t cfg;
    const char *brokers[2];
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
    char sub[128], *data = malloc(3000);
    uint64_t partial = 0;
    uint8_t d[PRPC_SHA256_LEN];
    memset(fx, 0, sizeof(*fx));
    pthread_mutex_init(&fx->b.mu, NULL);
    pthread_cond_init(&fx->b.cv, NULL);
    pthread_mutex_init(&fx->b.blobs.mu, NULL);
    pthread_mutex_init(&fx->r.mu, NULL);
    pthread_cond_init(&fx->r.cv, NULL);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/prpc-worker-XXXXXX");
    if (mkdtemp(fx->dir) == NULL)
        return -1;
    snprintf(sub, sizeof(sub), "%s/broker", fx->dir);
    fx->b.blobs.bd = prpc_blobdir_open(sub, NULL);
    for (int i = 0; i < 3000; i++)
        data[i] = (char)(i * 31);
    prpc_sha256(data, 3000, d, NULL);
    prpc_hex_encode(d, sizeof(d), fx->b.in_sha);
    if (fx->b.blobs.bd == NULL ||
        prpc_blobdir_write_chunk(fx->b.blobs.bd, fx->b.in_sha, 0, data, 3000, NULL, &partial,
                                 NULL) != 0 ||
        prpc_blobdir_commit(fx->b.blobs.bd, fx->b.in_sha, 3000, NULL) != 0)
        return -1;
    free(data);
    if (fake_start(&fx->srv, broker_handler, &fx->b) != 0)
        return -1;
    snprintf(fx->url, sizeof(fx->url), "127.0.0.1:%d", fx->srv.port);
    snprintf(fx->data_dir, sizeof(fx->data_dir), "%s/worker", fx->dir);
    fx->fn.name = "f";
    fx->fn.version = VERSION;
    fx->brokers[0] = fx->url;
    fx->cfg.brokers = fx->brokers;
    fx->cfg.n_brokers = 1;
    fx->cfg.name = "test-worker";
    fx->cfg.data_dir = fx->data_dir;
    fx->cfg.functions = &fx->fn;
    fx->cfg.n_functions = 1;
    fx->cfg.lease_wait_ms = 150;
    fx->cfg.connect_timeout_ms = 500;
    fx->cfg.run = run_cb;
    fx->cfg.cancel = cancel_cb;
    fx->cfg.log = quiet_log;
    fx->cfg.ud = &fx->r;
    return 0;
}

static void fixture_down(fixture_t *fx)
{
    fake_stop(&fx->srv);
    prpc_blobdir_free(fx->b.blobs.bd);
    free(fx->b.result);
    nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Wait up to ms for *counter (under mu) to reach n. */
static int wait_count(pthread_mutex_t *mu, int *counter, int n, int ms)
{
    int64_t end = now_ms() + ms;
    int v;
    do {
        pthread_mutex_lock(mu);
        v = *counter;
        pthread_mutex_unlock(mu);
        if (v >= n)
            return 1;
        usleep(10 * 1000);
    } while (now_ms() < end);
    return 0;
}

static prpc_worker_t *start_worker(fixture_t *fx)
{
    prpc_error_t err;
    prpc_worker_t *w = prpc_worker_new(&fx->cfg, &err);
    if (w == NULL) {
        fprintf(stderr, "  worker_new: %s\n", err.message);
        return NULL;
    }
    fx->r.w = w;
    if (prpc_worker_start(w, &err) != 0) {
        fprintf(stderr, "  worker_start: %s\n", err.message);
        prpc_worker_free(w);
        return NULL;
    }
    return w;
}

TEST(lease_run_upload_result)
{
    fixture_t fx;
    prpc_worker_t *w;
    bson_t *res;
    bson_iter_t it;
    char job_dir[8192], out_sha[65];
    uint8_t d[PRPC_SHA256_LEN];
    struct stat st;
    CHECK(fixture_up(&fx) == 0);
    fx.b.leases_to_give = 1;
    w = start_worker(&fx);
    CHECK(w != NULL);
    CHECK(wait_count(&fx.b.mu, &fx.b.results, 1, 10000));
    prpc_worker_free(w);
    /* The job the executor saw. */
    CHECK(strstr(fx.r.job, "\"call_id\" : \"" CALL_ID "\"") != NULL);
    CHECK(strstr(fx.r.job, "\"function\" : \"f\"") != NULL);
    CHECK(strstr(fx.r.job, "\"value\" : \"-5\"") != NULL);
    snprintf(job_dir, sizeof(job_dir), "\"work_dir\" : \"%s/jobs/%s\"", fx.data_dir, CALL_ID);
    CHECK(strstr(fx.r.job, job_dir) != NULL);
    CHECK(fx.r.in_content_ok);
    /* The file argument landed in the blob cache under its hash, not its name. */
    snprintf(job_dir, sizeof(job_dir), "%s/blobs/%.2s/%s", fx.data_dir, fx.b.in_sha,
             fx.b.in_sha + 2);
    CHECK(stat(job_dir, &st) == 0 && st.st_size == 3000);
    /* The lease request named us and what we serve. */
    CHECK(field_is(fx.b.lease_body, "worker", "test-worker"));
    CHECK(field_is(fx.b.lease_body, "functions.0.version", VERSION));
    CHECK(field_is(fx.b.lease_body, "gpus", NULL));
    /* Heartbeats carried the progress. */
    CHECK(fx.b.heartbeats >= 1);
    CHECK(fx.b.max_progress == 50);
    /* The result: done, the output file uploaded under its hash. */
    CHECK_EQ_INT(fx.b.results, 1);
    res = bson_new_from_json((const uint8_t *)fx.b.result, -1, NULL);
    CHECK(res != NULL);
    CHECK(bson_iter_init(&it, res) && bson_iter_find_descendant(&it, "state", &it));
    CHECK_EQ_STR(bson_iter_utf8(&it, NULL), "done");
    prpc_sha256("the answer is 42\n", 17, d, NULL);
    prpc_hex_encode(d, sizeof(d), out_sha);
    CHECK(bson_iter_init(&it, res) && bson_iter_find_descendant(&it, "outputs.0.blob", &it));
    CHECK_EQ_STR(bson_iter_utf8(&it, NULL), out_sha);
    CHECK(bson_iter_init(&it, res) && bson_iter_find_descendant(&it, "outputs.0.size", &it));
    CHECK_EQ_INT(bson_iter_as_int64(&it), 17);
    CHECK(bson_iter_init(&it, res) && bson_iter_find_descendant(&it, "outputs.0.filename", &it));
    CHECK_EQ_STR(bson_iter_utf8(&it, NULL), "result.txt");
    CHECK(bson_iter_init(&it, res) && !bson_iter_find_descendant(&it, "outputs.0.path", &it));
    CHECK(bson_iter_init(&it, res) && bson_iter_find_descendant(&it, "outputs.1.value", &it));
    CHECK_EQ_STR(bson_iter_utf8(&it, NULL), "7");
    CHECK(bson_iter_init(&it, res) && bson_iter_find_descendant(&it, "error", &it) &&
          BSON_ITER_HOLDS_NULL(&it));
    bson_destroy(res);
    CHECK_EQ_INT(prpc_blobdir_verify(fx.b.blobs.bd, out_sha, NULL), 0);
    /* The job directory is gone once the result is in. */
    CHECK(stat(fx.r.out_path, &st) != 0);
    CHECK_EQ_INT(fx.r.cancels, 0);
    fixture_down(&fx);
}

TEST(terminate_order_cancels_once)
{
    fixture_t fx;
    prpc_worker_t *w;
    CHECK(fixture_up(&fx) == 0);
    fx.b.leases_to_give = 1;
    fx.b.hb_mode = HB_TERMINATE;
    fx.r.mode = 1;
    w = start_worker(&fx);
    CHECK(w != NULL);
    CHECK(wait_count(&fx.b.mu, &fx.b.results, 1, 10000));
    usleep(300 * 1000); /* heartbeats that came late must not cancel again */
    prpc_worker_free(w);
    CHECK_EQ_INT(fx.r.cancels, 1);
    CHECK_EQ_STR(fx.r.cancelled_id, CALL_ID);
    {
        /* The cancel names the lease the job ran under. */
        char want[128];
        snprintf(want, sizeof(want), "\"lease_id\" : \"%s\"", fx.r.cancelled_lease);
        CHECK(fx.r.cancelled_lease[0] != '\0' && strstr(fx.r.job, want) != NULL);
    }
    CHECK(field_is(fx.b.result, "state", "terminated"));
    fixture_down(&fx);
}

TEST(lost_lease_cancels_and_drops_result)
{
    fixture_t fx;
    prpc_worker_t *w;
    CHECK(fixture_up(&fx) == 0);
    fx.b.leases_to_give = 1;
    fx.b.hb_mode = HB_STALE;
    fx.r.mode = 1;
    w = start_worker(&fx);
    CHECK(w != NULL);
    CHECK(wait_count(&fx.r.mu, &fx.r.cancels, 1, 10000));
    usleep(300 * 1000);
    prpc_worker_free(w);
    CHECK_EQ_INT(fx.r.cancels, 1);
    CHECK_EQ_INT(fx.b.results, 0);
    fixture_down(&fx);
}

TEST(run_failure_is_a_failed_call)
{
    fixture_t fx;
    prpc_worker_t *w;
    CHECK(fixture_up(&fx) == 0);
    fx.b.leases_to_give = 1;
    fx.r.mode = 2;
    w = start_worker(&fx);
    CHECK(w != NULL);
    CHECK(wait_count(&fx.b.mu, &fx.b.results, 1, 10000));
    prpc_worker_free(w);
    CHECK(field_is(fx.b.result, "state", "failed"));
    CHECK(field_is(fx.b.result, "error.type", "WorkerError"));
    CHECK(strstr(fx.b.result, "could not run the call") != NULL);
    fixture_down(&fx);
}

TEST(missing_argument_blob_fails_the_call)
{
    fixture_t fx;
    prpc_worker_t *w;
    CHECK(fixture_up(&fx) == 0);
    memset(fx.b.in_sha, 'd', 64);
    fx.b.leases_to_give = 1;
    w = start_worker(&fx);
    CHECK(w != NULL);
    CHECK(wait_count(&fx.b.mu, &fx.b.results, 1, 10000));
    prpc_worker_free(w);
    CHECK_EQ_INT(fx.r.runs, 0);
    CHECK(field_is(fx.b.result, "state", "failed"));
    CHECK(strstr(fx.b.result, "downloading blob dddd") != NULL);
    fixture_down(&fx);
}

TEST(lease_id_the_broker_never_issues_is_refused)
{
    fixture_t fx;
    prpc_worker_t *w;
    CHECK(fixture_up(&fx) == 0);
    /* [A-Za-z0-9_-]{1,64}: what this worker once took; a broker issues only
     * 32 lowercase hex digits (wire.h), so this answer is not a lease. */
    fx.b.lease_id = "lease_1-OK";
    fx.b.leases_to_give = 1;
    w = start_worker(&fx);
    CHECK(w != NULL);
    CHECK(wait_count(&fx.b.mu, &fx.b.lease_requests, 2, 10000));
    prpc_worker_free(w);
    CHECK_EQ_INT(fx.r.runs, 0);
    CHECK_EQ_INT(fx.b.heartbeats, 0);
    CHECK_EQ_INT(fx.b.results, 0);
    fixture_down(&fx);
}

TEST(fails_over_to_the_next_broker)
{
    fixture_t fx;
    prpc_worker_t *w;
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    char dead[64];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fixture_up(&fx) == 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
    close(fd);
    snprintf(dead, sizeof(dead), "127.0.0.1:%d", ntohs(a.sin_port));
    fx.brokers[0] = dead;
    fx.brokers[1] = fx.url;
    fx.cfg.n_brokers = 2;
    fx.b.leases_to_give = 1;
    w = start_worker(&fx);
    CHECK(w != NULL);
    CHECK(wait_count(&fx.b.mu, &fx.b.results, 1, 10000));
    prpc_worker_free(w);
    CHECK(field_is(fx.b.result, "state", "done"));
    fixture_down(&fx);
}

TEST(stop_ends_a_long_poll_promptly)
{
    fixture_t fx;
    prpc_worker_t *w;
    int64_t t0;
    CHECK(fixture_up(&fx) == 0);
    fx.cfg.lease_wait_ms = 30000;
    fx.cfg.concurrency = 3;
    w = start_worker(&fx);
    CHECK(w != NULL);
    CHECK(wait_count(&fx.b.mu, &fx.b.lease_requests, 3, 5000));
    t0 = now_ms();
    prpc_worker_stop(w);
    CHECK(now_ms() - t0 < 2500);
    prpc_worker_stop(w); /* twice is fine */
    CHECK_EQ_INT(prpc_worker_report_progress(w, CALL_ID, 10, NULL), PRPC_ENOTFOUND);
    prpc_worker_free(w);
    CHECK_EQ_INT(fx.r.runs, 0);
    fixture_down(&fx);
}

TEST(config_errors_name_the_field)
{
    fixture_t fx;
    prpc_error_t err;
    const char *bad[1] = {"http://h:1/path"};
    prpc_worker_t *w;
    CHECK(fixture_up(&fx) == 0);
    fx.cfg.n_brokers = 0;
    CHECK(prpc_worker_new(&fx.cfg, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(strstr(err.message, "broker") != NULL);
    fx.cfg.n_brokers = 1;
    fx.cfg.brokers = bad;
    CHECK(prpc_worker_new(&fx.cfg, &err) == NULL);
    CHECK(strstr(err.message, "http://h:1/path") != NULL);
    fx.cfg.brokers = fx.brokers;
    fx.cfg.cancel = NULL;
    CHECK(prpc_worker_new(&fx.cfg, &err) == NULL);
    CHECK(strstr(err.message, "cancel") != NULL);
    fx.cfg.cancel = cancel_cb;
    fx.cfg.n_functions = 0;
    CHECK(prpc_worker_new(&fx.cfg, &err) == NULL);
    CHECK(strstr(err.message, "function") != NULL);
    fx.cfg.n_functions = 1;
    fx.cfg.concurrency = PRPC_WORKER_MAX_SLOTS + 1;
    CHECK(prpc_worker_new(&fx.cfg, &err) == NULL);
    CHECK(strstr(err.message, "concurrency") != NULL);
    fx.cfg.concurrency = 1;
    fx.cfg.data_dir = "/proc/no-such-dir/x";
    CHECK(prpc_worker_new(&fx.cfg, &err) == NULL);
    CHECK(strstr(err.message, "/proc/no-such-dir/x") != NULL);
    fx.cfg.data_dir = fx.data_dir;
    w = prpc_worker_new(&fx.cfg, &err);
    CHECK(w != NULL);
    CHECK_EQ_INT(prpc_worker_start(w, &err), 0);
    CHECK_EQ_INT(prpc_worker_start(w, &err), PRPC_ESTATE);
    CHECK(strstr(err.message, "test-worker") != NULL);
    prpc_worker_free(w);
    fixture_down(&fx);
}

TEST_MAIN(TEST_ENTRY(lease_run_upload_result), TEST_ENTRY(terminate_order_cancels_once),
          TEST_ENTRY(lost_lease_cancels_and_drops_result), TEST_ENTRY(run_failure_is_a_failed_call),
          TEST_ENTRY(missing_argument_blob_fails_the_call),
          TEST_ENTRY(lease_id_the_broker_never_issues_is_refused),
          TEST_ENTRY(fails_over_to_the_next_broker), TEST_ENTRY(stop_ends_a_long_poll_promptly),
          TEST_ENTRY(config_errors_name_the_field))
