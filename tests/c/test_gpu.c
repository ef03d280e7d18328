/* test_gpu.c - the GPU probe: this machine, whatever it has (the expectation
 * is asked of the host itself, so the test holds on a GPU host and on one
 * without a driver alike), and fake NVML/CUDA libraries compiled by the test,
 * loaded through P2PRPC_NVML_PATH and P2PRPC_CUDA_PATH. The fake's behaviour
 * is picked by FAKE_GPU_MODE. */
#include "common.h"
#include "gpu.h"
#include "test.h"

#include <dlfcn.h>
#include <ftw.h>
#include <glob.h>
#include <stdlib.h>
#include <unistd.h>

static const char FAKE_SRC[] =
    "#include <stdlib.h>\n"
    "#include <string.h>\n"
    "typedef struct { unsigned long long total, free, used; } mem_t;\n"
    "static int mode(const char *m) { const char *e = getenv(\"FAKE_GPU_MODE\");\n"
    "  return e && strcmp(e, m) == 0; }\n"
    "static int inited;\n"
    "int nvmlInit_v2(void) { if (mode(\"nvml-nodriver\")) return 9; inited++; return 0; }\n"
    "int nvmlShutdown(void) { inited--; return 0; }\n"
    "int nvmlDeviceGetCount_v2(unsigned *n) { *n = 3; return 0; }\n"
    "int nvmlDeviceGetHandleByIndex_v2(unsigned i, void **d) {\n"
    "  *d = (void *)(unsigned long)(i + 1); return 0; }\n"
    "int nvmlDeviceGetMemoryInfo(void *d, mem_t *m) {\n"
    "  if ((unsigned long)d == 2) return 15; /* GPU lost */\n"
    "  m->total = 85899345920ULL * (unsigned long)d; m->free = 1234567890ULL;\n"
    "  m->used = m->total - m->free; return 0; }\n"
    "int nvmlDeviceGetName(void *d, char *s, unsigned n) {\n"
    "  strncpy(s, (unsigned long)d == 1 ? \"Fake H100\" : \"Fake A100\", n); return 0; }\n"
    "int nvmlDeviceGetUUID(void *d, char *s, unsigned n) {\n"
    "  strncpy(s, (unsigned long)d == 1 ? \"GPU-1111\" : \"GPU-3333\", n); return 0; }\n"
    "int cuInit(unsigned f) { (void)f; return mode(\"cuda-stub\") ? 34 : 0; }\n"
    "int cuDeviceGetCount(int *n) { *n = 1; return 0; }\n"
    "int cuDeviceGet(int *d, int i) { *d = i + 7; return 0; }\n"
    "int cuDeviceGetName(char *s, int n, int d) {\n"
    "  (void)d; strncpy(s, \"Fake L4\", n); return 0; }\n"
    "int cuDeviceTotalMem_v2(unsigned long *b, int d) { *b = 1000UL * d; return 0; }\n"
    "int cuDeviceGetUuid(unsigned char u[16], int d) { for (int i = 0; i < 16; i++) u[i] = i + d;\n"
    "  return 0; }\n";

static char dir[64];
static char lib[128];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    PRPC_UNUSED(sb);
    PRPC_UNUSED(flag);
    PRPC_UNUSED(f);
    return remove(p);
}

