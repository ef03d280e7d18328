/*
 * wire.h - the documents of the wire API (docs/API.md), one codec for the
 * broker, the worker and the client (through _core, p2prpc/_wire.py):
 *
 *  - the rules of its identifiers, each defined once: call ids and blob
 *    names (64 hex), lease ids (32 hex, as the store issues them),
 *    checkpoint keys; and the /v1/ paths built from them;
 *  - a table per document (prpc_wire_doc_t): its fields in the order they
 *    are written, each with its rule. prpc_wire_check refuses a document
 *    that breaks one, naming the field; prpc_wire_canonical writes the
 *    document back in its one canonical form;
 *  - an encoder per document (prpc_wire_write_*), writing exactly the bytes
 *    a broker answers, into a prpc_buf_t;
 *  - the declared functions a broker serves, typed values checked against
 *    them, and submit bodies with their call identity recomputed.
 *
 * No I/O and no HTTP here, so every decoder can be fuzzed on its own
 * (tests/fuzz/).
 *
 * Thread safety: reentrant; a prpc_functions_t is read-only once parsed.
 */
#ifndef PRPC_WIRE_H
#define PRPC_WIRE_H

#include "common.h"
#include "gpu.h"
#include "ident.h"
#include "json.h"
#include "store.h"

#include <bson/bson.h>

#define PRPC_WIRE_NAME_MAX 127       /* function, argument and result names, bytes */
#define PRPC_WIRE_META_MAX (1u << 20) /* a metadata (JSON) body, bytes */
#define PRPC_WIRE_FUNCTIONS_MAX 256  /* functions one broker serves */
#define PRPC_WIRE_ARGS_MAX 256       /* arguments or results of one function */
#define PRPC_WIRE_INT_DIGITS_MAX 100000 /* decimal digits of an int value */
#define PRPC_WIRE_FILENAME_MAX 1024  /* a file's name (metadata only), bytes kept */
#define PRPC_WIRE_WAIT_MAX_MS 60000  /* the longest long-poll a broker grants (wait_ms) */
#define PRPC_WIRE_BATCH_MAX 1000     /* calls of one batch submit, ids of one wait */
#define PRPC_WIRE_PATH_MAX 192       /* a /v1/ path with its query, bytes with the NUL */
#define PRPC_WIRE_VERSION "0.1.0"    /* the API's software version (GET /v1/health) */

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
 * type. Strings stay valid as long as the document. key may be dotted
 * ("lease.id") to reach into sub-documents. */
const char *prpc_doc_str(const bson_t *d, const char *key);
int prpc_doc_num(const bson_t *d, const char *key, double *out);

/* The same for the document an iterator points at (an array entry): NULL /
 * 0 when it is not a document or has no such field of that type. */
const char *prpc_iter_doc_str(const bson_iter_t *it, const char *key);
int prpc_iter_doc_num(const bson_iter_t *it, const char *key, double *out);

/* ---- identifiers: one rule each ----------------------------------------- */

/* 1 when s is a call id, a blob name or a function version: 64 lowercase hex
 * digits. */
int prpc_wire_valid_call_id(const char *s);

/* 1 when s is a lease id as the store issues them (store.c: 128 random bits):
 * PRPC_LEASE_ID_HEX lowercase hex digits. A lease request id (?request=) has
 * the same form. */
int prpc_wire_valid_lease_id(const char *s);

/* 1 when key passes the checkpoint key rule, prpc_store_check_checkpoint_key
 * (store.h: the store keeps keys, and checks them before any backend). */
int prpc_wire_valid_checkpoint_key(const char *key);

/* 1 when s is an int value's text: decimal, no leading zeros, no "-0", at
 * most PRPC_WIRE_INT_DIGITS_MAX digits. len: bytes of s. */
int prpc_wire_valid_int_text(const char *s, size_t len);

/* 1 when s is a float value's text: the 16 lowercase hex digits of its bits. */
int prpc_wire_valid_float_text(const char *s, size_t len);

/* ---- paths ---------------------------------------------------------------- */

/* /v1/calls/{id}, or /v1/calls/{id}/{op} for op "terminate" or "restart". */
int prpc_wire_path_call(char out[PRPC_WIRE_PATH_MAX], const char *call_id, const char *op,
                        prpc_error_t *err);

/* GET /v1/calls/{id}?wait_ms=N&since=U, with &arriving=0 when unseen (the
 * reader has not seen the call's announced outputs yet). */
int prpc_wire_path_poll_call(char out[PRPC_WIRE_PATH_MAX], const char *call_id, int64_t wait_ms,
                             int64_t since, int unseen, prpc_error_t *err);

