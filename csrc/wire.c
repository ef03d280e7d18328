/*
 * wire.c - the rules of wire.h: JSON bodies and their fields, declared
 * functions, typed values (checked against declarations or on their own),
 * submits, identifiers and paths. The documents' tables are wire_doc.c's.
 */
#include "wire.h"
#include "blob.h"
#include "hash.h"
#include "util.h"

#include <openssl/bn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char prpc__wire_kind_tag(const char *kind)
{
    if (strcmp(kind, "int") == 0)
        return PRPC_IDENT_TAG_INT;
    if (strcmp(kind, "float") == 0)
        return PRPC_IDENT_TAG_FLOAT;
    if (strcmp(kind, "bool") == 0)
        return PRPC_IDENT_TAG_BOOL;
    if (strcmp(kind, "str") == 0)
        return PRPC_IDENT_TAG_STR;
    if (strcmp(kind, "file") == 0)
        return PRPC_IDENT_TAG_FILE;
    return 0;
}

const char *prpc__wire_tag_kind(char tag)
{
    switch (tag) {
    case PRPC_IDENT_TAG_INT: return "int";
    case PRPC_IDENT_TAG_FLOAT: return "float";
    case PRPC_IDENT_TAG_BOOL: return "bool";
    case PRPC_IDENT_TAG_STR: return "str";
    default: return "file";
    }
}

static const char *iter_str(const bson_iter_t *it, uint32_t *len)
{
    if (!BSON_ITER_HOLDS_UTF8(it))
        return NULL;
    return bson_iter_utf8(it, len);
}

/* Find key (dotted: "lease.id") in d. */
static int find_dotted(const bson_t *d, const char *key, bson_iter_t *out)
{
    bson_iter_t it, sub;
    char part[PRPC_WIRE_NAME_MAX + 1];
    if (!bson_iter_init(&it, d))
        return 0;
    for (;;) {
        const char *dot = strchr(key, '.');
        size_t n = dot != NULL ? (size_t)(dot - key) : strlen(key);
        if (n >= sizeof(part))
            return 0;
        memcpy(part, key, n);
        part[n] = '\0';
        if (!bson_iter_find(&it, part))
            return 0;
        if (dot == NULL) {
            *out = it;
            return 1;
        }
        if (!BSON_ITER_HOLDS_DOCUMENT(&it) || !bson_iter_recurse(&it, &sub))
            return 0;
        it = sub;
        key = dot + 1;
    }
}

int prpc__wire_iter_num(const bson_iter_t *it, double *out)
{
    if (BSON_ITER_HOLDS_INT32(it) || BSON_ITER_HOLDS_INT64(it) || BSON_ITER_HOLDS_DOUBLE(it)) {
        *out = bson_iter_as_double(it);
        return 1;
    }
    return 0;
}

const char *prpc_doc_str(const bson_t *d, const char *key)
{
    bson_iter_t it;
    if (!find_dotted(d, key, &it) || !BSON_ITER_HOLDS_UTF8(&it))
        return NULL;
    return bson_iter_utf8(&it, NULL);
}

int prpc_doc_num(const bson_t *d, const char *key, double *out)
{
    bson_iter_t it;
    return find_dotted(d, key, &it) && prpc__wire_iter_num(&it, out);
}

/* The document it points at, as a static view of its bytes. */
int prpc__wire_iter_doc(const bson_iter_t *it, bson_t *d)
{
    const uint8_t *data = NULL;
    uint32_t len = 0;
    if (!BSON_ITER_HOLDS_DOCUMENT(it))
        return 0;
    bson_iter_document(it, &len, &data);
    return bson_init_static(d, data, len);
}

const char *prpc_iter_doc_str(const bson_iter_t *it, const char *key)
{
    bson_t d;
    return prpc__wire_iter_doc(it, &d) ? prpc_doc_str(&d, key) : NULL;
}

int prpc_iter_doc_num(const bson_iter_t *it, const char *key, double *out)
{
    bson_t d;
    return prpc__wire_iter_doc(it, &d) && prpc_doc_num(&d, key, out);
}

