/* test_json.c - the growable text buffer and JSON string escaping
 * (csrc/json.c): exact output bytes, the hard cap, and prpc_buf_take. */
#include "json.h"
#include "test.h"

#include <wchar.h>

/* Escape s (len bytes) into a fresh buffer and hand out the text. */
static char *escaped(const char *s, size_t len)
{
    prpc_buf_t b = PRPC_BUF_INIT;
    if (prpc_buf_json_str(&b, s, len) != 0) {
        prpc_buf_cleanup(&b);
        return NULL;
    }
    return prpc_buf_take(&b, NULL, NULL);
}

#define CHECK_ESCAPES(in, len, want)                                                 \
    do {                                                                             \
        char *got_ = escaped(in, len);                                               \
        int same_ = got_ != NULL && strcmp(got_, want) == 0;                         \
        if (!same_)                                                                  \
            fprintf(stderr, "  got %s\n", got_ ? got_ : "(null)");                  \
        free(got_);                                                                  \
        CHECK(same_);                                                                \
    } while (0)

TEST(escapes_quotes_backslash_whitespace)
{
    CHECK_ESCAPES("", 0, "\"\"");
    CHECK_ESCAPES("plain", 5, "\"plain\"");
    CHECK_ESCAPES("say \"hi\"", 8, "\"say \\\"hi\\\"\"");
    CHECK_ESCAPES("C:\\dir\\", 7, "\"C:\\\\dir\\\\\"");
    CHECK_ESCAPES("a\nb\tc\rd", 7, "\"a\\nb\\tc\\rd\"");
    /* '/' needs no escape and is left alone. */
    CHECK_ESCAPES("a/b", 3, "\"a/b\"");
}

TEST(escapes_control_chars_as_u00xx)
{
    CHECK_ESCAPES("\x01", 1, "\"\\u0001\"");
    CHECK_ESCAPES("\x08\x0c", 2, "\"\\u0008\\u000c\"");
    CHECK_ESCAPES("x\x1fy", 3, "\"x\\u001fy\"");
    CHECK_ESCAPES("\x1b[0m", 4, "\"\\u001b[0m\"");
    /* An embedded NUL is data, not the end: len rules. */
    CHECK_ESCAPES("a\0b", 3, "\"a\\u0000b\"");
    /* 0x20 and 0x7f are not control characters for JSON. */
    CHECK_ESCAPES(" \x7f", 2, "\" \x7f\"");
}

TEST(utf8_passes_through)
{
    const char *s = "h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80 \xe4\xb8\xad";
    char want[64];
    snprintf(want, sizeof(want), "\"%s\"", s);
    CHECK_ESCAPES(s, strlen(s), want);
}

TEST(builds_a_document)
{
    prpc_buf_t b = PRPC_BUF_INIT;
    size_t len = 0;
    char *text;
    CHECK_EQ_INT(prpc_buf_puts(&b, "{"), 0);
    CHECK_EQ_INT(prpc_buf_json_str(&b, "na\"me", 5), 0);
    CHECK_EQ_INT(prpc_buf_append(&b, ":", 1), 0);
    CHECK_EQ_INT(prpc_buf_printf(&b, "%d,", -42), 0);
    CHECK_EQ_INT(prpc_buf_json_str(&b, "k", 1), 0);
    CHECK_EQ_INT(prpc_buf_printf(&b, ":%s}", "null"), 0);
    CHECK_EQ_INT(b.len, strlen(b.data));
    text = prpc_buf_take(&b, &len, NULL);
    CHECK(text != NULL);
    CHECK_EQ_INT(len, strlen("{\"na\\\"me\":-42,\"k\":null}"));
    CHECK_EQ_STR(text, "{\"na\\\"me\":-42,\"k\":null}");
    free(text);
    CHECK(b.data == NULL);
    CHECK_EQ_INT(b.len, 0);
}

TEST(printf_short_and_long)
{
    prpc_buf_t b = PRPC_BUF_INIT;
    char big[1201], want[1300];
    size_t len = 0;
    char *text;

    memset(big, 'q', 1200);
    big[1200] = '\0';
    big[0] = 'A';
    big[1199] = 'Z';
    CHECK_EQ_INT(prpc_buf_printf(&b, "[%03d|", 7), 0);
    CHECK_EQ_STR(b.data, "[007|");
    /* Longer than the 256-byte stack buffer: formatted straight into b. */
    CHECK_EQ_INT(prpc_buf_printf(&b, "%s|%u]", big, 99u), 0);
    snprintf(want, sizeof(want), "[007|%s|99]", big);
    CHECK_EQ_INT(b.len, strlen(want));
    CHECK_EQ_STR(b.data, want);
    text = prpc_buf_take(&b, &len, NULL);
    CHECK(text != NULL);
    CHECK_EQ_INT(len, strlen(want));
    CHECK_EQ_STR(text, want);
    free(text);
}

