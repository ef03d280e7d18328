"""The seed's example across processes over TLS with a private CA: broker
--tls-cert/--tls-key, worker --ca, client ca=; and a broker that executes
calls itself over TLS."""
import os

import pytest

from e2e import functions
from e2e.nodes import start_broker, start_worker, write_discovery
from p2prpc import errors
from p2prpc.p2p_client import create_p2p_client_app
from test_tls import pki  # noqa: F401  (module-scoped CA and certificates)

PASSWORD = "tls e2e password"


def run_seed_example(app, tmp_path):
    f = app.register_p2p_func()(functions.p2prpc_analyze_large_file)
    src = tmp_path / "video.bin"
    data = os.urandom(9 * 1024 * 1024 + 7)
    src.write_bytes(data)
    with open(src, "rb") as fh:
        res = f(video_handle=fh, arg2=3).get(timeout=60)
    assert res["res_var"] == 30
    assert res["results_file1"].read() == data
    for v in res.values():
        if hasattr(v, "close"):
            v.close()


def test_seed_example_over_tls_with_a_private_ca(pki, tmp_path):
    tls = ["--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"], "--no-execute"]
    broker = start_broker(tmp_path, extra=tls, password=PASSWORD)
    url = "https://" + broker.address
    discovery = write_discovery(tmp_path, url)
    worker = start_worker(tmp_path, discovery, password=PASSWORD, extra=["--ca", pki["ca.pem"]])
    app = create_p2p_client_app(discovery, password=PASSWORD, cache_path=str(tmp_path / "c"),
                                ca=pki["ca.pem"])
    try:
        run_seed_example(app, tmp_path)
    finally:
        app.background_server.shutdown()
        worker.stop()
        broker.stop()


def test_a_client_without_the_ca_finds_no_broker(pki, tmp_path):
    tls = ["--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"], "--no-execute"]
    broker = start_broker(tmp_path, extra=tls, password=PASSWORD)
    discovery = write_discovery(tmp_path, "https://" + broker.address)
    app = create_p2p_client_app(discovery, password=PASSWORD, cache_path=str(tmp_path / "c"),
                                no_broker_timeout=2, ca=pki["other_ca.pem"])
    try:
        f = app.register_p2p_func()(functions.p2prpc_slow)
        with pytest.raises(errors.ClientNoBrokerFound) as info:
            f(seconds=0.1, tag="x").get(timeout=30)
        assert "certificate verify failed" in str(info.value)
    finally:
        app.background_server.shutdown()
        broker.stop()


def test_a_tls_broker_executes_calls_itself(pki, tmp_path):
    tls = ["--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"], "--execute",
           "--ca", pki["ca.pem"]]
    broker = start_broker(tmp_path, extra=tls, password=PASSWORD)
    discovery = write_discovery(tmp_path, "https://" + broker.address)
    app = create_p2p_client_app(discovery, password=PASSWORD, cache_path=str(tmp_path / "c"),
                                ca=pki["ca.pem"])
    try:
        f = app.register_p2p_func()(functions.p2prpc_slow)
        assert f(seconds=0.05, tag="self").get(timeout=60)["worker"] == broker.proc.pid
    finally:
        app.background_server.shutdown()
        broker.stop()


def test_worker_with_a_bad_ca_file_says_so(pki, tmp_path):
    discovery = write_discovery(tmp_path, "https://127.0.0.1:9")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    worker = start_worker(tmp_path, discovery, extra=["--ca", str(junk)])
    assert worker.proc.wait(30) != 0
    assert "junk.pem" in worker.log() and "PEM" in worker.log()