bson_t *prpc_json_parse_max(const char *data, size_t len, size_t max, const char *limit_name,
                            const char *what, prpc_error_t *err)
{
    bson_error_t berr;
    bson_t *doc;
    if (max == 0 || max > PRPC_WIRE_META_MAX)
        max = PRPC_WIRE_META_MAX;
    if (len == 0) {
        prpc_error_set(err, PRPC_EINVAL, "%s: the body is empty, expected a JSON object", what);
        return NULL;
    }
    if (len > max) {
        prpc_error_set(err, PRPC_ELIMIT,
                       "%s: body of %zu bytes exceeds the metadata limit of %zu (%s)", what, len,
                       max, limit_name);
        return NULL;
    }
    doc = bson_new_from_json((const uint8_t *)data, (ssize_t)len, &berr);
    if (doc == NULL)
        prpc_error_set(err, PRPC_EINVAL, "%s: invalid JSON: %s", what, berr.message);
    return doc;
}

bson_t *prpc_json_parse(const char *data, size_t len, const char *what, prpc_error_t *err)
{
    return prpc_json_parse_max(data, len, PRPC_WIRE_META_MAX, "the most a document may be",
                               what, err);
}

/* ---- function specs --------------------------------------------------- */


static int parse_decls(bson_iter_t *arr, const char *fn, const char *what, prpc_decl_t **out,
                       size_t *n, prpc_error_t *err)
{
    bson_iter_t it, field;
    size_t count = 0, i = 0;
    if (!BSON_ITER_HOLDS_ARRAY(arr) || !bson_iter_recurse(arr, &it))
        return prpc_error_set(err, PRPC_EINVAL, "function %s: \"%s\" must be an array", fn, what);
    while (bson_iter_next(&it))
        count++;
    if (count > PRPC_WIRE_ARGS_MAX)
        return prpc_error_set(err, PRPC_ELIMIT, "function %s: more than %d %s", fn,
                              PRPC_WIRE_ARGS_MAX, what);
    *out = calloc(count ? count : 1, sizeof(**out));
    if (*out == NULL)
        return prpc_error_set(err, PRPC_ENOMEM, "out of memory reading function %s", fn);
    bson_iter_recurse(arr, &it);
    while (bson_iter_next(&it)) {
        const char *name = NULL, *kind = NULL;
        if (BSON_ITER_HOLDS_DOCUMENT(&it) && bson_iter_recurse(&it, &field)) {
            while (bson_iter_next(&field)) {
                if (strcmp(bson_iter_key(&field), "name") == 0)
                    name = iter_str(&field, NULL);
                else if (strcmp(bson_iter_key(&field), "kind") == 0)
                    kind = iter_str(&field, NULL);
            }
        }
        if (name == NULL || kind == NULL || name[0] == '\0' ||
            strlen(name) > PRPC_WIRE_NAME_MAX || prpc__wire_kind_tag(kind) == 0)
            return prpc_error_set(err, PRPC_EINVAL,
                                  "function %s: entry %zu of \"%s\" needs a name and a kind "
                                  "(int, float, bool, str, file)",
                                  fn, i, what);
        snprintf((*out)[i].name, sizeof((*out)[i].name), "%s", name);
        (*out)[i].kind = prpc__wire_kind_tag(kind);
        i++;
    }
    *n = count;
    return 0;
}

