/*
 * fault.h - the fault-injection hook used by the reliability tests: off
 * unless the environment variable P2PRPC_FAULTS names faults.
 *
 * Compiled in only by test builds (PRPC_FAULT_INJECTION: the Makefile's C test
 * flags, and setup.py with P2PRPC_TEST_BUILD=1). In a release build
 * prpc_fault is a constant 0 that the compiler removes with its call sites,
 * fault.c compiles to nothing, and the extension refuses to import while
 * P2PRPC_FAULTS is set (py_module.c), so no inherited variable is ignored
 * silently.
 *
 * P2PRPC_FAULTS is a comma-separated list of name=probability[:milliseconds],
 * e.g. "drop_reply=0.25,delay_request=0.1:200,store_write=0.05". Names in use:
 *   drop_reply       httpc: the broker acted, but its answer is thrown away and
 *                    the caller sees a transport error (a reply lost in flight)
 *   delay_request    httpc: sleep the given milliseconds before sending
 *   corrupt_chunk    httpc: one byte of an upload chunk's body is flipped after
 *                    its X-P2PRPC-Chunk-Sha256 was computed (damage on the
 *                    wire); drawn once per chunk sent
 *   corrupt_download httpc: one byte of a blob download is flipped before it
 *                    reaches the partial file; drawn once per GET
 *   store_write      store: a write fails with EIO before reaching the backend
 *   slow_disk        blob: sleep the given milliseconds before a chunk's fsync
 *                    (a slow disk; the broker must keep answering meanwhile)
 *   cut_fails        blob: cutting a refused chunk off a partial file fails
 *                    (EIO), so the partial must go whole
 *   hash_one_thread  hash: prpc_hash_fd_chunks finds no thread for the chunks'
 *                    digests and computes both digests on one (the fallback)
 * The variables are read once, on first use. With P2PRPC_FAULTS unset,
 * prpc_fault costs a load and a compare.
 *
 * P2PRPC_FAULTS_SEED=N (optional) makes the draws repeatable: every thread's
 * stream starts from N, so the same sequence of prpc_fault calls on a thread
 * fires the same faults in every run. Unset, streams are seeded from the clock.
 *
 * Thread safety: any thread; each thread draws from its own random stream.
 */
#ifndef PRPC_FAULT_H
#define PRPC_FAULT_H

#include "common.h"

#define PRPC_FAULTS_ENV "P2PRPC_FAULTS"
#define PRPC_FAULTS_SEED_ENV "P2PRPC_FAULTS_SEED"

#ifdef PRPC_FAULT_INJECTION

/* 1 when the named fault fires this time (drawn with its probability), else
 * 0. *delay_ms (may be NULL) gets the fault's milliseconds parameter. */
int prpc_fault(const char *name, int *delay_ms);

#ifdef PRPC_UNITTEST
/* Re-read P2PRPC_FAULTS and P2PRPC_FAULTS_SEED (tests change them between
 * cases); every thread's stream starts again from the seed, if one is set.
 * For tests/c only (-DPRPC_UNITTEST): the engine reads them once. */
void prpc_fault_reload(void);
#endif

#else /* a release build: no fault ever fires */

static inline int prpc_fault(const char *name, int *delay_ms)
{
    PRPC_UNUSED(name);
    PRPC_UNUSED(delay_ms);
    return 0;
}

static inline void prpc_fault_reload(void) {}

#endif

#endif
