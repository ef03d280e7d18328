/* test_ident.c - the call identifier, encoding v1 (csrc/ident.c). The fixed
 * vectors are the ones in docs/IDENTITY.md, computed by an independent Python
 * implementation (tests/python/test_identity.py checks both agree). */
#include "ident.h"
#include "test.h"
#include "util.h"

#include <fcntl.h>
#include <math.h>
#include <unistd.h>

#define VERSION "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

#define ID_NOARGS "04e64cb2b3dbf1f60a8a46947380d732267c2042908322cf3692a1f5e8c037f1"
#define ID_ADD "42ff8a7d05950c985103e93afaf0d0dfdc9f69ccf7aac3f37e8c6293b5d24982"
#define ID_MIXED "773bafec9e9d8494d840a2ed05c7e686f979d9ceac313d38f8662b82ea2418cd"
#define ID_X_INT "4927dd27cbbdab9c102473bd3ee659b4359894d3d00ac02f3cfe021e4168a038"
#define ID_X_FLOAT "4fa8d032cd7347607916ca216a019e107fe9a0d64fabcd3aa45ea4e7ad2c85bd"
#define ID_X_BOOL "626560f83d2886fd843ff6dce0a99e5b882fed031e93269cf13b550cd9097212"
#define ID_X_STR "d8add43fc1141572fd9cfb0db62915c843c043032322a8f34c3baa4cb9eaea1c"
#define ID_X_ZERO "2e0f47c35f03670b1c2b11de753f50eae2f5d58e3fee2437a3418dfdc28c8627"
#define ID_X_NEGZERO "ec9fe9df35a8fa83cdf9a525ac0cd45960351ef8273426aa5e659076a8b65565"
#define ID_X_2_64 "2275c3408ff13895f8f75217c86a8fc113e3576e39a5bd7acda2652c76c5745e"

/* SHA-256("abc"): the 'F' argument of the "mixed" vector. */
static const uint8_t SHA_ABC[32] = {
    0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
    0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad,
};

enum { K_INT, K_FLOAT, K_BOOL, K_STR };

/* The id of x(v) with one argument of the given kind; "" on any error. */
static void one_arg_id(int kind, int64_t i, double f, const char *s, char out[65])
{
    prpc_error_t err;
    prpc_ident_t *id = prpc_ident_new("x", VERSION, 1, &err);
    int rc = id == NULL ? -1 : 0;
    if (rc == 0 && kind == K_INT)
        rc = prpc_ident_add_int64(id, "v", i, &err);
    else if (rc == 0 && kind == K_FLOAT)
        rc = prpc_ident_add_float(id, "v", f, &err);
    else if (rc == 0 && kind == K_BOOL)
        rc = prpc_ident_add_bool(id, "v", (int)i, &err);
    else if (rc == 0)
        rc = prpc_ident_add_str(id, "v", s, strlen(s), &err);
    if (rc == 0)
        rc = prpc_ident_finish(id, out, &err);
    if (rc != 0)
        out[0] = '\0';
    prpc_ident_free(id);
}

TEST(vector_noargs)
{
    char out[65];
    prpc_error_t err;
    prpc_ident_t *id = prpc_ident_new("noargs", VERSION, 0, &err);
    CHECK(id != NULL);
    CHECK_EQ_INT(prpc_ident_finish(id, out, &err), 0);
    prpc_ident_free(id);
    CHECK_EQ_STR(out, ID_NOARGS);
}

TEST(vector_add)
{
    char out[65];
    prpc_error_t err;
    prpc_ident_t *id = prpc_ident_new("add", VERSION, 2, &err);
    CHECK(id != NULL);
    CHECK_EQ_INT(prpc_ident_add_int64(id, "a", 1, &err), 0);
    CHECK_EQ_INT(prpc_ident_add_int64(id, "b", -300, &err), 0);
    CHECK_EQ_INT(prpc_ident_finish(id, out, &err), 0);
    prpc_ident_free(id);
    CHECK_EQ_STR(out, ID_ADD);
}

