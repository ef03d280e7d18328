/*
 * gpu.c - the GPU probe of gpu.h: NVML first, then the CUDA driver, both
 * through dlopen so the engine never has a link-time dependency on CUDA (an
 * import must work on machines without a driver). The few prototypes used
 * are declared here; no NVIDIA header is needed to build.
 */
#include "gpu.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NVML_SONAME "libnvidia-ml.so.1"
#define CUDA_SONAME "libcuda.so.1"

/* NVML ABI (nvml.h): every call returns nvmlReturn_t, 0 = NVML_SUCCESS. */
typedef struct nvml_memory {
    unsigned long long total, free, used;
} nvml_memory_t;
typedef int (*nvml_init_fn)(void);
typedef int (*nvml_count_fn)(unsigned int *);
typedef int (*nvml_handle_fn)(unsigned int, void **);
typedef int (*nvml_mem_fn)(void *, nvml_memory_t *);
typedef int (*nvml_str_fn)(void *, char *, unsigned int);

/* CUDA driver ABI (cuda.h): CUresult, 0 = CUDA_SUCCESS; CUdevice is an int. */
typedef int (*cu_init_fn)(unsigned int);
typedef int (*cu_count_fn)(int *);
typedef int (*cu_get_fn)(int *, int);
typedef int (*cu_name_fn)(char *, int, int);
typedef int (*cu_mem_fn)(size_t *, int);
typedef int (*cu_uuid_fn)(unsigned char[16], int);

static void *open_lib(const char *env, const char *soname)
{
    const char *path = getenv(env);
    return dlopen(path != NULL && path[0] != '\0' ? path : soname, RTLD_NOW | RTLD_LOCAL);
}

/* Returns the number of devices written, or -1 when NVML is unusable here. */
static int probe_nvml(prpc_gpu_info_t *out, size_t max)
{
    void *lib = open_lib("P2PRPC_NVML_PATH", NVML_SONAME);
    nvml_init_fn init;
    nvml_count_fn count_fn;
    nvml_handle_fn handle_fn;
    nvml_mem_fn mem_fn;
    nvml_str_fn name_fn, uuid_fn;
    int (*shutdown_fn)(void);
    unsigned int n = 0;
    int found = -1;

    if (lib == NULL)
        return -1;
    init = (nvml_init_fn)dlsym(lib, "nvmlInit_v2");
    count_fn = (nvml_count_fn)dlsym(lib, "nvmlDeviceGetCount_v2");
    handle_fn = (nvml_handle_fn)dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    mem_fn = (nvml_mem_fn)dlsym(lib, "nvmlDeviceGetMemoryInfo");
    name_fn = (nvml_str_fn)dlsym(lib, "nvmlDeviceGetName");
    uuid_fn = (nvml_str_fn)dlsym(lib, "nvmlDeviceGetUUID");
    shutdown_fn = (int (*)(void))dlsym(lib, "nvmlShutdown");
    if (init == NULL || count_fn == NULL || handle_fn == NULL || mem_fn == NULL ||
        shutdown_fn == NULL)
        goto out;
    /* Fails without a loaded kernel driver: no GPU usable. */
    if (init() != 0)
        goto out;
    found = 0;
    if (count_fn(&n) == 0) {
        for (unsigned int i = 0; i < n && (size_t)found < max; i++) {
            prpc_gpu_info_t *g = &out[found];
            nvml_memory_t mem;
            void *dev = NULL;
            if (handle_fn(i, &dev) != 0 || mem_fn(dev, &mem) != 0)
                continue; /* e.g. a GPU that fell off the bus */
            memset(g, 0, sizeof(*g));
            g->index = (int)i;
            if (name_fn == NULL || name_fn(dev, g->name, sizeof(g->name)) != 0)
                g->name[0] = '\0';
            if (uuid_fn == NULL || uuid_fn(dev, g->uuid, sizeof(g->uuid)) != 0)
                g->uuid[0] = '\0';
            g->name[sizeof(g->name) - 1] = '\0';
            g->uuid[sizeof(g->uuid) - 1] = '\0';
            g->total_bytes = mem.total;
            g->free_bytes = mem.free;
            g->free_known = 1;
            g->source = "nvml";
            found++;
        }
    }
    shutdown_fn();
out:
    dlclose(lib);
    return found;
}

/* The CUDA driver cannot be unloaded safely once initialised (it may have
 * started threads), so its library handle is deliberately kept. */
static int probe_cuda(prpc_gpu_info_t *out, size_t max)
{
    void *lib = open_lib("P2PRPC_CUDA_PATH", CUDA_SONAME);
    cu_init_fn init;
    cu_count_fn count_fn;
    cu_get_fn get_fn;
    cu_name_fn name_fn;
    cu_mem_fn mem_fn;
    cu_uuid_fn uuid_fn;
    int n = 0, found = 0;

    if (lib == NULL)
        return 0;
    init = (cu_init_fn)dlsym(lib, "cuInit");
    count_fn = (cu_count_fn)dlsym(lib, "cuDeviceGetCount");
    get_fn = (cu_get_fn)dlsym(lib, "cuDeviceGet");
    name_fn = (cu_name_fn)dlsym(lib, "cuDeviceGetName");
    mem_fn = (cu_mem_fn)dlsym(lib, "cuDeviceTotalMem_v2");
    uuid_fn = (cu_uuid_fn)dlsym(lib, "cuDeviceGetUuid");
    if (init == NULL || count_fn == NULL || get_fn == NULL || mem_fn == NULL) {
        dlclose(lib);
        return 0;
    }
    /* 34 (CUDA_ERROR_STUB_LIBRARY) and 35 (no driver) land here too. */
    if (init(0) != 0 || count_fn(&n) != 0)
        return 0;
    for (int i = 0; i < n && (size_t)found < max; i++) {
        prpc_gpu_info_t *g = &out[found];
        unsigned char u[16];
        size_t total = 0;
        int dev = 0;
        if (get_fn(&dev, i) != 0 || mem_fn(&total, dev) != 0)
            continue;
        memset(g, 0, sizeof(*g));
        g->index = i;
        if (name_fn == NULL || name_fn(g->name, (int)sizeof(g->name), dev) != 0)
            g->name[0] = '\0';
        g->name[sizeof(g->name) - 1] = '\0';
        if (uuid_fn != NULL && uuid_fn(u, dev) == 0)
            snprintf(g->uuid, sizeof(g->uuid),
                     "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                     u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11],
                     u[12], u[13], u[14], u[15]);
        g->total_bytes = total;
        g->free_bytes = total;
        g->free_known = 0;
        g->source = "cuda";
        found++;
    }
    return found;
}

int prpc_gpu_probe(prpc_gpu_info_t *out, size_t max, size_t *count, prpc_error_t *err)
{
    int n;
    if (count == NULL || (out == NULL && max > 0))
        return prpc_error_set(err, PRPC_EINVAL, "gpu probe: %s is NULL",
                              count == NULL ? "count" : "out");
    *count = 0;
    if (max == 0)
        return 0;
    n = probe_nvml(out, max);
    if (n < 0)
        n = probe_cuda(out, max);
    *count = (size_t)n;
    return 0;
}
