/* test_wire.c - the wire documents (csrc/wire.c): JSON bodies, function
 * declarations, typed values and submits. Every error path checks the code
 * and that the message names what was wrong. Call ids in the expectations are
 * computed with ident.c, which test_ident.c checks against reference values. */
#include "broker.h"
#include "hash.h"
#include "ident.h"
#include "test.h"
#include "util.h"
#include "wire.h"

#define V_ALL "abababababababababababababababababababababababababababababababab"
#define V_SMALL "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
#define HELD "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
#define NOT_HELD "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0"

static const char FUNCTIONS[] =
    "[{\"name\": \"all\", \"version\": \"" V_ALL "\", \"args\": ["
    "{\"name\": \"n\", \"kind\": \"int\"}, {\"name\": \"x\", \"kind\": \"float\"}, "
    "{\"name\": \"b\", \"kind\": \"bool\"}, {\"name\": \"s\", \"kind\": \"str\"}, "
    "{\"name\": \"f\", \"kind\": \"file\"}], \"returns\": [{\"name\": \"m\", \"kind\": \"int\"}]}, "
    "{\"name\": \"small\", \"version\": \"" V_SMALL "\", \"args\": ["
    "{\"name\": \"n\", \"kind\": \"int\"}], \"returns\": []}]";

/* The receiver holds blob HELD at size 5 only. */
static int holds(void *ud, const char *sha, uint64_t size)
{
    int *asked = ud;
    if (asked != NULL)
        (*asked)++;
    return strcmp(sha, HELD) == 0 && size == 5;
}

static int contains(const char *haystack, const char *needle)
{
    return haystack != NULL && strstr(haystack, needle) != NULL;
}

#define CHECK_ERR(rc, err, want, needle)                                               \
    do {                                                                              \
        CHECK_EQ_INT((rc), (want));                                                   \
        CHECK_EQ_INT((err).code, (want));                                             \
        if (!contains((err).message, (needle))) {                                     \
            fprintf(stderr, "  FAIL %s:%d: message \"%s\" lacks \"%s\"\n", __FILE__,  \
                    __LINE__, (err).message, (needle));                               \
            test_failed_ = 1;                                                         \
            return;                                                                   \
        }                                                                             \
    } while (0)

/* ---- prpc_json_parse ---------------------------------------------------- */

TEST(json_parse_errors)
{
    prpc_error_t err;
    char *big;
    bson_t *doc = prpc_json_parse("", 0, "submit", &err);
    CHECK(doc == NULL);
    CHECK_ERR(err.code, err, PRPC_EINVAL, "submit: the body is empty");
    doc = prpc_json_parse("{\"a\": ", 6, "lease request", &err);
    CHECK(doc == NULL);
    CHECK_ERR(err.code, err, PRPC_EINVAL, "lease request: invalid JSON");
    big = malloc(PRPC_WIRE_META_MAX + 2);
    CHECK(big != NULL);
    memset(big, ' ', PRPC_WIRE_META_MAX + 1);
    big[0] = '{';
    big[PRPC_WIRE_META_MAX] = '}';
    doc = prpc_json_parse(big, PRPC_WIRE_META_MAX + 1, "result", &err);
    free(big);
    CHECK(doc == NULL);
    CHECK_ERR(err.code, err, PRPC_ELIMIT, "result: body of 1048577 bytes exceeds the metadata "
                                          "limit of 1048576");
    doc = prpc_json_parse("{\"s\": \"x\", \"n\": 5}", 18, "x", &err);
    CHECK(doc != NULL);
    CHECK_EQ_STR(prpc_doc_str(doc, "s"), "x");
    CHECK(prpc_doc_str(doc, "n") == NULL);
    {
        double d = 0;
        CHECK_EQ_INT(prpc_doc_num(doc, "n", &d), 1);
        CHECK(d == 5);
        CHECK_EQ_INT(prpc_doc_num(doc, "s", &d), 0);
        CHECK_EQ_INT(prpc_doc_num(doc, "missing", &d), 0);
    }
    bson_destroy(doc);
}

TEST(valid_hex)
{
    CHECK_EQ_INT(prpc_valid_hex("0af9", 4), 1);
    CHECK_EQ_INT(prpc_valid_hex("0aF9", 4), 0);
    CHECK_EQ_INT(prpc_valid_hex("0af", 4), 0);
    CHECK_EQ_INT(prpc_valid_hex("0af99", 4), 0);
    CHECK_EQ_INT(prpc_valid_hex("0ag9", 4), 0);
    CHECK_EQ_INT(prpc_valid_hex(NULL, 4), 0);
}

/* ---- prpc_functions_parse ----------------------------------------------- */

static int parse_fns(const char *json, prpc_error_t *err)
{
    prpc_functions_t fs;
    int rc;
    memset(&fs, 0, sizeof(fs));
    rc = prpc_functions_parse(&fs, json, err);
    prpc_functions_cleanup(&fs);
    return rc;
}

TEST(functions_parse_and_listing)
{
    prpc_functions_t fs;
    prpc_error_t err;
    const prpc_fn_t *f;
    memset(&fs, 0, sizeof(fs));
    CHECK_EQ_INT(prpc_functions_parse(&fs, FUNCTIONS, &err), 0);
    CHECK_EQ_INT(fs.n, 2);
    f = prpc_functions_find(&fs, "all");
    CHECK(f == &fs.fns[0]);
    CHECK_EQ_STR(f->version, V_ALL);
    CHECK_EQ_INT(f->nargs, 5);
    CHECK_EQ_INT(f->args[4].kind, PRPC_IDENT_TAG_FILE);
    CHECK_EQ_STR(f->args[3].name, "s");
    CHECK_EQ_INT(f->nreturns, 1);
    CHECK(prpc_functions_find(&fs, "small") == &fs.fns[1]);
    CHECK(prpc_functions_find(&fs, "nope") == NULL);
    CHECK_EQ_STR(fs.listing_json,
                 "{\"functions\": [{\"name\": \"all\", \"version\": \"" V_ALL "\", \"args\": ["
                 "{\"name\": \"n\", \"kind\": \"int\"}, {\"name\": \"x\", \"kind\": \"float\"}, "
                 "{\"name\": \"b\", \"kind\": \"bool\"}, {\"name\": \"s\", \"kind\": \"str\"}, "
                 "{\"name\": \"f\", \"kind\": \"file\"}], \"returns\": [{\"name\": \"m\", "
                 "\"kind\": \"int\"}]}, {\"name\": \"small\", \"version\": \"" V_SMALL "\", "
                 "\"args\": [{\"name\": \"n\", \"kind\": \"int\"}], \"returns\": []}]}");
    prpc_functions_cleanup(&fs);
    CHECK(fs.fns == NULL && fs.n == 0 && fs.listing_json == NULL);
}

