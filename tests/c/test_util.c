/* test_util.c - the shared helpers (csrc/util.c): hex, the hex rule and its
 * messages, UTF-8 validity, clocks, JSON string escaping and nesting depth.
 * Each check names bytes a caller would see. */
#include "util.h"
#include "test.h"

#include <time.h>

TEST(hex_encode_decode)
{
    const uint8_t in[] = {0x00, 0x0f, 0xa5, 0xff};
    uint8_t out[4];
    char hex[9];
    prpc_error_t err;
    prpc_hex_encode(in, sizeof(in), hex);
    CHECK_EQ_STR(hex, "000fa5ff");
    CHECK_EQ_INT(prpc_hex_decode("000FA5ff", 8, out, sizeof(out), NULL), 0);
    CHECK(memcmp(in, out, sizeof(in)) == 0);
    CHECK_EQ_INT(prpc_hex_decode("000fa5f", 7, out, sizeof(out), &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "expected 8 hex digits, got 7") != NULL);
    CHECK_EQ_INT(prpc_hex_decode("000fa5fg", 8, out, sizeof(out), &err), PRPC_EINVAL);
    CHECK(strstr(err.message, "character 7 (0x67)") != NULL);
    CHECK_EQ_INT(prpc_hex_digit('a'), 10);
    CHECK_EQ_INT(prpc_hex_digit('F'), 15);
    CHECK_EQ_INT(prpc_hex_digit('g'), -1);
    CHECK_EQ_INT(prpc_hex_digit('/'), -1);
}

TEST(valid_hex_is_exact_lowercase)
{
    CHECK(prpc_valid_hex("00ff", 4));
    CHECK(!prpc_valid_hex("00FF", 4));
    CHECK(!prpc_valid_hex("00f", 4));
    CHECK(!prpc_valid_hex("00fff", 4));
    CHECK(!prpc_valid_hex("00 f", 4));
    CHECK(!prpc_valid_hex(NULL, 4));
    CHECK(prpc_valid_hex("", 0));
}

TEST(check_hex_names_the_field)
{
    prpc_error_t err;
    CHECK_EQ_INT(prpc_check_hex("abcd", 4, 4, "lease_id", &err), 0);
    CHECK_EQ_INT(prpc_check_hex(NULL, 4, 4, "lease_id", &err), PRPC_EINVAL);
    CHECK_EQ_STR(err.message, "lease_id is missing");
    CHECK_EQ_INT(prpc_check_hex("abc", 4, 4, "lease_id", &err), PRPC_EINVAL);
    CHECK_EQ_STR(err.message, "lease_id must be 4 lowercase hex characters, got 3");
    CHECK_EQ_INT(prpc_check_hex("abcde", 4, 4, "lease_id", &err), PRPC_EINVAL);
    CHECK_EQ_STR(err.message, "lease_id is longer than 4 characters");
    CHECK_EQ_INT(prpc_check_hex("abXd", 4, 4, "lease_id", &err), PRPC_EINVAL);
    CHECK_EQ_STR(err.message, "lease_id must be lowercase hex, got \"abXd\" (bad character at 2)");
    /* len 0: any length from 1 to max. */
    CHECK_EQ_INT(prpc_check_hex("ab", 0, 4, "version", &err), 0);
    CHECK_EQ_INT(prpc_check_hex("", 0, 4, "version", &err), PRPC_EINVAL);
    CHECK_EQ_STR(err.message, "version must be 4 lowercase hex characters, got 0");
}

TEST(utf8_invalid_at)
{
    CHECK_EQ_INT(prpc_utf8_invalid_at("abc", 3), 3);
    CHECK_EQ_INT(prpc_utf8_invalid_at("h\xc3\xa9", 3), 3);
    CHECK_EQ_INT(prpc_utf8_invalid_at("ab\xc3", 3), 2);          /* cut */
    CHECK_EQ_INT(prpc_utf8_invalid_at("a\xc0\x80", 3), 1);       /* overlong NUL */
    CHECK_EQ_INT(prpc_utf8_invalid_at("\xed\xa0\x80", 3), 0);    /* surrogate */
    CHECK_EQ_INT(prpc_utf8_invalid_at("\xf4\x90\x80\x80", 4), 0); /* above U+10FFFF */
    CHECK_EQ_INT(prpc_utf8_invalid_at("\xf0\x9f\x98\x80", 4), 4);
}

