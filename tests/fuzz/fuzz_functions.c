/*
 * fuzz_functions.c - libFuzzer target: arbitrary bytes as the functions
 * declaration a broker is started with (prpc_functions_parse).
 *
 * Invariants when the parse succeeds: 1..PRPC_WIRE_FUNCTIONS_MAX functions,
 * each with a non-empty bounded name, a 64-hex version and known kinds, every
 * name found again by prpc_functions_find; and the GET /v1/functions listing
 * is itself a declaration that parses back to the very same listing (the
 * broker's answer is what a worker compares its own declaration against).
 * When it fails: an error code and a message.
 */
#include "fuzz_util.h"
#include "util.h"
#include "wire.h"

#include <stdint.h>

static int kind_ok(char k)
{
    return k == PRPC_IDENT_TAG_INT || k == PRPC_IDENT_TAG_FLOAT || k == PRPC_IDENT_TAG_BOOL ||
           k == PRPC_IDENT_TAG_STR || k == PRPC_IDENT_TAG_FILE;
}

static void check_decls(const prpc_decl_t *d, size_t n)
{
    FUZZ_CHECK(n <= PRPC_WIRE_ARGS_MAX, "%zu declarations", n);
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(d[i].name[0] != '\0' && strlen(d[i].name) <= PRPC_WIRE_NAME_MAX,
                   "declaration %zu has a bad name", i);
        FUZZ_CHECK(kind_ok(d[i].kind), "declaration %zu has kind %d", i, d[i].kind);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    prpc_functions_t fs, again;
    prpc_error_t err;
    char *json = malloc(size + 1);
    int rc;

    FUZZ_CHECK(json != NULL, "out of memory");
    memcpy(json, data, size);
    json[size] = '\0';
    memset(&fs, 0, sizeof(fs));
    memset(&again, 0, sizeof(again));
    prpc_error_clear(&err);
    rc = prpc_functions_parse(&fs, json, &err);
    if (rc != 0) {
        FUZZ_CHECK(rc < 0 && err.code == rc && err.message[0] != '\0',
                   "failure %d without a matching error (%d, \"%s\")", rc, err.code,
                   err.message);
        prpc_functions_cleanup(&fs);
        free(json);
        return 0;
    }
    FUZZ_CHECK(fs.n >= 1 && fs.n <= PRPC_WIRE_FUNCTIONS_MAX, "%zu functions", fs.n);
    FUZZ_CHECK(fs.listing_json != NULL, "no listing");
    for (size_t i = 0; i < fs.n; i++) {
        const prpc_fn_t *f = &fs.fns[i];
        FUZZ_CHECK(f->name[0] != '\0' && strlen(f->name) <= PRPC_WIRE_NAME_MAX,
                   "function %zu has a bad name", i);
        FUZZ_CHECK(prpc_valid_hex(f->version, 64), "function %s version %s", f->name,
                   f->version);
        FUZZ_CHECK(prpc_functions_find(&fs, f->name) == f, "function %s is not found again",
                   f->name);
        check_decls(f->args, f->nargs);
        check_decls(f->returns, f->nreturns);
    }

    /* The listing, unwrapped from {"functions": [...]}, is a declaration. */
    {
        static const char head[] = "{\"functions\": ";
        size_t len = strlen(fs.listing_json);
        char *inner;
        FUZZ_CHECK(len > sizeof(head) && memcmp(fs.listing_json, head, sizeof(head) - 1) == 0 &&
                       fs.listing_json[len - 1] == '}',
                   "listing has an unexpected shape: %s", fs.listing_json);
        inner = strndup(fs.listing_json + sizeof(head) - 1, len - sizeof(head));
        FUZZ_CHECK(inner != NULL, "out of memory");
        rc = prpc_functions_parse(&again, inner, &err);
        FUZZ_CHECK(rc == 0, "the listing does not parse back (%s): %s", err.message, inner);
        FUZZ_CHECK(again.n == fs.n, "%zu functions became %zu", fs.n, again.n);
        FUZZ_CHECK(strcmp(again.listing_json, fs.listing_json) == 0,
                   "the listing is not stable:\n%s\n%s", fs.listing_json, again.listing_json);
        free(inner);
    }
    prpc_functions_cleanup(&again);
    prpc_functions_cleanup(&fs);
    free(json);
    return 0;
}