TEST(functions_parse_errors)
{
    prpc_error_t err;
    char *many;
    size_t len = 0;
    CHECK_ERR(parse_fns("[{", &err), err, PRPC_EINVAL, "functions: invalid JSON");
    CHECK_ERR(parse_fns("[]", &err), err, PRPC_EINVAL, "1 to 256 functions, got 0");
    CHECK_ERR(parse_fns("[1]", &err), err, PRPC_EINVAL, "functions: entry 0 is not an object");
    CHECK_ERR(parse_fns("[{\"version\": \"" V_ALL "\", \"args\": [], \"returns\": []}]", &err),
              err, PRPC_EINVAL, "entry 0 needs a name and a 64-hex version");
    CHECK_ERR(parse_fns("[{\"name\": \"\", \"version\": \"" V_ALL "\", \"args\": [], "
                        "\"returns\": []}]",
                        &err),
              err, PRPC_EINVAL, "entry 0 needs a name");
    CHECK_ERR(parse_fns("[{\"name\": 5, \"version\": \"" V_ALL "\", \"args\": [], "
                        "\"returns\": []}]",
                        &err),
              err, PRPC_EINVAL, "entry 0 needs a name");
    CHECK_ERR(parse_fns("[{\"name\": \"a\", \"version\": \"" V_ALL "\", \"args\": [], "
                        "\"returns\": []}, {\"name\": \"b\", \"version\": \"ABAB\", "
                        "\"args\": [], \"returns\": []}]",
                        &err),
              err, PRPC_EINVAL, "entry 1 needs a name and a 64-hex version");
    CHECK_ERR(parse_fns("[{\"name\": \"a\", \"version\": \"" V_ALL "\", \"args\": {}, "
                        "\"returns\": []}]",
                        &err),
              err, PRPC_EINVAL, "function a: \"args\" must be an array");
    CHECK_ERR(parse_fns("[{\"name\": \"a\", \"version\": \"" V_ALL "\", \"args\": [], "
                        "\"returns\": 1}]",
                        &err),
              err, PRPC_EINVAL, "function a: \"returns\" must be an array");
    CHECK_ERR(parse_fns("[{\"name\": \"a\", \"version\": \"" V_ALL "\", \"args\": [{\"name\": "
                        "\"n\", \"kind\": \"int\"}, {\"name\": \"m\", \"kind\": \"complex\"}], "
                        "\"returns\": []}]",
                        &err),
              err, PRPC_EINVAL, "function a: entry 1 of \"args\" needs a name and a kind");
    CHECK_ERR(parse_fns("[{\"name\": \"a\", \"version\": \"" V_ALL "\", \"args\": [{\"kind\": "
                        "\"int\"}], \"returns\": []}]",
                        &err),
              err, PRPC_EINVAL, "entry 0 of \"args\" needs a name and a kind");
    CHECK_ERR(parse_fns("[{\"name\": \"a\", \"version\": \"" V_ALL "\", \"args\": [7], "
                        "\"returns\": []}]",
                        &err),
              err, PRPC_EINVAL, "entry 0 of \"args\"");
    /* A returns entry fails after args were read (wire.c must free them). */
    CHECK_ERR(parse_fns("[{\"name\": \"a\", \"version\": \"" V_ALL "\", \"args\": [{\"name\": "
                        "\"n\", \"kind\": \"int\"}], \"returns\": [{\"name\": \"m\"}]}]",
                        &err),
              err, PRPC_EINVAL, "function a: entry 0 of \"returns\" needs a name and a kind");
    CHECK_ERR(parse_fns("[{\"name\": \"a\", \"version\": \"" V_ALL "\", \"args\": []}]", &err),
              err, PRPC_EINVAL, "function a: \"args\" and \"returns\" are needed");
    CHECK_ERR(parse_fns("[{\"name\": \"a\", \"version\": \"" V_ALL "\", \"args\": [], "
                        "\"returns\": []}, {\"name\": \"a\", \"version\": \"" V_SMALL "\", "
                        "\"args\": [], \"returns\": []}]",
                        &err),
              err, PRPC_EINVAL, "function a is declared twice");

    /* Names longer than PRPC_WIRE_NAME_MAX, for a function and an argument. */
    many = malloc(PRPC_WIRE_NAME_MAX * 2 + 512);
    CHECK(many != NULL);
    snprintf(many, PRPC_WIRE_NAME_MAX * 2 + 512,
             "[{\"name\": \"%0*d\", \"version\": \"" V_ALL "\", \"args\": [], \"returns\": []}]",
             PRPC_WIRE_NAME_MAX + 1, 0);
    CHECK_ERR(parse_fns(many, &err), err, PRPC_EINVAL, "entry 0 needs a name");
    snprintf(many, PRPC_WIRE_NAME_MAX * 2 + 512,
             "[{\"name\": \"a\", \"version\": \"" V_ALL "\", \"args\": [{\"name\": \"%0*d\", "
             "\"kind\": \"int\"}], \"returns\": []}]",
             PRPC_WIRE_NAME_MAX + 1, 0);
    CHECK_ERR(parse_fns(many, &err), err, PRPC_EINVAL, "entry 0 of \"args\" needs a name");
    free(many);

    /* More than PRPC_WIRE_FUNCTIONS_MAX functions, more than PRPC_WIRE_ARGS_MAX args. */
    many = malloc(200 * (PRPC_WIRE_FUNCTIONS_MAX + 2));
    CHECK(many != NULL);
    len = (size_t)sprintf(many, "[");
    for (int i = 0; i <= PRPC_WIRE_FUNCTIONS_MAX; i++)
        len += (size_t)sprintf(many + len, "%s{\"name\": \"f%d\", \"version\": \"" V_ALL
                                           "\", \"args\": [], \"returns\": []}",
                               i ? ", " : "", i);
    sprintf(many + len, "]");
    CHECK_ERR(parse_fns(many, &err), err, PRPC_EINVAL, "got 257");
    len = (size_t)sprintf(many, "[{\"name\": \"wide\", \"version\": \"" V_ALL "\", \"args\": [");
    for (int i = 0; i <= PRPC_WIRE_ARGS_MAX; i++)
        len += (size_t)sprintf(many + len, "%s{\"name\": \"a%d\", \"kind\": \"int\"}",
                               i ? ", " : "", i);
    sprintf(many + len, "], \"returns\": []}]");
    CHECK_ERR(parse_fns(many, &err), err, PRPC_ELIMIT, "function wide: more than 256 args");
    free(many);
}

TEST(functions_duplicate_key_is_not_leaked)
{
    /* libbson keeps duplicate keys: a second "args" is refused, and nothing
     * leaks (LeakSanitizer checks at exit). */
    prpc_functions_t fs;
    prpc_error_t err;
    memset(&fs, 0, sizeof(fs));
    CHECK_EQ_INT(prpc_functions_parse(&fs, "[{\"name\": \"a\", \"version\": \"" V_ALL
                                           "\", \"args\": [], \"args\": [{\"name\": \"n\", "
                                           "\"kind\": \"int\"}], \"returns\": []}]",
                                      &err),
                 PRPC_EINVAL);
    CHECK(strstr(err.message, "\"args\" is given twice") != NULL);
    prpc_functions_cleanup(&fs);
}

/* ---- prpc_wire_check_typed ---------------------------------------------- */

typedef struct typed_case {
    prpc_functions_t fs;
    bson_t *doc;
    prpc_buf_t out;
    char blobs[8][65];
    size_t nblobs;
    prpc_error_t err;
    int asked;
} typed_case_t;

/* Check {"a": <array_json>} as the arguments of `fn` (no identity). */
static int typed(typed_case_t *t, const char *fn, const char *array_json, int with_id)
{
    size_t cap = strlen(array_json) + 16;
    char *body = malloc(cap);
    bson_iter_t it;
    const prpc_fn_t *f;
    prpc_ident_t *id = NULL;
    int rc;
    memset(t, 0, sizeof(*t));
    if (body == NULL || prpc_functions_parse(&t->fs, FUNCTIONS, &t->err) != 0) {
        free(body);
        return 99;
    }
    snprintf(body, cap, "{\"a\": %s}", array_json);
    t->doc = prpc_json_parse(body, strlen(body), "test", &t->err);
    free(body);
    if (t->doc == NULL || !bson_iter_init_find(&it, t->doc, "a"))
        return 98;
    f = prpc_functions_find(&t->fs, fn);
    if (with_id)
        id = prpc_ident_new(f->name, f->version, (uint32_t)f->nargs, NULL);
    rc = prpc_wire_check_typed(f, f->args, f->nargs, "arguments", &it, holds, &t->asked, id,
                               &t->out, t->blobs, &t->nblobs, &t->err);
    prpc_ident_free(id);
    return rc;
}

static void typed_done(typed_case_t *t)
{
    prpc_buf_cleanup(&t->out);
    if (t->doc != NULL)
        bson_destroy(t->doc);
    prpc_functions_cleanup(&t->fs);
}

#define ENTRY_N(v) "{\"name\": \"n\", \"kind\": \"int\", \"value\": " v "}"
#define ENTRY_X "{\"name\": \"x\", \"kind\": \"float\", \"value\": \"3ff8000000000000\"}"
#define ENTRY_B "{\"name\": \"b\", \"kind\": \"bool\", \"value\": true}"
#define ENTRY_S "{\"name\": \"s\", \"kind\": \"str\", \"value\": \"h\\u00e9\\\"llo\\n\"}"
#define ENTRY_F "{\"name\": \"f\", \"kind\": \"file\", \"blob\": \"" HELD "\", \"size\": 5, " \
                "\"filename\": \"../../etc/passwd\"}"

