/*
 * py_broker.c - _core.Broker: starts and stops a broker (broker.h). The
 * broker runs on engine threads; this object only owns it.
 */
#include "py_module.h"

#include "broker.h"

typedef struct {
    PyObject_HEAD
    prpc_broker_t *broker;
    int running;
} broker_object_t;

static int broker_init(broker_object_t *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"functions_json", "data_dir", "host", "port", "key", "lease_ms",
                             "heartbeat_ms", "max_attempts", "synchronous", "store_uri",
                             "advertise", "expire_ms", "insecure", "tls_cert", "tls_key", "peers",
                             "max_body", "request_timeout_ms", "max_connections",
                             "max_leases_per_worker", "max_headers", "max_header_bytes",
                             "max_depth", "upload_stall_ms", NULL};
    const char *functions_json = NULL, *data_dir = NULL, *host = "127.0.0.1";
    const char *synchronous = NULL, *store_uri = NULL, *advertise = NULL;
    const char *tls_cert = NULL, *tls_key = NULL;
    PyObject *peers_obj = NULL, *peers_seq = NULL;
    const char **peers = NULL;
    int rc = -1, max_leases_per_worker = 0, max_depth = 0;
    Py_ssize_t max_body = 0, max_connections = 0, max_headers = 0, max_header_bytes = 0;
    long long request_timeout_ms = 0, upload_stall_ms = 0;
    Py_buffer key = {0};
    int port = 0, heartbeat_ms = 2000, max_attempts = 3;
    long long lease_ms = 30000, expire_ms = 0;
    int insecure = 0;
    prpc_broker_config_t cfg;
    prpc_error_t err;
    prpc_broker_t *b;
    pyprpc_state_t *st = pyprpc_state_of_type(Py_TYPE(self));

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ss|siz*LiizzzLpzzOnLninniL", kwlist,
                                     &functions_json, &data_dir, &host, &port, &key, &lease_ms,
                                     &heartbeat_ms, &max_attempts, &synchronous, &store_uri,
                                     &advertise, &expire_ms, &insecure, &tls_cert, &tls_key,
                                     &peers_obj, &max_body, &request_timeout_ms,
                                     &max_connections, &max_leases_per_worker, &max_headers,
                                     &max_header_bytes, &max_depth, &upload_stall_ms))
        return -1;
    if (peers_obj != NULL && peers_obj != Py_None) {
        Py_ssize_t n;
        peers_seq = PySequence_Fast(peers_obj, "peers must be a list of \"host:port\" strings");
        if (peers_seq == NULL)
            goto out;
        n = PySequence_Fast_GET_SIZE(peers_seq);
        peers = PyMem_Calloc((size_t)n + 1, sizeof(*peers));
        if (peers == NULL) {
            PyErr_NoMemory();
            goto out;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PySequence_Fast_GET_ITEM(peers_seq, i);
            if (!PyUnicode_Check(item)) {
                PyErr_SetString(PyExc_TypeError, "peers must be a list of \"host:port\" strings");
                goto out;
            }
            peers[i] = PyUnicode_AsUTF8(item);
            if (peers[i] == NULL)
                goto out;
        }
    }
    if (key.buf != NULL && key.len != 32) {
        PyErr_SetString(PyExc_ValueError, "key must be 32 bytes (from derive_key)");
        goto out;
    }
    if (self->broker != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Broker already initialised");
        goto out;
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.functions_json = functions_json;
    cfg.data_dir = data_dir;
    cfg.host = host;
    cfg.port = port;
    cfg.key = key.buf;
    cfg.lease_ms = lease_ms;
    cfg.heartbeat_ms = heartbeat_ms;
    cfg.max_attempts = max_attempts;
    cfg.synchronous = synchronous;
    cfg.store_uri = store_uri;
    cfg.advertise = advertise;
    cfg.expire_ms = expire_ms;
    cfg.insecure = insecure;
    cfg.tls_cert = tls_cert;
    cfg.tls_key = tls_key;
    cfg.peers = peers;
    if (max_body < 0 || max_connections < 0 || request_timeout_ms < 0 ||
        max_leases_per_worker < 0 || max_headers < 0 || max_header_bytes < 0 || max_depth < 0 ||
        upload_stall_ms < 0) {
        PyErr_SetString(PyExc_ValueError, "broker limits must not be negative");
        goto out;
    }
    cfg.max_body = (size_t)max_body;
    cfg.request_timeout_ms = request_timeout_ms;
    cfg.max_connections = (size_t)max_connections;
    cfg.max_leases_per_worker = max_leases_per_worker;
    cfg.max_headers = (size_t)max_headers;
    cfg.max_header_bytes = (size_t)max_header_bytes;
    cfg.max_depth = max_depth;
    cfg.upload_stall_ms = upload_stall_ms;
    prpc_error_clear(&err);
    Py_BEGIN_ALLOW_THREADS
    b = prpc_broker_new(&cfg, &err);
    Py_END_ALLOW_THREADS
    if (b == NULL) {
        pyprpc_raise(st, &err);
        goto out;
    }
    self->broker = b;
    rc = 0;
out:
    PyBuffer_Release(&key);
    PyMem_Free(peers);
    Py_XDECREF(peers_seq);
    return rc;
}

