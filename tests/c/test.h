/*
 * test.h - the tiny C unit-test harness. Each tests/c/test_<stem>.c is its
 * own program: it defines TEST(name) functions and ends with
 * TEST_MAIN(TEST_ENTRY(a), TEST_ENTRY(b), ...), registering each test once.
 * `./test_x [name...]` runs all tests or the named ones.
 *
 * A test that cannot run here says why and returns at once:
 *   SKIP("why")        something this machine lacks (root, a namespace, a
 *                      library...). CI has every such thing, so under CI=true a
 *                      SKIP is a failure that names why.
 *   SKIP_OPTIN("why")  an opt-in suite that was not asked for (e.g. the real
 *                      MongoDB conformance without P2PRPC_TEST_MONGO_URI): a
 *                      skip under CI=true too.
 * The runner prints `skip <name>: why` instead of `ok <name>`, counts it in its
 * summary line (`N tests, F failed, S skipped`), and, when PRPC_TEST_SKIP_LOG
 * names a file, appends `<program> <name>: why` to it (the Makefile's ctest
 * loop totals that file).
 */
#ifndef PRPC_TEST_H
#define PRPC_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct test_case {
    const char *name;
    void (*fn)(void);
};

static int test_failed_;
static int test_skipped_;
static char test_skip_why_[256];

/* 1 when CI=true: environment skips become failures. */
static inline int test_under_ci_(void)
{
    const char *ci = getenv("CI");
    return ci != NULL && strcmp(ci, "true") == 0;
}

#define SKIP_AS_(optin, why)                                                         \
    do {                                                                             \
        if (!(optin) && test_under_ci_()) {                                          \
            fprintf(stderr, "  FAIL %s:%d: skipped under CI=true (CI has every "     \
                            "environment): %s\n", __FILE__, __LINE__, (why));        \
            test_failed_ = 1;                                                        \
            return;                                                                  \
        }                                                                            \
        test_skipped_ = 1;                                                           \
        snprintf(test_skip_why_, sizeof(test_skip_why_), "%s", (why));               \
        return;                                                                      \
    } while (0)

#define SKIP(why) SKIP_AS_(0, why)
#define SKIP_OPTIN(why) SKIP_AS_(1, why)

#define TEST(name) static void test_##name(void)
#define TEST_ENTRY(name) { #name, test_##name }

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);        \
            test_failed_ = 1;                                                        \
            return;                                                                  \
        }                                                                            \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                           \
    do {                                                                             \
        long long a_ = (long long)(a), b_ = (long long)(b);                          \
        if (a_ != b_) {                                                              \
            fprintf(stderr, "  FAIL %s:%d: %s == %s (%lld != %lld)\n", __FILE__,     \
                    __LINE__, #a, #b, a_, b_);                                       \
            test_failed_ = 1;                                                        \
            return;                                                                  \
        }                                                                            \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                           \
    do {                                                                             \
        const char *a_ = (a), *b_ = (b);                                             \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                       \
            fprintf(stderr, "  FAIL %s:%d: %s == %s (\"%s\" != \"%s\")\n", __FILE__, \
                    __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");       \
            test_failed_ = 1;                                                        \
            return;                                                                  \
        }                                                                            \
    } while (0)

#define TEST_MAIN(...)                                                               \
    int main(int argc, char **argv)                                                  \
    {                                                                                \
        static const struct test_case cases[] = {__VA_ARGS__};                       \
        int failures = 0, ran = 0, skipped = 0;                                      \
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {              \
            int wanted = argc < 2;                                                   \
            for (int a = 1; a < argc; a++)                                           \
                if (strcmp(argv[a], cases[i].name) == 0)                             \
                    wanted = 1;                                                      \
            if (!wanted)                                                             \
                continue;                                                            \
            test_failed_ = test_skipped_ = 0;                                        \
            test_skip_why_[0] = '\0';                                                \
            cases[i].fn();                                                           \
            ran++;                                                                   \
            if (test_skipped_ && !test_failed_) {                                    \
                const char *log_ = getenv("PRPC_TEST_SKIP_LOG");                     \
                FILE *f_ = log_ != NULL && log_[0] != '\0' ? fopen(log_, "a") : NULL; \
                printf("skip %s: %s\n", cases[i].name, test_skip_why_);              \
                if (f_ != NULL) {                                                    \
                    fprintf(f_, "%s %s: %s\n", argv[0], cases[i].name, test_skip_why_); \
                    fclose(f_);                                                      \
                }                                                                    \
                skipped++;                                                           \
                continue;                                                            \
            }                                                                        \
            printf("%s %s\n", test_failed_ ? "not ok" : "ok", cases[i].name);        \
            failures += test_failed_;                                                \
        }                                                                            \
        printf("# %s: %d tests, %d failed, %d skipped\n", argv[0], ran, failures,    \
               skipped);                                                             \
        return failures ? 1 : 0;                                                     \
    }

#endif
