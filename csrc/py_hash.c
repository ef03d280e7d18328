/*
 * py_hash.c - Python bindings of hash.c and ident.c: _core.sha256_file and
 * _core.call_identifier_raw.
 *
 * Each function parses and copies everything it needs out of the Python
 * objects while it holds the GIL, then runs the engine (file reads, hashing)
 * with the GIL released, so other Python threads keep running while a large
 * file is hashed. Engine errors map through pyprpc_raise().
 */
#include "py_module.h"

#include "blob.h"
#include "hash.h"
#include "ident.h"
#include "util.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* A file argument: an open fd (path NULL) or a path (malloc'd, NUL-terminated). */
typedef struct file_ref {
    int fd;
    char *path;
} file_ref_t;

/* One argument copied out of Python, ready for the GIL-free part. */
typedef struct arg_copy {
    char *name;      /* malloc'd UTF-8, NUL-terminated (no NUL inside) */
    char tag;        /* PRPC_IDENT_TAG_* */
    int negative;    /* 'i': sign */
    uint8_t *bytes;  /* 'i': big-endian magnitude; 's': UTF-8 bytes; malloc'd */
    size_t len;      /* length of bytes */
    double f;        /* 'f' */
    int b;           /* 'b' */
    file_ref_t file; /* 'F' */
} arg_copy_t;

static void *dup_bytes(const char *p, size_t len)
{
    char *q = malloc(len + 1);
    if (q == NULL)
        return NULL;
    memcpy(q, p, len);
    q[len] = '\0';
    return q;
}

/* Copy str s as UTF-8 into *out (malloc'd, NUL-terminated). Lone surrogates
 * are kept as their 3-byte forms so that the engine refuses them as invalid
 * UTF-8 with its EINVAL naming the argument, rather than a UnicodeEncodeError
 * naming nothing. When nul_ok is 0, an embedded NUL (which a C string cannot
 * carry) is refused with a message starting with `what`. Returns 0, or -1
 * with an exception set. */
