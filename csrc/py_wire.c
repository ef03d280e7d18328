/*
 * py_wire.c - Python bindings of wire.c, so p2prpc/_wire.py speaks the wire
 * through the engine's one codec: the documents' canonical form
 * (wire_canonical), the id rules, the /v1/ path builders, and the limits of
 * the API as module constants.
 *
 * Nothing here blocks: a document is at most PRPC_WIRE_META_MAX bytes, so
 * the GIL stays held.
 */
#include "py_module.h"

#include "blob.h"
#include "wire.h"

#include <string.h>

static PyObject *wire_documents(PyObject *module, PyObject *unused)
{
    PyObject *names = PyTuple_New(PRPC_WIRE_NDOCS);
    PRPC_UNUSED(module);
    PRPC_UNUSED(unused);
    if (names == NULL)
        return NULL;
    for (int i = 0; i < PRPC_WIRE_NDOCS; i++) {
        PyObject *s = PyUnicode_FromString(prpc_wire_doc_name(i));
        if (s == NULL) {
            Py_DECREF(names);
            return NULL;
        }
        PyTuple_SET_ITEM(names, i, s);
    }
    return names;
}

static PyObject *wire_canonical_impl(PyObject *module, int doc, const char *body, size_t len,
                                     int answer)
{
    pyprpc_state_t *st = pyprpc_state(module);
    prpc_error_t err;
    prpc_buf_t out = PRPC_BUF_INIT;
    int code = answer ? PRPC_EPROTO : PRPC_EINVAL;
    bson_t *d = prpc_wire_decode(doc, body, len, code, &err);
    char *text;
    size_t n = 0;
    PyObject *res;
    if (d == NULL)
        return pyprpc_raise(st, &err);
    if (prpc_wire_canonical(doc, d, code, &out, &err) != 0) {
        bson_destroy(d);
        prpc_buf_cleanup(&out);
        return pyprpc_raise(st, &err);
    }
    bson_destroy(d);
    text = prpc_buf_take(&out, &n, &err);
    if (text == NULL)
        return pyprpc_raise(st, &err);
    res = PyBytes_FromStringAndSize(text, (Py_ssize_t)n);
    free(text);
    return res;
}

static PyObject *wire_canonical(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"doc", "body", "answer", NULL};
    const char *name = NULL;
    Py_buffer body = {0};
    int answer = 0, doc;
    PyObject *res;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sy*|p:wire_canonical", kwlist, &name, &body,
                                     &answer))
        return NULL;
    doc = prpc_wire_doc_find(name);
    if (doc < 0) {
        PyBuffer_Release(&body);
        return PyErr_Format(PyExc_ValueError, "wire_canonical: no document named %R (see "
                                              "wire_documents())",
                            PyTuple_GET_ITEM(args, 0));
    }
    res = wire_canonical_impl(module, doc, body.buf, (size_t)body.len, answer);
    PyBuffer_Release(&body);
    return res;
}

/* The UTF-8 of a str argument and its length, or NULL (no error set) when it
 * is not a str or holds a NUL: no rule accepts one. */
static const char *str_arg(PyObject *o, Py_ssize_t *len)
{
    const char *s;
    if (!PyUnicode_Check(o))
        return NULL;
    s = PyUnicode_AsUTF8AndSize(o, len);
    if (s == NULL) {
        PyErr_Clear();
        return NULL;
    }
    return (Py_ssize_t)strlen(s) == *len ? s : NULL;
}

static PyObject *valid_call_id(PyObject *module, PyObject *o)
{
    Py_ssize_t n = 0;
    const char *s = str_arg(o, &n);
    PRPC_UNUSED(module);
    return PyBool_FromLong(s != NULL && prpc_wire_valid_call_id(s));
}

static PyObject *valid_lease_id(PyObject *module, PyObject *o)
{
    Py_ssize_t n = 0;
    const char *s = str_arg(o, &n);
    PRPC_UNUSED(module);
    return PyBool_FromLong(s != NULL && prpc_wire_valid_lease_id(s));
}

