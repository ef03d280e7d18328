/*
 * wire.h - the documents of the wire API (docs/API.md), decoded and checked:
 * the function declarations a broker serves, typed values (arguments and
 * outputs) in their canonical form, and submit bodies with their call
 * identity recomputed. No I/O and no HTTP here, so every decoder can be
 * fuzzed on its own (tests/fuzz/).
 *
 * Thread safety: reentrant; a prpc_functions_t is read-only once parsed.
 */
#ifndef PRPC_WIRE_H
#define PRPC_WIRE_H

#include "common.h"
#include "ident.h"
#include "json.h"

#include <bson/bson.h>

#define PRPC_WIRE_NAME_MAX 127       /* function, argument and result names, bytes */
#define PRPC_WIRE_META_MAX (1u << 20) /* a metadata (JSON) body, bytes */
#define PRPC_WIRE_FUNCTIONS_MAX 256  /* functions one broker serves */
#define PRPC_WIRE_ARGS_MAX 256       /* arguments or results of one function */
#define PRPC_WIRE_INT_DIGITS_MAX 100000 /* decimal digits of an int value */
#define PRPC_WIRE_FILENAME_MAX 1024  /* a file's name (metadata only), bytes kept */

/* One declared argument or result. */
typedef struct prpc_decl {
    char name[PRPC_WIRE_NAME_MAX + 1];
    char kind; /* an ident.h tag: i f b s F */
} prpc_decl_t;

/* One function as declared (FunctionSpec.to_json on the Python side). */
typedef struct prpc_fn {
    char name[PRPC_WIRE_NAME_MAX + 1];
    char version[65];
    prpc_decl_t *args; /* owned */
    size_t nargs;
    prpc_decl_t *returns; /* owned */
    size_t nreturns;
} prpc_fn_t;

typedef struct prpc_functions {
    prpc_fn_t *fns; /* owned */
    size_t n;
    char *listing_json; /* owned: the GET /v1/functions answer */
} prpc_functions_t;

/* Parse [{"name","version","args":[{"name","kind"}],"returns":[...]}] into fs
 * (zeroed by the caller). On error fs holds nothing to free beyond what
 * prpc_functions_cleanup releases. */
int prpc_functions_parse(prpc_functions_t *fs, const char *json, prpc_error_t *err);
void prpc_functions_cleanup(prpc_functions_t *fs);
const prpc_fn_t *prpc_functions_find(const prpc_functions_t *fs, const char *name);

/* Does the receiver hold blob sha, whole, of that size? 1 yes, 0 no. */
typedef int (*prpc_blob_check_fn)(void *ud, const char *sha, uint64_t size);

/* Check a typed array (arguments or outputs, an array iterator of a parsed
 * document) against its declarations: names in declaration order, kinds,
 * value syntax, and (through has_blob) that every file's blob is held. Writes
 * the canonical JSON into out, feeds the identity when id is not NULL, and
 * copies the blob names into blobs (room for ndecls). Errors name the entry. */
int prpc_wire_check_typed(const prpc_fn_t *f, const prpc_decl_t *decls, size_t ndecls,
                          const char *what, bson_iter_t *arr, prpc_blob_check_fn has_blob,
                          void *ud, prpc_ident_t *id, prpc_buf_t *out, char (*blobs)[65],
                          size_t *nblobs, prpc_error_t *err);

/* A submit body, checked: the function is served at the same version, the
 * arguments match it, and the call id is the one they identify. */
typedef struct prpc_submit {
    char id[65];
    const prpc_fn_t *fn; /* borrowed from the prpc_functions_t */
    char *args_json;     /* owned: canonical typed array */
    char (*blobs)[65];   /* owned: the file arguments' blobs */
    size_t nblobs;
} prpc_submit_t;

int prpc_wire_decode_submit(const prpc_functions_t *fs, const bson_t *doc,
                            prpc_blob_check_fn has_blob, void *ud, prpc_submit_t *out,
                            prpc_error_t *err);
void prpc_submit_cleanup(prpc_submit_t *s);

/* Parse a JSON object body (at most PRPC_WIRE_META_MAX bytes). `what` names
 * the body in errors. The document is the caller's (bson_destroy). */
bson_t *prpc_json_parse(const char *data, size_t len, const char *what, prpc_error_t *err);

/* The same with the body limit max (at most PRPC_WIRE_META_MAX), which the
 * error names as `limit_name`. */
bson_t *prpc_json_parse_max(const char *data, size_t len, size_t max, const char *limit_name,
                            const char *what, prpc_error_t *err);

/* A document's string / number field, or NULL / 0 when absent or of another
 * type. Strings stay valid as long as the document. */
const char *prpc_doc_str(const bson_t *d, const char *key);
int prpc_doc_num(const bson_t *d, const char *key, double *out);

#endif
