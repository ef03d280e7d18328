/*
 * fault.c - fault injection for the reliability tests (fault.h). The names
 * and where each fires are listed in fault.h; the sites that draw are:
 *   drop_reply, delay_request, corrupt_chunk, corrupt_download   httpc.c
 *   store_write                                                   store.c
 */
#include "fault.h"

#ifdef PRPC_FAULT_INJECTION /* test builds only (fault.h) */

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FAULTS_MAX 16

typedef struct fault_rule {
    char name[32];
    double probability;
    int delay_ms;
} fault_rule_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static fault_rule_t rules[FAULTS_MAX];
static atomic_int nrules = -1;     /* -1: not read yet */
static atomic_uint generation;     /* bumped by each load: threads reseed */
static atomic_int seeded_by_env;   /* 1 when P2PRPC_FAULTS_SEED is set */
static atomic_uint env_seed;       /* its value */

static void load_locked(void)
{
    const char *env = getenv(PRPC_FAULTS_ENV), *seed = getenv(PRPC_FAULTS_SEED_ENV);
    char buf[512], *save = NULL, *item;
    int n = 0;
    atomic_store(&seeded_by_env, seed != NULL && seed[0] != '\0');
    atomic_store(&env_seed, seed != NULL ? (unsigned int)strtoul(seed, NULL, 10) : 0u);
    atomic_fetch_add(&generation, 1u);
    if (env != NULL && strlen(env) < sizeof(buf)) {
        memcpy(buf, env, strlen(env) + 1);
        for (item = strtok_r(buf, ",", &save); item != NULL && n < FAULTS_MAX;
             item = strtok_r(NULL, ",", &save)) {
            char *eq = strchr(item, '='), *colon;
            if (eq == NULL || eq == item || (size_t)(eq - item) >= sizeof(rules[n].name))
                continue;
            memset(&rules[n], 0, sizeof(rules[n]));
            memcpy(rules[n].name, item, (size_t)(eq - item));
            rules[n].probability = strtod(eq + 1, NULL);
            colon = strchr(eq + 1, ':');
            if (colon != NULL)
                rules[n].delay_ms = atoi(colon + 1);
            n++;
        }
    }
    atomic_store(&nrules, n);
}

#ifdef PRPC_UNITTEST
void prpc_fault_reload(void)
{
    pthread_mutex_lock(&lock);
    load_locked();
    pthread_mutex_unlock(&lock);
}
#endif

static double draw(void)
{
    static _Thread_local unsigned int seed;
    static _Thread_local unsigned int seeded_at; /* generation + 1; 0: never */
    unsigned int gen = atomic_load(&generation) + 1u;
    if (seeded_at != gen) {
        if (atomic_load(&seeded_by_env)) {
            seed = atomic_load(&env_seed);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            seed = (unsigned int)(ts.tv_nsec ^ (long)pthread_self() ^ ts.tv_sec);
        }
        seeded_at = gen;
    }
    return (double)rand_r(&seed) / ((double)RAND_MAX + 1.0);
}

int prpc_fault(const char *name, int *delay_ms)
{
    int n = atomic_load(&nrules);
    if (n < 0) {
        pthread_mutex_lock(&lock);
        if (atomic_load(&nrules) < 0)
            load_locked();
        pthread_mutex_unlock(&lock);
        n = atomic_load(&nrules);
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(rules[i].name, name) != 0)
            continue;
        if (delay_ms != NULL)
            *delay_ms = rules[i].delay_ms;
        return draw() < rules[i].probability;
    }
    return 0;
}

#endif /* PRPC_FAULT_INJECTION */