/* Compile the fake library once; returns 0 when lib holds its path. */
static int build_fake(void)
{
    char src[128], cmd[512];
    FILE *f;
    if (lib[0] != '\0')
        return 0;
    snprintf(dir, sizeof(dir), "/tmp/prpc-gpu-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(src, sizeof(src), "%s/fake.c", dir);
    snprintf(lib, sizeof(lib), "%s/libfake.so", dir);
    f = fopen(src, "w");
    if (f == NULL || fputs(FAKE_SRC, f) < 0 || fclose(f) != 0)
        return -1;
    snprintf(cmd, sizeof(cmd), "%s -shared -fPIC -O0 -o %s %s",
             getenv("CC") ? getenv("CC") : "cc", lib, src);
    return system(cmd) == 0 ? 0 : -1;
}

static void reset_env(void)
{
    unsetenv("P2PRPC_NVML_PATH");
    unsetenv("P2PRPC_CUDA_PATH");
    unsetenv("FAKE_GPU_MODE");
}

/* What this host's NVIDIA library says, asked directly (not through gpu.c):
 * the number of devices, or -1 when neither NVML nor libcuda loads. A library
 * that loads but cannot initialise (no kernel driver, the toolkit's stub) says
 * zero. *source gets "nvml", "cuda" or "none". */
static int host_library_count(const char **source)
{
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    *source = "none";
    if (lib != NULL) {
        int (*init)(void) = (int (*)(void))dlsym(lib, "nvmlInit_v2");
        int (*count)(unsigned *) = (int (*)(unsigned *))dlsym(lib, "nvmlDeviceGetCount_v2");
        int (*shutdown)(void) = (int (*)(void))dlsym(lib, "nvmlShutdown");
        unsigned n = 0;
        if (init != NULL && count != NULL && shutdown != NULL && init() == 0) {
            int rc = count(&n);
            shutdown();
            dlclose(lib);
            *source = "nvml";
            return rc == 0 ? (int)n : 0;
        }
        dlclose(lib); /* NVML without a driver: the probe falls back to libcuda */
    }
    lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib != NULL) {
        int (*init)(unsigned) = (int (*)(unsigned))dlsym(lib, "cuInit");
        int (*count)(int *) = (int (*)(int *))dlsym(lib, "cuDeviceGetCount");
        int n = 0;
        *source = "cuda";
        /* Kept loaded, as gpu.c keeps it: an initialised driver may run threads. */
        if (init == NULL || count == NULL || init(0) != 0 || count(&n) != 0)
            return 0;
        return n;
    }
    return -1;
}

/* GPUs listed by `nvidia-smi -L` (lines "GPU i: ..."; MIG lines are indented),
 * or -1 when the command is missing or fails. */
static int nvidia_smi_count(void)
{
    char line[512];
    int n = 0;
    FILE *p = popen("nvidia-smi -L 2>/dev/null", "r");
    if (p == NULL)
        return -1;
    while (fgets(line, sizeof(line), p) != NULL)
        n += strncmp(line, "GPU ", 4) == 0;
    return pclose(p) == 0 ? n : -1;
}

static int device_nodes(void)
{
    glob_t gl;
    int n = glob("/dev/nvidia[0-9]*", 0, NULL, &gl) == 0 ? (int)gl.gl_pathc : 0;
    globfree(&gl);
    return n;
}

TEST(probe_matches_this_host)
{
    static prpc_gpu_info_t g[PRPC_GPU_MAX], again[PRPC_GPU_MAX];
    prpc_error_t err;
    const char *source;
    size_t n = 99, m = 99;
    int lib_n, smi_n, nodes;
    reset_env();
    lib_n = host_library_count(&source);
    smi_n = nvidia_smi_count();
    nodes = device_nodes();
    CHECK_EQ_INT(prpc_gpu_probe(g, PRPC_GPU_MAX, &n, &err), 0);
    printf("# this host: %d /dev/nvidia[0-9]* node(s); library %s says %d; nvidia-smi -L %d; "
           "probe %zu\n", nodes, source, lib_n, smi_n, n);
    if (lib_n < 0) {
        CHECK_EQ_INT(n, 0); /* no NVIDIA library: zero, whatever /dev holds */
        return;
    }
    CHECK_EQ_INT(n, lib_n);
    if (smi_n >= 0)
        CHECK_EQ_INT(n, smi_n);
    /* Consistency: every device described, the same devices on a second probe. */
    CHECK_EQ_INT(prpc_gpu_probe(again, PRPC_GPU_MAX, &m, &err), 0);
    CHECK_EQ_INT(m, n);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_STR(g[i].source, source);
        CHECK(g[i].name[0] != '\0');
        CHECK(g[i].total_bytes > 0);
        CHECK(!g[i].free_known || g[i].free_bytes <= g[i].total_bytes);
        CHECK_EQ_INT(again[i].index, g[i].index);
        CHECK_EQ_STR(again[i].uuid, g[i].uuid);
    }
}

TEST(libraries_that_do_not_load_are_zero_gpus)
{
    prpc_gpu_info_t g[4];
    prpc_error_t err;
    size_t n = 99;
    reset_env();
    setenv("P2PRPC_NVML_PATH", "/nonexistent/libnvidia-ml.so.1", 1);
    setenv("P2PRPC_CUDA_PATH", "/nonexistent/libcuda.so.1", 1);
    CHECK_EQ_INT(prpc_gpu_probe(g, 4, &n, &err), 0);
    CHECK_EQ_INT(n, 0);
    reset_env();
}

TEST(bad_arguments_are_einval)
{
    prpc_error_t err;
    size_t n;
    CHECK_EQ_INT(prpc_gpu_probe(NULL, 2, &n, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "out") != NULL);
    CHECK_EQ_INT(prpc_gpu_probe(NULL, 0, NULL, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "count") != NULL);
    CHECK_EQ_INT(prpc_gpu_probe(NULL, 0, &n, &err), 0);
    CHECK_EQ_INT(n, 0);
}