static int copy_utf8(pyprpc_state_t *st, PyObject *s, const char *what, int nul_ok, char **out,
                     size_t *len_out)
{
    PyObject *b = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    char *p;
    Py_ssize_t len;
    if (b == NULL)
        return -1;
    p = PyBytes_AS_STRING(b);
    len = PyBytes_GET_SIZE(b);
    if (!nul_ok && memchr(p, '\0', (size_t)len) != NULL) {
        prpc_error_t err;
        prpc_error_set(&err, PRPC_EINVAL, "%s contains a NUL character", what);
        Py_DECREF(b);
        pyprpc_raise(st, &err);
        return -1;
    }
    *out = dup_bytes(p, (size_t)len);
    Py_DECREF(b);
    if (*out == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (len_out != NULL)
        *len_out = (size_t)len;
    return 0;
}

/* An fd (an int, not a bool, in an int's range) into *fd. Returns 0, or -1
 * with TypeError/OverflowError whose message starts with what. */
static int fd_arg(PyObject *value, const char *what, int *fd)
{
    long n;
    if (!PyLong_Check(value) || PyBool_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%s: fd must be an int, not %.100s", what,
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    n = PyLong_AsLong(value);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n > INT_MAX || n < INT_MIN) {
        PyErr_Format(PyExc_OverflowError, "%s: fd %ld is out of range", what, n);
        return -1;
    }
    *fd = (int)n;
    return 0;
}

/* An fd (an int, not a bool) or a path (str, bytes, os.PathLike) into ref.
 * Returns 0, or -1 with TypeError/OverflowError whose message starts with
 * `what` (a str object). */
static int copy_file_ref(PyObject *value, PyObject *what, file_ref_t *ref)
{
    PyObject *fs = NULL, *bytes = NULL;
    ref->fd = -1;
    ref->path = NULL;
    if (PyLong_Check(value) && !PyBool_Check(value)) {
        const char *w = PyUnicode_AsUTF8(what);
        return w != NULL ? fd_arg(value, w, &ref->fd) : -1;
    }
    if (PyBool_Check(value) || !(PyUnicode_Check(value) || PyBytes_Check(value) ||
                                 PyObject_HasAttrString(value, "__fspath__"))) {
        PyErr_Format(PyExc_TypeError, "%U must be an int fd, str, bytes or os.PathLike, not %.100s",
                     what, Py_TYPE(value)->tp_name);
        return -1;
    }
    fs = PyOS_FSPath(value);
    if (fs == NULL)
        return -1;
    if (!PyUnicode_FSConverter(fs, &bytes)) {
        Py_DECREF(fs);
        return -1;
    }
    Py_DECREF(fs);
    ref->path = dup_bytes(PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
    Py_DECREF(bytes);
    if (ref->path == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* ---- sha256_file ---------------------------------------------------- */

static int sha256_file_impl(const file_ref_t *ref, char out[PRPC_SHA256_HEX_LEN + 1],
                            prpc_error_t *err)
{
    uint8_t d[PRPC_SHA256_LEN];
    int rc = ref->path != NULL ? prpc_hash_path(ref->path, d, NULL, err)
                               : prpc_hash_fd(ref->fd, d, NULL, err);
    if (rc == 0)
        prpc_hex_encode(d, sizeof(d), out);
    return rc;
}

PyDoc_STRVAR(sha256_file_doc,
             "sha256_file(file, /) -> str\n\n"
             "SHA-256 (64 lowercase hex digits) of a file's whole content. `file` is an\n"
             "open fd (int: hashed from offset 0 with pread, its position left where it\n"
             "was) or a path (str, bytes or os.PathLike). The GIL is released while the\n"
             "file is read. Raises NotFoundError for a missing file, InvalidInputError for\n"
             "a directory or a negative fd, StorageError for other read errors.");

static PyObject *pyprpc_sha256_file(PyObject *module, PyObject *arg)
{
    pyprpc_state_t *st = pyprpc_state(module);
    file_ref_t ref;
    prpc_error_t err;
    char out[PRPC_SHA256_HEX_LEN + 1];
    PyObject *what = PyUnicode_FromString("sha256_file: file");
    int rc;
    if (what == NULL)
        return NULL;
    rc = copy_file_ref(arg, what, &ref);
    Py_DECREF(what);
    if (rc < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = sha256_file_impl(&ref, out, &err);
    Py_END_ALLOW_THREADS
    free(ref.path);
    if (rc < 0)
        return pyprpc_raise(st, &err);
    return PyUnicode_FromStringAndSize(out, PRPC_SHA256_HEX_LEN);
}

PyDoc_STRVAR(sha256_fd_chunks_doc,
             "sha256_fd_chunks(fd, /) -> tuple[str, int, bytes]\n\n"
             "sha256_file for an open fd, with the size hashed and the SHA-256 of each\n"
             "upload chunk of it (32 bytes each, in order) from the same pass: given to\n"
             "Connection.upload_blob as chunk_digests, the upload does not hash its\n"
             "chunks again. The digests are b'' for a file of too many chunks. Errors\n"
             "as sha256_file.");

static PyObject *pyprpc_sha256_fd_chunks(PyObject *module, PyObject *arg)
{
    pyprpc_state_t *st = pyprpc_state(module);
    prpc_chunk_digests_t cd = {PRPC_BLOB_UPLOAD_CHUNK, 0, NULL};
    prpc_error_t err;
    uint8_t d[PRPC_SHA256_LEN];
    char hex[PRPC_SHA256_HEX_LEN + 1];
    uint64_t size = 0;
    PyObject *out;
    int fd, rc;
    if (fd_arg(arg, "sha256_fd_chunks", &fd) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = prpc_hash_fd_chunks(fd, d, &size, &cd, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return pyprpc_raise(st, &err);
    prpc_hex_encode(d, sizeof(d), hex);
    out = Py_BuildValue("(s#Ky#)", hex, (Py_ssize_t)PRPC_SHA256_HEX_LEN,
                        (unsigned long long)size, cd.d != NULL ? (const char *)cd.d : "",
                        (Py_ssize_t)(cd.n * PRPC_SHA256_LEN));
    prpc_chunk_digests_cleanup(&cd);
    return out;
}

/* ---- call_identifier_raw --------------------------------------------- */

/* Binding-only tag: a file argument given by the hex SHA-256 of its content,
 * for callers that already hashed the file (the client hashes each file once
 * for both the identity and the upload). Encoded exactly as 'F'. */
#define TAG_FILE_DIGEST 'H'

static int add_arg(prpc_ident_t *id, const arg_copy_t *a, prpc_error_t *err)
{
    switch (a->tag) {
    case PRPC_IDENT_TAG_INT:
        return prpc_ident_add_int(id, a->name, a->negative, a->bytes, a->len, err);
    case PRPC_IDENT_TAG_FLOAT:
        return prpc_ident_add_float(id, a->name, a->f, err);
    case PRPC_IDENT_TAG_BOOL:
        return prpc_ident_add_bool(id, a->name, a->b, err);
    case PRPC_IDENT_TAG_STR:
        return prpc_ident_add_str(id, a->name, (const char *)a->bytes, a->len, err);
    case TAG_FILE_DIGEST:
        return prpc_ident_add_file_sha256(id, a->name, a->bytes, err);
    default:
        if (a->file.path != NULL)
            return prpc_ident_add_file_path(id, a->name, a->file.path, err);
        return prpc_ident_add_file_fd(id, a->name, a->file.fd, err);
    }
}

/* Runs without the GIL: touches only the copies. */
static int call_identifier_impl(const char *function, const char *version, const arg_copy_t *args,
                                uint32_t argc, char out[PRPC_SHA256_HEX_LEN + 1], prpc_error_t *err)
{
    int rc = 0;
    prpc_ident_t *id = prpc_ident_new(function, version, argc, err);
    if (id == NULL)
        return err->code;
    for (uint32_t i = 0; i < argc && rc == 0; i++)
        rc = add_arg(id, &args[i], err);
    if (rc == 0)
        rc = prpc_ident_finish(id, out, err);
    prpc_ident_free(id);
    return rc;
}

/* The integer value as sign + big-endian magnitude, into a. */
static int copy_int(PyObject *value, arg_copy_t *a)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    PyObject *mag = NULL, *nbits = NULL, *bytes = NULL;
    int rc = -1;
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (!overflow) {
        unsigned long long m = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        a->negative = v < 0;
        a->len = 8;
        a->bytes = malloc(8);
        if (a->bytes == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (int i = 7; i >= 0; i--) {
            a->bytes[i] = (uint8_t)(m & 0xff);
            m >>= 8;
        }
        return 0;
    }
    /* Larger than 64 bits. int's own abs (not a subclass's __abs__) gives an
     * exact int, so bit_length and to_bytes below cannot be overridden. */
    a->negative = overflow < 0;
    mag = PyLong_Type.tp_as_number->nb_absolute(value);
    if (mag == NULL)
        goto out;
    nbits = PyObject_CallMethod(mag, "bit_length", NULL);
    if (nbits == NULL)
        goto out;
    bytes = PyObject_CallMethod(mag, "to_bytes", "ns", (PyLong_AsSsize_t(nbits) + 7) / 8, "big");
    if (bytes == NULL)
        goto out;
    a->len = (size_t)PyBytes_GET_SIZE(bytes);
    a->bytes = dup_bytes(PyBytes_AS_STRING(bytes), a->len);
    if (a->bytes == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    rc = 0;
out:
    Py_XDECREF(mag);
    Py_XDECREF(nbits);
    Py_XDECREF(bytes);
    return rc;
}

static const char *tag_type_name(char tag)
{
    switch (tag) {
    case PRPC_IDENT_TAG_INT:
        return "int";
    case PRPC_IDENT_TAG_FLOAT:
        return "float";
    case PRPC_IDENT_TAG_BOOL:
        return "bool";
    case TAG_FILE_DIGEST:
        return "str (64 hex digits)";
    default:
        return "str";
    }
}

/* Copy args[i] = (name, tag, value) into a, type-checking value strictly
 * against its tag. Returns 0, or -1 with an exception naming the argument. */
static int copy_arg(pyprpc_state_t *st, PyObject *item, Py_ssize_t i, arg_copy_t *a)
{
    PyObject *name, *tag, *value;
    const char *tag_s;
    Py_ssize_t tag_len;
    char what[160];
    int ok;

    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
        PyErr_Format(
            PyExc_TypeError,
            "call_identifier_raw: args[%zd] must be a (name, tag, value) tuple, not %.100s", i,
            Py_TYPE(item)->tp_name);
        return -1;
    }
    name = PyTuple_GET_ITEM(item, 0);
    tag = PyTuple_GET_ITEM(item, 1);
    value = PyTuple_GET_ITEM(item, 2);
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError,
                     "call_identifier_raw: args[%zd]: name must be str, not %.100s", i,
                     Py_TYPE(name)->tp_name);
        return -1;
    }
    snprintf(what, sizeof(what), "call_identifier_raw: the name of args[%zd]", i);
    if (copy_utf8(st, name, what, 0, &a->name, NULL) < 0)
        return -1;
    /* From here on messages quote the name with %R: it renders lone
     * surrogates, which the UTF-8 copy in a->name would carry as bad bytes. */
    if (!PyUnicode_Check(tag)) {
        PyErr_Format(PyExc_TypeError,
                     "call_identifier_raw: argument %R: tag must be str, not %.100s", name,
                     Py_TYPE(tag)->tp_name);
        return -1;
    }
    tag_s = PyUnicode_AsUTF8AndSize(tag, &tag_len);
    if (tag_s == NULL)
        return -1;
    if (tag_len != 1 || strchr("ifbsFH", tag_s[0]) == NULL) {
        PyErr_Format(
            PyExc_ValueError,
            "call_identifier_raw: argument %R: unknown tag %R (one of 'i', 'f', 'b', 's', 'F', "
            "'H')",
            name, tag);
        return -1;
    }
    a->tag = tag_s[0];
    switch (a->tag) {
    case PRPC_IDENT_TAG_INT:
        ok = PyLong_Check(value) && !PyBool_Check(value);
        break;
    case PRPC_IDENT_TAG_FLOAT:
        ok = PyFloat_Check(value);
        break;
    case PRPC_IDENT_TAG_BOOL:
        ok = PyBool_Check(value);
        break;
    case PRPC_IDENT_TAG_STR:
    case TAG_FILE_DIGEST:
        ok = PyUnicode_Check(value);
        break;
    default:
        ok = 1; /* copy_file_ref checks */
        break;
    }
    if (!ok) {
        PyErr_Format(PyExc_TypeError,
                     "call_identifier_raw: argument %R (tag '%c') must be %s, not %.100s", name,
                     a->tag, tag_type_name(a->tag), Py_TYPE(value)->tp_name);
        return -1;
    }
    switch (a->tag) {
    case PRPC_IDENT_TAG_INT:
        return copy_int(value, a);
    case PRPC_IDENT_TAG_FLOAT:
        a->f = PyFloat_AS_DOUBLE(value);
        return 0;
    case PRPC_IDENT_TAG_BOOL:
        a->b = value == Py_True;
        return 0;
    case PRPC_IDENT_TAG_STR: {
        char *utf8 = NULL;
        int rc = copy_utf8(st, value, "string value", 1, &utf8, &a->len);
        a->bytes = (uint8_t *)utf8;
        return rc;
    }
    case TAG_FILE_DIGEST: {
        Py_ssize_t n = 0;
        const char *hex = PyUnicode_AsUTF8AndSize(value, &n);
        if (hex == NULL)
            return -1;
        a->bytes = malloc(32);
        if (a->bytes == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        a->len = 32;
        if (n != 64 || prpc_hex_decode(hex, 64, a->bytes, 32, NULL) != 0) {
            PyErr_Format(PyExc_ValueError,
                         "call_identifier_raw: argument %R (tag 'H') must be the 64 hex digits "
                         "of a SHA-256",
                         name);
            return -1;
        }
        return 0;
    }
    default: {
        PyObject *label = PyUnicode_FromFormat("call_identifier_raw: argument %R (tag 'F')", name);
        int rc;
        if (label == NULL)
            return -1;
        rc = copy_file_ref(value, label, &a->file);
        Py_DECREF(label);
        return rc;
    }
    }
}

PyDoc_STRVAR(call_identifier_raw_doc,
             "call_identifier_raw(function, version, args) -> str\n\n"
             "The call id (64 lowercase hex digits): SHA-256 of the typed encoding v1 of\n"
             "docs/IDENTITY.md. `version` is the function's version, 64 hex digits.\n"
             "`args` is a list of (name, tag, value) in declaration order, tag one of\n"
             "'i' (int, any size; not bool), 'f' (float; not int), 'b' (bool), 's' (str),\n"
             "'F' (a file: int fd or path, hashed by content with the GIL released).\n"
             "Raises TypeError naming the argument when a value does not match its tag,\n"
             "InvalidInputError for bad names, version or UTF-8, NotFoundError/StorageError\n"
             "when a file cannot be read.");

static PyObject *pyprpc_call_identifier_raw(PyObject *module, PyObject *pargs, PyObject *kwargs)
{
    static char *kwlist[] = {"function", "version", "args", NULL};
    pyprpc_state_t *st = pyprpc_state(module);
    PyObject *function, *version, *seq_in, *seq = NULL, *result = NULL;
    char *fn = NULL, *ver = NULL;
    arg_copy_t *args = NULL;
    Py_ssize_t n = 0, i;
    prpc_error_t err;
    char out[PRPC_SHA256_HEX_LEN + 1];
    int rc;

    if (!PyArg_ParseTupleAndKeywords(pargs, kwargs, "UUO:call_identifier_raw", kwlist, &function,
                                     &version, &seq_in))
        return NULL;
    if (!PyList_Check(seq_in) && !PyTuple_Check(seq_in)) {
        PyErr_Format(PyExc_TypeError,
                     "call_identifier_raw: args must be a list or tuple, not %.100s",
                     Py_TYPE(seq_in)->tp_name);
        return NULL;
    }
    /* A tuple snapshot: a value's __fspath__ may run Python code that mutates
     * the caller's list while we walk it. */
    seq = PySequence_Tuple(seq_in);
    if (seq == NULL)
        return NULL;
    n = PyTuple_GET_SIZE(seq);
    if ((uint64_t)n > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "call_identifier_raw: too many arguments");
        goto out;
    }
    if (copy_utf8(st, function, "call_identifier_raw: function name", 0, &fn, NULL) < 0 ||
        copy_utf8(st, version, "call_identifier_raw: version", 0, &ver, NULL) < 0)
        goto out;
    args = calloc(n > 0 ? (size_t)n : 1, sizeof(*args));
    if (args == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    for (i = 0; i < n; i++)
        args[i].file.fd = -1;
    for (i = 0; i < n; i++)
        if (copy_arg(st, PyTuple_GET_ITEM(seq, i), i, &args[i]) < 0)
            goto out;

    Py_BEGIN_ALLOW_THREADS
    rc = call_identifier_impl(fn, ver, args, (uint32_t)n, out, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        pyprpc_raise(st, &err);
    else
        result = PyUnicode_FromStringAndSize(out, PRPC_SHA256_HEX_LEN);
out:
    if (args != NULL) {
        for (i = 0; i < n; i++) {
            free(args[i].name);
            free(args[i].bytes);
            free(args[i].file.path);
        }
        free(args);
    }
    free(fn);
    free(ver);
    Py_XDECREF(seq);
    return result;
}

static PyMethodDef hash_methods[] = {
    {"sha256_file", pyprpc_sha256_file, METH_O, sha256_file_doc},
    {"sha256_fd_chunks", pyprpc_sha256_fd_chunks, METH_O, sha256_fd_chunks_doc},
    {"call_identifier_raw", (PyCFunction)(void (*)(void))pyprpc_call_identifier_raw,
     METH_VARARGS | METH_KEYWORDS, call_identifier_raw_doc},
    {NULL, NULL, 0, NULL},
};

int pyprpc_hash_exec(PyObject *module)
{
    return PyModule_AddFunctions(module, hash_methods);
}
