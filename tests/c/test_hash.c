/* test_hash.c - SHA-256 context, hex helpers, whole-file hashing (csrc/hash.c). */
#include "hash.h"
#include "fault.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

/* A file of FILE5M_SIZE bytes, byte i = (i*31+7) & 0xff: several chunks plus
 * a tail. Its digest was computed independently with Python's hashlib. */
#define FILE5M_SIZE ((size_t)5 * 1024 * 1024 + 7)
#define FILE5M_SHA "84dfa80f4c2408b1cfbad6d26e2c0dc89af7c5284cb52c37484d5a57e9e41846"

static void hex_of(const void *data, size_t len, char out[65])
{
    uint8_t d[32];
    prpc_error_t err;
    if (prpc_sha256(data, len, d, &err) < 0) {
        strcpy(out, "error");
        return;
    }
    prpc_hex_encode(d, 32, out);
}

/* Write len bytes of the FILE5M pattern to a fresh temp file; returns its fd
 * (open read-write) and the path in path_out, or -1. */
static int make_file(size_t len, char path_out[64])
{
    const char *dir = getenv("TMPDIR");
    uint8_t *buf = malloc(len ? len : 1);
    int fd;
    snprintf(path_out, 64, "%s/prpc-test-hash-XXXXXX", dir && strlen(dir) < 30 ? dir : "/tmp");
    fd = mkstemp(path_out);
    if (fd < 0 || buf == NULL) {
        free(buf);
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)((i * 31 + 7) & 0xff);
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n <= 0) {
            close(fd);
            free(buf);
            return -1;
        }
        off += (size_t)n;
    }
    free(buf);
    return fd;
}

TEST(known_vectors)
{
    char hex[65];
    char *million = malloc(1000000);
    CHECK(million != NULL);
    hex_of("", 0, hex);
    CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hex_of("abc", 3, hex);
    CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    hex_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, hex);
    CHECK_EQ_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    memset(million, 'a', 1000000);
    hex_of(million, 1000000, hex);
    free(million);
    CHECK_EQ_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(streaming_equals_one_shot)
{
    prpc_sha256_t h = {NULL};
    prpc_error_t err;
    uint8_t d[32];
    char hex[65];
    const char *msg = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    CHECK_EQ_INT(prpc_sha256_init(&h, &err), 0);
    /* uneven pieces, including an empty one with a NULL pointer */
    CHECK_EQ_INT(prpc_sha256_update(&h, msg, 1, &err), 0);
    CHECK_EQ_INT(prpc_sha256_update(&h, NULL, 0, &err), 0);
    CHECK_EQ_INT(prpc_sha256_update(&h, msg + 1, 30, &err), 0);
    CHECK_EQ_INT(prpc_sha256_update(&h, msg + 31, 25, &err), 0);
    CHECK_EQ_INT(prpc_sha256_final(&h, d, &err), 0);
    prpc_sha256_cleanup(&h);
    prpc_sha256_cleanup(&h); /* twice is fine */
    prpc_hex_encode(d, 32, hex);
    CHECK_EQ_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    CHECK_EQ_INT(prpc_sha256_update(&h, "x", 1, &err), PRPC_ESTATE);
    CHECK(strstr(err.message, "released") != NULL);
    CHECK_EQ_INT(prpc_sha256_final(&h, d, &err), PRPC_ESTATE);
}

TEST(hex_round_trip_and_errors)
{
    const uint8_t raw[4] = {0x00, 0xab, 0x7f, 0xff};
    uint8_t back[4];
    char hex[9];
    prpc_error_t err;
    prpc_hex_encode(raw, 4, hex);
    CHECK_EQ_STR(hex, "00ab7fff");
    CHECK_EQ_INT(prpc_hex_decode(hex, 8, back, 4, &err), 0);
    CHECK(memcmp(raw, back, 4) == 0);
    CHECK_EQ_INT(prpc_hex_decode("00AB7FfF", 8, back, 4, &err), 0);
    CHECK(memcmp(raw, back, 4) == 0);

    CHECK_EQ_INT(prpc_hex_decode("00ab7f", 6, back, 4, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "expected 8 hex digits, got 6") != NULL);
    CHECK_EQ_INT(prpc_hex_decode("00ab7fgf", 8, back, 4, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "character 6 (0x67)") != NULL);
    CHECK_EQ_INT(prpc_hex_decode("0 ab7fff", 8, back, 4, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "character 1 (0x20)") != NULL);
}

