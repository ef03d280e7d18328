/*
 * py_worker.c - Python bindings of worker.c and gpu.c: _core.Worker and
 * _core.gpu_probe.
 *
 * The worker runs on engine threads. Its callbacks (run, cancel, log) cross
 * into Python here, each taking the GIL with PyGILState_Ensure; the engine
 * never touches a Python object. Methods that wait for engine threads
 * (stop, and dealloc) release the GIL while they join, since those threads
 * may be waiting for the GIL inside a callback.
 *
 * An exception raised by `run` becomes a failed call carrying the exception's
 * type, message and traceback (and is reported through sys.unraisablehook);
 * one raised by `cancel` or `log` is only reported.
 */
#include "py_module.h"

#include "gpu.h"
#include "ident.h"
#include "worker.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    prpc_worker_t *w; /* NULL before __init__ */
    PyObject *run;    /* callables; NULL after tp_clear */
    PyObject *cancel;
    PyObject *log;
} worker_object_t;

/* malloc'd UTF-8 copy of a str, or NULL with an exception set. */
static char *dup_str(PyObject *s)
{
    Py_ssize_t len;
    const char *p = PyUnicode_AsUTF8AndSize(s, &len);
    char *out;
    if (p == NULL)
        return NULL;
    out = malloc((size_t)len + 1);
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(out, p, (size_t)len + 1);
    return out;
}

/* The failed-call result for the exception now set (which is then reported
 * and cleared). Returns a malloc'd JSON text or NULL. */
static char *failure_from_exception(PyObject *fn)
{
    PyObject *type, *value, *tb, *json = NULL, *tbmod = NULL, *lines = NULL, *text = NULL;
    PyObject *msg = NULL, *sep = NULL, *doc = NULL, *dumped = NULL;
    char *out = NULL;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    tbmod = PyImport_ImportModule("traceback");
    json = PyImport_ImportModule("json");
    if (tbmod != NULL && json != NULL && value != NULL) {
        lines = PyObject_CallMethod(tbmod, "format_exception", "O", value);
        sep = PyUnicode_FromString("");
        if (lines != NULL && sep != NULL)
            text = PyUnicode_Join(sep, lines);
        msg = PyObject_Str(value);
        if (text != NULL && msg != NULL)
            doc = Py_BuildValue("{s:s,s:[],s:{s:s,s:O,s:O}}", "state", "failed", "outputs",
                                "error", "type", Py_TYPE(value)->tp_name, "message", msg,
                                "traceback", text);
        if (doc != NULL)
            dumped = PyObject_CallMethod(json, "dumps", "O", doc);
        if (dumped != NULL)
            out = dup_str(dumped);
    }
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
    PyErr_WriteUnraisable(fn);
    Py_XDECREF(tbmod);
    Py_XDECREF(json);
    Py_XDECREF(lines);
    Py_XDECREF(sep);
    Py_XDECREF(text);
    Py_XDECREF(msg);
    Py_XDECREF(doc);
    Py_XDECREF(dumped);
    return out;
}

static int run_cb(void *ud, const char *job_json, char **result_json)
{
    worker_object_t *self = ud;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *fn = self->run, *r = NULL;
    int rc = -1;

    *result_json = NULL;
    Py_XINCREF(fn);
    if (fn == NULL) { /* cleared by the garbage collector */
        PyGILState_Release(g);
        return -1;
    }
    r = PyObject_CallFunction(fn, "s", job_json);
    if (r != NULL && !PyUnicode_Check(r)) {
        PyErr_Format(PyExc_TypeError, "Worker run callback returned %.100s, expected str",
                     Py_TYPE(r)->tp_name);
        Py_CLEAR(r);
    }
    if (r != NULL) {
        *result_json = dup_str(r);
        if (*result_json == NULL)
            *result_json = failure_from_exception(fn);
    } else {
        *result_json = failure_from_exception(fn);
    }
    rc = *result_json != NULL ? 0 : -1;
    Py_XDECREF(r);
    Py_DECREF(fn);
    PyGILState_Release(g);
    return rc;
}

