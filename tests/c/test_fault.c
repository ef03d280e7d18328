/* test_fault.c - the fault-injection hook (fault.h) and its use in the store.
 * The httpc faults (corrupt_chunk, corrupt_download) are tested where they
 * act, in test_httpc.c. */
#include "fault.h"
#include "store.h"
#include "test.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TEST(off_without_the_variable)
{
    unsetenv(PRPC_FAULTS_ENV);
    prpc_fault_reload();
    for (int i = 0; i < 100; i++)
        CHECK_EQ_INT(prpc_fault("drop_reply", NULL), 0);
}

TEST(probability_and_parameter)
{
    int fired = 0, delay = -1;
    setenv(PRPC_FAULTS_ENV, "drop_reply=1,delay_request=0:250,half=0.5,bad,=1", 1);
    prpc_fault_reload();
    CHECK_EQ_INT(prpc_fault("drop_reply", NULL), 1);
    CHECK_EQ_INT(prpc_fault("delay_request", &delay), 0);
    CHECK_EQ_INT(delay, 250);
    CHECK_EQ_INT(prpc_fault("unknown", NULL), 0);
    for (int i = 0; i < 2000; i++)
        fired += prpc_fault("half", NULL);
    CHECK(fired > 800 && fired < 1200);
    unsetenv(PRPC_FAULTS_ENV);
    prpc_fault_reload();
}

/* 64 draws of corrupt_chunk as a bit string. */
static void draws(char out[65])
{
    for (int i = 0; i < 64; i++)
        out[i] = prpc_fault("corrupt_chunk", NULL) ? '1' : '0';
    out[64] = '\0';
}

static void *draws_thread(void *arg)
{
    draws(arg);
    return NULL;
}

TEST(a_seed_repeats_the_draws_on_every_thread)
{
    char a[65], b[65], c[65], t[65];
    pthread_t th;
    setenv(PRPC_FAULTS_ENV, "corrupt_chunk=0.5,corrupt_download=1", 1);
    setenv(PRPC_FAULTS_SEED_ENV, "42", 1);
    prpc_fault_reload();
    draws(a);
    CHECK(strchr(a, '0') != NULL && strchr(a, '1') != NULL);
    CHECK_EQ_INT(prpc_fault("corrupt_download", NULL), 1);
    prpc_fault_reload(); /* starts the stream again */
    draws(b);
    CHECK_EQ_STR(a, b);
    CHECK_EQ_INT(pthread_create(&th, NULL, draws_thread, t), 0);
    CHECK_EQ_INT(pthread_join(th, NULL), 0);
    CHECK_EQ_STR(a, t);
    setenv(PRPC_FAULTS_SEED_ENV, "43", 1);
    prpc_fault_reload();
    draws(c);
    CHECK(strcmp(a, c) != 0);
    unsetenv(PRPC_FAULTS_SEED_ENV);
    unsetenv(PRPC_FAULTS_ENV);
    prpc_fault_reload();
    CHECK_EQ_INT(prpc_fault("corrupt_chunk", NULL), 0);
}

TEST(store_write_fault_fails_before_the_backend)
{
    char dir[] = "/tmp/p2prpc-fault-XXXXXX", uri[128];
    prpc_store_t *s;
    prpc_call_t c, got;
    prpc_error_t err;
    int created = 1;
    CHECK(mkdtemp(dir) != NULL);
    snprintf(uri, sizeof(uri), "sqlite:%s/db", dir);
    s = prpc_store_open(uri, NULL, &err);
    CHECK(s != NULL);
    memset(&c, 0, sizeof(c));
    memset(&got, 0, sizeof(got));
    memset(c.id, 'a', 64);
    snprintf(c.function, sizeof(c.function), "p2prpc_f");
    memset(c.version, 'b', 64);
    c.args_json = "[]";
    setenv(PRPC_FAULTS_ENV, "store_write=1", 1);
    prpc_fault_reload();
    CHECK_EQ_INT(prpc_store_call_submit(s, &c, 1, &created, NULL, &err), PRPC_EIO);
    CHECK(strstr(err.message, "injected") != NULL);
    CHECK_EQ_INT(created, 0);
    /* Reads still work, and nothing was written. */
    CHECK_EQ_INT(prpc_store_call_get(s, c.id, &got, &err), PRPC_ENOTFOUND);
    unsetenv(PRPC_FAULTS_ENV);
    prpc_fault_reload();
    CHECK_EQ_INT(prpc_store_call_submit(s, &c, 1, &created, NULL, &err), 0);
    CHECK_EQ_INT(created, 1);
    prpc_store_close(s);
    snprintf(uri, sizeof(uri), "rm -rf %s", dir);
    CHECK_EQ_INT(system(uri), 0);
}

TEST_MAIN(TEST_ENTRY(off_without_the_variable), TEST_ENTRY(probability_and_parameter),
          TEST_ENTRY(a_seed_repeats_the_draws_on_every_thread),
          TEST_ENTRY(store_write_fault_fails_before_the_backend))