TEST(file_by_path_and_fd_multi_chunk)
{
    char path[64], hex[65];
    uint8_t d[32];
    uint64_t size = 0;
    prpc_error_t err;
    int fd = make_file(FILE5M_SIZE, path);
    CHECK(fd >= 0);

    CHECK_EQ_INT(prpc_hash_path(path, d, &size, &err), 0);
    prpc_hex_encode(d, 32, hex);
    CHECK_EQ_STR(hex, FILE5M_SHA);
    CHECK_EQ_INT(size, FILE5M_SIZE);

    size = 0;
    CHECK_EQ_INT(prpc_hash_fd(fd, d, &size, &err), 0);
    prpc_hex_encode(d, 32, hex);
    close(fd);
    unlink(path);
    CHECK_EQ_STR(hex, FILE5M_SHA);
    CHECK_EQ_INT(size, FILE5M_SIZE);
}

TEST(file_sizes_around_the_chunk)
{
    /* 0, one short of a chunk, exactly one, one past: compare with memory. */
    const size_t sizes[] = {0, PRPC_HASH_CHUNK - 1, PRPC_HASH_CHUNK, PRPC_HASH_CHUNK + 1};
    for (size_t k = 0; k < PRPC_ARRAY_LEN(sizes); k++) {
        char path[64], want[65], got[65];
        uint8_t d[32];
        uint64_t size = 99;
        prpc_error_t err;
        uint8_t *buf = malloc(sizes[k] + 1);
        int fd = make_file(sizes[k], path);
        CHECK(fd >= 0 && buf != NULL);
        for (size_t i = 0; i < sizes[k]; i++)
            buf[i] = (uint8_t)((i * 31 + 7) & 0xff);
        hex_of(buf, sizes[k], want);
        free(buf);
        CHECK_EQ_INT(prpc_hash_fd(fd, d, &size, &err), 0);
        close(fd);
        unlink(path);
        prpc_hex_encode(d, 32, got);
        CHECK_EQ_STR(got, want);
        CHECK_EQ_INT(size, sizes[k]);
    }
}

TEST(fd_position_untouched)
{
    char path[64], hex[65];
    uint8_t d[32];
    prpc_error_t err;
    int fd = make_file(FILE5M_SIZE, path);
    CHECK(fd >= 0);
    unlink(path);
    CHECK_EQ_INT(lseek(fd, 100, SEEK_SET), 100);
    /* size_out may be NULL; the whole content is hashed, not the rest after 100 */
    CHECK_EQ_INT(prpc_hash_fd(fd, d, NULL, &err), 0);
    prpc_hex_encode(d, 32, hex);
    CHECK_EQ_INT(lseek(fd, 0, SEEK_CUR), 100);
    CHECK_EQ_STR(hex, FILE5M_SHA);
    /* at end of file too */
    CHECK_EQ_INT(lseek(fd, 0, SEEK_END), FILE5M_SIZE);
    CHECK_EQ_INT(prpc_hash_fd(fd, d, NULL, &err), 0);
    prpc_hex_encode(d, 32, hex);
    CHECK_EQ_INT(lseek(fd, 0, SEEK_CUR), FILE5M_SIZE);
    close(fd);
    CHECK_EQ_STR(hex, FILE5M_SHA);
}