/* Builds the "mixed" vector; file_mode 0 adds the digest, 1 an fd, 2 a path. */
static int build_mixed(int file_mode, int fd, const char *path, char out[65], prpc_error_t *err)
{
    static const uint8_t two_70[9] = {0x40, 0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t two_64_padded[12] = {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0};
    static const char text[] = "h\xc3\xa9llo \xe2\x9c\x93\0end";
    prpc_ident_t *id = prpc_ident_new("mixed", VERSION, 9, err);
    int rc = id == NULL ? -1 : 0;
    if (rc == 0)
        rc = prpc_ident_add_int(id, "n", 0, two_70, sizeof(two_70), err);
    /* leading zero bytes must not change the encoding */
    if (rc == 0)
        rc = prpc_ident_add_int(id, "neg", 1, two_64_padded, sizeof(two_64_padded), err);
    if (rc == 0)
        rc = prpc_ident_add_int(id, "z", 0, NULL, 0, err);
    if (rc == 0)
        rc = prpc_ident_add_float(id, "x", -0.0, err);
    if (rc == 0)
        rc = prpc_ident_add_float(id, "p", 0.1, err);
    if (rc == 0)
        rc = prpc_ident_add_bool(id, "flag", 7, err);
    if (rc == 0)
        rc = prpc_ident_add_str(id, "text", text, sizeof(text) - 1, err);
    if (rc == 0)
        rc = prpc_ident_add_str(id, "empty", NULL, 0, err);
    if (rc == 0 && file_mode == 0)
        rc = prpc_ident_add_file_sha256(id, "data", SHA_ABC, err);
    else if (rc == 0 && file_mode == 1)
        rc = prpc_ident_add_file_fd(id, "data", fd, err);
    else if (rc == 0)
        rc = prpc_ident_add_file_path(id, "data", path, err);
    if (rc == 0)
        rc = prpc_ident_finish(id, out, err);
    prpc_ident_free(id);
    return rc;
}

TEST(vector_mixed)
{
    char out[65];
    prpc_error_t err;
    CHECK_EQ_INT(build_mixed(0, -1, NULL, out, &err), 0);
    CHECK_EQ_STR(out, ID_MIXED);
}

TEST(file_content_decides_not_path)
{
    char path[] = "/tmp/prpc-test-ident-XXXXXX", out[65];
    prpc_error_t err;
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK_EQ_INT(write(fd, "abc", 3), 3);
    /* the fd is hashed from offset 0 even though its position is at the end */
    CHECK_EQ_INT(build_mixed(1, fd, NULL, out, &err), 0);
    CHECK_EQ_STR(out, ID_MIXED);
    CHECK_EQ_INT(lseek(fd, 0, SEEK_CUR), 3);
    CHECK_EQ_INT(build_mixed(2, -1, path, out, &err), 0);
    CHECK_EQ_STR(out, ID_MIXED);
    /* other content under the same path: another call */
    CHECK_EQ_INT(pwrite(fd, "abd", 3, 0), 3);
    CHECK_EQ_INT(build_mixed(2, -1, path, out, &err), 0);
    close(fd);
    unlink(path);
    CHECK(strcmp(out, ID_MIXED) != 0);
}

TEST(types_never_collide)
{
    char i[65], f[65], b[65], s[65], z[65], nz[65];
    one_arg_id(K_INT, 1, 0, NULL, i);
    one_arg_id(K_FLOAT, 0, 1.0, NULL, f);
    one_arg_id(K_BOOL, 1, 0, NULL, b);
    one_arg_id(K_STR, 0, 0, "1", s);
    CHECK_EQ_STR(i, ID_X_INT);
    CHECK_EQ_STR(f, ID_X_FLOAT);
    CHECK_EQ_STR(b, ID_X_BOOL);
    CHECK_EQ_STR(s, ID_X_STR);
    one_arg_id(K_FLOAT, 0, 0.0, NULL, z);
    one_arg_id(K_FLOAT, 0, -0.0, NULL, nz);
    CHECK_EQ_STR(z, ID_X_ZERO);
    CHECK_EQ_STR(nz, ID_X_NEGZERO);
}

TEST(floats_by_bit_pattern)
{
    char a[65], b[65];
    one_arg_id(K_FLOAT, 0, NAN, NULL, a);
    one_arg_id(K_FLOAT, 0, NAN, NULL, b);
    CHECK(a[0] != '\0');
    CHECK_EQ_STR(a, b);
    one_arg_id(K_FLOAT, 0, -NAN, NULL, b);
    CHECK(strcmp(a, b) != 0);
    one_arg_id(K_FLOAT, 0, INFINITY, NULL, a);
    one_arg_id(K_FLOAT, 0, -INFINITY, NULL, b);
    CHECK(a[0] != '\0' && strcmp(a, b) != 0);
}

TEST(huge_and_edge_ints)
{
    static const uint8_t two_64[9] = {1, 0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t zeros[3] = {0, 0, 0};
    char out[65], zero[65], negzero[65], a[65], b[65];
    prpc_error_t err;
    prpc_ident_t *id = prpc_ident_new("x", VERSION, 1, &err);
    CHECK(id != NULL);
    CHECK_EQ_INT(prpc_ident_add_int(id, "v", 0, two_64, sizeof(two_64), &err), 0);
    CHECK_EQ_INT(prpc_ident_finish(id, out, &err), 0);
    prpc_ident_free(id);
    CHECK_EQ_STR(out, ID_X_2_64);

    /* -0 (zero magnitude, negative flag) and padded zeros are the one zero */
    one_arg_id(K_INT, 0, 0, NULL, zero);
    id = prpc_ident_new("x", VERSION, 1, &err);
    CHECK(id != NULL);
    CHECK_EQ_INT(prpc_ident_add_int(id, "v", 1, zeros, sizeof(zeros), &err), 0);
    CHECK_EQ_INT(prpc_ident_finish(id, negzero, &err), 0);
    prpc_ident_free(id);
    CHECK_EQ_STR(zero, negzero);

    /* INT64_MIN has no positive int64 twin; it must differ from INT64_MAX */
    one_arg_id(K_INT, INT64_MIN, 0, NULL, a);
    one_arg_id(K_INT, INT64_MAX, 0, NULL, b);
    CHECK(a[0] != '\0' && b[0] != '\0' && strcmp(a, b) != 0);
    one_arg_id(K_INT, -1, 0, NULL, a);
    one_arg_id(K_INT, 1, 0, NULL, b);
    CHECK(strcmp(a, b) != 0);
}

TEST(names_and_order_matter)
{
    char ab[65], ba[65], renamed[65];
    prpc_error_t err;
    prpc_ident_t *id = prpc_ident_new("add", VERSION, 2, &err);
    CHECK(id != NULL);
    CHECK_EQ_INT(prpc_ident_add_int64(id, "b", -300, &err), 0);
    CHECK_EQ_INT(prpc_ident_add_int64(id, "a", 1, &err), 0);
    CHECK_EQ_INT(prpc_ident_finish(id, ba, &err), 0);
    prpc_ident_free(id);
    id = prpc_ident_new("add", VERSION, 2, &err);
    CHECK(id != NULL);
    CHECK_EQ_INT(prpc_ident_add_int64(id, "a", 1, &err), 0);
    CHECK_EQ_INT(prpc_ident_add_int64(id, "c", -300, &err), 0);
    CHECK_EQ_INT(prpc_ident_finish(id, renamed, &err), 0);
    prpc_ident_free(id);
    strcpy(ab, ID_ADD);
    CHECK(strcmp(ab, ba) != 0);
    CHECK(strcmp(ab, renamed) != 0);
    /* the version is part of the id, in either case of hex */
    id = prpc_ident_new(
        "noargs", "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", 0, &err);
    CHECK(id != NULL);
    CHECK_EQ_INT(prpc_ident_finish(id, ab, &err), 0);
    prpc_ident_free(id);
    CHECK_EQ_STR(ab, ID_NOARGS);
    id = prpc_ident_new(
        "noargs", "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", 0, &err);
    CHECK(id != NULL);
    CHECK_EQ_INT(prpc_ident_finish(id, ab, &err), 0);
    prpc_ident_free(id);
    CHECK(strcmp(ab, ID_NOARGS) != 0);
}

TEST(bad_function_and_version)
{
    prpc_error_t err;
    CHECK(prpc_ident_new("", VERSION, 0, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(strstr(err.message, "empty function name") != NULL);
    CHECK(prpc_ident_new(NULL, VERSION, 0, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(prpc_ident_new("f\xff", VERSION, 0, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(strstr(err.message, "function name is not valid UTF-8 (byte 1)") != NULL);
    CHECK(prpc_ident_new("fn", "abc", 0, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(strstr(err.message, "call 'fn': version must be 64 hex digits") != NULL);
    CHECK(strstr(err.message, "got 3") != NULL);
    CHECK(prpc_ident_new("fn", "z123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                         0, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(strstr(err.message, "character 0 (0x7a)") != NULL);
    CHECK(prpc_ident_new("fn", NULL, 0, &err) == NULL);
    CHECK(strstr(err.message, "none given") != NULL);
    CHECK(prpc_ident_new("fn", NULL, 0, NULL) == NULL);
}

TEST(wrong_argument_count)
{
    char out[65];
    prpc_error_t err;
    prpc_ident_t *id = prpc_ident_new("add", VERSION, 2, &err);
    CHECK(id != NULL);
    CHECK_EQ_INT(prpc_ident_add_int64(id, "a", 1, &err), 0);
    CHECK_EQ_INT(prpc_ident_finish(id, out, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "call 'add': 1 of 2 arguments given") != NULL);
    CHECK_EQ_INT(prpc_ident_add_int64(id, "b", -300, &err), 0);
    CHECK_EQ_INT(prpc_ident_add_bool(id, "c", 1, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "argument 'c' is one more than the 2 declared") != NULL);
    /* the refused extra argument left the builder as it was */
    CHECK_EQ_INT(prpc_ident_finish(id, out, &err), 0);
    CHECK_EQ_STR(out, ID_ADD);
    /* spent after finish */
    CHECK_EQ_INT(prpc_ident_finish(id, out, &err), PRPC_ESTATE);
    CHECK(strstr(err.message, "already finished") != NULL);
    CHECK_EQ_INT(prpc_ident_add_int64(id, "d", 1, &err), PRPC_ESTATE);
    prpc_ident_free(id);
    prpc_ident_free(NULL);
    CHECK_EQ_INT(prpc_ident_add_int64(NULL, "d", 1, &err), PRPC_EINVAL);
}

TEST(invalid_utf8_is_refused_and_changes_nothing)
{
    static const char *const bad[] = {
        "\xff",             /* never valid */
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong */
        "\xed\xa0\x80",     /* surrogate U+D800 */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "ab\xe2\x9c",       /* truncated sequence */
        "\x80",             /* lone continuation */
    };
    static const uint8_t one = 1;
    char out[65];
    prpc_error_t err;
    prpc_ident_t *id = prpc_ident_new("add", VERSION, 2, &err);
    CHECK(id != NULL);
    for (size_t k = 0; k < PRPC_ARRAY_LEN(bad); k++) {
        CHECK_EQ_INT(prpc_ident_add_str(id, "a", bad[k], strlen(bad[k]), &err), PRPC_EINVAL);
        CHECK(strstr(err.message, "call 'add': argument 'a': string is not valid UTF-8") != NULL);
    }
    CHECK_EQ_INT(prpc_ident_add_str(id, "a", "ab\xe2\x9c", 4, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "(byte 2 of 4)") != NULL);
    CHECK_EQ_INT(prpc_ident_add_int(id, "\xed\xa0\x80", 0, &one, 1, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "the name of argument 1 is not valid UTF-8 (byte 0)") != NULL);
    CHECK_EQ_INT(prpc_ident_add_int(id, "", 0, &one, 1, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "argument 1 has an empty name") != NULL);
    CHECK_EQ_INT(prpc_ident_add_float(id, NULL, 1.0, &err), PRPC_EINVAL);
    CHECK_EQ_INT(prpc_ident_add_int(id, "a", 0, NULL, 3, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "argument 'a': no magnitude bytes") != NULL);
    CHECK_EQ_INT(prpc_ident_add_file_sha256(id, "a", NULL, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "argument 'a': no file digest") != NULL);
    /* valid multi-byte UTF-8 in names and values goes through; and none of
     * the refusals above touched the digest */
    CHECK_EQ_INT(prpc_ident_add_int(id, "a", 0, &one, 1, &err), 0);
    CHECK_EQ_INT(prpc_ident_add_int64(id, "b", -300, &err), 0);
    CHECK_EQ_INT(prpc_ident_finish(id, out, &err), 0);
    prpc_ident_free(id);
    CHECK_EQ_STR(out, ID_ADD);
}

TEST(valid_utf8_edges_accepted)
{
    static const char *const good[] = {
        "\xc2\x80",     "\xdf\xbf",         "\xe0\xa0\x80",     "\xed\x9f\xbf", "\xee\x80\x80",
        "\xef\xbf\xbf", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "\x7f",
    };
    prpc_error_t err;
    for (size_t k = 0; k < PRPC_ARRAY_LEN(good); k++) {
        char out[65];
        prpc_ident_t *id = prpc_ident_new(good[k], VERSION, 1, &err);
        CHECK(id != NULL);
        CHECK_EQ_INT(prpc_ident_add_str(id, good[k], good[k], strlen(good[k]), &err), 0);
        CHECK_EQ_INT(prpc_ident_finish(id, out, &err), 0);
        prpc_ident_free(id);
    }
}

TEST(file_errors_name_the_argument)
{
    char out[65];
    prpc_error_t err;
    prpc_ident_t *id = prpc_ident_new("mixed", VERSION, 1, &err);
    CHECK(id != NULL);
    CHECK_EQ_INT(prpc_ident_add_file_path(id, "data", "/nonexistent-prpc/x.bin", &err),
                 PRPC_ENOTFOUND);
    CHECK(strstr(err.message, "call 'mixed': argument 'data': hashing file "
                              "'/nonexistent-prpc/x.bin'") != NULL);
    CHECK(strstr(err.message, "No such file") != NULL);
    CHECK_EQ_INT(prpc_ident_add_file_fd(id, "data", -5, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "argument 'data': hashing fd -5") != NULL);
    CHECK_EQ_INT(prpc_ident_add_file_path(id, "data", NULL, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "argument 'data'") != NULL);
    /* the failed adds counted nothing */
    CHECK_EQ_INT(prpc_ident_finish(id, out, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "0 of 1 arguments given") != NULL);
    prpc_ident_free(id);
}

TEST(long_function_name_is_cut_in_messages_only)
{
    char name[400], out[65];
    prpc_error_t err;
    prpc_ident_t *id;
    /* 199 two-byte characters: the 128-byte label must end on a boundary */
    name[0] = 'f';
    for (int i = 0; i < 199; i++) {
        name[1 + 2 * i] = '\xc3';
        name[2 + 2 * i] = '\xa9';
    }
    name[399] = '\0';
    id = prpc_ident_new(name, VERSION, 0, &err);
    CHECK(id != NULL);
    CHECK_EQ_INT(prpc_ident_add_bool(id, "x", 1, &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "call 'f\xc3\xa9") == err.message);
    CHECK(strstr(err.message, "\xc3\xa9\xc3\xa9': argument 'x'") != NULL);
    CHECK_EQ_INT(prpc_ident_finish(id, out, &err), 0);
    prpc_ident_free(id);
}

/* Reference check of one sequence s[0..n) being exactly one well-formed
 * character, decoded the textbook way (bit masks, then the rules on the code
 * point), independently of the table-driven validator under test. */
static int ref_one_char(const uint8_t *s, size_t n)
{
    uint32_t cp;
    size_t want;
    if (s[0] < 0x80)
        return n == 1;
    if ((s[0] & 0xe0) == 0xc0) {
        want = 2;
        cp = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        want = 3;
        cp = s[0] & 0x0f;
    } else if ((s[0] & 0xf8) == 0xf0) {
        want = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n != want)
        return 0;
    for (size_t k = 1; k < n; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[k] & 0x3f);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000))
        return 0; /* overlong */
    return cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
}

TEST(utf8_validator_against_reference)
{
    uint8_t s[4];
    /* every 1- and 2-byte string, every 3-byte string led by E0..EF, and
     * 4-byte strings led by F0..F7 with the last byte at each boundary */
    for (unsigned a = 0; a < 256; a++) {
        s[0] = (uint8_t)a;
        CHECK_EQ_INT(prpc_utf8_invalid_at(s, 1) == 1, ref_one_char(s, 1));
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (uint8_t)b;
            int ok = ref_one_char(s, 2) || (ref_one_char(s, 1) && ref_one_char(s + 1, 1));
            CHECK_EQ_INT(prpc_utf8_invalid_at(s, 2) == 2, ok);
            if (a < 0xe0 || a > 0xf7)
                continue;
            for (unsigned c = 0; c < 256; c++) {
                s[2] = (uint8_t)c;
                if (a <= 0xef) {
                    CHECK_EQ_INT(prpc_utf8_invalid_at(s, 3) == 3, ref_one_char(s, 3));
                    continue;
                }
                for (unsigned k = 0; k < 4; k++) {
                    static const uint8_t last[4] = {0x7f, 0x80, 0xbf, 0xc0};
                    s[3] = last[k];
                    CHECK_EQ_INT(prpc_utf8_invalid_at(s, 4) == 4, ref_one_char(s, 4));
                }
            }
        }
    }
    CHECK_EQ_INT(prpc_utf8_invalid_at("", 0), 0);
    CHECK_EQ_INT(prpc_utf8_invalid_at("abc\xe2\x9c\x93x\xffz", 9), 7);
}

TEST_MAIN(TEST_ENTRY(vector_noargs), TEST_ENTRY(vector_add), TEST_ENTRY(vector_mixed),
          TEST_ENTRY(file_content_decides_not_path), TEST_ENTRY(types_never_collide),
          TEST_ENTRY(floats_by_bit_pattern), TEST_ENTRY(huge_and_edge_ints),
          TEST_ENTRY(names_and_order_matter), TEST_ENTRY(bad_function_and_version),
          TEST_ENTRY(wrong_argument_count), TEST_ENTRY(invalid_utf8_is_refused_and_changes_nothing),
          TEST_ENTRY(valid_utf8_edges_accepted), TEST_ENTRY(file_errors_name_the_argument),
          TEST_ENTRY(long_function_name_is_cut_in_messages_only),
          TEST_ENTRY(utf8_validator_against_reference))
