/*
 * py_httpc.c - Python bindings of httpc.c and the key derivation of auth.c:
 * _core.Connection (one keep-alive connection to one broker) and
 * _core.derive_key.
 *
 * Every network call runs with the GIL released. A Connection wraps one
 * libcurl handle, which one thread may use at a time, so each object carries
 * a lock taken (without the GIL, so a waiting thread never blocks the
 * interpreter) around every use of the handle, close() included.
 */
#include "py_module.h"

#include "auth.h"
#include "blob.h"
#include "httpc.h"
#include "ident.h"

#include <pythread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    prpc_httpc_t *h;         /* NULL once closed */
    PyThread_type_lock lock; /* serialises users of h */
} conn_object_t;

/* "O&" converter for an optional path: None stays NULL, else a bytes object
 * from os.fspath (str, bytes or a path-like). */
static int optional_path(PyObject *obj, void *out)
{
    if (obj == Py_None) {
        *(PyObject **)out = NULL;
        return 1;
    }
    return PyUnicode_FSConverter(obj, out);
}

static int conn_init(conn_object_t *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"base_url", "key", "connect_timeout_ms", "ca", NULL};
    const char *url = NULL;
    Py_buffer key = {0};
    PyObject *ca = NULL;
    int connect_timeout_ms = 2000, rc = -1;
    prpc_httpc_t *h = NULL;
    prpc_error_t err;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|z*iO&:Connection", kwlist, &url, &key,
                                     &connect_timeout_ms, optional_path, &ca))
        return -1;
    if (key.buf != NULL && key.len != PRPC_AUTH_KEY_LEN) {
        PyErr_Format(PyExc_ValueError, "key must be %d bytes (from derive_key)",
                     PRPC_AUTH_KEY_LEN);
        goto out;
    }
    if (self->lock == NULL) {
        self->lock = PyThread_allocate_lock();
        if (self->lock == NULL) {
            PyErr_NoMemory();
            goto out;
        }
    }
    h = prpc_httpc_new(url, key.buf, connect_timeout_ms, &err);
    if (h == NULL) {
        pyprpc_raise(pyprpc_state_of_type(Py_TYPE(self)), &err);
        goto out;
    }
    if (ca != NULL && prpc_httpc_set_ca(h, PyBytes_AS_STRING(ca), &err) != 0) {
        pyprpc_raise(pyprpc_state_of_type(Py_TYPE(self)), &err);
        goto out;
    }
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    prpc_httpc_free(self->h);
    self->h = h;
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    h = NULL;
    rc = 0;
out:
    prpc_httpc_free(h);
    PyBuffer_Release(&key);
    Py_XDECREF(ca);
    return rc;
}

static PyObject *closed_error(void)
{
    PyErr_SetString(PyExc_ValueError, "the connection is closed");
    return NULL;
}

static PyObject *conn_request(conn_object_t *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"method", "path", "body", "timeout_ms", NULL};
    const char *method, *path;
    Py_buffer body = {0};
    int timeout_ms = 30000, rc = 0, closed = 0;
    long status = 0;
    char *resp = NULL;
    size_t resp_len = 0;
    prpc_error_t err;
    PyObject *out;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ss|z*i:request", kwlist, &method, &path, &body,
                                     &timeout_ms))
        return NULL;
    if (self->lock == NULL)
        return closed_error();
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    if (self->h == NULL)
        closed = 1;
    else
        rc = prpc_httpc_request(self->h, method, path, body.buf, body.buf ? (size_t)body.len : 0,
                                timeout_ms, &status, &resp, &resp_len, &err);
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&body);
    if (closed)
        return closed_error();
    if (rc != 0)
        return pyprpc_raise(pyprpc_state_of_type(Py_TYPE(self)), &err);
    out = Py_BuildValue("(ly#)", status, resp, (Py_ssize_t)resp_len);
    free(resp);
    return out;
}

static PyObject *conn_upload_blob(conn_object_t *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "sha", "size", "until", "chunk_digests", NULL};
    const char *sha;
    int fd, rc = 0, closed = 0, complete = 1;
    unsigned long long size;
    PyObject *until_obj = Py_None;
    uint64_t until = UINT64_MAX;
    Py_buffer digests = {NULL, NULL};
    prpc_chunk_digests_t cd = {PRPC_BLOB_UPLOAD_CHUNK, 0, NULL};
    prpc_error_t err;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "isK|Oz*:upload_blob", kwlist, &fd, &sha, &size,
                                     &until_obj, &digests))
        return NULL;
    if (until_obj != Py_None) {
        unsigned long long u = PyLong_AsUnsignedLongLong(until_obj);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyBuffer_Release(&digests);
            return NULL;
        }
        until = (uint64_t)u;
    }
    if (digests.buf != NULL) {
        if (digests.len % PRPC_SHA256_LEN != 0) {
            PyErr_Format(PyExc_ValueError,
                         "upload_blob: chunk_digests must be 32 bytes per chunk, got %zd bytes",
                         digests.len);
            PyBuffer_Release(&digests);
            return NULL;
        }
        cd.n = (size_t)digests.len / PRPC_SHA256_LEN;
        cd.d = digests.buf;
    }
    if (self->lock == NULL) {
        PyBuffer_Release(&digests);
        return closed_error();
    }
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    if (self->h == NULL)
        closed = 1;
    else
        rc = prpc_httpc_upload_blob_hashed(self->h, fd, sha, (uint64_t)size, until, &complete,
                                           cd.n > 0 ? &cd : NULL, &err);
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&digests);
    if (closed)
        return closed_error();
    if (rc != 0)
        return pyprpc_raise(pyprpc_state_of_type(Py_TYPE(self)), &err);
    return PyBool_FromLong(complete);
}