int prpc_functions_parse(prpc_functions_t *fs, const char *json, prpc_error_t *err)
{
    bson_t *doc = NULL;
    bson_iter_t top, it, field;
    prpc_buf_t out = PRPC_BUF_INIT;
    size_t count = 0;
    int rc = 0;
    /* libbson parses a top-level array as a document with keys "0", "1"... */
    doc = prpc_json_parse(json, strlen(json), "functions", err);
    if (doc == NULL)
        return err ? err->code : PRPC_EINVAL;
    bson_iter_init(&top, doc);
    while (bson_iter_next(&top))
        count++;
    if (count == 0 || count > PRPC_WIRE_FUNCTIONS_MAX) {
        rc = prpc_error_set(err, PRPC_EINVAL, "a broker serves 1 to %d functions, got %zu",
                            PRPC_WIRE_FUNCTIONS_MAX, count);
        goto out;
    }
    fs->fns = calloc(count, sizeof(*fs->fns));
    if (fs->fns == NULL) {
        rc = prpc_error_set(err, PRPC_ENOMEM, "out of memory reading functions");
        goto out;
    }
    bson_iter_init(&top, doc);
    while (bson_iter_next(&top)) {
        prpc_fn_t *f = &fs->fns[fs->n];
        const char *name = NULL, *version = NULL;
        int have_args = 0, have_returns = 0;
        if (!BSON_ITER_HOLDS_DOCUMENT(&top) || !bson_iter_recurse(&top, &it)) {
            rc = prpc_error_set(err, PRPC_EINVAL, "functions: entry %zu is not an object", fs->n);
            goto out;
        }
        while (bson_iter_next(&it)) {
            const char *k = bson_iter_key(&it);
            if (strcmp(k, "name") == 0)
                name = iter_str(&it, NULL);
            else if (strcmp(k, "version") == 0)
                version = iter_str(&it, NULL);
        }
        if (name == NULL || name[0] == '\0' || strlen(name) > PRPC_WIRE_NAME_MAX ||
            !prpc_valid_hex(version, 64)) {
            rc = prpc_error_set(err, PRPC_EINVAL,
                                "functions: entry %zu needs a name and a 64-hex version", fs->n);
            goto out;
        }
        snprintf(f->name, sizeof(f->name), "%s", name);
        snprintf(f->version, sizeof(f->version), "%s", version);
        bson_iter_recurse(&top, &field);
        while (bson_iter_next(&field)) {
            if ((strcmp(bson_iter_key(&field), "args") == 0 && have_args) ||
                (strcmp(bson_iter_key(&field), "returns") == 0 && have_returns)) {
                rc = prpc_error_set(err, PRPC_EINVAL, "function %s: \"%s\" is given twice",
                                    name, bson_iter_key(&field));
                goto out;
            }
            if (strcmp(bson_iter_key(&field), "args") == 0) {
                have_args = 1;
                if ((rc = parse_decls(&field, name, "args", &f->args, &f->nargs, err)) != 0)
                    goto out;
            } else if (strcmp(bson_iter_key(&field), "returns") == 0) {
                have_returns = 1;
                if ((rc = parse_decls(&field, name, "returns", &f->returns, &f->nreturns, err)) !=
                    0)
                    goto out;
            }
        }
        if (!have_args || !have_returns) {
            rc = prpc_error_set(err, PRPC_EINVAL, "function %s: \"args\" and \"returns\" are needed",
                                name);
            goto out;
        }
        fs->n++;
        if (prpc_functions_find(fs, name) != f) {
            rc = prpc_error_set(err, PRPC_EINVAL, "function %s is declared twice", name);
            goto out;
        }
    }
    prpc__wire_write_listing(&out, fs);
    fs->listing_json = prpc_buf_take(&out, NULL, err);
    if (fs->listing_json == NULL)
        rc = err ? err->code : PRPC_ENOMEM;
out:
    /* The entry being read when it failed is not counted in fs->n yet. */
    if (rc != 0 && fs->fns != NULL && fs->n < count) {
        free(fs->fns[fs->n].args);
        free(fs->fns[fs->n].returns);
        fs->fns[fs->n].args = fs->fns[fs->n].returns = NULL;
    }
    prpc_buf_cleanup(&out);
    bson_destroy(doc);
    return rc;
}

/* ---- typed values ----------------------------------------------------- */

/* One typed entry as read from a document, before any rule is applied. */
typedef struct entry {
    const char *name, *kind, *value, *blob, *filename;
    uint32_t name_len, value_len, filename_len;
    int have_bool, bool_value, have_size;
    int64_t size;
} entry_t;