#define TYPED_ERR(fn, json, want, needle)                                              \
    do {                                                                              \
        typed_case_t t_;                                                              \
        int rc_ = typed(&t_, fn, json, 1);                                            \
        typed_done(&t_);                                                              \
        CHECK_ERR(rc_, t_.err, want, needle);                                         \
    } while (0)

TEST(typed_canonical_output)
{
    typed_case_t t;
    int rc = typed(&t, "all",
                   "[" ENTRY_N("\"-12345678901234567890123\"") ", " ENTRY_X ", " ENTRY_B
                   ", " ENTRY_S ", " ENTRY_F "]",
                   1);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(t.out.data,
                 "[{\"name\": \"n\", \"kind\": \"int\", \"value\": \"-12345678901234567890123\"}, "
                 "{\"name\": \"x\", \"kind\": \"float\", \"value\": \"3ff8000000000000\"}, "
                 "{\"name\": \"b\", \"kind\": \"bool\", \"value\": true}, "
                 "{\"name\": \"s\", \"kind\": \"str\", \"value\": \"h\xc3\xa9\\\"llo\\n\"}, "
                 "{\"name\": \"f\", \"kind\": \"file\", \"blob\": \"" HELD "\", \"size\": 5, "
                 "\"filename\": \"../../etc/passwd\"}]");
    CHECK_EQ_INT(t.nblobs, 1);
    CHECK_EQ_STR(t.blobs[0], HELD);
    CHECK_EQ_INT(t.asked, 1);
    typed_done(&t);
}

TEST(typed_unknown_fields_are_ignored_and_dropped)
{
    typed_case_t t;
    int rc = typed(&t, "small",
                   "[{\"name\": \"n\", \"kind\": \"int\", \"value\": \"0\", \"extra\": [1], "
                   "\"blob\": \"zz\"}]",
                   1);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(t.out.data, "[{\"name\": \"n\", \"kind\": \"int\", \"value\": \"0\"}]");
    typed_done(&t);
}

TEST(typed_file_without_filename_and_long_filename)
{
    typed_case_t t;
    char json[3000], want[3000];
    int rc = typed(&t, "all",
                   "[" ENTRY_N("\"1\"") ", " ENTRY_X ", " ENTRY_B ", " ENTRY_S
                   ", {\"name\": \"f\", \"kind\": \"file\", \"blob\": \"" HELD "\", \"size\": 5}]",
                   0);
    CHECK_EQ_INT(rc, 0);
    CHECK(contains(t.out.data, "\"size\": 5, \"filename\": \"\"}]"));
    typed_done(&t);
    /* A file name is metadata: kept up to PRPC_WIRE_FILENAME_MAX bytes. */
    snprintf(json, sizeof(json),
             "[" ENTRY_N("\"1\"") ", " ENTRY_X ", " ENTRY_B ", " ENTRY_S
             ", {\"name\": \"f\", \"kind\": \"file\", \"blob\": \"" HELD "\", \"size\": 5, "
             "\"filename\": \"%0*d\"}]",
             PRPC_WIRE_FILENAME_MAX + 100, 0);
    rc = typed(&t, "all", json, 0);
    CHECK_EQ_INT(rc, 0);
    snprintf(want, sizeof(want), "\"filename\": \"%0*d\"}]", PRPC_WIRE_FILENAME_MAX, 0);
    CHECK(contains(t.out.data, want));
    typed_done(&t);
}

TEST(typed_shape_errors)
{
    TYPED_ERR("small", "{\"0\": 1}", PRPC_EINVAL, "arguments of small must be an array");
    TYPED_ERR("small", "[" ENTRY_N("\"1\"") ", " ENTRY_N("\"2\"") "]", PRPC_EINVAL,
              "arguments of small: more than the 1 declared");
    TYPED_ERR("small", "[5]", PRPC_EINVAL, "arguments of small: entry 0 is not an object");
    TYPED_ERR("small", "[{\"name\": \"m\", \"kind\": \"int\", \"value\": \"1\"}]", PRPC_EINVAL,
              "entry 0 must be \"n\" (declaration order), got \"m\"");
    TYPED_ERR("small", "[{\"kind\": \"int\", \"value\": \"1\"}]", PRPC_EINVAL,
              "entry 0 must be \"n\" (declaration order), got \"(none)\"");
    TYPED_ERR("small", "[{\"name\": \"n\", \"kind\": \"str\", \"value\": \"1\"}]", PRPC_EINVAL,
              "\"n\" is declared int, got kind str");
    TYPED_ERR("small", "[{\"name\": \"n\", \"value\": \"1\"}]", PRPC_EINVAL,
              "\"n\" is declared int, got kind (none)");
    TYPED_ERR("small", "[]", PRPC_EINVAL, "arguments of small: 0 given, 1 declared");
    TYPED_ERR("all", "[" ENTRY_N("\"1\"") ", " ENTRY_X "]", PRPC_EINVAL,
              "arguments of all: 2 given, 5 declared");
}

TEST(typed_int_errors)
{
    static const char *bad[] = {"\"007\"", "\"-0\"", "\"\"", "\"-\"", "\"12a\"", "\"+5\"",
                                "\" 5\"", "\"1.0\"", "5", "true", "null", "\"0x10\""};
    char json[256];
    for (size_t i = 0; i < PRPC_ARRAY_LEN(bad); i++) {
        snprintf(json, sizeof(json), "[" ENTRY_N("%s") "]", bad[i]);
        TYPED_ERR("small", json, PRPC_EINVAL, "\"n\" must be a decimal integer string");
    }
}

TEST(typed_int_digit_limit)
{
    size_t n = PRPC_WIRE_INT_DIGITS_MAX + 1;
    char *json = malloc(n + 128);
    typed_case_t t;
    int rc;
    CHECK(json != NULL);
    /* Exactly the limit is accepted... */
    sprintf(json, "[{\"name\": \"n\", \"kind\": \"int\", \"value\": \"1%0*d\"}]",
            (int)(n - 2), 0);
    rc = typed(&t, "small", json, 1);
    typed_done(&t);
    CHECK_EQ_INT(rc, 0);
    /* ...one digit more is not. */
    sprintf(json, "[{\"name\": \"n\", \"kind\": \"int\", \"value\": \"1%0*d\"}]",
            (int)(n - 1), 0);
    rc = typed(&t, "small", json, 1);
    typed_done(&t);
    free(json);
    CHECK_ERR(rc, t.err, PRPC_EINVAL, "\"n\" must be a decimal integer string");
}

TEST(typed_float_bool_str_errors)
{
    static const char *bad_float[] = {"\"3ff800000000000\"", "\"3FF8000000000000\"",
                                      "\"3ff80000000000000\"", "\"3ff800000000000g\"", "1.5",
                                      "null"};
    char json[512];
    for (size_t i = 0; i < PRPC_ARRAY_LEN(bad_float); i++) {
        snprintf(json, sizeof(json),
                 "[" ENTRY_N("\"1\"") ", {\"name\": \"x\", \"kind\": \"float\", \"value\": %s}]",
                 bad_float[i]);
        TYPED_ERR("all", json, PRPC_EINVAL, "\"x\" must be the 16 hex digits of a float's bits");
    }
    TYPED_ERR("all",
              "[" ENTRY_N("\"1\"") ", " ENTRY_X ", {\"name\": \"b\", \"kind\": \"bool\", "
              "\"value\": \"true\"}]",
              PRPC_EINVAL, "\"b\" must be true or false");
    TYPED_ERR("all",
              "[" ENTRY_N("\"1\"") ", " ENTRY_X ", {\"name\": \"b\", \"kind\": \"bool\", "
              "\"value\": 1}]",
              PRPC_EINVAL, "\"b\" must be true or false");
    TYPED_ERR("all",
              "[" ENTRY_N("\"1\"") ", " ENTRY_X ", " ENTRY_B ", {\"name\": \"s\", \"kind\": "
              "\"str\", \"value\": 5}]",
              PRPC_EINVAL, "\"s\" must be a string");
    TYPED_ERR("all",
              "[" ENTRY_N("\"1\"") ", " ENTRY_X ", " ENTRY_B ", {\"name\": \"s\", \"kind\": "
              "\"str\"}]",
              PRPC_EINVAL, "\"s\" must be a string");
}