TEST(missing_file_names_the_path)
{
    uint8_t d[32];
    prpc_error_t err;
    CHECK_EQ_INT(prpc_hash_path("/nonexistent-prpc/dir/input.bin", d, NULL, &err), PRPC_ENOTFOUND);
    CHECK_EQ_INT(err.code, PRPC_ENOTFOUND);
    CHECK(strstr(err.message, "'/nonexistent-prpc/dir/input.bin'") != NULL);
    CHECK(strstr(err.message, "No such file or directory") != NULL);
    CHECK_EQ_INT(prpc_hash_path("", d, NULL, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "empty path") != NULL);
    CHECK_EQ_INT(prpc_hash_path(NULL, d, NULL, NULL), PRPC_EINVAL);
}

TEST(directory_is_refused)
{
    uint8_t d[32];
    prpc_error_t err;
    int fd;
    CHECK_EQ_INT(prpc_hash_path("/", d, NULL, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "'/'") != NULL);
    CHECK(strstr(err.message, "is a directory") != NULL);
    fd = open("/", O_RDONLY | O_DIRECTORY);
    CHECK(fd >= 0);
    CHECK_EQ_INT(prpc_hash_fd(fd, d, NULL, &err), PRPC_EIO);
    close(fd);
    CHECK(strstr(err.message, "Is a directory") != NULL);
}

TEST(bad_fds)
{
    uint8_t d[32];
    prpc_error_t err;
    char want[32];
    int p[2], fd;

    CHECK_EQ_INT(prpc_hash_fd(-1, d, NULL, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "fd -1") != NULL);

    fd = open("/dev/null", O_RDONLY);
    CHECK(fd >= 0);
    close(fd); /* now a closed descriptor number */
    snprintf(want, sizeof(want), "fd %d ", fd);
    CHECK_EQ_INT(prpc_hash_fd(fd, d, NULL, &err), PRPC_EIO);
    CHECK(strstr(err.message, want) != NULL);
    CHECK(strstr(err.message, "Bad file descriptor") != NULL);

    CHECK_EQ_INT(pipe(p), 0);
    snprintf(want, sizeof(want), "fd %d ", p[0]);
    CHECK_EQ_INT(prpc_hash_fd(p[0], d, NULL, &err), PRPC_EIO);
    close(p[0]);
    close(p[1]);
    CHECK(strstr(err.message, want) != NULL);
    CHECK(strstr(err.message, "Illegal seek") != NULL);
}

TEST(write_only_fd_is_an_error)
{
    char path[64];
    uint8_t d[32];
    prpc_error_t err;
    int fd = make_file(10, path), wfd;
    CHECK(fd >= 0);
    close(fd);
    wfd = open(path, O_WRONLY);
    unlink(path);
    CHECK(wfd >= 0);
    CHECK_EQ_INT(prpc_hash_fd(wfd, d, NULL, &err), PRPC_EIO);
    close(wfd);
    CHECK(strstr(err.message, "Bad file descriptor") != NULL);
}

/* Two digests fed the same bytes in one pass equal two digests fed them
 * apart: from fresh, from mid-block offsets (equal and unequal, where the
 * pass falls back), over lengths around the block size, and across 2^32 bits
 * of count carried into the high word. */
