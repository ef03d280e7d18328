/*
 * wire.c - decoding and checking the documents of the wire API (wire.h).
 */
#include "wire.h"
#include "blob.h"
#include "hash.h"
#include "util.h"

#include <openssl/bn.h>
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

const char *prpc_doc_str(const bson_t *d, const char *key)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, d, key) || !BSON_ITER_HOLDS_UTF8(&it))
        return NULL;
    return bson_iter_utf8(&it, NULL);
}

int prpc_doc_num(const bson_t *d, const char *key, double *out)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, d, key))
        return 0;
    if (BSON_ITER_HOLDS_INT32(&it) || BSON_ITER_HOLDS_INT64(&it) || BSON_ITER_HOLDS_DOUBLE(&it)) {
        *out = bson_iter_as_double(&it);
        return 1;
    }
    return 0;
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
    prpc_buf_puts(&out, "{\"functions\": [");
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
        prpc_buf_printf(&out, "%s{\"name\": ", fs->n > 1 ? ", " : "");
        prpc_buf_json_str(&out, f->name, strlen(f->name));
        prpc_buf_printf(&out, ", \"version\": \"%s\", \"args\": [", f->version);
        for (size_t i = 0; i < f->nargs; i++) {
            prpc_buf_printf(&out, "%s{\"name\": ", i ? ", " : "");
            prpc_buf_json_str(&out, f->args[i].name, strlen(f->args[i].name));
            prpc_buf_printf(&out, ", \"kind\": \"%s\"}", tag_kind(f->args[i].kind));
        }
        prpc_buf_puts(&out, "], \"returns\": [");
        for (size_t i = 0; i < f->nreturns; i++) {
            prpc_buf_printf(&out, "%s{\"name\": ", i ? ", " : "");
            prpc_buf_json_str(&out, f->returns[i].name, strlen(f->returns[i].name));
            prpc_buf_printf(&out, ", \"kind\": \"%s\"}", tag_kind(f->returns[i].kind));
        }
        prpc_buf_puts(&out, "]}");
    }
    prpc_buf_puts(&out, "]}");
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

