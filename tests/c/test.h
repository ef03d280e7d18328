/*
 * test.h - the tiny C unit-test harness. Each tests/c/test_<stem>.c is its
 * own program: it defines TEST(name) functions and ends with
 * TEST_MAIN(TEST_ENTRY(a), TEST_ENTRY(b), ...), registering each test once.
 * `./test_x [name...]` runs all tests or the named ones.
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
        int failures = 0, ran = 0;                                                   \
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {              \
            int wanted = argc < 2;                                                   \
            for (int a = 1; a < argc; a++)                                           \
                if (strcmp(argv[a], cases[i].name) == 0)                             \
                    wanted = 1;                                                      \
            if (!wanted)                                                             \
                continue;                                                            \
            test_failed_ = 0;                                                        \
            cases[i].fn();                                                           \
            ran++;                                                                   \
            printf("%s %s\n", test_failed_ ? "not ok" : "ok", cases[i].name);        \
            failures += test_failed_;                                                \
        }                                                                            \
        printf("# %s: %d tests, %d failed\n", argv[0], ran, failures);               \
        return failures ? 1 : 0;                                                     \
    }

#endif