/* Read the entry it points at; 0 when it is not an object. */
static int entry_read(const bson_iter_t *it, entry_t *e)
{
    bson_iter_t field;
    memset(e, 0, sizeof(*e));
    e->size = -1;
    if (!BSON_ITER_HOLDS_DOCUMENT(it) || !bson_iter_recurse(it, &field))
        return 0;
    while (bson_iter_next(&field)) {
        const char *k = bson_iter_key(&field);
        if (strcmp(k, "name") == 0)
            e->name = iter_str(&field, &e->name_len);
        else if (strcmp(k, "kind") == 0)
            e->kind = iter_str(&field, NULL);
        else if (strcmp(k, "value") == 0 && BSON_ITER_HOLDS_UTF8(&field))
            e->value = bson_iter_utf8(&field, &e->value_len);
        else if (strcmp(k, "value") == 0 && BSON_ITER_HOLDS_BOOL(&field))
            e->have_bool = 1, e->bool_value = bson_iter_bool(&field);
        else if (strcmp(k, "blob") == 0)
            e->blob = iter_str(&field, NULL);
        else if (strcmp(k, "filename") == 0 && BSON_ITER_HOLDS_UTF8(&field))
            e->filename = bson_iter_utf8(&field, &e->filename_len);
        else if (strcmp(k, "size") == 0 &&
                 (BSON_ITER_HOLDS_INT32(&field) || BSON_ITER_HOLDS_INT64(&field)))
            e->have_size = 1, e->size = bson_iter_as_int64(&field);
    }
    return 1;
}

int prpc_wire_valid_int_text(const char *s, size_t len)
{
    size_t digits;
    const char *p;
    if (s == NULL || len == 0)
        return 0;
    digits = len - (s[0] == '-');
    p = s + (s[0] == '-');
    if (digits == 0 || digits > PRPC_WIRE_INT_DIGITS_MAX || (digits > 1 && p[0] == '0') ||
        (s[0] == '-' && digits == 1 && p[0] == '0'))
        return 0;
    for (size_t j = 0; j < digits; j++)
        if (p[j] < '0' || p[j] > '9')
            return 0;
    return 1;
}

int prpc_wire_valid_float_text(const char *s, size_t len)
{
    return s != NULL && len == 16 && prpc_valid_hex(s, 16);
}

/* The value rules of an entry of kind tag, the same for arguments and
 * outputs, declared or not. what/fn/name place it in the message. */
static int entry_check(const entry_t *e, char tag, const char *what, const char *fn,
                       const char *name, int code, prpc_error_t *err)
{
    switch (tag) {
    case PRPC_IDENT_TAG_INT:
        if (!prpc_wire_valid_int_text(e->value, e->value_len))
            return prpc_error_set(err, code, "%s of %s: \"%s\" must be a decimal integer string",
                                  what, fn, name);
        return 0;
    case PRPC_IDENT_TAG_FLOAT:
        if (!prpc_wire_valid_float_text(e->value, e->value_len))
            return prpc_error_set(err, code,
                                  "%s of %s: \"%s\" must be the 16 hex digits of a float's "
                                  "bits (lowercase)",
                                  what, fn, name);
        return 0;
    case PRPC_IDENT_TAG_BOOL:
        if (!e->have_bool)
            return prpc_error_set(err, code, "%s of %s: \"%s\" must be true or false", what, fn,
                                  name);
        return 0;
    case PRPC_IDENT_TAG_STR:
        if (e->value == NULL)
            return prpc_error_set(err, code, "%s of %s: \"%s\" must be a string", what, fn, name);
        return 0;
    default:
        if (!prpc_blob_valid_sha(e->blob) || !e->have_size || e->size < 0)
            return prpc_error_set(err, code,
                                  "%s of %s: file \"%s\" needs \"blob\" (64 hex) and \"size\"",
                                  what, fn, name);
        return 0;
    }
}