/* POST /v1/calls, with ?wait_ms=N when wait_ms > 0. */
int prpc_wire_path_submit(char out[PRPC_WIRE_PATH_MAX], int64_t wait_ms, prpc_error_t *err);

/* /v1/leases/{lease}/{op} for op "heartbeat", "outputs", "result" or
 * "checkpoints". */
int prpc_wire_path_lease(char out[PRPC_WIRE_PATH_MAX], const char *lease_id, const char *op,
                         prpc_error_t *err);

/* POST /v1/leases, with ?request=ID when request_id is not NULL or "". */
int prpc_wire_path_leases(char out[PRPC_WIRE_PATH_MAX], const char *request_id,
                          prpc_error_t *err);

/* Each returns 0, or PRPC_EINVAL naming the id or op that breaks its rule. */

/* ---- documents ------------------------------------------------------------ */

/* Every document of docs/API.md, and the objects nested in them. The names
 * (prpc_wire_doc_name) are what p2prpc._wire calls them. */
typedef enum prpc_wire_doc {
    PRPC_WIRE_ERROR,            /* "error": {"error": {"code", "message"}} */
    PRPC_WIRE_CALL,             /* "call": CALL (with "args" in a lease answer) */
    PRPC_WIRE_SUBMIT,           /* "submit": POST /v1/calls */
    PRPC_WIRE_SUBMITTED,        /* "submitted": {"created", "call"} */
    PRPC_WIRE_BATCH,            /* "batch": POST /v1/calls/batch */
    PRPC_WIRE_BATCH_ANSWER,     /* "batch_answer": {"results"} */
    PRPC_WIRE_WAIT,             /* "wait": POST /v1/calls/wait */
    PRPC_WIRE_WAIT_ANSWER,      /* "wait_answer": {"calls", "missing"} */
    PRPC_WIRE_CALL_ANSWER,      /* "call_answer": {"call"} */
    PRPC_WIRE_DELETED,          /* "deleted": {"deleted": true} */
    PRPC_WIRE_LEASE_REQUEST,    /* "lease_request": POST /v1/leases */
    PRPC_WIRE_LEASE,            /* "lease": the lease answer */
    PRPC_WIRE_HEARTBEAT,        /* "heartbeat" */
    PRPC_WIRE_HEARTBEAT_ANSWER, /* "heartbeat_answer" */
    PRPC_WIRE_CHECKPOINT,       /* "checkpoint": the save and its answer */
    PRPC_WIRE_OUTPUTS,          /* "outputs": the announcement */
    PRPC_WIRE_OUTPUTS_ANSWER,   /* "outputs_answer": {"call_id"} */
    PRPC_WIRE_RESULT,           /* "result" */
    PRPC_WIRE_PARTIAL,          /* "partial": a chunk's answer */
    PRPC_WIRE_COMMITTED,        /* "committed": a commit's answer */
    PRPC_WIRE_HEALTH,           /* "health" */
    PRPC_WIRE_FUNCTIONS,        /* "functions": GET /v1/functions */
    PRPC_WIRE_STATS,            /* "stats" */
    PRPC_WIRE_NODES,            /* "nodes" */
    PRPC_WIRE_METRICS,          /* "metrics" */
    /* Nested objects: */
    PRPC_WIRE_ERROR_CODE,       /* "error_code": {"code", "message"} */
    PRPC_WIRE_ERROR_RECORD,     /* "error_record": a call's {"type", "message", "traceback"} */
    PRPC_WIRE_BATCH_ENTRY,      /* "batch_entry": {"created", "call"} or {"error"} */
    PRPC_WIRE_FUNCTION_REF,     /* "function_ref": {"name", "version"} of a lease request */
    PRPC_WIRE_GPU,              /* "gpu": a GPU of a lease request */
    PRPC_WIRE_LEASE_HEAD,       /* "lease_head": {"id", "call_id", "deadline_ms", "heartbeat_ms"} */
    PRPC_WIRE_CHECKPOINT_ENTRY, /* "checkpoint_entry": {"key", "blob", "size"} */
    PRPC_WIRE_FUNCTION,         /* "function": a declared function */
    PRPC_WIRE_DECL,             /* "decl": {"name", "kind"} */
    PRPC_WIRE_NDOCS
} prpc_wire_doc_t;

/* The document's name, or NULL outside 0..PRPC_WIRE_NDOCS-1. */
const char *prpc_wire_doc_name(int doc);

/* The document called name, or -1. */
int prpc_wire_doc_find(const char *name);