TEST(printf_at_the_stack_buffer_edge)
{
    /* 255 characters fit the stack buffer with its NUL; 256 do not. */
    for (int n = 254; n <= 258; n++) {
        prpc_buf_t b = PRPC_BUF_INIT;
        char s[300];
        memset(s, 'a' + (n % 26), (size_t)n);
        s[n] = '\0';
        CHECK_EQ_INT(prpc_buf_puts(&b, "<"), 0);
        CHECK_EQ_INT(prpc_buf_printf(&b, "%s", s), 0);
        CHECK_EQ_INT(prpc_buf_puts(&b, ">"), 0);
        CHECK_EQ_INT(b.len, (size_t)n + 2);
        CHECK(b.data[0] == '<' && b.data[n + 1] == '>' && b.data[n + 2] == '\0');
        CHECK(memcmp(b.data + 1, s, (size_t)n) == 0);
        prpc_buf_cleanup(&b);
    }
}

TEST(grows_across_many_appends)
{
    prpc_buf_t b = PRPC_BUF_INIT;
    size_t len = 0;
    char *text;
    for (int i = 0; i < 20000; i++)
        CHECK_EQ_INT(prpc_buf_printf(&b, "%05d", i), 0);
    CHECK_EQ_INT(b.len, 100000);
    CHECK(b.cap > b.len);
    text = prpc_buf_take(&b, &len, NULL);
    CHECK(text != NULL);
    CHECK_EQ_INT(len, 100000);
    CHECK(memcmp(text, "000000000100002", 15) == 0);
    CHECK(memcmp(text + 99995, "19999", 6) == 0);
    free(text);
}

/* A buffer with `limit` holding `prefix`, ready for an append that fails. */
static int capped(prpc_buf_t *b, size_t limit, const char *prefix)
{
    prpc_buf_t z = PRPC_BUF_INIT;
    *b = z;
    b->limit = limit;
    return prpc_buf_puts(b, prefix);
}

#define CHECK_UNCHANGED(b, prefix)                                                   \
    do {                                                                             \
        CHECK_EQ_INT((b).len, strlen(prefix));                                       \
        CHECK_EQ_STR((b).data, prefix);                                              \
        CHECK_EQ_INT((b).failed, PRPC_ELIMIT);                                       \
    } while (0)

TEST(limit_refuses_and_keeps_the_buffer)
{
    prpc_buf_t b;
    char long_s[400];

    /* limit counts the NUL: 15 characters fit a 16-byte cap, 16 do not. */
    CHECK_EQ_INT(capped(&b, 16, "0123456789"), 0);
    CHECK_EQ_INT(prpc_buf_append(&b, "abcde", 5), 0);
    CHECK_EQ_STR(b.data, "0123456789abcde");
    CHECK(b.cap <= 16);
    CHECK_EQ_INT(prpc_buf_append(&b, "f", 1), PRPC_ELIMIT);
    CHECK_UNCHANGED(b, "0123456789abcde");
    /* Once failed, the buffer refuses even what would fit; take reports it. */
    CHECK_EQ_INT(prpc_buf_append(&b, "", 0), PRPC_ELIMIT);
    CHECK_UNCHANGED(b, "0123456789abcde");
    prpc_buf_cleanup(&b);

    CHECK_EQ_INT(capped(&b, 16, "0123456789"), 0);
    CHECK_EQ_INT(prpc_buf_puts(&b, "abcdef"), PRPC_ELIMIT);
    CHECK_UNCHANGED(b, "0123456789");
    prpc_buf_cleanup(&b);

    CHECK_EQ_INT(capped(&b, 16, "0123456789"), 0);
    CHECK_EQ_INT(prpc_buf_printf(&b, "%d", 123456), PRPC_ELIMIT);
    CHECK_UNCHANGED(b, "0123456789");
    prpc_buf_cleanup(&b);

    /* The long printf path (> 256 bytes) checks the cap before writing. */
    memset(long_s, 'x', 399);
    long_s[399] = '\0';
    CHECK_EQ_INT(capped(&b, 300, "head"), 0);
    CHECK_EQ_INT(prpc_buf_printf(&b, "%s", long_s), PRPC_ELIMIT);
    CHECK_UNCHANGED(b, "head");
    prpc_buf_cleanup(&b);

    /* An escaped string that overflows midway is taken back whole. */
    CHECK_EQ_INT(capped(&b, 12, "ab"), 0);
    CHECK_EQ_INT(prpc_buf_json_str(&b, "0123456789", 10), PRPC_ELIMIT);
    CHECK_UNCHANGED(b, "ab");
    prpc_buf_cleanup(&b);

    /* ...also when it is the escape sequence that does not fit. */
    CHECK_EQ_INT(capped(&b, 10, "ab"), 0);
    CHECK_EQ_INT(prpc_buf_json_str(&b, "x\x01", 2), PRPC_ELIMIT);
    CHECK_UNCHANGED(b, "ab");
    prpc_buf_cleanup(&b);

    /* ...and when not even the opening quote fits. */
    CHECK_EQ_INT(capped(&b, 3, "ab"), 0);
    CHECK_EQ_INT(prpc_buf_json_str(&b, "x", 1), PRPC_ELIMIT);
    CHECK_UNCHANGED(b, "ab");
    prpc_buf_cleanup(&b);
}

