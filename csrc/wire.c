/*
 * wire.c - decoding and checking the documents of the wire API (wire.h).
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

static char kind_tag(const char *kind)
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

static const char *tag_kind(char tag)
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

static int iter_num(const bson_iter_t *it, double *out)
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
    return find_dotted(d, key, &it) && iter_num(&it, out);
}

/* The document it points at, as a static view of its bytes. */
static int iter_doc(const bson_iter_t *it, bson_t *d)
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
    return iter_doc(it, &d) ? prpc_doc_str(&d, key) : NULL;
}

int prpc_iter_doc_num(const bson_iter_t *it, const char *key, double *out)
{
    bson_t d;
    return iter_doc(it, &d) && prpc_doc_num(&d, key, out);
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

static void write_listing(prpc_buf_t *out, const prpc_functions_t *fs);

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
            strlen(name) > PRPC_WIRE_NAME_MAX || kind_tag(kind) == 0)
            return prpc_error_set(err, PRPC_EINVAL,
                                  "function %s: entry %zu of \"%s\" needs a name and a kind "
                                  "(int, float, bool, str, file)",
                                  fn, i, what);
        snprintf((*out)[i].name, sizeof((*out)[i].name), "%s", name);
        (*out)[i].kind = kind_tag(kind);
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
    write_listing(&out, fs);
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
    prpc_buf_printf(out, ", \"kind\": \"%s\"", tag_kind(tag));
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
        if (e.kind == NULL || kind_tag(e.kind) != d->kind)
            return prpc_error_set(err, PRPC_EINVAL, "%s of %s: \"%s\" is declared %s, got kind %.20s",
                                  what, f->name, d->name, tag_kind(d->kind), e.kind ? e.kind : "(none)");
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

/* Typed entries checked without declarations (a document read on its own):
 * each an object with a name (1..PRPC_WIRE_NAME_MAX bytes, not repeated), a
 * kind, and a value by the rules of its kind. Written canonical to out when
 * out is not NULL. */