TEST(update2_equals_two_updates)
{
    static const size_t lens[] = {0, 1, 63, 64, 65, 127, 128, 1000, 4096, 65536 + 17, 1 << 20};
    static const size_t pre[][2] = {{0, 0}, {5, 5}, {0, 7}, {63, 63}, {64, 0}, {100, 36}};
    size_t max = 1 << 20;
    uint8_t *buf = malloc(max + 128), want_a[32], want_b[32], got_a[32], got_b[32];
    prpc_sha256_t a = {NULL}, b = {NULL}, ra = {NULL}, rb = {NULL};
    prpc_error_t err;
    CHECK(buf != NULL);
    for (size_t i = 0; i < max + 128; i++)
        buf[i] = (uint8_t)((i * 131 + 11) ^ (i >> 9));
    for (size_t pi = 0; pi < PRPC_ARRAY_LEN(pre); pi++)
        for (size_t li = 0; li < PRPC_ARRAY_LEN(lens); li++) {
            CHECK_EQ_INT(prpc_sha256_init(&a, &err), 0);
            CHECK_EQ_INT(prpc_sha256_init(&b, &err), 0);
            CHECK_EQ_INT(prpc_sha256_init(&ra, &err), 0);
            CHECK_EQ_INT(prpc_sha256_init(&rb, &err), 0);
            /* different histories, so the two states differ */
            prpc_sha256_update(&a, buf + 7, pre[pi][0], &err);
            prpc_sha256_update(&ra, buf + 7, pre[pi][0], &err);
            prpc_sha256_update(&b, buf + 3, pre[pi][1], &err);
            prpc_sha256_update(&rb, buf + 3, pre[pi][1], &err);
            CHECK_EQ_INT(prpc_sha256_update2(&a, &b, buf + 1, lens[li], &err), 0);
            prpc_sha256_update(&ra, buf + 1, lens[li], &err);
            prpc_sha256_update(&rb, buf + 1, lens[li], &err);
            /* and on after it, to check the counts it left */
            CHECK_EQ_INT(prpc_sha256_update2(&a, &b, buf, 100, &err), 0);
            prpc_sha256_update(&ra, buf, 100, &err);
            prpc_sha256_update(&rb, buf, 100, &err);
            prpc_sha256_final(&a, got_a, &err);
            prpc_sha256_final(&b, got_b, &err);
            prpc_sha256_final(&ra, want_a, &err);
            prpc_sha256_final(&rb, want_b, &err);
            prpc_sha256_cleanup(&a);
            prpc_sha256_cleanup(&b);
            prpc_sha256_cleanup(&ra);
            prpc_sha256_cleanup(&rb);
            CHECK(memcmp(got_a, want_a, 32) == 0);
            CHECK(memcmp(got_b, want_b, 32) == 0);
        }
    /* the low word of the bit count wraps after 512 MiB */
    CHECK_EQ_INT(prpc_sha256_init(&a, &err), 0);
    CHECK_EQ_INT(prpc_sha256_init(&b, &err), 0);
    CHECK_EQ_INT(prpc_sha256_init(&ra, &err), 0);
    for (int i = 0; i < 520; i++) {
        CHECK_EQ_INT(prpc_sha256_update2(&a, &b, buf, max, &err), 0);
        prpc_sha256_update(&ra, buf, max, &err);
    }
    prpc_sha256_final(&a, got_a, &err);
    prpc_sha256_final(&b, got_b, &err);
    prpc_sha256_final(&ra, want_a, &err);
    prpc_sha256_cleanup(&a);
    prpc_sha256_cleanup(&b);
    prpc_sha256_cleanup(&ra);
    CHECK(memcmp(got_a, want_a, 32) == 0);
    CHECK(memcmp(got_b, want_a, 32) == 0);
    CHECK_EQ_INT(prpc_sha256_update2(&a, &b, buf, 1, &err), PRPC_ESTATE);
    fprintf(stderr, "  (interleaved SHA-extension pass %s here)\n",
            prpc_sha256_pair_accelerated() ? "used" : "not available");
    free(buf);
}

/* Hash a len-byte pattern file with pieces of `chunk` bytes and check the
 * whole digest and every piece's (want_pieces of them). */