int prpc_wire_check_typed(const prpc_fn_t *f, const prpc_decl_t *decls, size_t ndecls,
                          const char *what, bson_iter_t *arr, prpc_blob_check_fn has_blob,
                          void *ud, prpc_ident_t *id, prpc_buf_t *out, char (*blobs)[65],
                          size_t *nblobs, prpc_error_t *err)
{
    bson_iter_t it, field;
    size_t i = 0;
    int rc;

    *nblobs = 0;
    if (!BSON_ITER_HOLDS_ARRAY(arr) || !bson_iter_recurse(arr, &it))
        return prpc_error_set(err, PRPC_EINVAL, "%s of %s must be an array", what, f->name);
    prpc_buf_puts(out, "[");
    while (bson_iter_next(&it)) {
        const prpc_decl_t *d = i < ndecls ? &decls[i] : NULL;
        const char *name = NULL, *kind = NULL, *value = NULL, *blob = NULL, *filename = NULL;
        uint32_t value_len = 0, filename_len = 0;
        int have_bool = 0, bool_value = 0, have_size = 0;
        int64_t size = -1;

        if (d == NULL)
            return prpc_error_set(err, PRPC_EINVAL, "%s of %s: more than the %zu declared", what,
                                  f->name, ndecls);
        if (!BSON_ITER_HOLDS_DOCUMENT(&it) || !bson_iter_recurse(&it, &field))
            return prpc_error_set(err, PRPC_EINVAL, "%s of %s: entry %zu is not an object", what,
                                  f->name, i);
        while (bson_iter_next(&field)) {
            const char *k = bson_iter_key(&field);
            if (strcmp(k, "name") == 0)
                name = iter_str(&field, NULL);
            else if (strcmp(k, "kind") == 0)
                kind = iter_str(&field, NULL);
            else if (strcmp(k, "value") == 0 && BSON_ITER_HOLDS_UTF8(&field))
                value = bson_iter_utf8(&field, &value_len);
            else if (strcmp(k, "value") == 0 && BSON_ITER_HOLDS_BOOL(&field))
                have_bool = 1, bool_value = bson_iter_bool(&field);
            else if (strcmp(k, "blob") == 0)
                blob = iter_str(&field, NULL);
            else if (strcmp(k, "filename") == 0 && BSON_ITER_HOLDS_UTF8(&field))
                filename = bson_iter_utf8(&field, &filename_len);
            else if (strcmp(k, "size") == 0 &&
                     (BSON_ITER_HOLDS_INT32(&field) || BSON_ITER_HOLDS_INT64(&field)))
                have_size = 1, size = bson_iter_as_int64(&field);
        }
        if (name == NULL || strcmp(name, d->name) != 0)
            return prpc_error_set(err, PRPC_EINVAL,
                                  "%s of %s: entry %zu must be \"%s\" (declaration order), got "
                                  "\"%.100s\"",
                                  what, f->name, i, d->name, name ? name : "(none)");
        if (kind == NULL || kind_tag(kind) != d->kind)
            return prpc_error_set(err, PRPC_EINVAL, "%s of %s: \"%s\" is declared %s, got kind %.20s",
                                  what, f->name, d->name, tag_kind(d->kind), kind ? kind : "(none)");
        prpc_buf_printf(out, "%s{\"name\": ", i ? ", " : "");
        prpc_buf_json_str(out, d->name, strlen(d->name));
        prpc_buf_printf(out, ", \"kind\": \"%s\"", tag_kind(d->kind));
        rc = 0;
        switch (d->kind) {
        case PRPC_IDENT_TAG_INT: {
            BIGNUM *bn = NULL;
            uint8_t *mag = NULL;
            int neg, nbytes;
            size_t digits = value ? value_len - (value[0] == '-') : 0;
            const char *p = value ? value + (value[0] == '-') : NULL;
            int ok = value != NULL && digits > 0 && digits <= PRPC_WIRE_INT_DIGITS_MAX &&
                     (digits == 1 || p[0] != '0') && !(value[0] == '-' && strcmp(p, "0") == 0);
            for (size_t j = 0; ok && j < digits; j++)
                ok = p[j] >= '0' && p[j] <= '9';
            if (!ok)
                return prpc_error_set(err, PRPC_EINVAL,
                                      "%s of %s: \"%s\" must be a decimal integer string", what,
                                      f->name, d->name);
            if (id != NULL) {
                neg = value[0] == '-';
                if (BN_dec2bn(&bn, p) == 0)
                    return prpc_error_set(err, PRPC_ENOMEM, "out of memory reading \"%s\"",
                                          d->name);
                nbytes = BN_num_bytes(bn);
                mag = malloc(nbytes ? (size_t)nbytes : 1);
                if (mag == NULL) {
                    BN_free(bn);
                    return prpc_error_set(err, PRPC_ENOMEM, "out of memory reading \"%s\"",
                                          d->name);
                }
                BN_bn2bin(bn, mag);
                rc = prpc_ident_add_int(id, d->name, neg, mag, (size_t)nbytes, err);
                free(mag);
                BN_free(bn);
            }
            prpc_buf_puts(out, ", \"value\": ");
            prpc_buf_json_str(out, value, value_len);
            break;
        }
        case PRPC_IDENT_TAG_FLOAT: {
            uint8_t bits[8];
            double dv;
            uint64_t u = 0;
            if (value == NULL || value_len != 16 || !prpc_valid_hex(value, 16) ||
                prpc_hex_decode(value, 16, bits, sizeof(bits), NULL) != 0)
                return prpc_error_set(err, PRPC_EINVAL,
                                      "%s of %s: \"%s\" must be the 16 hex digits of a float's "
                                      "bits (lowercase)",
                                      what, f->name, d->name);
            for (int j = 0; j < 8; j++)
                u = (u << 8) | bits[j];
            memcpy(&dv, &u, sizeof(dv));
            if (id != NULL)
                rc = prpc_ident_add_float(id, d->name, dv, err);
            prpc_buf_printf(out, ", \"value\": \"%.16s\"", value);
            break;
        }
        case PRPC_IDENT_TAG_BOOL:
            if (!have_bool)
                return prpc_error_set(err, PRPC_EINVAL, "%s of %s: \"%s\" must be true or false",
                                      what, f->name, d->name);
            if (id != NULL)
                rc = prpc_ident_add_bool(id, d->name, bool_value, err);
            prpc_buf_printf(out, ", \"value\": %s", bool_value ? "true" : "false");
            break;
        case PRPC_IDENT_TAG_STR:
            if (value == NULL)
                return prpc_error_set(err, PRPC_EINVAL, "%s of %s: \"%s\" must be a string", what,
                                      f->name, d->name);
            if (id != NULL)
                rc = prpc_ident_add_str(id, d->name, value, value_len, err);
            prpc_buf_puts(out, ", \"value\": ");
            prpc_buf_json_str(out, value, value_len);
            break;
        default: {
            uint8_t raw[32];
            if (!prpc_blob_valid_sha(blob) || !have_size || size < 0)
                return prpc_error_set(err, PRPC_EINVAL,
                                      "%s of %s: file \"%s\" needs \"blob\" (64 hex) and \"size\"",
                                      what, f->name, d->name);
            if (has_blob == NULL || !has_blob(ud, blob, (uint64_t)size))
                return prpc_error_set(err, PRPC_ENOTFOUND,
                                      "%s of %s: blob %s of file \"%s\" has not been uploaded "
                                      "(upload it first: PUT /v1/blobs/%s)",
                                      what, f->name, blob, d->name, blob);
            if (id != NULL) {
                prpc_hex_decode(blob, 64, raw, sizeof(raw), NULL);
                rc = prpc_ident_add_file_sha256(id, d->name, raw, err);
            }
            prpc_buf_printf(out, ", \"blob\": \"%s\", \"size\": %lld, \"filename\": ", blob,
                            (long long)size);
            if (filename != NULL)
                prpc_buf_json_str(out, filename, filename_len > PRPC_WIRE_FILENAME_MAX ? PRPC_WIRE_FILENAME_MAX : filename_len);
            else
                prpc_buf_puts(out, "\"\"");
            memcpy(blobs[(*nblobs)++], blob, 65);
            break;
        }
        }
        if (rc != 0)
            return rc;
        prpc_buf_puts(out, "}");
        i++;
    }
    prpc_buf_puts(out, "]");
    if (i != ndecls)
        return prpc_error_set(err, PRPC_EINVAL, "%s of %s: %zu given, %zu declared", what,
                              f->name, i, ndecls);
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
