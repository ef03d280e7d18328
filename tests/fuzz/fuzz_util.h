/*
 * fuzz_util.h - what the libFuzzer targets share: an invariant check that
 * stops the run with a readable message (libFuzzer then saves the input), and
 * temporary directories that are removed again.
 *
 * Harness code only: the engine itself never aborts.
 */
#ifndef PRPC_FUZZ_UTIL_H
#define PRPC_FUZZ_UTIL_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An invariant of the code under test: on failure print why and abort, so
 * libFuzzer reports a crash and writes the input as an artifact. */
#define FUZZ_CHECK(cond, ...)                                                        \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "FUZZ INVARIANT %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                            \
            fputc('\n', stderr);                                                     \
            abort();                                                                 \
        }                                                                            \
    } while (0)

static int fuzz_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* rm -rf path (depth first, not following links). */
static inline void fuzz_rmtree(const char *path)
{
    nftw(path, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A new empty directory under $TMPDIR (or /tmp): writes its path into out. */
static inline void fuzz_mkdtemp(const char *tag, char *out, size_t cap)
{
    const char *base = getenv("TMPDIR");
    snprintf(out, cap, "%s/prpc-%s-XXXXXX", base && base[0] ? base : "/tmp", tag);
    FUZZ_CHECK(mkdtemp(out) != NULL, "cannot create a temporary directory %s", out);
}

#endif