TEST(json_invalid_utf8_refused)
{
    /* Raw bytes that are not UTF-8, and an escaped lone surrogate, never reach
     * a decoder: the body is refused as a whole. */
    static const char *bad[] = {"{\"s\": \"a\xff\"}", "{\"s\": \"\xc3\"}",
                                "{\"s\": \"x\\ud800\"}", "{\"n\xfe\": 1}"};
    prpc_error_t err;
    for (size_t i = 0; i < PRPC_ARRAY_LEN(bad); i++) {
        bson_t *doc = prpc_json_parse(bad[i], strlen(bad[i]), "submit", &err);
        CHECK(doc == NULL);
        CHECK_ERR(err.code, err, PRPC_EINVAL, "submit: invalid JSON");
    }
}

TEST(typed_file_errors)
{
    static const char *bad[] = {
        "\"blob\": \"" HELD "\"",                     /* no size */
        "\"blob\": \"" HELD "\", \"size\": -1",       /* negative */
        "\"blob\": \"" HELD "\", \"size\": \"5\"",    /* size as text */
        "\"blob\": \"" HELD "\", \"size\": 5.5",      /* not an integer */
        "\"size\": 5",                                /* no blob */
        "\"blob\": \"../../../../etc/passwd\", \"size\": 5",
        "\"blob\": \"0A0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a\", "
        "\"size\": 5",
        "\"blob\": \"0a0a\", \"size\": 5",
    };
    char json[1024];
    for (size_t i = 0; i < PRPC_ARRAY_LEN(bad); i++) {
        snprintf(json, sizeof(json),
                 "[" ENTRY_N("\"1\"") ", " ENTRY_X ", " ENTRY_B ", " ENTRY_S
                 ", {\"name\": \"f\", \"kind\": \"file\", %s}]",
                 bad[i]);
        TYPED_ERR("all", json, PRPC_EINVAL, "file \"f\" needs \"blob\" (64 hex) and \"size\"");
    }
    TYPED_ERR("all",
              "[" ENTRY_N("\"1\"") ", " ENTRY_X ", " ENTRY_B ", " ENTRY_S
              ", {\"name\": \"f\", \"kind\": \"file\", \"blob\": \"" NOT_HELD "\", \"size\": 5}]",
              PRPC_ENOTFOUND, "blob " NOT_HELD " of file \"f\" has not been uploaded");
    /* Held, but not at that size. */
    TYPED_ERR("all",
              "[" ENTRY_N("\"1\"") ", " ENTRY_X ", " ENTRY_B ", " ENTRY_S
              ", {\"name\": \"f\", \"kind\": \"file\", \"blob\": \"" HELD "\", \"size\": 6}]",
              PRPC_ENOTFOUND, "blob " HELD " of file \"f\" has not been uploaded");
}

TEST(typed_file_without_a_blob_check_is_not_found)
{
    typed_case_t t;
    bson_iter_t it;
    const prpc_fn_t *f;
    int rc = typed(&t, "small", "[" ENTRY_N("\"1\"") "]", 0);
    CHECK_EQ_INT(rc, 0);
    typed_done(&t);
    memset(&t, 0, sizeof(t));
    CHECK_EQ_INT(prpc_functions_parse(&t.fs, FUNCTIONS, &t.err), 0);
    t.doc = prpc_json_parse("{\"a\": [" ENTRY_N("\"1\"") ", " ENTRY_X ", " ENTRY_B ", " ENTRY_S
                            ", " ENTRY_F "]}",
                            strlen("{\"a\": [" ENTRY_N("\"1\"") ", " ENTRY_X ", " ENTRY_B
                                   ", " ENTRY_S ", " ENTRY_F "]}"),
                            "t", &t.err);
    CHECK(t.doc != NULL && bson_iter_init_find(&it, t.doc, "a"));
    f = prpc_functions_find(&t.fs, "all");
    rc = prpc_wire_check_typed(f, f->args, f->nargs, "outputs", &it, NULL, NULL, NULL, &t.out,
                               t.blobs, &t.nblobs, &t.err);
    typed_done(&t);
    CHECK_ERR(rc, t.err, PRPC_ENOTFOUND, "outputs of all: blob " HELD);
}

/* ---- prpc_wire_decode_submit -------------------------------------------- */

static void small_id(int64_t n, char out[65])
{
    prpc_ident_t *id = prpc_ident_new("small", V_SMALL, 1, NULL);
    prpc_ident_add_int64(id, "n", n, NULL);
    prpc_ident_finish(id, out, NULL);
    prpc_ident_free(id);
}

static int submit(const char *body, prpc_submit_t *s, prpc_error_t *err)
{
    prpc_functions_t fs;
    bson_t *doc;
    int rc;
    memset(&fs, 0, sizeof(fs));
    if (prpc_functions_parse(&fs, FUNCTIONS, err) != 0)
        return 99;
    doc = prpc_json_parse(body, strlen(body), "submit", err);
    if (doc == NULL) {
        prpc_functions_cleanup(&fs);
        return 98;
    }
    rc = prpc_wire_decode_submit(&fs, doc, holds, NULL, s, err);
    if (rc == 0) {
        /* s->fn points into fs: check it before fs goes. */
        rc = strcmp(s->fn->name, "small") == 0 || strcmp(s->fn->name, "all") == 0 ? 0 : 97;
    }
    bson_destroy(doc);
    prpc_functions_cleanup(&fs);
    return rc;
}

TEST(submit_accepted)
{
    char id[65], body[512];
    prpc_submit_t s;
    prpc_error_t err;
    small_id(-42, id);
    snprintf(body, sizeof(body),
             "{\"id\": \"%s\", \"function\": \"small\", \"version\": \"" V_SMALL "\", "
             "\"args\": [" ENTRY_N("\"-42\"") "], \"unknown\": {\"ignored\": true}}",
             id);
    CHECK_EQ_INT(submit(body, &s, &err), 0);
    CHECK_EQ_STR(s.id, id);
    CHECK_EQ_STR(s.args_json, "[{\"name\": \"n\", \"kind\": \"int\", \"value\": \"-42\"}]");
    CHECK_EQ_INT(s.nblobs, 0);
    prpc_submit_cleanup(&s);
    CHECK(s.args_json == NULL && s.blobs == NULL);
}

TEST(submit_with_a_file)
{
    char id[65], body[1024];
    uint8_t raw[32];
    prpc_submit_t s;
    prpc_error_t err;
    prpc_ident_t *ident = prpc_ident_new("all", V_ALL, 5, NULL);
    prpc_ident_add_int64(ident, "n", 1, NULL);
    prpc_ident_add_float(ident, "x", 1.5, NULL);
    prpc_ident_add_bool(ident, "b", 1, NULL);
    prpc_ident_add_str(ident, "s", "h\xc3\xa9\"llo\n", 8, NULL);
    prpc_hex_decode(HELD, 64, raw, 32, NULL);
    prpc_ident_add_file_sha256(ident, "f", raw, NULL);
    prpc_ident_finish(ident, id, NULL);
    prpc_ident_free(ident);
    snprintf(body, sizeof(body),
             "{\"id\": \"%s\", \"function\": \"all\", \"version\": \"" V_ALL "\", \"args\": ["
             ENTRY_N("\"1\"") ", " ENTRY_X ", " ENTRY_B ", " ENTRY_S ", " ENTRY_F "]}",
             id);
    CHECK_EQ_INT(submit(body, &s, &err), 0);
    CHECK_EQ_STR(s.id, id);
    CHECK_EQ_INT(s.nblobs, 1);
    CHECK_EQ_STR(s.blobs[0], HELD);
    prpc_submit_cleanup(&s);
}

