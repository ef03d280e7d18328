/*
 * py_module.h - shared by the py_*.c binding files (the only files that
 * include Python.h). The module is multi-phase initialised; its state holds
 * the Python exception classes that engine errors map to.
 */
#ifndef PRPC_PY_MODULE_H
#define PRPC_PY_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "common.h"

typedef struct pyprpc_state {
    PyObject *engine_errors; /* dict: code (PRPC_EINVAL) -> exception class */
    PyObject *base_error;    /* p2prpc.errors.P2PRPCError */
} pyprpc_state_t;

/* The module's state, from the module object or from an instance of one of
 * its heap types. */
pyprpc_state_t *pyprpc_state(PyObject *module);
pyprpc_state_t *pyprpc_state_of_type(PyTypeObject *type);

/* The one mapping of engine errors to Python exceptions. Sets the exception
 * and returns NULL so callers can `return pyprpc_raise(...)`. Bytes of the
 * message that are not UTF-8 (a path, a cut) are shown as '?'. */
PyObject *pyprpc_raise(pyprpc_state_t *st, const prpc_error_t *err);

/* Create a heap type of the module from spec and add it as `name`. 0 or -1. */
int pyprpc_add_type(PyObject *module, PyType_Spec *spec, const char *name);

/* Each binding file adds its functions and types to the module. Return 0 or
 * -1 with an exception set. */
int pyprpc_hash_exec(PyObject *module);
int pyprpc_broker_exec(PyObject *module);
int pyprpc_httpc_exec(PyObject *module);
int pyprpc_worker_exec(PyObject *module);
int pyprpc_wire_exec(PyObject *module);

#endif