TEST(nvml_devices_are_read)
{
    prpc_gpu_info_t g[4];
    prpc_error_t err;
    size_t n = 0;
    CHECK(build_fake() == 0);
    reset_env();
    setenv("P2PRPC_NVML_PATH", lib, 1);
    CHECK_EQ_INT(prpc_gpu_probe(g, 4, &n, &err), 0);
    reset_env();
    /* Device 1 fails its memory query and is skipped. */
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(g[0].index, 0);
    CHECK_EQ_STR(g[0].name, "Fake H100");
    CHECK_EQ_STR(g[0].uuid, "GPU-1111");
    CHECK_EQ_INT(g[0].total_bytes, 85899345920ULL);
    CHECK_EQ_INT(g[0].free_bytes, 1234567890ULL);
    CHECK_EQ_INT(g[0].free_known, 1);
    CHECK_EQ_STR(g[0].source, "nvml");
    CHECK_EQ_INT(g[1].index, 2);
    CHECK_EQ_STR(g[1].name, "Fake A100");
    CHECK_EQ_STR(g[1].uuid, "GPU-3333");
    CHECK_EQ_INT(g[1].total_bytes, 3 * 85899345920ULL);
}

TEST(max_bounds_the_output)
{
    prpc_gpu_info_t g[2];
    prpc_error_t err;
    size_t n = 0;
    CHECK(build_fake() == 0);
    reset_env();
    setenv("P2PRPC_NVML_PATH", lib, 1);
    memset(g, 0x5a, sizeof(g));
    CHECK_EQ_INT(prpc_gpu_probe(g, 1, &n, &err), 0);
    reset_env();
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_STR(g[0].name, "Fake H100");
    CHECK_EQ_INT((unsigned char)g[1].name[0], 0x5a);
}

TEST(cuda_fallback_when_nvml_has_no_driver)
{
    prpc_gpu_info_t g[4];
    prpc_error_t err;
    size_t n = 0;
    CHECK(build_fake() == 0);
    reset_env();
    setenv("P2PRPC_NVML_PATH", lib, 1);
    setenv("P2PRPC_CUDA_PATH", lib, 1);
    setenv("FAKE_GPU_MODE", "nvml-nodriver", 1);
    CHECK_EQ_INT(prpc_gpu_probe(g, 4, &n, &err), 0);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_STR(g[0].name, "Fake L4");
    CHECK_EQ_STR(g[0].source, "cuda");
    CHECK_EQ_INT(g[0].total_bytes, 7000);
    CHECK_EQ_INT(g[0].free_known, 0);
    CHECK_EQ_STR(g[0].uuid, "GPU-0708090a-0b0c-0d0e-0f10-111213141516");
    /* NVML missing altogether: the same fallback. */
    setenv("P2PRPC_NVML_PATH", "/nonexistent/libnvidia-ml.so.1", 1);
    CHECK_EQ_INT(prpc_gpu_probe(g, 4, &n, &err), 0);
    CHECK_EQ_INT(n, 1);
    reset_env();
}

TEST(cuda_stub_library_is_zero_gpus)
{
    prpc_gpu_info_t g[4];
    prpc_error_t err;
    size_t n = 99;
    CHECK(build_fake() == 0);
    reset_env();
    setenv("P2PRPC_NVML_PATH", "/nonexistent/libnvidia-ml.so.1", 1);
    setenv("P2PRPC_CUDA_PATH", lib, 1);
    setenv("FAKE_GPU_MODE", "cuda-stub", 1);
    CHECK_EQ_INT(prpc_gpu_probe(g, 4, &n, &err), 0);
    reset_env();
    CHECK_EQ_INT(n, 0);
}

TEST(cleanup)
{
    if (dir[0] != '\0')
        CHECK_EQ_INT(nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS), 0);
}

TEST_MAIN(TEST_ENTRY(probe_matches_this_host),
          TEST_ENTRY(libraries_that_do_not_load_are_zero_gpus), TEST_ENTRY(bad_arguments_are_einval),
          TEST_ENTRY(nvml_devices_are_read), TEST_ENTRY(max_bounds_the_output),
          TEST_ENTRY(cuda_fallback_when_nvml_has_no_driver),
          TEST_ENTRY(cuda_stub_library_is_zero_gpus), TEST_ENTRY(cleanup))