TEST(clocks)
{
    struct timespec ts;
    int64_t now = prpc_now_ms(), ns = prpc_now_ns(), mono = prpc_mono_ms();
    clock_gettime(CLOCK_REALTIME, &ts);
    /* Each clock is the one it says: realtime ones agree with time(2). */
    CHECK(now / 1000 >= ts.tv_sec - 1 && now / 1000 <= ts.tv_sec);
    CHECK(ns / 1000000000 >= ts.tv_sec - 1 && ns / 1000000000 <= ts.tv_sec);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    CHECK(mono / 1000 >= ts.tv_sec - 1 && mono / 1000 <= ts.tv_sec);
    CHECK(prpc_mono_ms() >= mono);
}

/* The escape of s into a buffer of cap bytes. */
static const char *escape(char *out, size_t cap, const char *s, size_t len, size_t *consumed)
{
    prpc_json_escape(out, cap, s, len, consumed);
    return out;
}

TEST(json_escape_bytes)
{
    char out[64];
    size_t used = 0;
    CHECK_EQ_STR(escape(out, sizeof(out), "a\"b\\c", 5, NULL), "a\\\"b\\\\c");
    CHECK_EQ_STR(escape(out, sizeof(out), "a\nb\rc\td", 7, NULL), "a\\nb\\rc\\td");
    CHECK_EQ_STR(escape(out, sizeof(out), "\x01\x1f", 2, NULL), "\\u0001\\u001f");
    CHECK_EQ_STR(escape(out, sizeof(out), "a\0b", 3, NULL), "a\\u0000b");
    CHECK_EQ_STR(escape(out, sizeof(out), "h\xc3\xa9 \xe2\x98\x83", 7, NULL),
                 "h\xc3\xa9 \xe2\x98\x83");
    /* Bytes that are not UTF-8 (a path, a message cut mid-character) are '?'. */
    CHECK_EQ_STR(escape(out, sizeof(out), "a\xff" "b\xc3", 4, NULL), "a?b?");
    CHECK_EQ_INT(prpc_json_escaped_len("a\xff" "b\xc3", 4), 4);
    CHECK_EQ_INT(prpc_json_escaped_len("a\"\n\x01", 4), 1 + 2 + 2 + 6);
    /* A full buffer stops before an escape that does not fit whole. */
    CHECK_EQ_STR(escape(out, 5, "ab\"cd", 5, &used), "ab\\\"");
    CHECK_EQ_INT(used, 3);
    CHECK_EQ_STR(escape(out, 4, "ab\"cd", 5, &used), "ab");
    CHECK_EQ_INT(used, 2);
    CHECK_EQ_INT(prpc_json_escape(out, 1, "ab", 2, &used), 0);
    CHECK_EQ_STR(out, "");
    CHECK_EQ_INT(used, 0);
}

TEST(json_depth)
{
    CHECK_EQ_INT(prpc_json_depth("{}", 2), 1);
    CHECK_EQ_INT(prpc_json_depth("{\"a\": [[1], {\"b\": []}]}", 23), 4);
    /* Brackets inside strings, escaped quotes included, do not count. */
    CHECK_EQ_INT(prpc_json_depth("{\"a\": \"[[[\\\"{{\"}", 16), 1);
    CHECK_EQ_INT(prpc_json_depth("123", 3), 0);
}

TEST_MAIN(TEST_ENTRY(hex_encode_decode), TEST_ENTRY(valid_hex_is_exact_lowercase),
          TEST_ENTRY(check_hex_names_the_field), TEST_ENTRY(utf8_invalid_at), TEST_ENTRY(clocks),
          TEST_ENTRY(json_escape_bytes), TEST_ENTRY(json_depth))