static void cancel_cb(void *ud, const char *call_id, const char *lease_id)
{
    worker_object_t *self = ud;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *fn = self->cancel, *r;
    if (fn != NULL) {
        Py_INCREF(fn);
        r = PyObject_CallFunction(fn, "ss", call_id, lease_id);
        if (r == NULL)
            PyErr_WriteUnraisable(fn);
        Py_XDECREF(r);
        Py_DECREF(fn);
    }
    PyGILState_Release(g);
}

static void log_cb(void *ud, int level, const char *message)
{
    worker_object_t *self = ud;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *fn = self->log, *r;
    if (fn != NULL) {
        Py_INCREF(fn);
        /* Engine messages may quote bytes that are not UTF-8. */
        r = PyObject_CallFunction(fn, "iN", level,
                                  PyUnicode_DecodeUTF8(message, (Py_ssize_t)strlen(message),
                                                       "replace"));
        if (r == NULL)
            PyErr_WriteUnraisable(fn);
        Py_XDECREF(r);
        Py_DECREF(fn);
    }
    PyGILState_Release(g);
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

static int worker_init(worker_object_t *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"brokers", "functions", "data_dir", "run", "cancel", "key", "name",
                             "concurrency", "lease_wait_ms", "log", "connect_timeout_ms", "ca",
                             "cache_max_bytes", NULL};
    PyObject *brokers, *functions, *run, *cancel, *log = Py_None, *dir_obj = NULL;
    PyObject *bseq = NULL, *fseq = NULL;
    Py_buffer key = {0};
    const char *name = NULL, *ca = NULL;
    unsigned long long cache_max_bytes = 0;
    int concurrency = 1, lease_wait_ms = 20000, connect_timeout_ms = 5000, rc = -1;
    char **bstr = NULL, **fstr = NULL;
    prpc_worker_function_t *fns = NULL;
    Py_ssize_t nb = 0, nf = 0;
    prpc_worker_config_t cfg;
    prpc_worker_t *w;
    prpc_error_t err;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO&OO|z*ziiOizK:Worker", kwlist, &brokers,
                                     &functions, PyUnicode_FSConverter, &dir_obj, &run, &cancel,
                                     &key, &name, &concurrency, &lease_wait_ms, &log,
                                     &connect_timeout_ms, &ca, &cache_max_bytes))
        return -1;
    if (self->w != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Worker already initialised");
        goto out;
    }
    if (!PyCallable_Check(run) || !PyCallable_Check(cancel) ||
        (log != Py_None && !PyCallable_Check(log))) {
        PyErr_SetString(PyExc_TypeError, "run and cancel (and log, when given) must be callable");
        goto out;
    }
    if (key.buf != NULL && key.len != 32) {
        PyErr_SetString(PyExc_ValueError, "key must be 32 bytes (from derive_key)");
        goto out;
    }
    bseq = PySequence_Fast(brokers, "brokers must be a list of 'host:port' strings");
    fseq = PySequence_Fast(functions, "functions must be a list of (name, version) tuples");
    if (bseq == NULL || fseq == NULL)
        goto out;
    nb = PySequence_Fast_GET_SIZE(bseq);
    nf = PySequence_Fast_GET_SIZE(fseq);
    bstr = calloc((size_t)nb + 1, sizeof(char *));
    fstr = calloc(2 * (size_t)nf + 1, sizeof(char *));
    fns = calloc((size_t)nf + 1, sizeof(*fns));
    if (bstr == NULL || fstr == NULL || fns == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < nb; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(bseq, i);
        if (!PyUnicode_Check(o)) {
            PyErr_Format(PyExc_TypeError, "brokers[%zd] must be str", i);
            goto out;
        }
        if ((bstr[i] = dup_str(o)) == NULL)
            goto out;
    }
    for (Py_ssize_t i = 0; i < nf; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(fseq, i), *n, *v;
        if (!PyTuple_Check(o) || PyTuple_GET_SIZE(o) != 2 ||
            !PyUnicode_Check(n = PyTuple_GET_ITEM(o, 0)) ||
            !PyUnicode_Check(v = PyTuple_GET_ITEM(o, 1))) {
            PyErr_Format(PyExc_TypeError, "functions[%zd] must be a (name, version) tuple of str",
                         i);
            goto out;
        }
        if ((fstr[2 * i] = dup_str(n)) == NULL || (fstr[2 * i + 1] = dup_str(v)) == NULL)
            goto out;
        fns[i].name = fstr[2 * i];
        fns[i].version = fstr[2 * i + 1];
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.brokers = (const char *const *)bstr;
    cfg.n_brokers = (size_t)nb;
    cfg.key = key.buf;
    cfg.name = name;
    cfg.data_dir = PyBytes_AS_STRING(dir_obj);
    cfg.functions = fns;
    cfg.n_functions = (size_t)nf;
    cfg.concurrency = concurrency;
    cfg.lease_wait_ms = lease_wait_ms;
    cfg.connect_timeout_ms = connect_timeout_ms;
    cfg.ca = ca;
    cfg.cache_max_bytes = (uint64_t)cache_max_bytes;
    cfg.run = run_cb;
    cfg.cancel = cancel_cb;
    cfg.log = log != Py_None ? log_cb : NULL;
    cfg.ud = self;
    Py_BEGIN_ALLOW_THREADS
    w = prpc_worker_new(&cfg, &err); /* probes GPUs, creates directories */
    Py_END_ALLOW_THREADS
    if (w == NULL) {
        pyprpc_raise(pyprpc_state_of_type(Py_TYPE(self)), &err);
        goto out;
    }
    self->w = w;
    Py_INCREF(run);
    Py_XSETREF(self->run, run);
    Py_INCREF(cancel);
    Py_XSETREF(self->cancel, cancel);
    if (log != Py_None) {
        Py_INCREF(log);
        Py_XSETREF(self->log, log);
    }
    rc = 0;
out:
    free_strings(bstr, (size_t)nb);
    free_strings(fstr, 2 * (size_t)nf);
    free(fns);
    Py_XDECREF(bseq);
    Py_XDECREF(fseq);
    Py_XDECREF(dir_obj);
    PyBuffer_Release(&key);
    return rc;
}

