/*
 * py_store.c - Python bindings of the store subsystem (placeholder until it lands).
 */
#include "py_module.h"

int pyprpc_store_exec(PyObject *module)
{
    PRPC_UNUSED(module);
    return 0;
}