static PyObject *broker_start(broker_object_t *self, PyObject *unused)
{
    prpc_error_t err;
    PRPC_UNUSED(unused);
    if (self->broker == NULL || self->running) {
        PyErr_SetString(PyExc_RuntimeError, "the broker is not initialised or already running");
        return NULL;
    }
    if (prpc_broker_start(self->broker, &err) != 0)
        return pyprpc_raise(pyprpc_state_of_type(Py_TYPE(self)), &err);
    self->running = 1;
    Py_RETURN_NONE;
}

static PyObject *broker_stop(broker_object_t *self, PyObject *unused)
{
    prpc_broker_t *b = self->broker;
    PRPC_UNUSED(unused);
    self->broker = NULL;
    self->running = 0;
    if (b != NULL) {
        Py_BEGIN_ALLOW_THREADS
        prpc_broker_free(b);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static PyObject *broker_port(broker_object_t *self, void *closure)
{
    PRPC_UNUSED(closure);
    if (self->broker == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the broker is stopped");
        return NULL;
    }
    return PyLong_FromLong(prpc_broker_port(self->broker));
}

static void broker_dealloc(broker_object_t *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->broker != NULL) {
        prpc_broker_t *b = self->broker;
        self->broker = NULL;
        Py_BEGIN_ALLOW_THREADS
        prpc_broker_free(b);
        Py_END_ALLOW_THREADS
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef broker_methods[] = {
    {"start", (PyCFunction)broker_start, METH_NOARGS, "Start serving on the engine thread."},
    {"stop", (PyCFunction)broker_stop, METH_NOARGS,
     "Answer parked long-polls, stop serving, close the store. Idempotent."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef broker_getset[] = {
    {"port", (getter)broker_port, NULL, "The bound TCP port.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot broker_slots[] = {
    {Py_tp_init, broker_init},
    {Py_tp_dealloc, broker_dealloc},
    {Py_tp_methods, broker_methods},
    {Py_tp_getset, broker_getset},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_doc, "Broker(functions_json, data_dir, host='127.0.0.1', port=0, key=None, "
                "lease_ms=30000, heartbeat_ms=2000, max_attempts=3, synchronous=None, "
                "store_uri=None, advertise=None, expire_ms=0, insecure=False, tls_cert=None, "
                "tls_key=None, peers=None, max_body=0, request_timeout_ms=0, max_connections=0, "
                "max_leases_per_worker=0, max_headers=0, max_header_bytes=0, max_depth=0)\n\n"
                "A broker node serving docs/API.md. expire_ms: retention of finished calls "
                "(0 = 7 days, < 0 = forever). Without a key only loopback addresses are "
                "allowed unless insecure."},
    {0, NULL},
};

static PyType_Spec broker_spec = {
    .name = "p2prpc._core.Broker",
    .basicsize = sizeof(broker_object_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = broker_slots,
};

int pyprpc_broker_exec(PyObject *module)
{
    return pyprpc_add_type(module, &broker_spec, "Broker");
}