static PyObject *worker_start(worker_object_t *self, PyObject *unused)
{
    prpc_error_t err;
    int rc;
    PRPC_UNUSED(unused);
    if (self->w == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Worker is not initialised");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = prpc_worker_start(self->w, &err);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        return pyprpc_raise(pyprpc_state_of_type(Py_TYPE(self)), &err);
    Py_RETURN_NONE;
}

static PyObject *worker_stop(worker_object_t *self, PyObject *unused)
{
    PRPC_UNUSED(unused);
    if (self->w != NULL) {
        Py_BEGIN_ALLOW_THREADS
        prpc_worker_stop(self->w);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static PyObject *worker_report_progress(worker_object_t *self, PyObject *args)
{
    const char *call_id;
    double pct;
    if (!PyArg_ParseTuple(args, "sd:report_progress", &call_id, &pct))
        return NULL;
    if (self->w == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Worker is not initialised");
        return NULL;
    }
    return PyBool_FromLong(prpc_worker_report_progress(self->w, call_id, pct, NULL) == 0);
}

static PyObject *worker_save_checkpoint_impl(worker_object_t *self, const char *call_id,
                                             const char *key, const char *path)
{
    prpc_error_t err;
    int rc;
    if (self->w == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Worker is not initialised");
        return NULL;
    }
    /* An upload of any size: never with the GIL, which the engine's threads
     * need for their callbacks. */
    Py_BEGIN_ALLOW_THREADS
    rc = prpc_worker_checkpoint_save(self->w, call_id, key, path, &err);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        return pyprpc_raise(pyprpc_state_of_type(Py_TYPE(self)), &err);
    Py_RETURN_NONE;
}

static PyObject *worker_save_checkpoint(worker_object_t *self, PyObject *args)
{
    const char *call_id, *key;
    PyObject *path = NULL, *r;
    if (!PyArg_ParseTuple(args, "ssO&:save_checkpoint", &call_id, &key, PyUnicode_FSConverter,
                          &path))
        return NULL;
    r = worker_save_checkpoint_impl(self, call_id, key, PyBytes_AS_STRING(path));
    Py_DECREF(path);
    return r;
}

static int worker_traverse(worker_object_t *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->run);
    Py_VISIT(self->cancel);
    Py_VISIT(self->log);
    return 0;
}

static int worker_clear(worker_object_t *self)
{
    Py_CLEAR(self->run);
    Py_CLEAR(self->cancel);
    Py_CLEAR(self->log);
    return 0;
}

static void worker_dealloc(worker_object_t *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->w != NULL) {
        prpc_worker_t *w = self->w;
        /* Threads may be inside a callback, waiting for the GIL. */
        Py_BEGIN_ALLOW_THREADS
        prpc_worker_free(w);
        Py_END_ALLOW_THREADS
        self->w = NULL;
    }
    worker_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef worker_methods[] = {
    {"start", (PyCFunction)worker_start, METH_NOARGS,
     "Start the slot threads; they long-poll the brokers for work."},
    {"stop", (PyCFunction)worker_stop, METH_NOARGS,
     "Stop asking for work, let running calls finish and report, join the threads.\n"
     "Idempotent; blocks (without the GIL) as long as the longest running call."},
    {"report_progress", (PyCFunction)worker_report_progress, METH_VARARGS,
     "report_progress(call_id, pct) -> bool\n\nRecord a running call's progress (0..100) for "
     "its next heartbeat; False when no slot runs call_id."},
    {"save_checkpoint", (PyCFunction)worker_save_checkpoint, METH_VARARGS,
     "save_checkpoint(call_id, key, path) -> None\n\nUpload the file at path as checkpoint "
     "`key` of the running call and record it on the broker under the call's lease; returns "
     "once the save is durable there. Raises StateError when the lease lapsed, NotFoundError "
     "when no slot runs call_id, InvalidInputError for a bad key (1 to 128 of "
     "[A-Za-z0-9._-])."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot worker_slots[] = {
    {Py_tp_init, worker_init},
    {Py_tp_dealloc, worker_dealloc},
    {Py_tp_traverse, worker_traverse},
    {Py_tp_clear, worker_clear},
    {Py_tp_methods, worker_methods},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_doc, "Worker(brokers, functions, data_dir, run, cancel, key=None, name=None,\n"
                "       concurrency=1, lease_wait_ms=20000, log=None, connect_timeout_ms=5000,\n"
                "       ca=None, cache_max_bytes=0)\n\n"
                "The worker loop (csrc/worker.h) on engine threads. run(job_json) -> result_json\n"
                "blocks until the call finished; cancel(call_id, lease_id) asks to stop one;\n"
                "log(level, message) receives the engine's log lines."},
    {0, NULL},
};

static PyType_Spec worker_spec = {
    .name = "p2prpc._core.Worker",
    .basicsize = sizeof(worker_object_t),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = worker_slots,
};

static PyObject *gpu_probe(PyObject *module, PyObject *unused)
{
    prpc_gpu_info_t g[PRPC_GPU_MAX];
    size_t n = 0;
    prpc_error_t err;
    PyObject *list;
    int rc;
    PRPC_UNUSED(unused);
    Py_BEGIN_ALLOW_THREADS
    rc = prpc_gpu_probe(g, PRPC_GPU_MAX, &n, &err);
    Py_END_ALLOW_THREADS
    if (rc != 0)
        return pyprpc_raise(pyprpc_state(module), &err);
    list = PyList_New((Py_ssize_t)n);
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *d = Py_BuildValue(
            "{s:i,s:N,s:N,s:K,s:K,s:O,s:s}", "index", g[i].index, "name",
            PyUnicode_DecodeUTF8(g[i].name, (Py_ssize_t)strlen(g[i].name), "replace"), "uuid",
            PyUnicode_DecodeUTF8(g[i].uuid, (Py_ssize_t)strlen(g[i].uuid), "replace"),
            "total_bytes", (unsigned long long)g[i].total_bytes, "free_bytes",
            (unsigned long long)g[i].free_bytes, "free_known",
            g[i].free_known ? Py_True : Py_False, "source", g[i].source);
        if (d == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    return list;
}

static PyMethodDef worker_functions[] = {
    {"gpu_probe", (PyCFunction)gpu_probe, METH_NOARGS,
     "gpu_probe() -> list[dict]\n\nThis machine's GPUs through NVML or the CUDA driver, loaded "
     "at run time: index, name, uuid, total_bytes, free_bytes, free_known, source. An empty "
     "list when there is no GPU or no driver."},
    {NULL, NULL, 0, NULL},
};

int pyprpc_worker_exec(PyObject *module)
{
    if (pyprpc_add_type(module, &worker_spec, "Worker") < 0)
        return -1;
    return PyModule_AddFunctions(module, worker_functions);
}
