/*
 * gpu.h - what GPUs this machine has, found at run time without linking CUDA.
 *
 * The probe dlopen()s NVML (libnvidia-ml.so.1, shipped with the driver; it
 * reports total and free memory without creating a CUDA context), else the
 * CUDA driver library (libcuda.so.1; total memory only). No library, no
 * driver, or the toolkit's stub library all mean zero GPUs: never an error,
 * because most machines in a network have no GPU.
 *
 * Environment, for tests and unusual installs: P2PRPC_NVML_PATH and
 * P2PRPC_CUDA_PATH, when set, name the library file to load instead of the
 * sonames above.
 *
 * Thread safety: prpc_gpu_probe may be called from any thread; NVML's and
 * the driver's init are reference counted and the libraries are loaded and
 * released per probe.
 */
#ifndef PRPC_GPU_H
#define PRPC_GPU_H

#include "common.h"

#define PRPC_GPU_NAME_MAX 96 /* device name incl. NUL (NVML asks for 96) */
#define PRPC_GPU_UUID_MAX 96 /* "GPU-xxxxxxxx-..." incl. NUL (NVML asks for 80) */
#define PRPC_GPU_MAX 64      /* more devices than any one machine carries */

typedef struct prpc_gpu_info {
    int index;                     /* the library's device index */
    char name[PRPC_GPU_NAME_MAX];  /* e.g. "NVIDIA H100 80GB HBM3" */
    char uuid[PRPC_GPU_UUID_MAX];  /* stable id ("" when the library gives none) */
    uint64_t total_bytes;          /* device memory */
    uint64_t free_bytes;           /* free now; equals total_bytes when !free_known */
    int free_known;                /* 1 when measured (NVML), 0 from libcuda */
    const char *source;            /* "nvml" or "cuda", static */
} prpc_gpu_info_t;

/* Fill out[0..*count) with up to max devices (out may be NULL when max is 0).
 * Returns 0 with *count = 0 when there is no GPU, no driver or no library.
 * Errors: PRPC_EINVAL (count NULL, or out NULL with max > 0) only; a device
 * the library cannot describe is skipped. Blocks while the driver
 * initialises (can take a second on a cold machine): call without the GIL. */
int prpc_gpu_probe(prpc_gpu_info_t *out, size_t max, size_t *count, prpc_error_t *err);

#endif