TEST(submit_errors)
{
    char id[65], body[1024];
    prpc_submit_t s;
    prpc_error_t err;
    small_id(7, id);
#define SUBMIT_ERR(want, needle, ...)                                                   \
    do {                                                                              \
        snprintf(body, sizeof(body), __VA_ARGS__);                                    \
        CHECK_ERR(submit(body, &s, &err), err, want, needle);                         \
        CHECK(s.args_json == NULL && s.blobs == NULL && s.fn == NULL);                \
    } while (0)
    SUBMIT_ERR(PRPC_EINVAL, "submit needs \"id\" (64 hex), \"function\" and \"version\"",
               "{\"function\": \"small\", \"version\": \"" V_SMALL "\", \"args\": []}");
    SUBMIT_ERR(PRPC_EINVAL, "submit needs \"id\"",
               "{\"id\": \"%.63s\", \"function\": \"small\", \"version\": \"" V_SMALL
               "\", \"args\": []}",
               id);
    SUBMIT_ERR(PRPC_EINVAL, "submit needs \"id\"",
               "{\"id\": \"%s\", \"function\": 5, \"version\": \"" V_SMALL "\", \"args\": []}",
               id);
    SUBMIT_ERR(PRPC_EINVAL, "submit needs \"id\"",
               "{\"id\": \"%s\", \"function\": \"small\", \"version\": \"CDCD\", \"args\": []}",
               id);
    SUBMIT_ERR(PRPC_ENOTFOUND, "function ../../etc/passwd is not registered on this broker",
               "{\"id\": \"%s\", \"function\": \"../../etc/passwd\", \"version\": \"" V_SMALL
               "\", \"args\": []}",
               id);
    SUBMIT_ERR(PRPC_EVERSION, "the caller has version " V_ALL " but the broker has version "
                              V_SMALL,
               "{\"id\": \"%s\", \"function\": \"small\", \"version\": \"" V_ALL
               "\", \"args\": []}",
               id);
    SUBMIT_ERR(PRPC_EINVAL, "submit needs \"args\"",
               "{\"id\": \"%s\", \"function\": \"small\", \"version\": \"" V_SMALL "\"}", id);
    SUBMIT_ERR(PRPC_EINVAL, "\"n\" must be a decimal integer string",
               "{\"id\": \"%s\", \"function\": \"small\", \"version\": \"" V_SMALL
               "\", \"args\": [" ENTRY_N("\"07\"") "]}",
               id);
    SUBMIT_ERR(PRPC_EINVAL, "does not match its arguments (they identify ",
               "{\"id\": \"%s\", \"function\": \"small\", \"version\": \"" V_SMALL
               "\", \"args\": [" ENTRY_N("\"8\"") "]}",
               id);
    SUBMIT_ERR(PRPC_EINVAL, id,
               "{\"id\": \"%s\", \"function\": \"small\", \"version\": \"" V_SMALL
               "\", \"args\": [" ENTRY_N("\"8\"") "]}",
               id);
#undef SUBMIT_ERR
}

/* ---- identifiers and paths ----------------------------------------------- */

#define CID "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
#define LID "1ea5e1ea5e1ea5e1ea5e1ea5e1ea5e00"

TEST(identifier_rules)
{
    prpc_error_t err;
    char k129[130];
    CHECK(prpc_wire_valid_call_id(CID));
    CHECK(!prpc_wire_valid_call_id(LID));
    /* A lease id is what the store issues (32 lowercase hex), nothing else:
     * names the worker used to accept are refused. */
    CHECK(prpc_wire_valid_lease_id(LID));
    CHECK(!prpc_wire_valid_lease_id("lease_1"));
    CHECK(!prpc_wire_valid_lease_id("1EA5E1EA5E1EA5E1EA5E1EA5E1EA5E00"));
    CHECK(!prpc_wire_valid_lease_id(CID));
    CHECK(!prpc_wire_valid_lease_id(NULL));
    CHECK(prpc_wire_valid_checkpoint_key("epoch-1.model_A"));
    CHECK_ERR(prpc_store_check_checkpoint_key("a/b", &err), err, PRPC_EINVAL,
              "checkpoint key \"a/b\" has a character outside [A-Za-z0-9._-] at byte 1");
    CHECK_ERR(prpc_store_check_checkpoint_key("", &err), err, PRPC_EINVAL,
              "checkpoint key is empty");
    memset(k129, 'k', 129);
    k129[129] = '\0';
    CHECK_ERR(prpc_store_check_checkpoint_key(k129, &err), err, PRPC_EINVAL,
              "is longer than 128 bytes");
    k129[128] = '\0';
    CHECK(prpc_wire_valid_checkpoint_key(k129));
    CHECK(prpc_wire_valid_int_text("-120", 4));
    CHECK(!prpc_wire_valid_int_text("-0", 2));
    CHECK(!prpc_wire_valid_int_text("012", 3));
    CHECK(!prpc_wire_valid_int_text("", 0));
    CHECK(prpc_wire_valid_float_text("3ff0000000000000", 16));
    CHECK(!prpc_wire_valid_float_text("3FF0000000000000", 16));
}

TEST(paths)
{
    char p[PRPC_WIRE_PATH_MAX];
    prpc_error_t err;
    CHECK_EQ_INT(prpc_wire_path_call(p, CID, NULL, &err), 0);
    CHECK_EQ_STR(p, "/v1/calls/" CID);
    CHECK_EQ_INT(prpc_wire_path_call(p, CID, "terminate", &err), 0);
    CHECK_EQ_STR(p, "/v1/calls/" CID "/terminate");
    CHECK_ERR(prpc_wire_path_call(p, CID, "explode", &err), err, PRPC_EINVAL,
              "no operation \"explode\" on a call");
    CHECK_ERR(prpc_wire_path_call(p, "../x", NULL, &err), err, PRPC_EINVAL,
              "a call id is 64 lowercase hex digits, got \"../x\"");
    CHECK_EQ_STR(p, "");
    CHECK_EQ_INT(prpc_wire_path_poll_call(p, CID, 60000, 17, 1, &err), 0);
    CHECK_EQ_STR(p, "/v1/calls/" CID "?wait_ms=60000&since=17&arriving=0");
    CHECK_EQ_INT(prpc_wire_path_poll_call(p, CID, 5, -1, 0, &err), 0);
    CHECK_EQ_STR(p, "/v1/calls/" CID "?wait_ms=5&since=-1");
    CHECK_EQ_INT(prpc_wire_path_submit(p, 0, &err), 0);
    CHECK_EQ_STR(p, "/v1/calls");
    CHECK_EQ_INT(prpc_wire_path_submit(p, 500, &err), 0);
    CHECK_EQ_STR(p, "/v1/calls?wait_ms=500");
    CHECK_EQ_INT(prpc_wire_path_lease(p, LID, "heartbeat", &err), 0);
    CHECK_EQ_STR(p, "/v1/leases/" LID "/heartbeat");
    CHECK_ERR(prpc_wire_path_lease(p, "lease_1", "result", &err), err, PRPC_EINVAL,
              "a lease id is 32 lowercase hex digits, got \"lease_1\"");
    CHECK_ERR(prpc_wire_path_lease(p, LID, NULL, &err), err, PRPC_EINVAL, "no operation");
    CHECK_EQ_INT(prpc_wire_path_leases(p, NULL, &err), 0);
    CHECK_EQ_STR(p, "/v1/leases");
    CHECK_EQ_INT(prpc_wire_path_leases(p, LID, &err), 0);
    CHECK_EQ_STR(p, "/v1/leases?request=" LID);
    CHECK_ERR(prpc_wire_path_leases(p, "x&y=1", &err), err, PRPC_EINVAL,
              "a lease request id is 32 lowercase hex digits");
}

/* ---- encoders: the broker's bytes, and each a fixed point of its decoder -- */

/* The text out holds, handed out; NULL when a write failed. */
static char *taken(prpc_buf_t *out)
{
    return prpc_buf_take(out, NULL, NULL);
}

/* 1 when text is a valid doc whose canonical form is text itself. */
static int canonical_fixed_point(prpc_wire_doc_t doc, const char *text)
{
    prpc_error_t err;
    prpc_buf_t out = PRPC_BUF_INIT;
    bson_t *d = prpc_wire_decode(doc, text, strlen(text), PRPC_EPROTO, &err);
    char *again;
    int same;
    if (d == NULL) {
        fprintf(stderr, "  %s refused: %s\n", prpc_wire_doc_name(doc), err.message);
        return 0;
    }
    if (prpc_wire_canonical(doc, d, PRPC_EPROTO, &out, &err) != 0)
        fprintf(stderr, "  canonical %s: %s\n", prpc_wire_doc_name(doc), err.message);
    bson_destroy(d);
    again = taken(&out);
    same = again != NULL && strcmp(again, text) == 0;
    if (!same)
        fprintf(stderr, "  canonical %s:\n    %s\n    %s\n", prpc_wire_doc_name(doc), text,
                again ? again : "(null)");
    free(again);
    return same;
}

