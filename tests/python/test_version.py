"""The version is written in one place, csrc/version.h, and everything that
reports it says the same: the engine (_core.__version__), the Python package
(p2prpc.__version__), the installed package's metadata (setup.py reads the
header) and the broker's GET /v1/health."""
import importlib.metadata
import re
from pathlib import Path

import p2prpc
from broker_client import BrokerClient
from p2prpc import _core

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = [{"name": "p2prpc_v", "version": "ab" * 32, "args": [],
              "returns": [{"name": "m", "kind": "int"}]}]


def header_version():
    m = re.search(r'^#define PRPC_VERSION "([^"]+)"$',
                  (ROOT / "csrc" / "version.h").read_text(encoding="utf-8"), re.M)
    assert m, "csrc/version.h has no #define PRPC_VERSION line"
    return m.group(1)


def test_engine_package_and_metadata_say_the_header_version():
    v = header_version()
    assert _core.__version__ == v
    assert p2prpc.__version__ == v
    assert importlib.metadata.version("p2prpc") == v


def test_pyproject_takes_the_version_from_setup_py():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^dynamic = \["version"\]', project, re.M), project
    assert not re.search(r"^version\s*=", project, re.M), project


def test_broker_health_reports_the_engine_version(make_broker):
    b = make_broker()
    c = BrokerClient(b.port)
    try:
        r = c.get("/v1/health")
        assert r.status == 200 and r.json()["version"] == _core.__version__
    finally:
        c.close()