static void check_pieces(size_t chunk, size_t len, size_t want_pieces)
{
    char path[64];
    uint8_t whole[32], want[32], piece[32];
    uint64_t size = 7;
    prpc_chunk_digests_t cd = {chunk, 0, NULL};
    prpc_error_t err;
    uint8_t *buf = malloc(len ? len : 1);
    int fd = make_file(len, path);
    CHECK(fd >= 0 && buf != NULL);
    CHECK(pread(fd, buf, len, 0) == (ssize_t)len);
    CHECK_EQ_INT(prpc_hash_fd_chunks(fd, whole, &size, &cd, &err), 0);
    CHECK_EQ_INT(size, len);
    CHECK_EQ_INT(cd.chunk, chunk); /* the caller's, as it was */
    CHECK_EQ_INT(prpc_sha256(buf, len, want, &err), 0);
    CHECK(memcmp(whole, want, 32) == 0);
    CHECK_EQ_INT(cd.n, want_pieces);
    for (size_t i = 0; i < cd.n; i++) {
        size_t at = i * chunk, n = len - at < chunk ? len - at : chunk;
        CHECK_EQ_INT(prpc_sha256(buf + at, n, piece, &err), 0);
        CHECK(memcmp(cd.d[i], piece, 32) == 0);
    }
    prpc_chunk_digests_cleanup(&cd);
    prpc_chunk_digests_cleanup(&cd); /* twice is fine */
    cd.chunk = 100; /* splits 64-byte blocks: none kept, the whole still */
    CHECK_EQ_INT(prpc_hash_fd_chunks(fd, whole, NULL, &cd, &err), 0);
    CHECK_EQ_INT(cd.n, 0);
    CHECK(memcmp(whole, want, 32) == 0);
    close(fd);
    unlink(path);
    free(buf);
}

/* The pieces' digests come with the whole file's: each equals the digest of
 * that piece, for sizes around the piece, both on a thread beside the whole
 * file's pass and (no thread to be had) interleaved with it on one; more
 * than PRPC_CHUNK_DIGESTS_MAX pieces are not kept; a bad fd is an error. */
TEST(file_pieces_are_digested_with_the_whole)
{
    static const size_t chunks[] = {64 * 1024, 4 * 1024 * 1024};
    static const size_t extra[] = {0, 1, 77};
    for (int one_thread = 0; one_thread < 2; one_thread++) {
        if (one_thread)
            setenv("P2PRPC_FAULTS", "hash_one_thread=1", 1);
        prpc_fault_reload();
        for (size_t ci = 0; ci < PRPC_ARRAY_LEN(chunks); ci++)
            for (size_t k = 0; k < 4; k++)
                for (size_t e = 0; e < PRPC_ARRAY_LEN(extra); e++) {
                    size_t len = k * chunks[ci] + extra[e];
                    check_pieces(chunks[ci], len, (len + chunks[ci] - 1) / chunks[ci]);
                }
        /* 64-byte pieces: exactly the most kept, and one more is too many */
        check_pieces(64, 64 * (size_t)PRPC_CHUNK_DIGESTS_MAX, PRPC_CHUNK_DIGESTS_MAX);
        check_pieces(64, 64 * (size_t)PRPC_CHUNK_DIGESTS_MAX + 64, 0);
    }
    unsetenv("P2PRPC_FAULTS");
    prpc_fault_reload();
    {
        prpc_chunk_digests_t cd = {4096, 0, NULL};
        uint8_t d[32];
        prpc_error_t err;
        CHECK_EQ_INT(prpc_hash_fd_chunks(-1, d, NULL, &cd, &err), PRPC_EINVAL);
        CHECK(strstr(err.message, "fd -1") != NULL);
        CHECK_EQ_INT(prpc_hash_fd_chunks(1000000, d, NULL, &cd, &err), PRPC_EIO);
        CHECK_EQ_INT(cd.n, 0);
        CHECK(cd.d == NULL);
    }
}

TEST_MAIN(TEST_ENTRY(known_vectors), TEST_ENTRY(streaming_equals_one_shot),
          TEST_ENTRY(update2_equals_two_updates),
          TEST_ENTRY(file_pieces_are_digested_with_the_whole),
          TEST_ENTRY(hex_round_trip_and_errors), TEST_ENTRY(file_by_path_and_fd_multi_chunk),
          TEST_ENTRY(file_sizes_around_the_chunk), TEST_ENTRY(fd_position_untouched),
          TEST_ENTRY(missing_file_names_the_path), TEST_ENTRY(directory_is_refused),
          TEST_ENTRY(bad_fds), TEST_ENTRY(write_only_fd_is_an_error))