static PyObject *conn_download_blob(conn_object_t *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sha", "blob_dir", "follow", NULL};
    const char *sha;
    PyObject *dir_obj = NULL, *follow_obj = Py_None;
    unsigned long long follow = 0;
    char path[PRPC_BLOB_PATH_MAX];
    int rc = 0, closed = 0;
    prpc_blobdir_t *bd = NULL;
    prpc_error_t err;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sO&|O:download_blob", kwlist, &sha,
                                     PyUnicode_FSConverter, &dir_obj, &follow_obj))
        return NULL;
    if (follow_obj != Py_None) {
        follow = PyLong_AsUnsignedLongLong(follow_obj);
        if (follow == (unsigned long long)-1 && PyErr_Occurred()) {
            Py_DECREF(dir_obj);
            return NULL;
        }
    }
    if (self->lock == NULL) {
        Py_DECREF(dir_obj);
        return closed_error();
    }
    Py_BEGIN_ALLOW_THREADS
    bd = prpc_blobdir_open(PyBytes_AS_STRING(dir_obj), &err);
    if (bd == NULL) {
        rc = err.code;
    } else {
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        if (self->h == NULL)
            closed = 1;
        else
            rc = follow_obj != Py_None
                     ? prpc_httpc_follow_blob(self->h, sha, (uint64_t)follow, bd, &err)
                     : prpc_httpc_download_blob(self->h, sha, bd, &err);
        PyThread_release_lock(self->lock);
        if (rc == 0 && !closed)
            rc = prpc_blobdir_path(bd, sha, path, &err);
        prpc_blobdir_free(bd);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(dir_obj);
    if (closed)
        return closed_error();
    if (rc != 0)
        return pyprpc_raise(pyprpc_state_of_type(Py_TYPE(self)), &err);
    return PyUnicode_DecodeFSDefault(path);
}

