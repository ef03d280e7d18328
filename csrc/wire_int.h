/*
 * wire_int.h - what wire.c (the rules) and wire_doc.c (the document tables)
 * share; not for other files.
 */
#ifndef PRPC_WIRE_INT_H
#define PRPC_WIRE_INT_H

#include "wire.h"

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