/* The canonical form of an entry whose rules held. */
static void entry_write(prpc_buf_t *out, const entry_t *e, const char *name, char tag, int first)
{
    prpc_buf_printf(out, "%s{\"name\": ", first ? "" : ", ");
    prpc_buf_json_str(out, name, strlen(name));
    prpc_buf_printf(out, ", \"kind\": \"%s\"", prpc__wire_tag_kind(tag));
    switch (tag) {
    case PRPC_IDENT_TAG_INT:
    case PRPC_IDENT_TAG_STR:
        prpc_buf_puts(out, ", \"value\": ");
        prpc_buf_json_str(out, e->value, e->value_len);
        break;
    case PRPC_IDENT_TAG_FLOAT:
        prpc_buf_printf(out, ", \"value\": \"%.16s\"", e->value);
        break;
    case PRPC_IDENT_TAG_BOOL:
        prpc_buf_printf(out, ", \"value\": %s", e->bool_value ? "true" : "false");
        break;
    default:
        prpc_buf_printf(out, ", \"blob\": \"%s\", \"size\": %lld, \"filename\": ", e->blob,
                        (long long)e->size);
        if (e->filename != NULL)
            prpc_buf_json_str(out, e->filename,
                              e->filename_len > PRPC_WIRE_FILENAME_MAX ? PRPC_WIRE_FILENAME_MAX
                                                                       : e->filename_len);
        else
            prpc_buf_puts(out, "\"\"");
        break;
    }
    prpc_buf_puts(out, "}");
}

/* Feed one checked entry to the call identity. */
static int entry_ident(prpc_ident_t *id, const entry_t *e, const char *name, char tag,
                       prpc_error_t *err)
{
    switch (tag) {
    case PRPC_IDENT_TAG_INT: {
        BIGNUM *bn = NULL;
        uint8_t *mag;
        int nbytes, rc, neg = e->value[0] == '-';
        if (BN_dec2bn(&bn, e->value + neg) == 0)
            return prpc_error_set(err, PRPC_ENOMEM, "out of memory reading \"%s\"", name);
        nbytes = BN_num_bytes(bn);
        mag = malloc(nbytes ? (size_t)nbytes : 1);
        if (mag == NULL) {
            BN_free(bn);
            return prpc_error_set(err, PRPC_ENOMEM, "out of memory reading \"%s\"", name);
        }
        BN_bn2bin(bn, mag);
        rc = prpc_ident_add_int(id, name, neg, mag, (size_t)nbytes, err);
        free(mag);
        BN_free(bn);
        return rc;
    }
    case PRPC_IDENT_TAG_FLOAT: {
        uint8_t bits[8];
        uint64_t u = 0;
        double dv;
        prpc_hex_decode(e->value, 16, bits, sizeof(bits), NULL);
        for (int j = 0; j < 8; j++)
            u = (u << 8) | bits[j];
        memcpy(&dv, &u, sizeof(dv));
        return prpc_ident_add_float(id, name, dv, err);
    }
    case PRPC_IDENT_TAG_BOOL:
        return prpc_ident_add_bool(id, name, e->bool_value, err);
    case PRPC_IDENT_TAG_STR:
        return prpc_ident_add_str(id, name, e->value, e->value_len, err);
    default: {
        uint8_t raw[32];
        prpc_hex_decode(e->blob, 64, raw, sizeof(raw), NULL);
        return prpc_ident_add_file_sha256(id, name, raw, err);
    }
    }
}

