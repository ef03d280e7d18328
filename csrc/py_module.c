/*
 * py_module.c - p2prpc._core: module definition, state, and the mapping of
 * engine errors to p2prpc.errors. Each py_<subsystem>.c adds its own
 * functions and types from its exec hook.
 */
#include "py_module.h"

#include "util.h"

#include <curl/curl.h>
#include <stdio.h>

static int module_exec(PyObject *m)
{
    pyprpc_state_t *st = PyModule_GetState(m);
    PyObject *errors = PyImport_ImportModule("p2prpc.errors");
    if (errors == NULL)
        return -1;
    st->engine_errors = PyObject_GetAttrString(errors, "ENGINE_ERRORS");
    st->base_error = PyObject_GetAttrString(errors, "P2PRPCError");
    Py_DECREF(errors);
    if (st->engine_errors == NULL || st->base_error == NULL)
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

struct PyModuleDef pyprpc_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "p2prpc._core",
    .m_doc = "The p2prpc engine: hashing, transport, store, broker and worker loops.",
    .m_size = sizeof(pyprpc_state_t),
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
    snprintf(msg, sizeof(msg), "%s", err->message[0] ? err->message : prpc_strerror(err->code));
    /* Messages may quote a path (any bytes on Linux) or be cut mid-character
     * at the cap; Python wants UTF-8: bytes that are not become '?'. */
    len = strlen(msg);
    at = prpc_utf8_invalid_at(msg, len);
    while (at < len) {
        msg[at] = '?';
        at += 1 + prpc_utf8_invalid_at(msg + at + 1, len - at - 1);
    }
    if (st != NULL && st->engine_errors != NULL)
        cls = PyDict_GetItemString(st->engine_errors, prpc_strerror(err->code));
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
