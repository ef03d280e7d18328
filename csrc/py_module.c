/*
 * py_module.c - p2prpc._core: module definition, state, and the mapping of
 * engine errors to p2prpc.errors. Each py_<subsystem>.c adds its own
 * functions and types from its exec hook.
 */
#include "py_module.h"

#include "fault.h"
#include "util.h"
#include "version.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>

/* A release build has no fault injection (fault.h): asked for faults, it
 * refuses to load rather than run without them as if they were on. Returns 0,
 * or -1 with ImportError naming the variable. */
static int refuse_faults_without_injection(void)
{
#ifndef PRPC_FAULT_INJECTION
    const char *faults = getenv(PRPC_FAULTS_ENV);
    if (faults != NULL && faults[0] != '\0') {
        PyErr_Format(PyExc_ImportError,
                     "p2prpc._core: %s is set (%.200s) but this is a release build, without "
                     "fault injection: unset %s, or install the test build "
                     "(P2PRPC_TEST_BUILD=1 pip install .)",
                     PRPC_FAULTS_ENV, faults, PRPC_FAULTS_ENV);
        return -1;
    }
#endif
    return 0;
}

/* _core.ERRORS, the rows of error_map.h as (name, code, http_status, primary,
 * class name, default message), and the code -> class dict pyprpc_raise uses,
 * both from the one table. A class the table names but p2prpc.errors lacks
 * fails the import, naming it: the two ship together. */
static int add_errors(PyObject *m, pyprpc_state_t *st, PyObject *errors)
{
    size_t n = 0;
    const prpc_error_info_t *t = prpc_error_table(&n);
    PyObject *rows = PyTuple_New((Py_ssize_t)n);
    int rc = -1;
    st->engine_errors = PyDict_New();
    if (rows == NULL || st->engine_errors == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        PyObject *row, *cls, *code;
        cls = PyObject_GetAttrString(errors, t[i].py_class);
        if (cls == NULL) {
            PyErr_Format(PyExc_ImportError, "p2prpc.errors has no class %s for engine code %s",
                         t[i].py_class, t[i].name);
            goto out;
        }
        code = PyLong_FromLong(t[i].code);
        if (code == NULL || PyDict_SetItem(st->engine_errors, code, cls) < 0) {
            Py_XDECREF(code);
            Py_DECREF(cls);
            goto out;
        }
        Py_DECREF(code);
        Py_DECREF(cls);
        row = Py_BuildValue("(siiiss)", t[i].name, t[i].code, t[i].http_status, t[i].primary,
                            t[i].py_class, t[i].message);
        if (row == NULL)
            goto out;
        PyTuple_SET_ITEM(rows, (Py_ssize_t)i, row);
    }
    rc = PyModule_AddObjectRef(m, "ERRORS", rows);
out:
    Py_XDECREF(rows);
    return rc;
}

static PyObject *py_code_for_http_status(PyObject *module, PyObject *arg)
{
    long status = PyLong_AsLong(arg);
    PRPC_UNUSED(module);
    if (status == -1 && PyErr_Occurred())
        return NULL;
    return PyUnicode_FromString(prpc_strerror(prpc_error_from_http_status(status)));
}