static void sample_call(prpc_call_t *c)
{
    memset(c, 0, sizeof(*c));
    memcpy(c->id, CID, 65);
    snprintf(c->function, sizeof(c->function), "say \"hi\"");
    memcpy(c->version, V_ALL, 65);
    c->state = PRPC_CALL_LEASED;
    c->args_json = (char *)"[{\"name\": \"n\", \"kind\": \"int\", \"value\": \"7\"}]";
    c->progress = 12.5;
    c->attempts = 2;
    c->created_ms = 1700000000000;
    c->updated_ms = 1700000000123;
    memcpy(c->lease_id, LID, 33);
    c->lease_deadline_ms = 1700000030000;
}

#define CALL_TEXT(fn)                                                                          \
    "{\"id\": \"" CID "\", \"function\": " fn ", \"version\": \"" V_ALL "\", \"state\": "     \
    "\"leased\", \"progress\": 12.500, \"attempts\": 2, \"created_ms\": 1700000000000, "        \
    "\"updated_ms\": 1700000000123, \"finished_ms\": 0, \"terminate_requested\": false, "       \
    "\"outputs\": null, \"error\": null"

TEST(encode_call_documents)
{
    prpc_call_t c;
    prpc_buf_t out = PRPC_BUF_INIT;
    char *text;
    sample_call(&c);
    prpc_wire_write_call(&out, &c, 0, NULL);
    text = taken(&out);
    CHECK_EQ_STR(text, CALL_TEXT("\"say \\\"hi\\\"\"") "}");
    CHECK(canonical_fixed_point(PRPC_WIRE_CALL, text));
    free(text);
    prpc_wire_write_call_answer(&out, &c,
                                "[{\"name\": \"m\", \"kind\": \"int\", \"value\": \"1\"}]");
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"call\": " CALL_TEXT("\"say \\\"hi\\\"\"") ", \"arriving_outputs\": "
                       "[{\"name\": \"m\", \"kind\": \"int\", \"value\": \"1\"}]}}");
    CHECK(canonical_fixed_point(PRPC_WIRE_CALL_ANSWER, text));
    free(text);
    c.state = PRPC_CALL_FAILED;
    c.error_json = (char *)"{\"type\": \"ValueError\", \"message\": \"bad\", \"traceback\": \"\"}";
    prpc_wire_write_submitted(&out, 1, &c);
    text = taken(&out);
    CHECK(strncmp(text, "{\"created\": true, \"call\": {\"id\": \"" CID "\"", 48) == 0);
    CHECK(strstr(text, "\"state\": \"failed\"") != NULL);
    CHECK(strstr(text, "\"error\": {\"type\": \"ValueError\", \"message\": \"bad\", "
                       "\"traceback\": \"\"}}}") != NULL);
    CHECK(canonical_fixed_point(PRPC_WIRE_SUBMITTED, text));
    free(text);
}

TEST(encode_lease_and_worker_documents)
{
    prpc_call_t c;
    prpc_checkpoint_t ck[2];
    prpc_buf_t out = PRPC_BUF_INIT;
    prpc_wire_function_ref_t fns[] = {{"f", V_ALL}, {"g", V_SMALL}};
    prpc_gpu_info_t gpu;
    char *text;
    sample_call(&c);
    memset(ck, 0, sizeof(ck));
    snprintf(ck[0].key, sizeof(ck[0].key), "epoch");
    memcpy(ck[0].sha256, HELD, 65);
    ck[0].size = 5;
    snprintf(ck[1].key, sizeof(ck[1].key), "model.pt");
    memcpy(ck[1].sha256, NOT_HELD, 65);
    ck[1].size = 9007199254740992ULL;
    prpc_wire_write_lease(&out, &c, 5000, ck, 2);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"lease\": {\"id\": \"" LID "\", \"call_id\": \"" CID "\", "
                       "\"deadline_ms\": 1700000030000, \"heartbeat_ms\": 5000}, \"call\": "
                       CALL_TEXT("\"say \\\"hi\\\"\"") ", \"args\": [{\"name\": \"n\", \"kind\": "
                       "\"int\", \"value\": \"7\"}]}, \"checkpoints\": [{\"key\": \"epoch\", "
                       "\"blob\": \"" HELD "\", \"size\": 5}, {\"key\": \"model.pt\", \"blob\": \""
                       NOT_HELD "\", \"size\": 9007199254740992}]}");
    CHECK(canonical_fixed_point(PRPC_WIRE_LEASE, text));
    free(text);
    prpc_wire_write_lease(&out, &c, 5000, NULL, 0);
    text = taken(&out);
    CHECK(strstr(text, "\"checkpoints\": []}") != NULL);
    free(text);

    memset(&gpu, 0, sizeof(gpu));
    gpu.index = 1;
    snprintf(gpu.name, sizeof(gpu.name), "NVIDIA H100");
    gpu.total_bytes = 80ULL << 30;
    gpu.free_bytes = 79ULL << 30;
    prpc_wire_write_lease_request(&out, "w-1", fns, 2, 20000, &gpu, 1);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"worker\": \"w-1\", \"functions\": [{\"name\": \"f\", \"version\": \""
                       V_ALL "\"}, {\"name\": \"g\", \"version\": \"" V_SMALL "\"}], "
                       "\"wait_ms\": 20000, \"gpus\": [{\"index\": 1, \"name\": \"NVIDIA H100\", "
                       "\"uuid\": \"\", \"total_bytes\": 85899345920, \"free_bytes\": "
                       "84825604096}]}");
    CHECK(canonical_fixed_point(PRPC_WIRE_LEASE_REQUEST, text));
    free(text);

    prpc_wire_write_heartbeat(&out, CID, 33.333);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"call_id\": \"" CID "\", \"progress\": 33.33}");
    CHECK(canonical_fixed_point(PRPC_WIRE_HEARTBEAT, text));
    free(text);
    prpc_wire_write_heartbeat_answer(&out, 1, 1700000030000);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"terminate\": true, \"deadline_ms\": 1700000030000}");
    CHECK(canonical_fixed_point(PRPC_WIRE_HEARTBEAT_ANSWER, text));
    CHECK_EQ_INT(prpc_wire_heartbeat_terminates(text, strlen(text)), 1);
    CHECK_EQ_INT(prpc_wire_heartbeat_terminates("{\"terminate\": false}", 20), 0);
    CHECK_EQ_INT(prpc_wire_heartbeat_terminates("not json", 8), 0);
    free(text);
    prpc_wire_write_checkpoint(&out, CID, "epoch", HELD, 5);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"call_id\": \"" CID "\", \"key\": \"epoch\", \"blob\": \"" HELD
                       "\", \"size\": 5}");
    CHECK(canonical_fixed_point(PRPC_WIRE_CHECKPOINT, text));
    free(text);
    prpc_wire_write_outputs(&out, CID, "[{\"name\": \"m\", \"kind\": \"bool\", \"value\": true}]");
    text = taken(&out);
    CHECK(canonical_fixed_point(PRPC_WIRE_OUTPUTS, text));
    free(text);
    prpc_wire_write_outputs_answer(&out, CID);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"call_id\": \"" CID "\"}");
    CHECK(canonical_fixed_point(PRPC_WIRE_OUTPUTS_ANSWER, text));
    free(text);
    {
        prpc_buf_t rec = PRPC_BUF_INIT;
        char *err_json;
        prpc_wire_write_error_record(&rec, NULL, "it broke\n", NULL);
        err_json = taken(&rec);
        CHECK_EQ_STR(err_json, "{\"type\": \"Error\", \"message\": \"it broke\\n\", "
                               "\"traceback\": \"\"}");
        prpc_wire_write_result(&out, CID, "failed", NULL, err_json);
        free(err_json);
    }
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"call_id\": \"" CID "\", \"state\": \"failed\", \"outputs\": [], "
                       "\"error\": {\"type\": \"Error\", \"message\": \"it broke\\n\", "
                       "\"traceback\": \"\"}}");
    CHECK(canonical_fixed_point(PRPC_WIRE_RESULT, text));
    free(text);
}