static int entries_canon(bson_iter_t *arr, const char *what, const char *doc, int code,
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
        tag = e.kind != NULL ? kind_tag(e.kind) : 0;
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

int prpc_wire_check_checkpoint_key(const char *s, prpc_error_t *err)
{
    size_t n;
    if (s == NULL || s[0] == '\0')
        return prpc_error_set(err, PRPC_EINVAL, "checkpoint key is empty");
    n = strnlen(s, PRPC_CHECKPOINT_KEY_MAX + 1);
    if (n > PRPC_CHECKPOINT_KEY_MAX)
        return prpc_error_set(err, PRPC_EINVAL,
                              "checkpoint key \"%.40s...\" is longer than %d bytes", s,
                              PRPC_CHECKPOINT_KEY_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return prpc_error_set(err, PRPC_EINVAL,
                                  "checkpoint key \"%.*s\" has a character outside "
                                  "[A-Za-z0-9._-] at byte %zu",
                                  (int)n, s, i);
    }
    return 0;
}

int prpc_wire_valid_checkpoint_key(const char *s)
{
    return prpc_wire_check_checkpoint_key(s, NULL) == 0;
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

static int one_of(const char *s, const char *const *set, size_t n)
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
        return prpc_error_set(err, PRPC_EINVAL, "a call id is 64 lowercase hex digits, got \"%.80s\"",
                              call_id ? call_id : "(null)");
    if (op != NULL && !one_of(op, ops, PRPC_ARRAY_LEN(ops)))
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
    if (!one_of(op, ops, PRPC_ARRAY_LEN(ops)))
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

/* ---- the document tables ------------------------------------------------ */

/* Field kinds: what a value must be. */
enum {
    K_HEX64,    /* 64 lowercase hex: a call id, a blob, a version */
    K_LEASE_ID, /* a lease id */
    K_KEY,      /* a checkpoint key */
    K_NAME,     /* a string of 1..PRPC_WIRE_NAME_MAX bytes without NUL */
    K_STR,      /* any string */
    K_STATE,    /* a call state's name */
    K_END,      /* done, failed or terminated */
    K_KIND,     /* a typed value's kind */
    K_BOOL,
    K_INT,      /* a number, written as an integer */
    K_PROGRESS, /* a number from 0 to 100 */
    K_SIZE,     /* a byte count: an integral number from 0 to 2^53 */
    K_TYPED,    /* an array of typed entries */
    K_OBJ,      /* an object of document sub */
    K_OBJS,     /* an array of min..max objects of document sub */
    K_HEX64S,   /* an array of min..max call ids */
    K_STRS,     /* an array of min..max strings */
};

#define F_REQ 1   /* must be present */
#define F_NULL 2  /* null is a value */
#define F_LAX 4   /* a value of another kind counts as absent: the broker ignores it */
#define F_LIMIT 8 /* a count outside min..max is PRPC_ELIMIT (a 413 answer) */

typedef struct wire_field {
    const char *name;
    unsigned char kind, flags;
    unsigned char decimals; /* K_PROGRESS: digits written after the point */
    unsigned char sub;      /* K_OBJ, K_OBJS: a prpc_wire_doc_t */
    uint32_t min, max;      /* K_OBJS, K_HEX64S, K_STRS: entries */
} wire_field_t;

typedef struct wire_doc {
    const char *name;
    const char *needs; /* how errors start; NULL in a nested object: its parent's words */
    const wire_field_t *fields;
    size_t n;
} wire_doc_t;

#define FIELDS(a) a, PRPC_ARRAY_LEN(a)

static const wire_field_t ERROR_CODE_F[] = {
    {"code", K_STR, F_REQ, 0, 0, 0, 0},
    {"message", K_STR, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t ERROR_F[] = {
    {"error", K_OBJ, F_REQ, 0, PRPC_WIRE_ERROR_CODE, 0, 0},
};
static const wire_field_t ERROR_RECORD_F[] = {
    {"type", K_STR, F_LAX, 0, 0, 0, 0},
    {"message", K_STR, F_LAX, 0, 0, 0, 0},
    {"traceback", K_STR, F_LAX, 0, 0, 0, 0},
};
static const wire_field_t CALL_F[] = {
    {"id", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"function", K_NAME, F_REQ, 0, 0, 0, 0},
    {"version", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"state", K_STATE, F_REQ, 0, 0, 0, 0},
    {"progress", K_PROGRESS, 0, 3, 0, 0, 0},
    {"attempts", K_INT, 0, 0, 0, 0, 0},
    {"created_ms", K_INT, 0, 0, 0, 0, 0},
    {"updated_ms", K_INT, 0, 0, 0, 0, 0},
    {"finished_ms", K_INT, 0, 0, 0, 0, 0},
    {"terminate_requested", K_BOOL, 0, 0, 0, 0, 0},
    {"outputs", K_TYPED, F_NULL, 0, 0, 0, 0},
    {"error", K_OBJ, F_NULL, 0, PRPC_WIRE_ERROR_RECORD, 0, 0},
    {"args", K_TYPED, 0, 0, 0, 0, 0},
    {"arriving_outputs", K_TYPED, 0, 0, 0, 0, 0},
};
static const wire_field_t SUBMIT_F[] = {
    {"id", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"function", K_NAME, F_REQ, 0, 0, 0, 0},
    {"version", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"args", K_TYPED, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t SUBMITTED_F[] = {
    {"created", K_BOOL, F_REQ, 0, 0, 0, 0},
    {"call", K_OBJ, F_REQ, 0, PRPC_WIRE_CALL, 0, 0},
};
static const wire_field_t BATCH_F[] = {
    {"calls", K_OBJS, F_REQ | F_LIMIT, 0, PRPC_WIRE_SUBMIT, 1, PRPC_WIRE_BATCH_MAX},
};
static const wire_field_t BATCH_ENTRY_F[] = {
    {"created", K_BOOL, 0, 0, 0, 0, 0},
    {"call", K_OBJ, 0, 0, PRPC_WIRE_CALL, 0, 0},
    {"error", K_OBJ, 0, 0, PRPC_WIRE_ERROR_CODE, 0, 0},
};
static const wire_field_t BATCH_ANSWER_F[] = {
    {"results", K_OBJS, F_REQ, 0, PRPC_WIRE_BATCH_ENTRY, 0, PRPC_WIRE_BATCH_MAX},
};
static const wire_field_t WAIT_F[] = {
    {"ids", K_HEX64S, F_REQ | F_LIMIT, 0, 0, 1, PRPC_WIRE_BATCH_MAX},
    {"wait_ms", K_INT, 0, 0, 0, 0, 0},
};
static const wire_field_t WAIT_ANSWER_F[] = {
    {"calls", K_OBJS, F_REQ, 0, PRPC_WIRE_CALL, 0, PRPC_WIRE_BATCH_MAX},
    {"missing", K_HEX64S, F_REQ, 0, 0, 0, PRPC_WIRE_BATCH_MAX},
};
static const wire_field_t CALL_ANSWER_F[] = {
    {"call", K_OBJ, F_REQ, 0, PRPC_WIRE_CALL, 0, 0},
};
static const wire_field_t DELETED_F[] = {
    {"deleted", K_BOOL, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t FUNCTION_REF_F[] = {
    {"name", K_STR, F_REQ, 0, 0, 0, 0},
    {"version", K_STR, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t GPU_F[] = {
    {"index", K_INT, F_LAX, 0, 0, 0, 0},
    {"name", K_STR, F_LAX, 0, 0, 0, 0},
    {"uuid", K_STR, F_LAX, 0, 0, 0, 0},
    {"total_bytes", K_INT, F_LAX, 0, 0, 0, 0},
    {"free_bytes", K_INT, F_LAX, 0, 0, 0, 0},
};
static const wire_field_t LEASE_REQUEST_F[] = {
    {"worker", K_NAME, F_REQ, 0, 0, 0, 0},
    {"functions", K_OBJS, F_REQ, 0, PRPC_WIRE_FUNCTION_REF, 1, PRPC_STORE_LEASE_FUNCTIONS_MAX},
    {"wait_ms", K_INT, 0, 0, 0, 0, 0},
    {"gpus", K_OBJS, F_LAX, 0, PRPC_WIRE_GPU, 0, PRPC_GPU_MAX},
};
static const wire_field_t LEASE_HEAD_F[] = {
    {"id", K_LEASE_ID, F_REQ, 0, 0, 0, 0},
    {"call_id", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"deadline_ms", K_INT, 0, 0, 0, 0, 0},
    {"heartbeat_ms", K_INT, 0, 0, 0, 0, 0},
};
static const wire_field_t CHECKPOINT_ENTRY_F[] = {
    {"key", K_KEY, F_REQ, 0, 0, 0, 0},
    {"blob", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"size", K_SIZE, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t LEASE_F[] = {
    {"lease", K_OBJ, F_REQ, 0, PRPC_WIRE_LEASE_HEAD, 0, 0},
    {"call", K_OBJ, F_REQ, 0, PRPC_WIRE_CALL, 0, 0},
    {"checkpoints", K_OBJS, 0, 0, PRPC_WIRE_CHECKPOINT_ENTRY, 0, PRPC_CHECKPOINTS_MAX},
};
static const wire_field_t HEARTBEAT_F[] = {
    {"call_id", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"progress", K_PROGRESS, F_REQ, 2, 0, 0, 0},
};
static const wire_field_t HEARTBEAT_ANSWER_F[] = {
    {"terminate", K_BOOL, F_REQ, 0, 0, 0, 0},
    {"deadline_ms", K_INT, 0, 0, 0, 0, 0},
};
static const wire_field_t CHECKPOINT_F[] = {
    {"call_id", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"key", K_KEY, F_REQ, 0, 0, 0, 0},
    {"blob", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"size", K_SIZE, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t OUTPUTS_F[] = {
    {"call_id", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"outputs", K_TYPED, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t OUTPUTS_ANSWER_F[] = {
    {"call_id", K_HEX64, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t RESULT_F[] = {
    {"call_id", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"state", K_END, F_REQ, 0, 0, 0, 0},
    {"outputs", K_TYPED, 0, 0, 0, 0, 0},
    {"error", K_OBJ, F_NULL | F_LAX, 0, PRPC_WIRE_ERROR_RECORD, 0, 0},
};
static const wire_field_t PARTIAL_F[] = {
    {"partial", K_SIZE, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t COMMITTED_F[] = {
    {"size", K_SIZE, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t HEALTH_F[] = {
    {"ok", K_BOOL, F_REQ, 0, 0, 0, 0},
    {"node", K_STR, F_REQ, 0, 0, 0, 0},
    {"version", K_STR, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t DECL_F[] = {
    {"name", K_NAME, F_REQ, 0, 0, 0, 0},
    {"kind", K_KIND, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t FUNCTION_F[] = {
    {"name", K_NAME, F_REQ, 0, 0, 0, 0},
    {"version", K_HEX64, F_REQ, 0, 0, 0, 0},
    {"args", K_OBJS, F_REQ, 0, PRPC_WIRE_DECL, 0, PRPC_WIRE_ARGS_MAX},
    {"returns", K_OBJS, F_REQ, 0, PRPC_WIRE_DECL, 0, PRPC_WIRE_ARGS_MAX},
};
static const wire_field_t FUNCTIONS_F[] = {
    {"functions", K_OBJS, F_REQ, 0, PRPC_WIRE_FUNCTION, 1, PRPC_WIRE_FUNCTIONS_MAX},
};
static const wire_field_t STATS_F[] = {
    {"function", K_NAME, F_REQ, 0, 0, 0, 0},
    {"queued", K_INT, F_REQ, 0, 0, 0, 0},
    {"leased", K_INT, F_REQ, 0, 0, 0, 0},
    {"done", K_INT, F_REQ, 0, 0, 0, 0},
    {"failed", K_INT, F_REQ, 0, 0, 0, 0},
    {"terminated", K_INT, F_REQ, 0, 0, 0, 0},
};
static const wire_field_t NODES_F[] = {
    {"nodes", K_STRS, F_REQ, 0, 0, 1, 4096},
};
static const wire_field_t METRICS_F[] = {
    {"requests", K_INT, F_REQ, 0, 0, 0, 0},
    {"bytes_received", K_INT, F_REQ, 0, 0, 0, 0},
    {"chunks_received", K_INT, F_REQ, 0, 0, 0, 0},
    {"chunks_refused", K_INT, F_REQ, 0, 0, 0, 0},
    {"blobs_committed", K_INT, F_REQ, 0, 0, 0, 0},
    {"bytes_served", K_INT, F_REQ, 0, 0, 0, 0},
    {"bytes_followed", K_INT, F_REQ, 0, 0, 0, 0},
    {"bytes_followed_from_memory", K_INT, F_REQ, 0, 0, 0, 0},
    {"corrupt_blobs_dropped", K_INT, F_REQ, 0, 0, 0, 0},
    {"calls_submitted", K_INT, F_REQ, 0, 0, 0, 0},
    {"leases_granted", K_INT, F_REQ, 0, 0, 0, 0},
    {"results_accepted", K_INT, F_REQ, 0, 0, 0, 0},
    {"results_refused", K_INT, F_REQ, 0, 0, 0, 0},
    {"auth_refused", K_INT, F_REQ, 0, 0, 0, 0},
};

static const wire_doc_t DOCS[PRPC_WIRE_NDOCS] = {
    [PRPC_WIRE_ERROR] = {"error", "an error answer", FIELDS(ERROR_F)},
    [PRPC_WIRE_CALL] = {"call", "a call record", FIELDS(CALL_F)},
    [PRPC_WIRE_SUBMIT] = {"submit",
                          "submit needs \"id\" (64 hex), \"function\" and \"version\" (64 hex)",
                          FIELDS(SUBMIT_F)},
    [PRPC_WIRE_SUBMITTED] = {"submitted", "a submit answer", FIELDS(SUBMITTED_F)},
    [PRPC_WIRE_BATCH] = {"batch", "a batch submit needs \"calls\": [submit, ...]",
                         FIELDS(BATCH_F)},
    [PRPC_WIRE_BATCH_ANSWER] = {"batch_answer", "a batch answer", FIELDS(BATCH_ANSWER_F)},
    [PRPC_WIRE_WAIT] = {"wait", "a wait needs \"ids\": [call id, ...]", FIELDS(WAIT_F)},
    [PRPC_WIRE_WAIT_ANSWER] = {"wait_answer", "a wait answer", FIELDS(WAIT_ANSWER_F)},
    [PRPC_WIRE_CALL_ANSWER] = {"call_answer", "a call answer", FIELDS(CALL_ANSWER_F)},
    [PRPC_WIRE_DELETED] = {"deleted", "a delete answer", FIELDS(DELETED_F)},
    [PRPC_WIRE_LEASE_REQUEST] = {"lease_request",
                                 "a lease request needs \"worker\" (a name) and \"functions\"",
                                 FIELDS(LEASE_REQUEST_F)},
    [PRPC_WIRE_LEASE] = {"lease", "a lease answer", FIELDS(LEASE_F)},
    [PRPC_WIRE_HEARTBEAT] = {"heartbeat",
                             "a heartbeat needs \"call_id\" (64 hex) and \"progress\" (0..100)",
                             FIELDS(HEARTBEAT_F)},
    [PRPC_WIRE_HEARTBEAT_ANSWER] = {"heartbeat_answer", "a heartbeat answer",
                                    FIELDS(HEARTBEAT_ANSWER_F)},
    [PRPC_WIRE_CHECKPOINT] = {"checkpoint",
                              "a checkpoint needs \"call_id\" (64 hex), \"key\", \"blob\" (64 "
                              "hex) and \"size\" (bytes)",
                              FIELDS(CHECKPOINT_F)},
    [PRPC_WIRE_OUTPUTS] = {"outputs", "announced outputs need \"call_id\" (64 hex) and \"outputs\"",
                           FIELDS(OUTPUTS_F)},
    [PRPC_WIRE_OUTPUTS_ANSWER] = {"outputs_answer", "an outputs answer",
                                  FIELDS(OUTPUTS_ANSWER_F)},
    [PRPC_WIRE_RESULT] = {"result", "a result needs \"call_id\" (64 hex) and \"state\"",
                          FIELDS(RESULT_F)},
    [PRPC_WIRE_PARTIAL] = {"partial", "a chunk answer", FIELDS(PARTIAL_F)},
    [PRPC_WIRE_COMMITTED] = {"committed", "a commit answer", FIELDS(COMMITTED_F)},
    [PRPC_WIRE_HEALTH] = {"health", "a health answer", FIELDS(HEALTH_F)},
    [PRPC_WIRE_FUNCTIONS] = {"functions", "a function listing", FIELDS(FUNCTIONS_F)},
    [PRPC_WIRE_STATS] = {"stats", "function stats", FIELDS(STATS_F)},
    [PRPC_WIRE_NODES] = {"nodes", "a node list", FIELDS(NODES_F)},
    [PRPC_WIRE_METRICS] = {"metrics", "metrics", FIELDS(METRICS_F)},
    [PRPC_WIRE_ERROR_CODE] = {"error_code", NULL, FIELDS(ERROR_CODE_F)},
    [PRPC_WIRE_ERROR_RECORD] = {"error_record", NULL, FIELDS(ERROR_RECORD_F)},
    [PRPC_WIRE_BATCH_ENTRY] = {"batch_entry", NULL, FIELDS(BATCH_ENTRY_F)},
    [PRPC_WIRE_FUNCTION_REF] = {"function_ref",
                                "each function of a lease request needs a name and a version",
                                FIELDS(FUNCTION_REF_F)},
    [PRPC_WIRE_GPU] = {"gpu", NULL, FIELDS(GPU_F)},
    [PRPC_WIRE_LEASE_HEAD] = {"lease_head", NULL, FIELDS(LEASE_HEAD_F)},
    [PRPC_WIRE_CHECKPOINT_ENTRY] = {"checkpoint_entry", NULL, FIELDS(CHECKPOINT_ENTRY_F)},
    [PRPC_WIRE_FUNCTION] = {"function", NULL, FIELDS(FUNCTION_F)},
    [PRPC_WIRE_DECL] = {"decl", NULL, FIELDS(DECL_F)},
};

const char *prpc_wire_doc_name(int doc)
{
    return doc >= 0 && doc < PRPC_WIRE_NDOCS ? DOCS[doc].name : NULL;
}

int prpc_wire_doc_find(const char *name)
{
    for (int i = 0; name != NULL && i < PRPC_WIRE_NDOCS; i++)
        if (strcmp(DOCS[i].name, name) == 0)
            return i;
    return -1;
}

/* ---- checking and canonical text --------------------------------------- */

/* Where a check is: the top document's words and the field's path. */
typedef struct where {
    const char *needs; /* of the document checked */
    const char *doc;   /* its name */
    char path[256];    /* "lease.id", "checkpoints[2].key" */
    int code;          /* what a broken rule returns */
} where_t;

static int broken(const where_t *w, prpc_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int broken(const where_t *w, prpc_error_t *err, const char *fmt, ...)
{
    char words[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(words, sizeof(words), fmt, ap);
    va_end(ap);
    return prpc_error_set(err, w->code, "%s: \"%s\" %s", w->needs, w->path, words);
}

/* Append ".name" or "[i]" to w's path; returns its length before, for
 * path_pop. */
static size_t path_push(where_t *w, const char *name, size_t index)
{
    size_t n = strlen(w->path);
    if (name != NULL)
        snprintf(w->path + n, sizeof(w->path) - n, "%s%s", n ? "." : "", name);
    else
        snprintf(w->path + n, sizeof(w->path) - n, "[%zu]", index);
    return n;
}

static void path_pop(where_t *w, size_t n)
{
    w->path[n] = '\0';
}

static const char *const STATE_NAMES[] = {"queued", "leased", "done", "failed", "terminated"};

/* 1 when it holds a number; *d gets it. */
static int number_of(const bson_iter_t *it, double *d)
{
    return iter_num(it, d);
}

static void put_key(prpc_buf_t *out, int *first, const char *name)
{
    prpc_buf_printf(out, "%s\"%s\": ", *first ? "" : ", ", name);
    *first = 0;
}

static int canon_doc(int doc, const bson_t *d, where_t *w, prpc_buf_t *out, prpc_error_t *err);

/* A nested object: errors inside it start with its own words when it has
 * some (a lease request's function entries), else with its parent's. */
static int canon_nested(int doc, const bson_t *d, where_t *w, prpc_buf_t *out, prpc_error_t *err)
{
    const char *parent = w->needs;
    int rc;
    if (DOCS[doc].needs != NULL)
        w->needs = DOCS[doc].needs;
    rc = canon_doc(doc, d, w, out, err);
    w->needs = parent;
    return rc;
}

/* Check (and write, when out) the list at it: its count and each entry. */
static int canon_list(const wire_field_t *f, const bson_iter_t *it, where_t *w, prpc_buf_t *out,
                      prpc_error_t *err)
{
    bson_iter_t arr;
    size_t count = 0, i = 0;
    int rc;
    if (!BSON_ITER_HOLDS_ARRAY(it) || !bson_iter_recurse(it, &arr))
        return broken(w, err, "must be an array");
    while (bson_iter_next(&arr))
        count++;
    if (count < f->min || count > f->max) {
        where_t lw = *w;
        if (f->flags & F_LIMIT)
            lw.code = PRPC_ELIMIT;
        return broken(&lw, err, "must hold %u to %u entries, got %zu", f->min, f->max, count);
    }
    bson_iter_recurse(it, &arr);
    if (out != NULL)
        prpc_buf_puts(out, "[");
    while (bson_iter_next(&arr)) {
        size_t at = path_push(w, NULL, i);
        uint32_t len = 0;
        const char *s = BSON_ITER_HOLDS_UTF8(&arr) ? bson_iter_utf8(&arr, &len) : NULL;
        bson_t sub;
        if (out != NULL && i > 0)
            prpc_buf_puts(out, ", ");
        if (f->kind == K_HEX64S) {
            if (s == NULL || len != PRPC_CALL_ID_HEX || !prpc_wire_valid_call_id(s))
                return broken(w, err, "must be a call id (64 lowercase hex digits)");
            if (out != NULL)
                prpc_buf_printf(out, "\"%s\"", s);
        } else if (f->kind == K_STRS) {
            if (s == NULL)
                return broken(w, err, "must be a string");
            if (out != NULL)
                prpc_buf_json_str(out, s, len);
        } else {
            if (!iter_doc(&arr, &sub))
                return broken(w, err, "must be an object");
            if ((rc = canon_nested(f->sub, &sub, w, out, err)) != 0)
                return rc;
        }
        path_pop(w, at);
        i++;
    }
    if (out != NULL)
        prpc_buf_puts(out, "]");
    return 0;
}

/* Check (and write) the value of field f at it. Returns 0, an error, or 1
 * when the value counts as absent (F_LAX). */
static int canon_value(const wire_field_t *f, const bson_iter_t *it, where_t *w, prpc_buf_t *out,
                       prpc_error_t *err)
{
    uint32_t len = 0;
    const char *s = BSON_ITER_HOLDS_UTF8(it) ? bson_iter_utf8(it, &len) : NULL;
    double d = 0;
    int num = number_of(it, &d), lax = (f->flags & F_LAX) != 0;
    bson_t sub;
    int rc;

    switch (f->kind) {
    case K_HEX64:
        if (s == NULL || len != PRPC_CALL_ID_HEX || !prpc_wire_valid_call_id(s))
            return lax ? 1 : broken(w, err, "must be 64 lowercase hex digits");
        break;
    case K_LEASE_ID:
        if (s == NULL || len != PRPC_LEASE_ID_HEX || !prpc_wire_valid_lease_id(s))
            return lax ? 1 : broken(w, err, "must be a lease id (%d lowercase hex digits)",
                                    PRPC_LEASE_ID_HEX);
        break;
    case K_KEY:
        if (s == NULL || strlen(s) != len)
            return lax ? 1 : broken(w, err, "must be a checkpoint key (a string)");
        if (prpc_wire_check_checkpoint_key(s, err) != 0) {
            if (lax)
                return 1;
            if (err != NULL) {
                char why[PRPC_ERROR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err->message);
                prpc_error_set(err, w->code, "%s: \"%s\": %s", w->needs, w->path, why);
            }
            return w->code;
        }
        break;
    case K_NAME:
        if (s == NULL || len == 0 || len > PRPC_WIRE_NAME_MAX || strlen(s) != len)
            return lax ? 1 : broken(w, err, "must be a name (1 to %d bytes)", PRPC_WIRE_NAME_MAX);
        break;
    case K_STR:
        if (s == NULL)
            return lax ? 1 : broken(w, err, "must be a string");
        break;
    case K_STATE:
        if (!one_of(s, STATE_NAMES, PRPC_ARRAY_LEN(STATE_NAMES)))
            return lax ? 1 : broken(w, err, "must be queued, leased, done, failed or terminated");
        break;
    case K_END:
        if (!one_of(s, STATE_NAMES + 2, 3))
            return lax ? 1 : broken(w, err, "must be done, failed or terminated");
        break;
    case K_KIND:
        if (s == NULL || kind_tag(s) == 0)
            return lax ? 1 : broken(w, err, "must be int, float, bool, str or file");
        break;
    case K_BOOL:
        if (!BSON_ITER_HOLDS_BOOL(it))
            return lax ? 1 : broken(w, err, "must be true or false");
        if (out != NULL)
            prpc_buf_puts(out, bson_iter_bool(it) ? "true" : "false");
        return 0;
    case K_INT:
        if (!num || (BSON_ITER_HOLDS_DOUBLE(it) &&
                     !(d >= -9223372036854775808.0 && d < 9223372036854775808.0)))
            return lax ? 1 : broken(w, err, "must be a number");
        if (out != NULL)
            prpc_buf_printf(out, "%lld",
                            BSON_ITER_HOLDS_DOUBLE(it) ? (long long)d
                                                       : (long long)bson_iter_as_int64(it));
        return 0;
    case K_PROGRESS:
        if (!num || !(d >= 0 && d <= 100))
            return lax ? 1 : broken(w, err, "must be a number from 0 to 100");
        if (out != NULL)
            prpc_buf_printf(out, "%.*f", (int)f->decimals, d);
        return 0;
    case K_SIZE:
        if (!num || !(d >= 0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d)
            return lax ? 1 : broken(w, err, "must be a byte count (an integer from 0 to 2^53)");
        if (out != NULL)
            prpc_buf_printf(out, "%llu", (unsigned long long)d);
        return 0;
    case K_TYPED:
        if (lax && !BSON_ITER_HOLDS_ARRAY(it))
            return 1;
        return entries_canon((bson_iter_t *)it, w->path, w->doc, w->code, out, err);
    case K_OBJ:
        if (!iter_doc(it, &sub))
            return lax ? 1 : broken(w, err, "must be an object");
        return canon_nested(f->sub, &sub, w, out, err);
    default:
        if (lax && !BSON_ITER_HOLDS_ARRAY(it))
            return 1;
        rc = canon_list(f, it, w, out, err);
        return rc;
    }
    if (out != NULL)
        prpc_buf_json_str(out, s, len);
    return 0;
}

static int canon_doc(int doc, const bson_t *d, where_t *w, prpc_buf_t *out, prpc_error_t *err)
{
    const wire_doc_t *t = &DOCS[doc];
    size_t mark = out != NULL ? out->len : 0;
    int first = 1, rc;
    if (out != NULL)
        prpc_buf_puts(out, "{");
    for (size_t i = 0; i < t->n; i++) {
        const wire_field_t *f = &t->fields[i];
        bson_iter_t it;
        int have = bson_iter_init_find(&it, d, f->name);
        size_t at = path_push(w, f->name, 0);
        if (have && BSON_ITER_HOLDS_NULL(&it) && (f->flags & F_NULL)) {
            if (out != NULL) {
                put_key(out, &first, f->name);
                prpc_buf_puts(out, "null");
            }
            path_pop(w, at);
            continue;
        }
        if (have && BSON_ITER_HOLDS_NULL(&it) && (f->flags & F_LAX))
            have = 0;
        if (!have) {
            if (f->flags & F_REQ)
                return broken(w, err, "is missing");
            path_pop(w, at);
            continue;
        }
        if (out != NULL) {
            /* A value that turns out to count as absent takes its key back. */
            mark = out->len;
            put_key(out, &first, f->name);
        }
        rc = canon_value(f, &it, w, out, err);
        if (rc == 1) {
            if (f->flags & F_REQ)
                return broken(w, err, "is missing");
            if (out != NULL) {
                out->len = mark;
                if (out->data != NULL)
                    out->data[mark] = '\0';
                first = mark == 0 || out->data[mark - 1] == '{';
            }
            path_pop(w, at);
            continue;
        }
        if (rc != 0)
            return rc;
        path_pop(w, at);
    }
    /* The one rule across fields: a result that is done brings its outputs. */
    if (doc == PRPC_WIRE_RESULT) {
        const char *state = prpc_doc_str(d, "state");
        bson_iter_t it;
        if (state != NULL && strcmp(state, "done") == 0 && !bson_iter_init_find(&it, d, "outputs"))
            return prpc_error_set(err, w->code, "a done result needs \"outputs\"");
    }
    if (out != NULL)
        prpc_buf_puts(out, "}");
    return 0;
}

int prpc_wire_check(prpc_wire_doc_t doc, const bson_t *d, int code, prpc_error_t *err)
{
    return prpc_wire_canonical(doc, d, code, NULL, err);
}

int prpc_wire_canonical(prpc_wire_doc_t doc, const bson_t *d, int code, prpc_buf_t *out,
                        prpc_error_t *err)
{
    where_t w;
    if ((int)doc < 0 || doc >= PRPC_WIRE_NDOCS || d == NULL)
        return prpc_error_set(err, PRPC_EINVAL, "no such document (%d)", (int)doc);
    memset(&w, 0, sizeof(w));
    w.needs = DOCS[doc].needs != NULL ? DOCS[doc].needs : DOCS[doc].name;
    w.doc = DOCS[doc].name;
    w.code = code;
    return canon_doc(doc, d, &w, out, err);
}

bson_t *prpc_wire_decode(prpc_wire_doc_t doc, const char *json, size_t len, int code,
                         prpc_error_t *err)
{
    bson_t *d = prpc_json_parse(json, len, prpc_wire_doc_name(doc) ? prpc_wire_doc_name(doc)
                                                                   : "document",
                                err);
    if (d == NULL) {
        if (err != NULL && err->code == PRPC_EINVAL)
            err->code = code;
        return NULL;
    }
    if (prpc_wire_check(doc, d, code, err) != 0) {
        bson_destroy(d);
        return NULL;
    }
    return d;
}

/* ---- encoders ----------------------------------------------------------- */

/* A value to write for one field of a document table: the encoders fill an
 * array of these in the table's order, so the bytes of every document come
 * from one writer (write_vals) and one table. */
enum { V_ABSENT, V_NULL, V_STR, V_INT, V_NUM, V_BOOL, V_RAW, V_OBJ, V_LIST };

typedef struct wire_val {
    unsigned char t;             /* V_*; V_ABSENT (0) leaves the field out */
    const char *s;               /* V_STR: len bytes; V_RAW: JSON text */
    size_t len;
    int64_t i;                   /* V_INT, V_BOOL */
    double d;                    /* V_NUM */
    const struct wire_val *vals; /* V_OBJ: the sub-document's values; V_LIST: its entries */
    size_t n;                    /* V_LIST: entries (each the sub-document's n values for
                                    K_OBJS, one value otherwise) */
} wire_val_t;

static wire_val_t v_strn(const char *s, size_t len)
{
    wire_val_t v = {V_STR, s, len, 0, 0, NULL, 0};
    return v;
}

static wire_val_t v_str(const char *s)
{
    return v_strn(s, strlen(s));
}

static wire_val_t v_int(int64_t i)
{
    wire_val_t v = {V_INT, NULL, 0, i, 0, NULL, 0};
    return v;
}

static wire_val_t v_num(double d)
{
    wire_val_t v = {V_NUM, NULL, 0, 0, d, NULL, 0};
    return v;
}

static wire_val_t v_bool(int b)
{
    wire_val_t v = {V_BOOL, NULL, 0, b != 0, 0, NULL, 0};
    return v;
}

/* JSON text as it is; NULL is null. */
static wire_val_t v_raw(const char *json)
{
    wire_val_t v = {json != NULL ? V_RAW : V_NULL, json, 0, 0, 0, NULL, 0};
    return v;
}

static wire_val_t v_obj(const wire_val_t *vals)
{
    wire_val_t v = {V_OBJ, NULL, 0, 0, 0, vals, 0};
    return v;
}

static wire_val_t v_list(const wire_val_t *vals, size_t n)
{
    wire_val_t v = {V_LIST, NULL, 0, 0, 0, vals, n};
    return v;
}

static void write_vals(prpc_buf_t *out, int doc, const wire_val_t *vals);

static void write_val(prpc_buf_t *out, const wire_field_t *f, const wire_val_t *v)
{
    switch (v->t) {
    case V_NULL:
        prpc_buf_puts(out, "null");
        break;
    case V_STR:
        prpc_buf_json_str(out, v->s, v->len);
        break;
    case V_INT:
        prpc_buf_printf(out, "%lld", (long long)v->i);
        break;
    case V_NUM:
        prpc_buf_printf(out, "%.*f", (int)f->decimals, v->d);
        break;
    case V_BOOL:
        prpc_buf_puts(out, v->i ? "true" : "false");
        break;
    case V_RAW:
        prpc_buf_puts(out, v->s);
        break;
    case V_OBJ:
        write_vals(out, f->sub, v->vals);
        break;
    case V_LIST:
        prpc_buf_puts(out, "[");
        for (size_t j = 0; j < v->n; j++) {
            if (j > 0)
                prpc_buf_puts(out, ", ");
            if (f->kind == K_OBJS)
                write_vals(out, f->sub, v->vals + j * DOCS[f->sub].n);
            else
                write_val(out, f, &v->vals[j]);
        }
        prpc_buf_puts(out, "]");
        break;
    default:
        break;
    }
}

static void write_vals(prpc_buf_t *out, int doc, const wire_val_t *vals)
{
    const wire_doc_t *t = &DOCS[doc];
    int first = 1;
    prpc_buf_puts(out, "{");
    for (size_t i = 0; i < t->n; i++) {
        if (vals[i].t == V_ABSENT)
            continue;
        put_key(out, &first, t->fields[i].name);
        write_val(out, &t->fields[i], &vals[i]);
    }
    prpc_buf_puts(out, "}");
}

static int write_doc(prpc_buf_t *out, int doc, const wire_val_t *vals)
{
    write_vals(out, doc, vals);
    return out->failed;
}

/* n entries of the document doc's values, zeroed (all absent); NULL when out
 * of memory, which is then the buffer's failure too. */
static wire_val_t *vals_new(prpc_buf_t *out, int doc, size_t n)
{
    wire_val_t *v = calloc(n ? n * DOCS[doc].n : 1, sizeof(*v));
    if (v == NULL)
        out->failed = PRPC_ENOMEM;
    return v;
}

/* A call record's values (CALL_F's order). */
static void call_vals(wire_val_t v[PRPC_ARRAY_LEN(CALL_F)], const prpc_call_t *c, int with_args,
                      const char *arriving_json)
{
    memset(v, 0, sizeof(wire_val_t) * PRPC_ARRAY_LEN(CALL_F));
    v[0] = v_str(c->id);
    v[1] = v_str(c->function);
    v[2] = v_str(c->version);
    v[3] = v_str(prpc_call_state_name(c->state));
    v[4] = v_num(c->progress);
    v[5] = v_int(c->attempts);
    v[6] = v_int(c->created_ms);
    v[7] = v_int(c->updated_ms);
    v[8] = v_int(c->finished_ms);
    v[9] = v_bool(c->terminate_requested);
    v[10] = v_raw(c->outputs_json);
    v[11] = v_raw(c->error_json);
    if (with_args)
        v[12] = v_raw(c->args_json != NULL ? c->args_json : "[]");
    if (arriving_json != NULL)
        v[13] = v_raw(arriving_json);
}

int prpc_wire_write_error(prpc_buf_t *out, int code, const char *message)
{
    wire_val_t e[] = {v_str(prpc_strerror(code)), v_str(message != NULL ? message : "")};
    wire_val_t v[] = {v_obj(e)};
    return write_doc(out, PRPC_WIRE_ERROR, v);
}

int prpc_wire_write_call(prpc_buf_t *out, const prpc_call_t *c, int with_args,
                         const char *arriving_json)
{
    wire_val_t v[PRPC_ARRAY_LEN(CALL_F)];
    call_vals(v, c, with_args, arriving_json);
    return write_doc(out, PRPC_WIRE_CALL, v);
}

int prpc_wire_write_call_answer(prpc_buf_t *out, const prpc_call_t *c, const char *arriving_json)
{
    wire_val_t cv[PRPC_ARRAY_LEN(CALL_F)], v[1];
    call_vals(cv, c, 0, arriving_json);
    v[0] = v_obj(cv);
    return write_doc(out, PRPC_WIRE_CALL_ANSWER, v);
}

int prpc_wire_write_submitted(prpc_buf_t *out, int created, const prpc_call_t *c)
{
    wire_val_t cv[PRPC_ARRAY_LEN(CALL_F)], v[2];
    call_vals(cv, c, 0, NULL);
    v[0] = v_bool(created);
    v[1] = v_obj(cv);
    return write_doc(out, PRPC_WIRE_SUBMITTED, v);
}

int prpc_wire_write_batch_answer(prpc_buf_t *out, const prpc_wire_batch_result_t *r, size_t n)
{
    const size_t nc = PRPC_ARRAY_LEN(CALL_F);
    wire_val_t *entries = vals_new(out, PRPC_WIRE_BATCH_ENTRY, n);
    wire_val_t *calls = calloc(n ? n * nc : 1, sizeof(*calls));
    wire_val_t *codes = calloc(n ? n * 2 : 1, sizeof(*codes));
    wire_val_t v[1];
    if (entries == NULL || calls == NULL || codes == NULL) {
        out->failed = PRPC_ENOMEM;
    } else {
        for (size_t i = 0; i < n; i++) {
            wire_val_t *e = &entries[i * PRPC_ARRAY_LEN(BATCH_ENTRY_F)];
            if (r[i].code != 0) {
                codes[2 * i] = v_str(prpc_strerror(r[i].code));
                codes[2 * i + 1] = v_str(r[i].message != NULL ? r[i].message : "");
                e[2] = v_obj(&codes[2 * i]);
            } else {
                call_vals(&calls[i * nc], r[i].call, 0, NULL);
                e[0] = v_bool(r[i].created);
                e[1] = v_obj(&calls[i * nc]);
            }
        }
        v[0] = v_list(entries, n);
        write_vals(out, PRPC_WIRE_BATCH_ANSWER, v);
    }
    free(entries);
    free(calls);
    free(codes);
    return out->failed;
}

int prpc_wire_write_wait_answer(prpc_buf_t *out, const prpc_call_t *calls, size_t ncalls,
                                const char (*missing)[PRPC_CALL_ID_HEX + 1], size_t nmissing)
{
    wire_val_t *cv = vals_new(out, PRPC_WIRE_CALL, ncalls);
    wire_val_t *mv = calloc(nmissing ? nmissing : 1, sizeof(*mv));
    wire_val_t v[2];
    if (cv == NULL || mv == NULL) {
        out->failed = PRPC_ENOMEM;
    } else {
        for (size_t i = 0; i < ncalls; i++)
            call_vals(&cv[i * PRPC_ARRAY_LEN(CALL_F)], &calls[i], 0, NULL);
        for (size_t i = 0; i < nmissing; i++)
            mv[i] = v_str(missing[i]);
        v[0] = v_list(cv, ncalls);
        v[1] = v_list(mv, nmissing);
        write_vals(out, PRPC_WIRE_WAIT_ANSWER, v);
    }
    free(cv);
    free(mv);
    return out->failed;
}

int prpc_wire_write_deleted(prpc_buf_t *out)
{
    wire_val_t v[] = {v_bool(1)};
    return write_doc(out, PRPC_WIRE_DELETED, v);
}

int prpc_wire_write_lease(prpc_buf_t *out, const prpc_call_t *c, int heartbeat_ms,
                          const prpc_checkpoint_t *ck, size_t nck)
{
    wire_val_t head[] = {v_str(c->lease_id), v_str(c->id), v_int(c->lease_deadline_ms),
                         v_int(heartbeat_ms)};
    wire_val_t cv[PRPC_ARRAY_LEN(CALL_F)], v[3];
    wire_val_t *kv = vals_new(out, PRPC_WIRE_CHECKPOINT_ENTRY, nck);
    if (kv == NULL)
        return out->failed;
    for (size_t i = 0; i < nck; i++) {
        kv[3 * i] = v_str(ck[i].key);
        kv[3 * i + 1] = v_str(ck[i].sha256);
        kv[3 * i + 2] = v_int((int64_t)ck[i].size);
    }
    call_vals(cv, c, 1, NULL);
    v[0] = v_obj(head);
    v[1] = v_obj(cv);
    v[2] = v_list(kv, nck);
    write_vals(out, PRPC_WIRE_LEASE, v);
    free(kv);
    return out->failed;
}

int prpc_wire_write_heartbeat_answer(prpc_buf_t *out, int terminate, int64_t deadline_ms)
{
    wire_val_t v[] = {v_bool(terminate), v_int(deadline_ms)};
    return write_doc(out, PRPC_WIRE_HEARTBEAT_ANSWER, v);
}

int prpc_wire_write_outputs_answer(prpc_buf_t *out, const char *call_id)
{
    wire_val_t v[] = {v_str(call_id)};
    return write_doc(out, PRPC_WIRE_OUTPUTS_ANSWER, v);
}

int prpc_wire_write_partial(prpc_buf_t *out, uint64_t partial)
{
    wire_val_t v[] = {v_int((int64_t)partial)};
    return write_doc(out, PRPC_WIRE_PARTIAL, v);
}

int prpc_wire_write_committed(prpc_buf_t *out, uint64_t size)
{
    wire_val_t v[] = {v_int((int64_t)size)};
    return write_doc(out, PRPC_WIRE_COMMITTED, v);
}

int prpc_wire_write_health(prpc_buf_t *out)
{
    wire_val_t v[] = {v_bool(1), v_str("broker"), v_str(PRPC_WIRE_VERSION)};
    return write_doc(out, PRPC_WIRE_HEALTH, v);
}

int prpc_wire_write_stats(prpc_buf_t *out, const char *function,
                          const int64_t counts[PRPC_CALL_NSTATES])
{
    wire_val_t v[1 + PRPC_CALL_NSTATES];
    v[0] = v_str(function);
    for (int i = 0; i < PRPC_CALL_NSTATES; i++)
        v[1 + i] = v_int(counts[i]);
    return write_doc(out, PRPC_WIRE_STATS, v);
}

int prpc_wire_write_nodes(prpc_buf_t *out, const char *const *addrs, size_t n)
{
    wire_val_t *a = calloc(n ? n : 1, sizeof(*a)), v[1];
    if (a == NULL)
        return out->failed = PRPC_ENOMEM;
    for (size_t i = 0; i < n; i++)
        a[i] = v_str(addrs[i]);
    v[0] = v_list(a, n);
    write_vals(out, PRPC_WIRE_NODES, v);
    free(a);
    return out->failed;
}

int prpc_wire_write_metrics(prpc_buf_t *out, const prpc_wire_metrics_t *m)
{
    const uint64_t c[] = {m->requests,
                          m->bytes_received,
                          m->chunks_received,
                          m->chunks_refused,
                          m->blobs_committed,
                          m->bytes_served,
                          m->bytes_followed,
                          m->bytes_followed_from_memory,
                          m->corrupt_blobs_dropped,
                          m->calls_submitted,
                          m->leases_granted,
                          m->results_accepted,
                          m->results_refused,
                          m->auth_refused};
    wire_val_t v[PRPC_ARRAY_LEN(METRICS_F)];
    for (size_t i = 0; i < PRPC_ARRAY_LEN(v); i++)
        v[i] = v_int((int64_t)c[i]);
    return write_doc(out, PRPC_WIRE_METRICS, v);
}

int prpc_wire_write_checkpoint(prpc_buf_t *out, const char *call_id, const char *key,
                               const char *blob, uint64_t size)
{
    wire_val_t v[] = {v_str(call_id), v_str(key), v_str(blob), v_int((int64_t)size)};
    return write_doc(out, PRPC_WIRE_CHECKPOINT, v);
}

int prpc_wire_write_lease_request(prpc_buf_t *out, const char *worker,
                                  const prpc_wire_function_ref_t *fns, size_t nfns,
                                  int64_t wait_ms, const prpc_gpu_info_t *gpus, size_t ngpus)
{
    wire_val_t *fv = vals_new(out, PRPC_WIRE_FUNCTION_REF, nfns);
    wire_val_t *gv = vals_new(out, PRPC_WIRE_GPU, ngpus);
    wire_val_t v[4];
    if (fv != NULL && gv != NULL) {
        for (size_t i = 0; i < nfns; i++) {
            fv[2 * i] = v_str(fns[i].name);
            fv[2 * i + 1] = v_str(fns[i].version);
        }
        for (size_t i = 0; i < ngpus; i++) {
            wire_val_t *g = &gv[i * PRPC_ARRAY_LEN(GPU_F)];
            g[0] = v_int(gpus[i].index);
            g[1] = v_str(gpus[i].name);
            g[2] = v_str(gpus[i].uuid);
            g[3] = v_int((int64_t)gpus[i].total_bytes);
            g[4] = v_int((int64_t)gpus[i].free_bytes);
        }
        v[0] = v_str(worker);
        v[1] = v_list(fv, nfns);
        v[2] = v_int(wait_ms);
        v[3] = v_list(gv, ngpus);
        write_vals(out, PRPC_WIRE_LEASE_REQUEST, v);
    }
    free(fv);
    free(gv);
    return out->failed;
}

int prpc_wire_write_heartbeat(prpc_buf_t *out, const char *call_id, double progress)
{
    wire_val_t v[] = {v_str(call_id), v_num(progress)};
    return write_doc(out, PRPC_WIRE_HEARTBEAT, v);
}

int prpc_wire_write_outputs(prpc_buf_t *out, const char *call_id, const char *outputs_json)
{
    wire_val_t v[] = {v_str(call_id), v_raw(outputs_json != NULL ? outputs_json : "[]")};
    return write_doc(out, PRPC_WIRE_OUTPUTS, v);
}

int prpc_wire_write_result(prpc_buf_t *out, const char *call_id, const char *state,
                           const char *outputs_json, const char *error_json)
{
    wire_val_t v[] = {v_str(call_id), v_str(state),
                      v_raw(outputs_json != NULL ? outputs_json : "[]"), v_raw(error_json)};
    return write_doc(out, PRPC_WIRE_RESULT, v);
}

int prpc_wire_write_error_record(prpc_buf_t *out, const char *type, const char *message,
                                 const char *traceback)
{
    wire_val_t v[] = {
        type != NULL ? v_strn(type, strnlen(type, 256)) : v_str("Error"),
        v_strn(message != NULL ? message : "", message != NULL ? strnlen(message, 65536) : 0),
        v_strn(traceback != NULL ? traceback : "",
               traceback != NULL ? strnlen(traceback, 262144) : 0),
    };
    return write_doc(out, PRPC_WIRE_ERROR_RECORD, v);
}

static void submit_vals(wire_val_t v[4], const prpc_wire_submit_ref_t *s)
{
    v[0] = v_str(s->id);
    v[1] = v_str(s->function);
    v[2] = v_str(s->version);
    v[3] = v_raw(s->args_json != NULL ? s->args_json : "[]");
}

int prpc_wire_write_submit(prpc_buf_t *out, const prpc_wire_submit_ref_t *s)
{
    wire_val_t v[4];
    submit_vals(v, s);
    return write_doc(out, PRPC_WIRE_SUBMIT, v);
}

int prpc_wire_write_batch(prpc_buf_t *out, const prpc_wire_submit_ref_t *s, size_t n)
{
    wire_val_t *sv = vals_new(out, PRPC_WIRE_SUBMIT, n), v[1];
    if (sv == NULL)
        return out->failed;
    for (size_t i = 0; i < n; i++)
        submit_vals(&sv[4 * i], &s[i]);
    v[0] = v_list(sv, n);
    write_vals(out, PRPC_WIRE_BATCH, v);
    free(sv);
    return out->failed;
}

int prpc_wire_write_wait(prpc_buf_t *out, const char (*ids)[PRPC_CALL_ID_HEX + 1], size_t n,
                         int64_t wait_ms)
{
    wire_val_t *iv = calloc(n ? n : 1, sizeof(*iv)), v[2];
    if (iv == NULL)
        return out->failed = PRPC_ENOMEM;
    for (size_t i = 0; i < n; i++)
        iv[i] = v_str(ids[i]);
    v[0] = v_list(iv, n);
    v[1] = v_int(wait_ms);
    write_vals(out, PRPC_WIRE_WAIT, v);
    free(iv);
    return out->failed;
}

/* ---- JSON carried through ----------------------------------------------- */

int prpc_wire_write_json_iter(prpc_buf_t *out, const bson_iter_t *it)
{
    bson_t d;
    uint32_t len = 0;
    const char *s;
    switch (bson_iter_type(it)) {
    case BSON_TYPE_UTF8:
        s = bson_iter_utf8(it, &len);
        prpc_buf_json_str(out, s, len);
        break;
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        prpc_buf_printf(out, "%lld", (long long)bson_iter_as_int64(it));
        break;
    case BSON_TYPE_DOUBLE:
        prpc_buf_printf(out, "%.17g", bson_iter_double(it));
        break;
    case BSON_TYPE_BOOL:
        prpc_buf_puts(out, bson_iter_bool(it) ? "true" : "false");
        break;
    case BSON_TYPE_DOCUMENT:
    case BSON_TYPE_ARRAY: {
        const uint8_t *data = NULL;
        if (BSON_ITER_HOLDS_DOCUMENT(it))
            bson_iter_document(it, &len, &data);
        else
            bson_iter_array(it, &len, &data);
        if (!bson_init_static(&d, data, len))
            return out->failed = PRPC_EINVAL;
        return prpc_wire_write_json_doc(out, &d, BSON_ITER_HOLDS_ARRAY(it));
    }
    default:
        prpc_buf_puts(out, "null");
        break;
    }
    return out->failed;
}

int prpc_wire_write_json_doc(prpc_buf_t *out, const bson_t *d, int as_array)
{
    bson_iter_t it;
    int first = 1;
    prpc_buf_puts(out, as_array ? "[" : "{");
    if (bson_iter_init(&it, d)) {
        while (bson_iter_next(&it)) {
            if (!first)
                prpc_buf_puts(out, ", ");
            first = 0;
            if (!as_array) {
                prpc_buf_json_str(out, bson_iter_key(&it), bson_iter_key_len(&it));
                prpc_buf_puts(out, ": ");
            }
            prpc_wire_write_json_iter(out, &it);
        }
    }
    prpc_buf_puts(out, as_array ? "]" : "}");
    return out->failed;
}

/* ---- decoders for the worker -------------------------------------------- */

int prpc_wire_decode_lease(const bson_t *d, prpc_wire_lease_t *out, prpc_error_t *err)
{
    const char *id = prpc_doc_str(d, "lease.id"), *call_id = prpc_doc_str(d, "lease.call_id");
    double n = 0;
    memset(out, 0, sizeof(*out));
    if (!prpc_wire_valid_lease_id(id))
        return prpc_error_set(err, PRPC_EPROTO,
                              "a lease answer: \"lease.id\" must be a lease id (%d lowercase hex "
                              "digits)",
                              PRPC_LEASE_ID_HEX);
    if (!prpc_wire_valid_call_id(call_id))
        return prpc_error_set(err, PRPC_EPROTO,
                              "a lease answer: \"lease.call_id\" must be 64 lowercase hex digits");
    memcpy(out->id, id, sizeof(out->id));
    memcpy(out->call_id, call_id, sizeof(out->call_id));
    if (prpc_doc_num(d, "lease.deadline_ms", &n))
        out->deadline_ms = (int64_t)n;
    if (prpc_doc_num(d, "lease.heartbeat_ms", &n))
        out->heartbeat_ms = (int64_t)n;
    return 0;
}

int prpc_wire_heartbeat_terminates(const char *json, size_t len)
{
    bson_t *d = json != NULL && len > 0
                    ? bson_new_from_json((const uint8_t *)json, (ssize_t)len, NULL)
                    : NULL;
    bson_iter_t it;
    int yes = d != NULL && bson_iter_init_find(&it, d, "terminate") &&
              BSON_ITER_HOLDS_BOOL(&it) && bson_iter_bool(&it);
    if (d != NULL)
        bson_destroy(d);
    return yes;
}

/* The GET /v1/functions answer of fs. */
static void write_listing(prpc_buf_t *out, const prpc_functions_t *fs)
{
    const size_t nf = PRPC_ARRAY_LEN(FUNCTION_F);
    size_t ndecls = 0, d = 0;
    wire_val_t *fv, *dv, v[1];
    for (size_t i = 0; i < fs->n; i++)
        ndecls += fs->fns[i].nargs + fs->fns[i].nreturns;
    fv = vals_new(out, PRPC_WIRE_FUNCTION, fs->n);
    dv = vals_new(out, PRPC_WIRE_DECL, ndecls);
    if (fv != NULL && dv != NULL) {
        for (size_t i = 0; i < fs->n; i++) {
            const prpc_fn_t *f = &fs->fns[i];
            wire_val_t *x = &fv[i * nf];
            x[0] = v_str(f->name);
            x[1] = v_str(f->version);
            x[2] = v_list(&dv[2 * d], f->nargs);
            for (size_t j = 0; j < f->nargs; j++, d++) {
                dv[2 * d] = v_str(f->args[j].name);
                dv[2 * d + 1] = v_str(tag_kind(f->args[j].kind));
            }
            x[3] = v_list(&dv[2 * d], f->nreturns);
            for (size_t j = 0; j < f->nreturns; j++, d++) {
                dv[2 * d] = v_str(f->returns[j].name);
                dv[2 * d + 1] = v_str(tag_kind(f->returns[j].kind));
            }
        }
        v[0] = v_list(fv, fs->n);
        write_vals(out, PRPC_WIRE_FUNCTIONS, v);
    }
    free(fv);
    free(dv);
}