static PyObject *valid_checkpoint_key(PyObject *module, PyObject *o)
{
    Py_ssize_t n = 0;
    const char *s = str_arg(o, &n);
    PRPC_UNUSED(module);
    return PyBool_FromLong(s != NULL && prpc_wire_valid_checkpoint_key(s));
}

static PyObject *valid_int_text(PyObject *module, PyObject *o)
{
    Py_ssize_t n = 0;
    const char *s = str_arg(o, &n);
    PRPC_UNUSED(module);
    return PyBool_FromLong(s != NULL && prpc_wire_valid_int_text(s, (size_t)n));
}

static PyObject *valid_float_text(PyObject *module, PyObject *o)
{
    Py_ssize_t n = 0;
    const char *s = str_arg(o, &n);
    PRPC_UNUSED(module);
    return PyBool_FromLong(s != NULL && prpc_wire_valid_float_text(s, (size_t)n));
}

static PyObject *path_result(PyObject *module, int rc, const char *path, const prpc_error_t *err)
{
    if (rc != 0)
        return pyprpc_raise(pyprpc_state(module), err);
    return PyUnicode_FromString(path);
}

static PyObject *wire_path_call(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"call_id", "op", NULL};
    const char *id = NULL, *op = NULL;
    char path[PRPC_WIRE_PATH_MAX];
    prpc_error_t err;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|z:wire_path_call", kwlist, &id, &op))
        return NULL;
    return path_result(module, prpc_wire_path_call(path, id, op, &err), path, &err);
}

static PyObject *wire_path_poll_call(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"call_id", "wait_ms", "since", "unseen", NULL};
    const char *id = NULL;
    long long wait_ms = 0, since = -1;
    int unseen = 0;
    char path[PRPC_WIRE_PATH_MAX];
    prpc_error_t err;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sLL|p:wire_path_poll_call", kwlist, &id,
                                     &wait_ms, &since, &unseen))
        return NULL;
    return path_result(module, prpc_wire_path_poll_call(path, id, wait_ms, since, unseen, &err),
                       path, &err);
}

static PyObject *wire_path_submit(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"wait_ms", NULL};
    long long wait_ms = 0;
    char path[PRPC_WIRE_PATH_MAX];
    prpc_error_t err;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|L:wire_path_submit", kwlist, &wait_ms))
        return NULL;
    return path_result(module, prpc_wire_path_submit(path, wait_ms, &err), path, &err);
}

static PyObject *wire_path_lease(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"lease_id", "op", NULL};
    const char *id = NULL, *op = NULL;
    char path[PRPC_WIRE_PATH_MAX];
    prpc_error_t err;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ss:wire_path_lease", kwlist, &id, &op))
        return NULL;
    return path_result(module, prpc_wire_path_lease(path, id, op, &err), path, &err);
}

static PyObject *wire_path_leases(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"request_id", NULL};
    const char *id = NULL;
    char path[PRPC_WIRE_PATH_MAX];
    prpc_error_t err;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|z:wire_path_leases", kwlist, &id))
        return NULL;
    return path_result(module, prpc_wire_path_leases(path, id, &err), path, &err);
}