TEST(encode_client_and_broker_documents)
{
    prpc_call_t c;
    prpc_buf_t out = PRPC_BUF_INIT;
    prpc_wire_submit_ref_t subs[2] = {
        {CID, "small", V_SMALL, "[{\"name\": \"n\", \"kind\": \"int\", \"value\": \"-42\"}]"},
        {HELD, "all", V_ALL, NULL}};
    prpc_wire_batch_result_t r[2];
    const char ids[2][65] = {CID, HELD};
    const char *nodes[] = {"127.0.0.1:8470", "10.0.0.2:8470"};
    const int64_t counts[PRPC_CALL_NSTATES] = {1, 2, 3, 4, 5};
    prpc_wire_metrics_t m;
    char *text;

    prpc_wire_write_submit(&out, &subs[0]);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"id\": \"" CID "\", \"function\": \"small\", \"version\": \"" V_SMALL
                       "\", \"args\": [{\"name\": \"n\", \"kind\": \"int\", \"value\": \"-42\"}]}");
    CHECK(canonical_fixed_point(PRPC_WIRE_SUBMIT, text));
    free(text);
    prpc_wire_write_batch(&out, subs, 2);
    text = taken(&out);
    CHECK(strstr(text, "{\"calls\": [{\"id\": \"" CID "\"") == text);
    CHECK(strstr(text, "\"args\": []}]}") != NULL);
    CHECK(canonical_fixed_point(PRPC_WIRE_BATCH, text));
    free(text);
    prpc_wire_write_wait(&out, ids, 2, 60000);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"ids\": [\"" CID "\", \"" HELD "\"], \"wait_ms\": 60000}");
    CHECK(canonical_fixed_point(PRPC_WIRE_WAIT, text));
    free(text);

    sample_call(&c);
    memset(r, 0, sizeof(r));
    r[0].code = PRPC_EVERSION;
    r[0].message = "function all: versions \"differ\"";
    r[1].created = 0;
    r[1].call = &c;
    prpc_wire_write_batch_answer(&out, r, 2);
    text = taken(&out);
    CHECK(strstr(text, "{\"results\": [{\"error\": {\"code\": \"EVERSION\", \"message\": "
                       "\"function all: versions \\\"differ\\\"\"}}, {\"created\": false, "
                       "\"call\": {\"id\": \"" CID "\"") == text);
    CHECK(canonical_fixed_point(PRPC_WIRE_BATCH_ANSWER, text));
    free(text);
    prpc_wire_write_wait_answer(&out, &c, 1, ids + 1, 1);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"calls\": [" CALL_TEXT("\"say \\\"hi\\\"\"") "}], \"missing\": [\"" HELD
                       "\"]}");
    CHECK(canonical_fixed_point(PRPC_WIRE_WAIT_ANSWER, text));
    free(text);
    prpc_wire_write_wait_answer(&out, NULL, 0, NULL, 0);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"calls\": [], \"missing\": []}");
    free(text);

    prpc_wire_write_error(&out, PRPC_ENOTFOUND, "no such call\n");
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"error\": {\"code\": \"ENOTFOUND\", \"message\": \"no such call\\n\"}}");
    CHECK(canonical_fixed_point(PRPC_WIRE_ERROR, text));
    free(text);
    prpc_wire_write_deleted(&out);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"deleted\": true}");
    CHECK(canonical_fixed_point(PRPC_WIRE_DELETED, text));
    free(text);
    prpc_wire_write_partial(&out, 4194304);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"partial\": 4194304}");
    CHECK(canonical_fixed_point(PRPC_WIRE_PARTIAL, text));
    free(text);
    prpc_wire_write_committed(&out, 17);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"size\": 17}");
    CHECK(canonical_fixed_point(PRPC_WIRE_COMMITTED, text));
    free(text);
    prpc_wire_write_health(&out);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"ok\": true, \"node\": \"broker\", \"version\": \"0.1.0\"}");
    CHECK(canonical_fixed_point(PRPC_WIRE_HEALTH, text));
    free(text);
    prpc_wire_write_stats(&out, "all", counts);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"function\": \"all\", \"queued\": 1, \"leased\": 2, \"done\": 3, "
                       "\"failed\": 4, \"terminated\": 5}");
    CHECK(canonical_fixed_point(PRPC_WIRE_STATS, text));
    free(text);
    prpc_wire_write_nodes(&out, nodes, 2);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"nodes\": [\"127.0.0.1:8470\", \"10.0.0.2:8470\"]}");
    CHECK(canonical_fixed_point(PRPC_WIRE_NODES, text));
    free(text);
    memset(&m, 0, sizeof(m));
    m.requests = 9;
    m.auth_refused = 1;
    prpc_wire_write_metrics(&out, &m);
    text = taken(&out);
    CHECK(strstr(text, "{\"requests\": 9, \"bytes_received\": 0, ") == text);
    CHECK(strstr(text, "\"results_refused\": 0, \"auth_refused\": 1}") != NULL);
    CHECK(canonical_fixed_point(PRPC_WIRE_METRICS, text));
    free(text);
}

TEST(functions_listing_is_its_document)
{
    prpc_functions_t fs;
    prpc_error_t err;
    memset(&fs, 0, sizeof(fs));
    CHECK_EQ_INT(prpc_functions_parse(&fs, FUNCTIONS, &err), 0);
    CHECK(canonical_fixed_point(PRPC_WIRE_FUNCTIONS, fs.listing_json));
    prpc_functions_cleanup(&fs);
}

TEST(document_names)
{
    for (int i = 0; i < PRPC_WIRE_NDOCS; i++) {
        CHECK(prpc_wire_doc_name(i) != NULL);
        CHECK_EQ_INT(prpc_wire_doc_find(prpc_wire_doc_name(i)), i);
    }
    CHECK(prpc_wire_doc_name(PRPC_WIRE_NDOCS) == NULL);
    CHECK_EQ_INT(prpc_wire_doc_find("nonsense"), -1);
}

/* ---- malformed documents: refused, naming the field ---------------------- */

/* The error of checking text as doc (answers: EPROTO). */
static int refused(prpc_wire_doc_t doc, int code, const char *text, prpc_error_t *err)
{
    bson_t *d = prpc_wire_decode(doc, text, strlen(text), code, err);
    if (d != NULL) {
        bson_destroy(d);
        return 0;
    }
    return err->code;
}

#define LEASE_WITH(head, ck)                                                                   \
    "{\"lease\": " head ", \"call\": {\"id\": \"" CID "\", \"function\": \"f\", \"version\": \"" \
    V_ALL "\", \"state\": \"leased\", \"args\": []}, \"checkpoints\": " ck "}"