int prpc_wire_check_typed(const prpc_fn_t *f, const prpc_decl_t *decls, size_t ndecls,
                          const char *what, bson_iter_t *arr, prpc_blob_check_fn has_blob,
                          void *ud, prpc_ident_t *id, prpc_buf_t *out, char (*blobs)[65],
                          size_t *nblobs, prpc_error_t *err)
{
    bson_iter_t it;
    size_t i = 0;
    int rc;

    *nblobs = 0;
    if (!BSON_ITER_HOLDS_ARRAY(arr) || !bson_iter_recurse(arr, &it))
        return prpc_error_set(err, PRPC_EINVAL, "%s of %s must be an array", what, f->name);
    prpc_buf_puts(out, "[");
    while (bson_iter_next(&it)) {
        const prpc_decl_t *d = i < ndecls ? &decls[i] : NULL;
        entry_t e;

        if (d == NULL)
            return prpc_error_set(err, PRPC_EINVAL, "%s of %s: more than the %zu declared", what,
                                  f->name, ndecls);
        if (!entry_read(&it, &e))
            return prpc_error_set(err, PRPC_EINVAL, "%s of %s: entry %zu is not an object", what,
                                  f->name, i);
        if (e.name == NULL || strcmp(e.name, d->name) != 0)
            return prpc_error_set(err, PRPC_EINVAL,
                                  "%s of %s: entry %zu must be \"%s\" (declaration order), got "
                                  "\"%.100s\"",
                                  what, f->name, i, d->name, e.name ? e.name : "(none)");
        if (e.kind == NULL || prpc__wire_kind_tag(e.kind) != d->kind)
            return prpc_error_set(err, PRPC_EINVAL,
                                  "%s of %s: \"%s\" is declared %s, got kind %.20s", what,
                                  f->name, d->name, prpc__wire_tag_kind(d->kind),
                                  e.kind ? e.kind : "(none)");
        if ((rc = entry_check(&e, d->kind, what, f->name, d->name, PRPC_EINVAL, err)) != 0)
            return rc;
        if (d->kind == PRPC_IDENT_TAG_FILE) {
            if (has_blob == NULL || !has_blob(ud, e.blob, (uint64_t)e.size))
                return prpc_error_set(err, PRPC_ENOTFOUND,
                                      "%s of %s: blob %s of file \"%s\" has not been uploaded "
                                      "(upload it first: PUT /v1/blobs/%s)",
                                      what, f->name, e.blob, d->name, e.blob);
            memcpy(blobs[(*nblobs)++], e.blob, 65);
        }
        if (id != NULL && (rc = entry_ident(id, &e, d->name, d->kind, err)) != 0)
            return rc;
        entry_write(out, &e, d->name, d->kind, i == 0);
        i++;
    }
    prpc_buf_puts(out, "]");
    if (i != ndecls)
        return prpc_error_set(err, PRPC_EINVAL, "%s of %s: %zu given, %zu declared", what,
                              f->name, i, ndecls);
    return 0;
}