static PyObject *conn_close(conn_object_t *self, PyObject *unused)
{
    PRPC_UNUSED(unused);
    if (self->lock == NULL)
        Py_RETURN_NONE;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    prpc_httpc_free(self->h);
    self->h = NULL;
    PyThread_release_lock(self->lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *conn_base_url(conn_object_t *self, void *closure)
{
    PyObject *out;
    PRPC_UNUSED(closure);
    if (self->lock == NULL)
        return closed_error();
    /* The base URL never changes while h lives; the lock keeps close() out. */
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    Py_END_ALLOW_THREADS
    out = self->h != NULL ? PyUnicode_FromString(prpc_httpc_base_url(self->h)) : closed_error();
    PyThread_release_lock(self->lock);
    return out;
}

static void conn_dealloc(conn_object_t *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    prpc_httpc_free(self->h);
    self->h = NULL;
    if (self->lock != NULL)
        PyThread_free_lock(self->lock);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef conn_methods[] = {
    {"request", (PyCFunction)(void (*)(void))conn_request, METH_VARARGS | METH_KEYWORDS,
     "request(method, path, body=None, timeout_ms=30000) -> (status, body)\n\n"
     "One HTTP request (signed when the connection has a key). Any status is returned;\n"
     "401 raises AuthenticationError, and so does, with a key, an answer the broker did\n"
     "not sign for this request; transport and TLS failures raise ConnectionFailed or\n"
     "EngineTimeoutError; an answer over 4 MiB raises LimitExceeded."},
    {"upload_blob", (PyCFunction)(void (*)(void))conn_upload_blob, METH_VARARGS | METH_KEYWORDS,
     "upload_blob(fd, sha, size, until=None, chunk_digests=None) -> bool\n\nMake the broker "
     "hold blob sha, the first size bytes of fd: skipped when held, resumed when partial, sent "
     "in verified chunks. True when the broker holds it; False when it returned early because "
     "the broker had synced at least `until` bytes (nothing committed yet: call again to "
     "finish). chunk_digests: the digests sha256_fd_chunks gave for fd, so chunks are not "
     "hashed again (should the file have changed since, the broker refuses a chunk and the "
     "upload hashes what it reads from then on)."},
    {"download_blob", (PyCFunction)(void (*)(void))conn_download_blob,
     METH_VARARGS | METH_KEYWORDS,
     "download_blob(sha, blob_dir, follow=None) -> str\n\nFetch blob sha into the blob directory "
     "(resuming, verified) unless it is there; returns the blob's path. follow=SIZE: the blob "
     "may still be arriving at the broker (GET ?follow=SIZE): its bytes come as they land."},
    {"close", (PyCFunction)conn_close, METH_NOARGS, "Close the connection. Idempotent."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef conn_getset[] = {
    {"base_url", (getter)conn_base_url, NULL, "The broker's normalised URL.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot conn_slots[] = {
    {Py_tp_init, conn_init},
    {Py_tp_dealloc, conn_dealloc},
    {Py_tp_methods, conn_methods},
    {Py_tp_getset, conn_getset},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_doc, "Connection(base_url, key=None, connect_timeout_ms=2000, ca=None)\n\n"
                "One keep-alive connection to one broker (docs/API.md). base_url is\n"
                "'host:port', 'http://host:port' or 'https://host:port'; key is 32 bytes\n"
                "from derive_key(): requests are signed and answers must be signed back.\n"
                "ca is a PEM file of the CA(s) to trust for https instead of the system\n"
                "store (InvalidInputError naming it when it cannot be used); the broker's\n"
                "certificate and host name are always verified."},
    {0, NULL},
};

static PyType_Spec conn_spec = {
    .name = "p2prpc._core.Connection",
    .basicsize = sizeof(conn_object_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = conn_slots,
};

static PyObject *derive_key(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"password", NULL};
    const char *pw;
    Py_ssize_t len;
    uint8_t key[PRPC_AUTH_KEY_LEN];
    prpc_error_t err;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s#:derive_key", kwlist, &pw, &len))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = prpc_auth_derive_key(pw, (size_t)len, key, &err);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        return pyprpc_raise(pyprpc_state(module), &err);
    return PyBytes_FromStringAndSize((const char *)key, sizeof(key));
}

static PyObject *retryable_status(PyObject *module, PyObject *arg)
{
    long status = PyLong_AsLong(arg);
    PRPC_UNUSED(module);
    if (status == -1 && PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(prpc_httpc_retryable_status(status));
}

static PyObject *backoff_ms(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"attempt", "first_ms", "max_ms", "u", NULL};
    int attempt;
    long long first_ms, max_ms;
    double u;
    PRPC_UNUSED(module);
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iLLd:backoff_ms", kwlist, &attempt, &first_ms,
                                     &max_ms, &u))
        return NULL;
    return PyLong_FromLongLong(prpc_httpc_backoff_ms(attempt, first_ms, max_ms, u));
}

static PyMethodDef httpc_functions[] = {
    {"retryable_status", retryable_status, METH_O,
     "retryable_status(status) -> bool\n\nWhether an HTTP answer says the broker failed rather\n"
     "than refused (500, 502, 503, 504): a request is worth another try. The worker's rule."},
    {"backoff_ms", (PyCFunction)(void (*)(void))backoff_ms, METH_VARARGS | METH_KEYWORDS,
     "backoff_ms(attempt, first_ms, max_ms, u) -> int\n\nThe wait before another try after\n"
     "attempt failures in a row: first_ms doubled per failure up to max_ms, drawn in its\n"
     "upper half by u in [0, 1) (random.random()). The worker's policy."},
    {"derive_key", (PyCFunction)(void (*)(void))derive_key, METH_VARARGS | METH_KEYWORDS,
     "derive_key(password) -> bytes\n\nThe 32-byte network key of a password (PBKDF2-HMAC-"
     "SHA256, slow on purpose: call once). The GIL is released meanwhile."},
    {NULL, NULL, 0, NULL},
};

/* The statuses prpc_httpc_retryable_status accepts, as a tuple for `in`. */
static PyObject *retry_statuses(void)
{
    PyObject *list = PyList_New(0), *tuple = NULL;
    if (list == NULL)
        return NULL;
    for (long s = 100; s < 600; s++) {
        PyObject *n;
        if (!prpc_httpc_retryable_status(s))
            continue;
        n = PyLong_FromLong(s);
        if (n == NULL || PyList_Append(list, n) < 0) {
            Py_XDECREF(n);
            goto out;
        }
        Py_DECREF(n);
    }
    tuple = PyList_AsTuple(list);
out:
    Py_DECREF(list);
    return tuple;
}

int pyprpc_httpc_exec(PyObject *module)
{
    PyObject *statuses;
    int rc;
    if (pyprpc_add_type(module, &conn_spec, "Connection") < 0)
        return -1;
    if (PyModule_AddFunctions(module, httpc_functions) < 0)
        return -1;
    statuses = retry_statuses();
    if (statuses == NULL)
        return -1;
    rc = PyModule_AddObjectRef(module, "RETRY_STATUSES", statuses);
    Py_DECREF(statuses);
    return rc;
}
