/*
 * py_hash.c - Python bindings of the hash subsystem (placeholder until it lands).
 */
#include "py_module.h"

int pyprpc_hash_exec(PyObject *module)
{
    PRPC_UNUSED(module);
    return 0;
}