static PyMethodDef module_methods[] = {
    {"code_for_http_status", py_code_for_http_status, METH_O,
     "code_for_http_status(status) -> str: the engine code name an HTTP status means in an "
     "answer that carries no code of its own."},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *m)
{
    pyprpc_state_t *st = PyModule_GetState(m);
    PyObject *errors;
#ifdef PRPC_FAULT_INJECTION
    const int fault_injection = 1;
#else
    const int fault_injection = 0;
#endif
    if (refuse_faults_without_injection() < 0)
        return -1;
    /* True in test builds: P2PRPC_FAULTS is honoured (csrc/fault.h). */
    if (PyModule_AddObjectRef(m, "fault_injection", fault_injection ? Py_True : Py_False) < 0)
        return -1;
    errors = PyImport_ImportModule("p2prpc.errors");
    if (errors == NULL)
        return -1;
    st->base_error = PyObject_GetAttrString(errors, "P2PRPCError");
    if (st->base_error == NULL || add_errors(m, st, errors) < 0) {
        Py_DECREF(errors);
        return -1;
    }
    Py_DECREF(errors);
    /* The version this engine was built as, the one its broker reports at
     * /v1/health; p2prpc.__version__ is this string (version.h). */
    if (PyModule_AddStringConstant(m, "__version__", PRPC_VERSION) < 0)
        return -1;
    /* libcurl's global init is not thread-safe; do it once, here, before any
     * engine thread exists. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        PyErr_SetString(PyExc_ImportError, "p2prpc: curl_global_init failed");
        return -1;
    }
    if (pyprpc_hash_exec(m) < 0 || pyprpc_broker_exec(m) < 0 || pyprpc_httpc_exec(m) < 0 ||
        pyprpc_worker_exec(m) < 0 || pyprpc_wire_exec(m) < 0)
        return -1;
    return 0;
}

static int module_traverse(PyObject *m, visitproc visit, void *arg)
{
    pyprpc_state_t *st = PyModule_GetState(m);
    Py_VISIT(st->engine_errors);
    Py_VISIT(st->base_error);
    return 0;
}

static int module_clear(PyObject *m)
{
    pyprpc_state_t *st = PyModule_GetState(m);
    Py_CLEAR(st->engine_errors);
    Py_CLEAR(st->base_error);
    return 0;
}

static void module_free(void *m)
{
    module_clear((PyObject *)m);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef pyprpc_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "p2prpc._core",
    .m_doc = "The p2prpc engine: hashing, transport, store, broker and worker loops.",
    .m_size = sizeof(pyprpc_state_t),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__core(void)
{
    return PyModuleDef_Init(&pyprpc_module_def);
}

pyprpc_state_t *pyprpc_state(PyObject *module)
{
    return PyModule_GetState(module);
}

pyprpc_state_t *pyprpc_state_of_type(PyTypeObject *type)
{
    PyObject *m = PyType_GetModuleByDef(type, &pyprpc_module_def);
    return m == NULL ? NULL : PyModule_GetState(m);
}

PyObject *pyprpc_raise(pyprpc_state_t *st, const prpc_error_t *err)
{
    PyObject *cls = NULL;
    char msg[PRPC_ERROR_MSG_MAX];
    size_t len, at;
    size_t n = 0;
    const prpc_error_info_t *t = prpc_error_table(&n);
    const char *dflt = prpc_strerror(err->code);
    for (size_t i = 0; i < n; i++)
        if (t[i].code == err->code)
            dflt = t[i].message;
    snprintf(msg, sizeof(msg), "%s", err->message[0] ? err->message : dflt);
    /* Messages may quote a path (any bytes on Linux) or be cut mid-character
     * at the cap; Python wants UTF-8: bytes that are not become '?'. */
    len = strlen(msg);
    at = prpc_utf8_invalid_at(msg, len);
    while (at < len) {
        msg[at] = '?';
        at += 1 + prpc_utf8_invalid_at(msg + at + 1, len - at - 1);
    }
    if (st != NULL && st->engine_errors != NULL) {
        PyObject *code = PyLong_FromLong(err->code);
        if (code == NULL)
            return NULL;
        cls = PyDict_GetItemWithError(st->engine_errors, code);
        Py_DECREF(code);
        if (cls == NULL && PyErr_Occurred())
            return NULL;
    }
    if (cls == NULL)
        cls = st != NULL && st->base_error != NULL ? st->base_error : PyExc_RuntimeError;
    PyErr_SetString(cls, msg);
    return NULL;
}

int pyprpc_add_type(PyObject *module, PyType_Spec *spec, const char *name)
{
    PyObject *type = PyType_FromModuleAndSpec(module, spec, NULL);
    int rc;
    if (type == NULL)
        return -1;
    rc = PyModule_AddObjectRef(module, name, type);
    Py_DECREF(type);
    return rc;
}