/* Check a parsed document against its rules: required fields present, each
 * field of its kind and within its rule (ids, keys, states, counts, typed
 * entries), nested objects likewise. Unknown fields are allowed. code is
 * what a broken rule returns: PRPC_EINVAL for a request, PRPC_EPROTO for an
 * answer; a count beyond a limit the broker answers 413 for is PRPC_ELIMIT.
 * The message starts with what the document needs and names the field
 * ("lease.id", "checkpoints[2].key", "outputs of result: \"n\" ..."). */
int prpc_wire_check(prpc_wire_doc_t doc, const bson_t *d, int code, prpc_error_t *err);

/* prpc_wire_check, then write the document in canonical form to out: its
 * fields in table order, unknown fields left out, values as the encoders
 * below write them. */
int prpc_wire_canonical(prpc_wire_doc_t doc, const bson_t *d, int code, prpc_buf_t *out,
                        prpc_error_t *err);

/* Parse JSON text (prpc_json_parse) and prpc_wire_check it. The document is
 * the caller's (bson_destroy); NULL with err filled. */
bson_t *prpc_wire_decode(prpc_wire_doc_t doc, const char *json, size_t len, int code,
                         prpc_error_t *err);

/* ---- encoders ----------------------------------------------------------- */

/* Each appends one document to out (a prpc_buf_t's failure is sticky: check
 * prpc_buf_take) and returns 0 or the buffer's failure code. JSON text given
 * as *_json is written as it is (the store keeps canonical text); NULL
 * writes null where the document allows it. */

/* The broker's answers. */
int prpc_wire_write_error(prpc_buf_t *out, int code, const char *message);
int prpc_wire_write_call(prpc_buf_t *out, const prpc_call_t *c, int with_args,
                         const char *arriving_json);
int prpc_wire_write_call_answer(prpc_buf_t *out, const prpc_call_t *c, const char *arriving_json);
int prpc_wire_write_submitted(prpc_buf_t *out, int created, const prpc_call_t *c);

/* One entry of a batch answer: an error (code != 0) or the stored call. */
typedef struct prpc_wire_batch_result {
    int code;              /* PRPC_E* of a refused submit, 0 when stored */
    const char *message;   /* the refusal's words */
    int created;           /* stored: 1 when new */
    const prpc_call_t *call; /* stored: the record */
} prpc_wire_batch_result_t;

int prpc_wire_write_batch_answer(prpc_buf_t *out, const prpc_wire_batch_result_t *r, size_t n);
int prpc_wire_write_wait_answer(prpc_buf_t *out, const prpc_call_t *calls, size_t ncalls,
                                const char (*missing)[PRPC_CALL_ID_HEX + 1], size_t nmissing);
int prpc_wire_write_deleted(prpc_buf_t *out);
int prpc_wire_write_lease(prpc_buf_t *out, const prpc_call_t *c, int heartbeat_ms,
                          const prpc_checkpoint_t *ck, size_t nck);
int prpc_wire_write_heartbeat_answer(prpc_buf_t *out, int terminate, int64_t deadline_ms);
int prpc_wire_write_outputs_answer(prpc_buf_t *out, const char *call_id);
int prpc_wire_write_partial(prpc_buf_t *out, uint64_t partial);
int prpc_wire_write_committed(prpc_buf_t *out, uint64_t size);
int prpc_wire_write_health(prpc_buf_t *out);
int prpc_wire_write_stats(prpc_buf_t *out, const char *function,
                          const int64_t counts[PRPC_CALL_NSTATES]);
int prpc_wire_write_nodes(prpc_buf_t *out, const char *const *addrs, size_t n);

/* The broker's counters (GET /v1/metrics), in the answer's order. */
typedef struct prpc_wire_metrics {
    uint64_t requests;
    uint64_t bytes_received;             /* blob chunk bytes accepted */
    uint64_t chunks_received;
    uint64_t chunks_refused;
    uint64_t blobs_committed;
    uint64_t bytes_served;               /* blob bytes sent by verified GETs */
    uint64_t bytes_followed;             /* blob bytes sent while their upload was arriving */
    uint64_t bytes_followed_from_memory; /* ...of them, sent from the chunk as it arrived */
    uint64_t corrupt_blobs_dropped;
    uint64_t calls_submitted;
    uint64_t leases_granted;
    uint64_t results_accepted;
    uint64_t results_refused;
    uint64_t auth_refused;
} prpc_wire_metrics_t;

int prpc_wire_write_metrics(prpc_buf_t *out, const prpc_wire_metrics_t *m);

/* A checkpoint save, and the broker's answer to it (the same four fields). */
int prpc_wire_write_checkpoint(prpc_buf_t *out, const char *call_id, const char *key,
                               const char *blob, uint64_t size);

