"""HTTPS between _core.Connection and a real _core.Broker (docs/API.md "Authentication").

The test makes its own small PKI with the openssl command: a CA, a server
certificate for 127.0.0.1 and localhost signed by it, a second CA that signed
nothing of ours, and a certificate for another host name. Every failure must
say what went wrong: "certificate verify failed", the file that cannot be
used, or the scheme to use.
"""
import hashlib
import json
import os
import shutil
import subprocess

import pytest

from p2prpc import _core
from p2prpc.errors import AuthenticationError, ConnectionFailed, InvalidInputError

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="needs the openssl command to make certificates")

V = "ef" * 32
FUNCTIONS = [{"name": "p2prpc_tls", "version": V, "args": [{"name": "n", "kind": "int"}],
              "returns": [{"name": "m", "kind": "int"}]}]


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _new_ca(d, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
             "-subj", "/CN=p2prpc test " + name, cwd=d)


def _new_cert(d, name, ca, san):
    ext = d / (name + ".ext")
    ext.write_text("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\n" % san)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name, cwd=d)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
             "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", str(ext), cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Paths of ca.pem, other_ca.pem, server.pem/.key (127.0.0.1, localhost) and
    elsewhere.pem/.key (DNS:elsewhere.invalid only), all from this test run."""
    d = tmp_path_factory.mktemp("pki")
    _new_ca(d, "ca")
    _new_ca(d, "other_ca")
    _new_cert(d, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    _new_cert(d, "elsewhere", "ca", "DNS:elsewhere.invalid")
    return {n: str(d / n) for n in ("ca.pem", "other_ca.pem", "server.pem", "server.key",
                                    "elsewhere.pem", "elsewhere.key")}


@pytest.fixture(scope="module")
def key():
    return _core.derive_key("tls test password")


def _health(conn):
    status, body = conn.request("GET", "/v1/health")
    assert status == 200
    assert json.loads(body)["ok"] is True


def test_signed_requests_and_blobs_over_tls(pki, make_broker, key, tmp_path):
    b = make_broker(key=key, tls_cert=pki["server.pem"], tls_key=pki["server.key"])
    url = "https://127.0.0.1:%d" % b.port
    c = _core.Connection(url, key=key, ca=pki["ca.pem"])
    try:
        assert c.base_url == url
        _health(c)
        status, body = c.request("GET", "/v1/functions")
        assert status == 200
        assert [f["name"] for f in json.loads(body)["functions"]] == ["p2prpc_tls"]
        # A blob over two chunks, up and down again, through the same TLS connection.
        data = os.urandom(8 * 1024 * 1024 + 12345)
        sha = hashlib.sha256(data).hexdigest()
        src = tmp_path / "src.bin"
        src.write_bytes(data)
        with open(src, "rb") as f:
            c.upload_blob(f.fileno(), sha, len(data))
        status, _ = c.request("GET", "/v1/metrics")
        assert status == 200
        path = c.download_blob(sha, str(tmp_path / "blobs"))
        with open(path, "rb") as f:
            assert f.read() == data
    finally:
        c.close()
    # The certificate names localhost too, so the name form verifies as well.
    c = _core.Connection("https://localhost:%d" % b.port, key=key, ca=pki["ca.pem"])
    try:
        _health(c)
    finally:
        c.close()


def test_an_unverified_certificate_is_refused(pki, make_broker):
    b = make_broker(tls_cert=pki["server.pem"], tls_key=pki["server.key"])
    url = "https://127.0.0.1:%d" % b.port
    # No CA: the system store does not know our test CA.
    with pytest.raises(ConnectionFailed, match="certificate verify failed") as e:
        _core.Connection(url).request("GET", "/v1/health")
    assert url in str(e.value)
    assert "ca=" in str(e.value)
    # A CA that did not sign the broker's certificate.
    with pytest.raises(ConnectionFailed, match="certificate verify failed") as e:
        _core.Connection(url, ca=pki["other_ca.pem"]).request("GET", "/v1/health")
    assert pki["other_ca.pem"] in str(e.value)
    # The right CA still works: the refusals were about trust, not the broker.
    _health(_core.Connection(url, ca=pki["ca.pem"]))


def test_the_host_name_is_verified(pki, make_broker):
    b = make_broker(tls_cert=pki["elsewhere.pem"], tls_key=pki["elsewhere.key"])
    with pytest.raises(ConnectionFailed, match="certificate verify failed") as e:
        _core.Connection("https://127.0.0.1:%d" % b.port, ca=pki["ca.pem"]).request(
            "GET", "/v1/health")
    assert "127.0.0.1" in str(e.value)


def test_wrong_scheme_either_way_is_a_clear_error(pki, make_broker):
    tls = make_broker(tls_cert=pki["server.pem"], tls_key=pki["server.key"])
    with pytest.raises(ConnectionFailed, match="use https://host:port"):
        _core.Connection("http://127.0.0.1:%d" % tls.port).request("GET", "/v1/health")
    plain = make_broker()
    with pytest.raises(ConnectionFailed, match="TLS handshake failed.*is the broker serving https"):
        _core.Connection("https://127.0.0.1:%d" % plain.port, ca=pki["ca.pem"]).request(
            "GET", "/v1/health")


def test_an_unusable_ca_file_is_refused_at_once(pki, tmp_path):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(InvalidInputError, match="cannot open the CA file") as e:
        _core.Connection("https://127.0.0.1:1", ca=missing)
    assert missing in str(e.value)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(InvalidInputError, match="holds no PEM certificate") as e:
        _core.Connection("https://127.0.0.1:1", ca=junk)
    assert str(junk) in str(e.value)
    # A private key is PEM too, but not a certificate.
    with pytest.raises(InvalidInputError, match="holds no PEM certificate"):
        _core.Connection("https://127.0.0.1:1", ca=pki["server.key"])
    with pytest.raises(TypeError):
        _core.Connection("https://127.0.0.1:1", ca=3)


def test_broker_tls_files_are_checked(pki, tmp_path):
    data = str(tmp_path / "data")
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(InvalidInputError) as e:
        _core.Broker(json.dumps(FUNCTIONS), data, tls_cert=missing, tls_key=pki["server.key"])
    assert missing in str(e.value)
    # The key of another certificate.
    with pytest.raises(InvalidInputError) as e:
        _core.Broker(json.dumps(FUNCTIONS), data, tls_cert=pki["server.pem"],
                     tls_key=pki["elsewhere.key"])
    assert pki["elsewhere.key"] in str(e.value)
    with pytest.raises(InvalidInputError, match="both a certificate and a key"):
        _core.Broker(json.dumps(FUNCTIONS), data, tls_cert=pki["server.pem"])


def test_a_tls_broker_with_a_password_still_refuses_a_wrong_one(pki, make_broker, key):
    b = make_broker(key=key, tls_cert=pki["server.pem"], tls_key=pki["server.key"])
    c = _core.Connection("https://127.0.0.1:%d" % b.port, key=_core.derive_key("wrong"),
                         ca=pki["ca.pem"])
    with pytest.raises(AuthenticationError, match="refused: .*wrong password"):
        c.request("GET", "/v1/functions")
