"""The client: the seed's create_p2p_client_app / register_p2p_func / future
API on top of the engine's HTTP client (_core.Connection, docs/API.md).

Calling a registered function binds its arguments to the declaration, hashes
each file once, computes the call id and then, in this order: answers from
the local result cache (no network at all), or returns a P2PFuture at once
and hands the call to the app's submitter thread, which finds a broker from
the discovery file, uploads the file blobs it lacks and submits the calls
queued meanwhile together (POST /v1/calls/batch: one durable transaction for
all of them). Errors of that step (no broker, wrong password, versions that
differ) are raised by the future's get(). The app's collector thread then
long-polls for many calls at once (POST /v1/calls/wait); a get() on a call
it is not watching long-polls that call itself.

The cache (cache_path) holds results.sqlite, one record per finished call,
and blobs/, the content-addressed result files.

Thread safety: an app and its futures may be used from several threads.
Background watcher threads (add_done_callback) stop with
app.background_server.shutdown().

One job per module, top down; a module imports only those below it:

    app.py        create_p2p_client_app, P2PClientApp, BackgroundServer
    future.py     P2PFuture: waiting, results, terminate/restart/delete
    pipeline.py   the submitter and collector threads
    sending.py    uploads and submits, request by request (Sender)
    transport.py  brokers: discovery, connection pools, retries, errors
    cache.py      the result cache (ResultCache, open_cache)
"""
from .app import P2PClientApp, create_p2p_client_app
from .future import P2PFuture
from .cache import RESULTS_NAME, ResultCache
from .transport import read_discovery

__all__ = ["create_p2p_client_app", "P2PClientApp", "P2PFuture", "ResultCache", "RESULTS_NAME",
           "read_discovery"]