TEST(malformed_documents_name_the_field)
{
    prpc_error_t err;
    CHECK_ERR(refused(PRPC_WIRE_LEASE, PRPC_EPROTO,
                      LEASE_WITH("{\"id\": \"lease_1\", \"call_id\": \"" CID "\"}", "[]"), &err),
              err, PRPC_EPROTO,
              "a lease answer: \"lease.id\" must be a lease id (32 lowercase hex digits)");
    CHECK_ERR(refused(PRPC_WIRE_LEASE, PRPC_EPROTO,
                      LEASE_WITH("{\"id\": \"" LID "\", \"call_id\": \"" CID "\"}",
                                 "[{\"key\": \"ok\", \"blob\": \"" HELD "\", \"size\": 1}, "
                                 "{\"key\": \"a b\", \"blob\": \"" HELD "\", \"size\": 1}]"),
                      &err),
              err, PRPC_EPROTO,
              "\"checkpoints[1].key\": checkpoint key \"a b\" has a character outside");
    CHECK_ERR(refused(PRPC_WIRE_LEASE, PRPC_EPROTO,
                      LEASE_WITH("{\"id\": \"" LID "\", \"call_id\": \"" CID "\"}",
                                 "[{\"key\": \"k\", \"blob\": \"" HELD "\", \"size\": -1}]"),
                      &err),
              err, PRPC_EPROTO, "\"checkpoints[0].size\" must be a byte count");
    CHECK_ERR(refused(PRPC_WIRE_LEASE, PRPC_EPROTO,
                      "{\"lease\": {\"id\": \"" LID "\", \"call_id\": \"" CID "\"}}", &err),
              err, PRPC_EPROTO, "a lease answer: \"call\" is missing");
    CHECK_ERR(refused(PRPC_WIRE_HEARTBEAT, PRPC_EINVAL,
                      "{\"call_id\": \"" CID "\", \"progress\": 100.5}", &err),
              err, PRPC_EINVAL,
              "a heartbeat needs \"call_id\" (64 hex) and \"progress\" (0..100): \"progress\" "
              "must be a number from 0 to 100");
    CHECK_ERR(refused(PRPC_WIRE_HEARTBEAT, PRPC_EINVAL,
                      "{\"call_id\": \"" CID "\", \"progress\": \"50\"}", &err),
              err, PRPC_EINVAL, "\"progress\" must be a number from 0 to 100");
    CHECK_ERR(refused(PRPC_WIRE_CHECKPOINT, PRPC_EINVAL,
                      "{\"call_id\": \"" CID "\", \"key\": \"k\", \"blob\": \"" V_ALL "X\", "
                      "\"size\": 1}",
                      &err),
              err, PRPC_EINVAL, "\"blob\" must be 64 lowercase hex digits");
    CHECK_ERR(refused(PRPC_WIRE_RESULT, PRPC_EINVAL,
                      "{\"call_id\": \"" CID "\", \"state\": \"running\"}", &err),
              err, PRPC_EINVAL, "\"state\" must be done, failed or terminated");
    CHECK_ERR(refused(PRPC_WIRE_RESULT, PRPC_EINVAL,
                      "{\"call_id\": \"" CID "\", \"state\": \"done\"}", &err),
              err, PRPC_EINVAL, "a done result needs \"outputs\"");
    CHECK_ERR(refused(PRPC_WIRE_RESULT, PRPC_EINVAL,
                      "{\"call_id\": \"" CID "\", \"state\": \"done\", \"outputs\": "
                      "[{\"name\": \"n\", \"kind\": \"int\", \"value\": \"007\"}]}",
                      &err),
              err, PRPC_EINVAL, "outputs of result: \"n\" must be a decimal integer string");
    CHECK_ERR(refused(PRPC_WIRE_RESULT, PRPC_EINVAL,
                      "{\"call_id\": \"" CID "\", \"state\": \"done\", \"outputs\": "
                      "[{\"name\": \"n\", \"kind\": \"complex\", \"value\": \"1\"}]}",
                      &err),
              err, PRPC_EINVAL, "outputs of result: \"n\" needs a kind");
    CHECK_ERR(refused(PRPC_WIRE_OUTPUTS, PRPC_EINVAL,
                      "{\"call_id\": \"" CID "\", \"outputs\": [{\"name\": \"a\", \"kind\": "
                      "\"bool\", \"value\": true}, {\"name\": \"a\", \"kind\": \"bool\", "
                      "\"value\": false}]}",
                      &err),
              err, PRPC_EINVAL, "outputs of outputs: \"a\" appears twice");
    CHECK_ERR(refused(PRPC_WIRE_SUBMIT, PRPC_EINVAL,
                      "{\"id\": \"" CID "\", \"function\": \"f\", \"version\": \"" V_ALL "\", "
                      "\"args\": [{\"name\": \"f\", \"kind\": \"file\", \"blob\": \"" HELD "\"}]}",
                      &err),
              err, PRPC_EINVAL, "args of submit: file \"f\" needs \"blob\" (64 hex) and \"size\"");
    CHECK_ERR(refused(PRPC_WIRE_WAIT, PRPC_EINVAL, "{\"ids\": []}", &err), err, PRPC_ELIMIT,
              "a wait needs \"ids\": [call id, ...]: \"ids\" must hold 1 to 1000 entries, got 0");
    CHECK_ERR(refused(PRPC_WIRE_WAIT, PRPC_EINVAL, "{\"ids\": [\"" CID "\", \"nope\"]}", &err),
              err, PRPC_EINVAL, "\"ids[1]\" must be a call id");
    CHECK_ERR(refused(PRPC_WIRE_LEASE_REQUEST, PRPC_EINVAL,
                      "{\"worker\": 5, \"functions\": []}", &err),
              err, PRPC_EINVAL, "needs \"worker\" (a name) and \"functions\": \"worker\" must be");
    CHECK_ERR(refused(PRPC_WIRE_CALL_ANSWER, PRPC_EPROTO,
                      "{\"call\": {\"id\": \"" CID "\", \"function\": \"f\", \"version\": \"" V_ALL
                      "\", \"state\": \"waiting\"}}",
                      &err),
              err, PRPC_EPROTO,
              "\"call.state\" must be queued, leased, done, failed or terminated");
    CHECK_ERR(refused(PRPC_WIRE_CALL_ANSWER, PRPC_EPROTO, "[1, 2]", &err), err, PRPC_EPROTO,
              "\"call\" is missing");
    CHECK_ERR(refused(PRPC_WIRE_CALL_ANSWER, PRPC_EPROTO, "{\"call\": ", &err), err, PRPC_EPROTO,
              "invalid JSON");
}

TEST(lax_fields_and_unknown_fields_are_left_out)
{
    prpc_error_t err;
    prpc_buf_t out = PRPC_BUF_INIT;
    /* The broker ignores an error record's non-strings and unknown fields:
     * so does the canonical form, rather than refuse the result. */
    const char *in = "{\"zz\": 1, \"call_id\": \"" CID "\", \"state\": \"failed\", \"error\": "
                     "{\"type\": 5, \"message\": \"m\", \"extra\": [1]}}";
    bson_t *d = prpc_wire_decode(PRPC_WIRE_RESULT, in, strlen(in), PRPC_EINVAL, &err);
    char *text;
    CHECK(d != NULL);
    CHECK_EQ_INT(prpc_wire_canonical(PRPC_WIRE_RESULT, d, PRPC_EINVAL, &out, &err), 0);
    bson_destroy(d);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"call_id\": \"" CID "\", \"state\": \"failed\", \"error\": "
                       "{\"message\": \"m\"}}");
    free(text);
}

TEST(json_carried_through)
{
    prpc_buf_t out = PRPC_BUF_INIT;
    bson_t *d = bson_new_from_json(
        (const uint8_t *)"{\"a\": [1, \"x\\ny\", true, null, {\"b\": 2.5}], \"c\": {}}", -1, NULL);
    char *text;
    CHECK(d != NULL);
    prpc_wire_write_json_doc(&out, d, 0);
    bson_destroy(d);
    text = taken(&out);
    CHECK_EQ_STR(text, "{\"a\": [1, \"x\\ny\", true, null, {\"b\": 2.5}], \"c\": {}}");
    free(text);
}

TEST_MAIN(TEST_ENTRY(json_parse_errors), TEST_ENTRY(valid_hex),
          TEST_ENTRY(functions_parse_and_listing), TEST_ENTRY(functions_parse_errors),
          TEST_ENTRY(functions_duplicate_key_is_not_leaked), TEST_ENTRY(typed_canonical_output),
          TEST_ENTRY(typed_unknown_fields_are_ignored_and_dropped),
          TEST_ENTRY(typed_file_without_filename_and_long_filename),
          TEST_ENTRY(typed_shape_errors), TEST_ENTRY(typed_int_errors),
          TEST_ENTRY(typed_int_digit_limit), TEST_ENTRY(typed_float_bool_str_errors),
          TEST_ENTRY(json_invalid_utf8_refused),
          TEST_ENTRY(typed_file_errors), TEST_ENTRY(typed_file_without_a_blob_check_is_not_found),
          TEST_ENTRY(submit_accepted), TEST_ENTRY(submit_with_a_file), TEST_ENTRY(submit_errors),
          TEST_ENTRY(identifier_rules), TEST_ENTRY(paths),
          TEST_ENTRY(encode_call_documents), TEST_ENTRY(encode_lease_and_worker_documents),
          TEST_ENTRY(encode_client_and_broker_documents),
          TEST_ENTRY(functions_listing_is_its_document), TEST_ENTRY(document_names),
          TEST_ENTRY(malformed_documents_name_the_field),
          TEST_ENTRY(lax_fields_and_unknown_fields_are_left_out), TEST_ENTRY(json_carried_through))