int prpc__wire_entries_canon(bson_iter_t *arr, const char *what, const char *doc, int code,
                         prpc_buf_t *out, prpc_error_t *err)
{
    bson_iter_t it;
    const char *names[PRPC_WIRE_ARGS_MAX];
    size_t i = 0;
    int rc;
    if (!BSON_ITER_HOLDS_ARRAY(arr) || !bson_iter_recurse(arr, &it))
        return prpc_error_set(err, code, "%s of %s must be an array", what, doc);
    if (out != NULL)
        prpc_buf_puts(out, "[");
    while (bson_iter_next(&it)) {
        entry_t e;
        char tag;
        if (i == PRPC_WIRE_ARGS_MAX)
            return prpc_error_set(err, PRPC_ELIMIT, "%s of %s: more than %d entries", what, doc,
                                  PRPC_WIRE_ARGS_MAX);
        if (!entry_read(&it, &e))
            return prpc_error_set(err, code, "%s of %s: entry %zu is not an object", what, doc, i);
        if (e.name == NULL || e.name_len == 0 || e.name_len > PRPC_WIRE_NAME_MAX ||
            strlen(e.name) != e.name_len)
            return prpc_error_set(err, code, "%s of %s: entry %zu needs a name (1 to %d bytes)",
                                  what, doc, i, PRPC_WIRE_NAME_MAX);
        tag = e.kind != NULL ? prpc__wire_kind_tag(e.kind) : 0;
        if (tag == 0)
            return prpc_error_set(err, code,
                                  "%s of %s: \"%s\" needs a kind (int, float, bool, str, file), "
                                  "got %.20s",
                                  what, doc, e.name, e.kind ? e.kind : "(none)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[j], e.name) == 0)
                return prpc_error_set(err, code, "%s of %s: \"%s\" appears twice", what, doc,
                                      e.name);
        if ((rc = entry_check(&e, tag, what, doc, e.name, code, err)) != 0)
            return rc;
        if (out != NULL)
            entry_write(out, &e, e.name, tag, i == 0);
        names[i++] = e.name;
    }
    if (out != NULL)
        prpc_buf_puts(out, "]");
    return 0;
}

const prpc_fn_t *prpc_functions_find(const prpc_functions_t *fs, const char *name)
{
    for (size_t i = 0; i < fs->n; i++)
        if (strcmp(fs->fns[i].name, name) == 0)
            return &fs->fns[i];
    return NULL;
}

void prpc_functions_cleanup(prpc_functions_t *fs)
{
    for (size_t i = 0; i < fs->n; i++) {
        free(fs->fns[i].args);
        free(fs->fns[i].returns);
    }
    free(fs->fns);
    free(fs->listing_json);
    memset(fs, 0, sizeof(*fs));
}

int prpc_wire_decode_submit(const prpc_functions_t *fs, const bson_t *doc,
                            prpc_blob_check_fn has_blob, void *ud, prpc_submit_t *out,
                            prpc_error_t *err)
{
    bson_iter_t it;
    const prpc_fn_t *f;
    const char *id_s, *fn_s, *ver_s;
    prpc_ident_t *id = NULL;
    prpc_buf_t args = PRPC_BUF_INIT;
    char computed[65];
    int rc;

    memset(out, 0, sizeof(*out));
    id_s = prpc_doc_str(doc, "id");
    fn_s = prpc_doc_str(doc, "function");
    ver_s = prpc_doc_str(doc, "version");
    if (!prpc_valid_hex(id_s, 64) || fn_s == NULL || !prpc_valid_hex(ver_s, 64))
        return prpc_error_set(err, PRPC_EINVAL,
                              "submit needs \"id\" (64 hex), \"function\" and \"version\" (64 hex)");
    f = prpc_functions_find(fs, fn_s);
    if (f == NULL)
        return prpc_error_set(err, PRPC_ENOTFOUND,
                              "function %.128s is not registered on this broker", fn_s);
    if (strcmp(f->version, ver_s) != 0)
        return prpc_error_set(err, PRPC_EVERSION,
                              "function %s: the caller has version %.64s but the broker has "
                              "version %s; deploy the same function source everywhere",
                              f->name, ver_s, f->version);
    if (!bson_iter_init_find(&it, doc, "args"))
        return prpc_error_set(err, PRPC_EINVAL, "submit needs \"args\"");
    out->blobs = calloc(f->nargs + 1, sizeof(*out->blobs));
    if (out->blobs == NULL)
        return prpc_error_set(err, PRPC_ENOMEM, "out of memory");
    id = prpc_ident_new(f->name, f->version, (uint32_t)f->nargs, err);
    if (id == NULL) {
        rc = err ? err->code : PRPC_ENOMEM;
        goto fail;
    }
    rc = prpc_wire_check_typed(f, f->args, f->nargs, "arguments", &it, has_blob, ud, id, &args,
                               out->blobs, &out->nblobs, err);
    if (rc == 0)
        rc = prpc_ident_finish(id, computed, err);
    if (rc != 0)
        goto fail;
    if (strcmp(computed, id_s) != 0) {
        rc = prpc_error_set(err, PRPC_EINVAL,
                            "call id %s does not match its arguments (they identify %s)", id_s,
                            computed);
        goto fail;
    }
    out->args_json = prpc_buf_take(&args, NULL, err);
    if (out->args_json == NULL) {
        rc = err ? err->code : PRPC_ENOMEM;
        goto fail;
    }
    memcpy(out->id, computed, sizeof(out->id));
    out->fn = f;
    prpc_ident_free(id);
    return 0;
fail:
    prpc_ident_free(id);
    prpc_buf_cleanup(&args);
    prpc_submit_cleanup(out);
    return rc;
}

void prpc_submit_cleanup(prpc_submit_t *s)
{
    free(s->args_json);
    free(s->blobs);
    memset(s, 0, sizeof(*s));
}

/* ---- identifiers ------------------------------------------------------- */

int prpc_wire_valid_call_id(const char *s)
{
    return prpc_valid_hex(s, PRPC_CALL_ID_HEX);
}

int prpc_wire_valid_lease_id(const char *s)
{
    return prpc_valid_hex(s, PRPC_LEASE_ID_HEX);
}

int prpc_wire_valid_checkpoint_key(const char *s)
{
    return prpc_store_check_checkpoint_key(s, NULL) == 0;
}

/* ---- paths ------------------------------------------------------------- */

static int path_done(char *out, int n, prpc_error_t *err)
{
    if (n < 0 || n >= PRPC_WIRE_PATH_MAX) {
        out[0] = '\0';
        return prpc_error_set(err, PRPC_EINVAL, "a path longer than %d bytes",
                              PRPC_WIRE_PATH_MAX - 1);
    }
    return 0;
}

int prpc__wire_one_of(const char *s, const char *const *set, size_t n)
{
    for (size_t i = 0; s != NULL && i < n; i++)
        if (strcmp(s, set[i]) == 0)
            return 1;
    return 0;
}

int prpc_wire_path_call(char out[PRPC_WIRE_PATH_MAX], const char *call_id, const char *op,
                        prpc_error_t *err)
{
    static const char *const ops[] = {"terminate", "restart"};
    out[0] = '\0';
    if (!prpc_wire_valid_call_id(call_id))
        return prpc_error_set(err, PRPC_EINVAL,
                              "a call id is 64 lowercase hex digits, got \"%.80s\"",
                              call_id ? call_id : "(null)");
    if (op != NULL && !prpc__wire_one_of(op, ops, PRPC_ARRAY_LEN(ops)))
        return prpc_error_set(err, PRPC_EINVAL,
                              "no operation \"%.40s\" on a call (terminate, restart)", op);
    return path_done(out,
                     snprintf(out, PRPC_WIRE_PATH_MAX, "/v1/calls/%s%s%s", call_id,
                              op != NULL ? "/" : "", op != NULL ? op : ""),
                     err);
}

int prpc_wire_path_poll_call(char out[PRPC_WIRE_PATH_MAX], const char *call_id, int64_t wait_ms,
                             int64_t since, int unseen, prpc_error_t *err)
{
    int rc = prpc_wire_path_call(out, call_id, NULL, err);
    size_t n = strlen(out);
    if (rc != 0)
        return rc;
    return path_done(out,
                     (int)n + snprintf(out + n, PRPC_WIRE_PATH_MAX - n,
                                       "?wait_ms=%lld&since=%lld%s", (long long)wait_ms,
                                       (long long)since, unseen ? "&arriving=0" : ""),
                     err);
}

int prpc_wire_path_submit(char out[PRPC_WIRE_PATH_MAX], int64_t wait_ms, prpc_error_t *err)
{
    if (wait_ms > 0)
        return path_done(out, snprintf(out, PRPC_WIRE_PATH_MAX, "/v1/calls?wait_ms=%lld",
                                       (long long)wait_ms),
                         err);
    return path_done(out, snprintf(out, PRPC_WIRE_PATH_MAX, "/v1/calls"), err);
}

int prpc_wire_path_lease(char out[PRPC_WIRE_PATH_MAX], const char *lease_id, const char *op,
                         prpc_error_t *err)
{
    static const char *const ops[] = {"heartbeat", "outputs", "result", "checkpoints"};
    out[0] = '\0';
    if (!prpc_wire_valid_lease_id(lease_id))
        return prpc_error_set(err, PRPC_EINVAL,
                              "a lease id is %d lowercase hex digits, got \"%.80s\"",
                              PRPC_LEASE_ID_HEX, lease_id ? lease_id : "(null)");
    if (!prpc__wire_one_of(op, ops, PRPC_ARRAY_LEN(ops)))
        return prpc_error_set(err, PRPC_EINVAL,
                              "no operation \"%.40s\" on a lease (heartbeat, outputs, result, "
                              "checkpoints)",
                              op ? op : "(null)");
    return path_done(out, snprintf(out, PRPC_WIRE_PATH_MAX, "/v1/leases/%s/%s", lease_id, op),
                     err);
}

int prpc_wire_path_leases(char out[PRPC_WIRE_PATH_MAX], const char *request_id,
                          prpc_error_t *err)
{
    out[0] = '\0';
    if (request_id == NULL || request_id[0] == '\0')
        return path_done(out, snprintf(out, PRPC_WIRE_PATH_MAX, "/v1/leases"), err);
    if (!prpc_wire_valid_lease_id(request_id))
        return prpc_error_set(err, PRPC_EINVAL,
                              "a lease request id is %d lowercase hex digits, got \"%.80s\"",
                              PRPC_LEASE_ID_HEX, request_id);
    return path_done(out, snprintf(out, PRPC_WIRE_PATH_MAX, "/v1/leases?request=%s", request_id),
                     err);
}