/* Only the closing quote over the cap: the whole string is rolled back. */
TEST(limit_closing_quote_rolls_back)
{
    prpc_buf_t b;
    /* "ab" + "\"xy" = 5 bytes + NUL fills a 6-byte cap; the closing quote
     * would need a 7th. */
    CHECK_EQ_INT(capped(&b, 6, "ab"), 0);
    CHECK_EQ_INT(prpc_buf_json_str(&b, "xy", 2), PRPC_ELIMIT);
    CHECK_UNCHANGED(b, "ab");
    prpc_buf_cleanup(&b);
}

TEST(limit_clamps_growth)
{
    prpc_buf_t b = PRPC_BUF_INIT;
    char s[1000];
    memset(s, 'm', sizeof(s));
    b.limit = 1000;
    /* 999 characters + NUL is exactly the cap; the allocation never passes it. */
    CHECK_EQ_INT(prpc_buf_append(&b, s, 999), 0);
    CHECK_EQ_INT(b.len, 999);
    CHECK_EQ_INT(b.cap, 1000);
    CHECK(b.data[999] == '\0');
    CHECK_EQ_INT(prpc_buf_append(&b, s, 1), PRPC_ELIMIT);
    CHECK_EQ_INT(b.len, 999);
    prpc_buf_cleanup(&b);
}