static PyMethodDef wire_functions[] = {
    {"wire_documents", wire_documents, METH_NOARGS,
     "wire_documents() -> tuple of the document names wire_canonical knows."},
    {"wire_canonical", (PyCFunction)(void (*)(void))wire_canonical, METH_VARARGS | METH_KEYWORDS,
     "wire_canonical(doc, body, answer=False) -> bytes\n"
     "Check the JSON body as document doc and return its canonical text (fields in the\n"
     "document's order, unknown ones left out). A broken rule raises InvalidInputError,\n"
     "or ProtocolError with answer=True, naming the field; LimitExceeded for a count\n"
     "beyond a limit."},
    {"valid_call_id", valid_call_id, METH_O,
     "valid_call_id(s) -> bool: s is a call id, blob name or version (64 lowercase hex)."},
    {"valid_lease_id", valid_lease_id, METH_O,
     "valid_lease_id(s) -> bool: s is a lease id as brokers issue them (32 lowercase hex)."},
    {"valid_checkpoint_key", valid_checkpoint_key, METH_O,
     "valid_checkpoint_key(s) -> bool: 1 to CHECKPOINT_KEY_MAX characters of [A-Za-z0-9._-]."},
    {"valid_int_text", valid_int_text, METH_O,
     "valid_int_text(s) -> bool: s is an int value's wire text (canonical decimal)."},
    {"valid_float_text", valid_float_text, METH_O,
     "valid_float_text(s) -> bool: s is a float value's wire text (16 lowercase hex)."},
    {"wire_path_call", (PyCFunction)(void (*)(void))wire_path_call, METH_VARARGS | METH_KEYWORDS,
     "wire_path_call(call_id, op=None) -> '/v1/calls/{id}[/{op}]' (op: terminate, restart)."},
    {"wire_path_poll_call", (PyCFunction)(void (*)(void))wire_path_poll_call,
     METH_VARARGS | METH_KEYWORDS,
     "wire_path_poll_call(call_id, wait_ms, since, unseen=False) -> the GET long-poll path."},
    {"wire_path_submit", (PyCFunction)(void (*)(void))wire_path_submit,
     METH_VARARGS | METH_KEYWORDS, "wire_path_submit(wait_ms=0) -> '/v1/calls[?wait_ms=N]'."},
    {"wire_path_lease", (PyCFunction)(void (*)(void))wire_path_lease, METH_VARARGS | METH_KEYWORDS,
     "wire_path_lease(lease_id, op) -> '/v1/leases/{lease}/{op}'."},
    {"wire_path_leases", (PyCFunction)(void (*)(void))wire_path_leases,
     METH_VARARGS | METH_KEYWORDS,
     "wire_path_leases(request_id=None) -> '/v1/leases[?request=ID]'."},
    {NULL, NULL, 0, NULL},
};

int pyprpc_wire_exec(PyObject *module)
{
    static const struct {
        const char *name;
        long long value;
    } limits[] = {
        {"WAIT_MAX_MS", PRPC_WIRE_WAIT_MAX_MS},
        {"BATCH_MAX", PRPC_WIRE_BATCH_MAX},
        {"META_MAX", PRPC_WIRE_META_MAX},
        {"NAME_MAX", PRPC_WIRE_NAME_MAX},
        {"ARGS_MAX", PRPC_WIRE_ARGS_MAX},
        {"FUNCTIONS_MAX", PRPC_WIRE_FUNCTIONS_MAX},
        {"INT_DIGITS_MAX", PRPC_WIRE_INT_DIGITS_MAX},
        {"FILENAME_MAX", PRPC_WIRE_FILENAME_MAX},
        {"CALL_ID_HEX", PRPC_CALL_ID_HEX},
        {"LEASE_ID_HEX", PRPC_LEASE_ID_HEX},
        {"CHECKPOINT_KEY_MAX", PRPC_CHECKPOINT_KEY_MAX},
        {"CHECKPOINTS_MAX", PRPC_CHECKPOINTS_MAX},
        {"BLOB_CHUNK", PRPC_BLOB_CHUNK},
        {"BLOB_UPLOAD_CHUNK", PRPC_BLOB_UPLOAD_CHUNK},
    };
    if (PyModule_AddFunctions(module, wire_functions) < 0)
        return -1;
    for (size_t i = 0; i < PRPC_ARRAY_LEN(limits); i++)
        if (PyModule_AddIntConstant(module, limits[i].name, (long)limits[i].value) < 0)
            return -1;
    return 0;
}