/* The worker's requests. */
typedef struct prpc_wire_function_ref {
    const char *name;
    const char *version;
} prpc_wire_function_ref_t;

int prpc_wire_write_lease_request(prpc_buf_t *out, const char *worker,
                                  const prpc_wire_function_ref_t *fns, size_t nfns,
                                  int64_t wait_ms, const prpc_gpu_info_t *gpus, size_t ngpus);
int prpc_wire_write_heartbeat(prpc_buf_t *out, const char *call_id, double progress);
int prpc_wire_write_outputs(prpc_buf_t *out, const char *call_id, const char *outputs_json);
/* state: "done", "failed" or "terminated"; outputs_json NULL writes []. */
int prpc_wire_write_result(prpc_buf_t *out, const char *call_id, const char *state,
                           const char *outputs_json, const char *error_json);
/* A call's error record, each field cut as the broker keeps it (type 256,
 * message 64 KiB, traceback 256 KiB bytes); a NULL type is "Error". */
int prpc_wire_write_error_record(prpc_buf_t *out, const char *type, const char *message,
                                 const char *traceback);

/* The client's requests. */
typedef struct prpc_wire_submit_ref {
    const char *id;
    const char *function;
    const char *version;
    const char *args_json; /* canonical typed array */
} prpc_wire_submit_ref_t;

int prpc_wire_write_submit(prpc_buf_t *out, const prpc_wire_submit_ref_t *s);
int prpc_wire_write_batch(prpc_buf_t *out, const prpc_wire_submit_ref_t *s, size_t n);
int prpc_wire_write_wait(prpc_buf_t *out, const char (*ids)[PRPC_CALL_ID_HEX + 1], size_t n,
                         int64_t wait_ms);

/* Any parsed JSON value as JSON text: the value it points at, or a whole
 * document (as an array when as_array), written as it is (no rule checked).
 * For parts a document carries through unread, like an executor's outputs. */
int prpc_wire_write_json_iter(prpc_buf_t *out, const bson_iter_t *it);
int prpc_wire_write_json_doc(prpc_buf_t *out, const bson_t *d, int as_array);

/* ---- decoders for the worker --------------------------------------------- */

/* A lease answer's head: the lease and call ids (checked: PRPC_EPROTO when
 * either breaks its rule) and the heartbeat interval (0 when not given).
 * The rest stays in the document (the call's "function", "version", "args",
 * and "checkpoints"), read as the job is built. */
typedef struct prpc_wire_lease {
    char id[PRPC_LEASE_ID_HEX + 1];
    char call_id[PRPC_CALL_ID_HEX + 1];
    int64_t deadline_ms;  /* 0 when not given */
    int64_t heartbeat_ms; /* 0 when not given */
} prpc_wire_lease_t;

int prpc_wire_decode_lease(const bson_t *d, prpc_wire_lease_t *out, prpc_error_t *err);

/* A heartbeat answer's order to terminate: 1 when it says so, 0 otherwise
 * (an answer that does not parse orders nothing). */
int prpc_wire_heartbeat_terminates(const char *json, size_t len);


/* ---- shared by wire.c (the rules) and wire_doc.c (the document tables); not
 * for other files ---------------------------------------------------------- */

/* A kind's ident.h tag ("int" -> PRPC_IDENT_TAG_INT), 0 for no kind; and
 * back (any other tag is "file"). */
char prpc__wire_kind_tag(const char *kind);
const char *prpc__wire_tag_kind(char tag);

/* 1 when it holds a number (int32, int64 or double); *out gets it. */
int prpc__wire_iter_num(const bson_iter_t *it, double *out);

/* 1 when it holds a document; d becomes a static view of its bytes. */
int prpc__wire_iter_doc(const bson_iter_t *it, bson_t *d);

/* 1 when s (may be NULL) is one of set[0..n). */
int prpc__wire_one_of(const char *s, const char *const *set, size_t n);

/* Typed entries checked without declarations (a document read on its own):
 * each an object with a name (1..PRPC_WIRE_NAME_MAX bytes, not repeated), a
 * kind, and a value by the rules of its kind (the same as
 * prpc_wire_check_typed's). Written canonical to out when out is not NULL.
 * what and doc place an error: "outputs of result: ...". */
int prpc__wire_entries_canon(bson_iter_t *arr, const char *what, const char *doc, int code,
                             prpc_buf_t *out, prpc_error_t *err);

/* The GET /v1/functions answer of fs (wire_doc.c). */
void prpc__wire_write_listing(prpc_buf_t *out, const prpc_functions_t *fs);

#endif
