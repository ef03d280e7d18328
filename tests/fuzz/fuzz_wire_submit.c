/*
 * fuzz_wire_submit.c - libFuzzer target: arbitrary bytes as a POST /v1/calls
 * body, through prpc_json_parse and prpc_wire_decode_submit against a fixed
 * set of functions covering every kind (int, float, bool, str, file).
 *
 * A fuzzer cannot guess a call id (a SHA-256), so besides the input as it is,
 * the harness checks the input's "args" with prpc_wire_check_typed, computes
 * the id they identify, and submits again with that id. Invariants:
 *  - every failure has an error code and a message;
 *  - typed args that check out, with their own id, are always accepted, with
 *    the same canonical JSON and blob list;
 *  - an accepted submit's canonical args are a fixed point: submitting them
 *    again gives the same id and the same canonical text;
 *  - a file argument is only accepted when has_blob said yes for its blob.
 */
#include "fuzz_util.h"
#include "util.h"
#include "wire.h"

#include <stdint.h>

static prpc_functions_t fns;

static const char FUNCTIONS[] =
    "[{\"name\": \"p2prpc_all\", \"version\": "
    "\"abababababababababababababababababababababababababababababababab\", \"args\": ["
    "{\"name\": \"n\", \"kind\": \"int\"}, {\"name\": \"x\", \"kind\": \"float\"}, "
    "{\"name\": \"b\", \"kind\": \"bool\"}, {\"name\": \"s\", \"kind\": \"str\"}, "
    "{\"name\": \"f\", \"kind\": \"file\"}], \"returns\": [{\"name\": \"m\", \"kind\": \"int\"}]}, "
    "{\"name\": \"p2prpc_small\", \"version\": "
    "\"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\", \"args\": ["
    "{\"name\": \"n\", \"kind\": \"int\"}], \"returns\": []}, "
    "{\"name\": \"p2prpc_files\", \"version\": "
    "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\", \"args\": ["
    "{\"name\": \"a\", \"kind\": \"file\"}, {\"name\": \"b\", \"kind\": \"file\"}], "
    "\"returns\": []}, "
    "{\"name\": \"p2prpc_none\", \"version\": "
    "\"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\", \"args\": [], "
    "\"returns\": []}]";

/* The receiver "holds" blobs whose name starts with 0-7, at any size. */
static int has_blob(void *ud, const char *sha, uint64_t size)
{
    (void)ud;
    (void)size;
    FUZZ_CHECK(prpc_valid_hex(sha, 64), "has_blob asked about \"%.80s\"", sha);
    return sha[0] >= '0' && sha[0] <= '7';
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    prpc_error_t err;
    (void)argc;
    (void)argv;
    FUZZ_CHECK(prpc_functions_parse(&fns, FUNCTIONS, &err) == 0, "%s", err.message);
    return 0;
}

static void check_fail(int rc, const prpc_error_t *err)
{
    FUZZ_CHECK(rc < 0 && err->code == rc && err->message[0] != '\0',
               "failure %d without a matching error (%d, \"%s\")", rc, err->code, err->message);
}

static void check_accepted(const prpc_submit_t *s)
{
    size_t files = 0;
    FUZZ_CHECK(s->fn != NULL && prpc_valid_hex(s->id, 64) && s->args_json != NULL,
               "accepted submit is incomplete");
    for (size_t i = 0; i < s->fn->nargs; i++)
        files += s->fn->args[i].kind == PRPC_IDENT_TAG_FILE;
    FUZZ_CHECK(s->nblobs == files, "%zu blobs for %zu file arguments", s->nblobs, files);
    for (size_t i = 0; i < s->nblobs; i++)
        FUZZ_CHECK(prpc_valid_hex(s->blobs[i], 64) && s->blobs[i][0] <= '7',
                   "blob %zu (%.70s) was not held", i, s->blobs[i]);
}