TEST(default_limit_is_json_max)
{
    prpc_buf_t b = PRPC_BUF_INIT;
    prpc_error_t err;
    /* calloc'd pages are not touched: the cap is checked before copying. */
    char *huge = calloc(1, PRPC_JSON_MAX);
    CHECK(huge != NULL);
    CHECK_EQ_INT(prpc_buf_append(&b, huge, PRPC_JSON_MAX), PRPC_ELIMIT);
    free(huge);
    CHECK(b.data == NULL);
    CHECK_EQ_INT(b.len, 0);
    CHECK(prpc_buf_take(&b, NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_ELIMIT);
    /* A length that would wrap len + extra + 1 is refused, not wrapped. */
    CHECK_EQ_INT(prpc_buf_append(&b, "x", 1), 0);
    CHECK_EQ_INT(prpc_buf_append(&b, "x", SIZE_MAX), PRPC_ELIMIT);
    CHECK_EQ_STR(b.data, "x");
    prpc_buf_cleanup(&b);
}

TEST(take_after_failed_append)
{
    prpc_buf_t b;
    prpc_error_t err;
    size_t len = 12345;
    char *text;

    CHECK_EQ_INT(capped(&b, 8, "abc"), 0);
    CHECK_EQ_INT(prpc_buf_puts(&b, "defghijk"), PRPC_ELIMIT);
    CHECK(prpc_buf_take(&b, &len, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_ELIMIT);
    CHECK_EQ_STR(err.message, "JSON text exceeds its size limit");
    CHECK_EQ_INT(len, 12345);
    /* The buffer was reset and works again, under the same cap. */
    CHECK(b.data == NULL);
    CHECK_EQ_INT(b.len, 0);
    CHECK_EQ_INT(b.failed, 0);
    CHECK_EQ_INT(b.limit, 8);
    CHECK_EQ_INT(prpc_buf_puts(&b, "1234567"), 0);
    CHECK_EQ_INT(prpc_buf_puts(&b, "8"), PRPC_ELIMIT);
    /* err may be NULL. */
    CHECK(prpc_buf_take(&b, NULL, NULL) == NULL);
    CHECK(b.data == NULL);
    text = prpc_buf_take(&b, &len, &err);
    CHECK(text != NULL);
    CHECK_EQ_STR(text, "");
    free(text);
}

TEST(printf_encoding_error_is_einval)
{
    prpc_buf_t b = PRPC_BUF_INIT;
    prpc_error_t err;
    CHECK_EQ_INT(prpc_buf_puts(&b, "ok"), 0);
    /* In the C locale a non-ASCII wide character cannot be converted. */
    CHECK_EQ_INT(prpc_buf_printf(&b, "%lc", (wint_t)0x263a), PRPC_EINVAL);
    CHECK_EQ_STR(b.data, "ok");
    CHECK_EQ_INT(b.len, 2);
    CHECK(prpc_buf_take(&b, NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
}

/* A format that failed to convert is reported as such, not as out of memory. */
TEST(take_names_a_format_failure)
{
    prpc_buf_t b = PRPC_BUF_INIT;
    prpc_error_t err;
    CHECK_EQ_INT(prpc_buf_printf(&b, "%lc", (wint_t)0x263a), PRPC_EINVAL);
    CHECK(prpc_buf_take(&b, NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PRPC_EINVAL);
    CHECK(strstr(err.message, "out of memory") == NULL);
}

TEST(take_empty_and_reuse)
{
    prpc_buf_t b = PRPC_BUF_INIT;
    prpc_error_t err;
    size_t len = 99;
    char *text = prpc_buf_take(&b, &len, &err);
    CHECK(text != NULL);
    CHECK_EQ_STR(text, "");
    CHECK_EQ_INT(len, 0);
    free(text);
    CHECK(b.data == NULL);
    CHECK_EQ_INT(b.cap, 0);

    CHECK_EQ_INT(prpc_buf_puts(&b, "first"), 0);
    text = prpc_buf_take(&b, &len, &err);
    CHECK(text != NULL);
    CHECK_EQ_INT(len, 5);
    CHECK_EQ_STR(text, "first");
    CHECK_EQ_INT(prpc_buf_puts(&b, "second"), 0);
    CHECK_EQ_STR(text, "first");
    free(text);
    text = prpc_buf_take(&b, NULL, NULL);
    CHECK_EQ_STR(text, "second");
    free(text);
}

TEST(cleanup_zeroed_and_twice)
{
    prpc_buf_t b;
    memset(&b, 0, sizeof(b));
    prpc_buf_cleanup(&b);
    prpc_buf_cleanup(&b);
    CHECK(b.data == NULL);
    CHECK_EQ_INT(prpc_buf_puts(&b, "after"), 0);
    CHECK_EQ_STR(b.data, "after");
    prpc_buf_cleanup(&b);
    CHECK(b.data == NULL);
    CHECK_EQ_INT(b.len, 0);
    CHECK_EQ_INT(b.cap, 0);
    CHECK_EQ_INT(b.failed, 0);
    prpc_buf_cleanup(&b);
}

TEST_MAIN(TEST_ENTRY(escapes_quotes_backslash_whitespace), TEST_ENTRY(escapes_control_chars_as_u00xx),
          TEST_ENTRY(utf8_passes_through), TEST_ENTRY(builds_a_document),
          TEST_ENTRY(printf_short_and_long), TEST_ENTRY(printf_at_the_stack_buffer_edge),
          TEST_ENTRY(grows_across_many_appends), TEST_ENTRY(limit_refuses_and_keeps_the_buffer),
          TEST_ENTRY(limit_clamps_growth), TEST_ENTRY(default_limit_is_json_max),
          TEST_ENTRY(take_after_failed_append), TEST_ENTRY(printf_encoding_error_is_einval),
          TEST_ENTRY(take_empty_and_reuse), TEST_ENTRY(cleanup_zeroed_and_twice), TEST_ENTRY(limit_closing_quote_rolls_back),
          TEST_ENTRY(take_names_a_format_failure))
