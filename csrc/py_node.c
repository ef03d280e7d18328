/*
 * py_node.c - Python bindings of the node subsystem (placeholder until it lands).
 */
#include "py_module.h"

int pyprpc_node_exec(PyObject *module)
{
    PRPC_UNUSED(module);
    return 0;
}