/* Submit {"id", "function", "version", "args": canonical} again: the same. */
static void check_fixed_point(const prpc_submit_t *s)
{
    prpc_buf_t body = PRPC_BUF_INIT;
    prpc_submit_t again;
    prpc_error_t err;
    bson_t *doc;
    char *text;
    size_t len = 0;
    int rc;

    prpc_buf_printf(&body, "{\"id\": \"%s\", \"function\": ", s->id);
    prpc_buf_json_str(&body, s->fn->name, strlen(s->fn->name));
    prpc_buf_printf(&body, ", \"version\": \"%s\", \"args\": %s}", s->fn->version, s->args_json);
    text = prpc_buf_take(&body, &len, &err);
    FUZZ_CHECK(text != NULL, "%s", err.message);
    doc = prpc_json_parse(text, len, "submit", &err);
    FUZZ_CHECK(doc != NULL, "canonical submit does not parse (%s): %s", err.message, text);
    rc = prpc_wire_decode_submit(&fns, doc, has_blob, NULL, &again, &err);
    FUZZ_CHECK(rc == 0, "canonical submit refused (%s): %s", err.message, text);
    FUZZ_CHECK(strcmp(again.id, s->id) == 0, "id changed: %s -> %s", s->id, again.id);
    FUZZ_CHECK(strcmp(again.args_json, s->args_json) == 0, "canonical args changed:\n%s\n%s",
               s->args_json, again.args_json);
    prpc_submit_cleanup(&again);
    bson_destroy(doc);
    free(text);
}

/* Check the input's args against the function it names (or the first one),
 * compute their id, and submit with it: it must be accepted. */
static void submit_with_computed_id(const bson_t *doc)
{
    const char *name = prpc_doc_str(doc, "function");
    const prpc_fn_t *f = name ? prpc_functions_find(&fns, name) : NULL;
    prpc_ident_t *id;
    prpc_buf_t canon = PRPC_BUF_INIT;
    char blobs[PRPC_WIRE_ARGS_MAX][65], hex[65];
    size_t nblobs = 0;
    prpc_error_t err;
    bson_iter_t it;
    bson_t fixed;
    prpc_submit_t s;
    char *canon_text;
    int rc;

    if (f == NULL)
        f = &fns.fns[0];
    if (!bson_iter_init_find(&it, doc, "args"))
        return;
    id = prpc_ident_new(f->name, f->version, (uint32_t)f->nargs, &err);
    FUZZ_CHECK(id != NULL, "%s", err.message);
    rc = prpc_wire_check_typed(f, f->args, f->nargs, "arguments", &it, has_blob, NULL, id,
                               &canon, blobs, &nblobs, &err);
    if (rc == 0)
        rc = prpc_ident_finish(id, hex, &err);
    prpc_ident_free(id);
    if (rc != 0) {
        check_fail(rc, &err);
        prpc_buf_cleanup(&canon);
        return;
    }
    canon_text = prpc_buf_take(&canon, NULL, &err);
    FUZZ_CHECK(canon_text != NULL, "%s", err.message);

    bson_init(&fixed);
    BSON_APPEND_UTF8(&fixed, "id", hex);
    BSON_APPEND_UTF8(&fixed, "function", f->name);
    BSON_APPEND_UTF8(&fixed, "version", f->version);
    bson_iter_init_find(&it, doc, "args");
    FUZZ_CHECK(bson_append_iter(&fixed, "args", -1, &it), "cannot copy args");
    rc = prpc_wire_decode_submit(&fns, &fixed, has_blob, NULL, &s, &err);
    FUZZ_CHECK(rc == 0, "args that checked out were refused with their own id: %s",
               err.message);
    FUZZ_CHECK(strcmp(s.id, hex) == 0, "id %s, computed %s", s.id, hex);
    FUZZ_CHECK(strcmp(s.args_json, canon_text) == 0, "canonical text differs:\n%s\n%s",
               s.args_json, canon_text);
    FUZZ_CHECK(s.nblobs == nblobs, "%zu blobs, checked %zu", s.nblobs, nblobs);
    for (size_t i = 0; i < nblobs; i++)
        FUZZ_CHECK(strcmp(s.blobs[i], blobs[i]) == 0, "blob %zu differs", i);
    check_accepted(&s);
    check_fixed_point(&s);
    prpc_submit_cleanup(&s);
    bson_destroy(&fixed);
    free(canon_text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    prpc_error_t err;
    prpc_submit_t s;
    bson_t *doc;
    int rc;

    prpc_error_clear(&err);
    doc = prpc_json_parse((const char *)data, size, "submit", &err);
    if (doc == NULL) {
        check_fail(err.code, &err);
        return 0;
    }
    rc = prpc_wire_decode_submit(&fns, doc, has_blob, NULL, &s, &err);
    if (rc == 0) {
        check_accepted(&s);
        check_fixed_point(&s);
        prpc_submit_cleanup(&s);
    } else {
        check_fail(rc, &err);
        FUZZ_CHECK(s.args_json == NULL && s.blobs == NULL, "a refused submit holds memory");
    }
    submit_with_computed_id(doc);
    bson_destroy(doc);
    return 0;
}
