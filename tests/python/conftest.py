"""Shared pytest fixtures for the Python tests (which run against the installed package)."""
import json
import textwrap

import pytest

# CI=true: a skip for an environment reason fails (see ci_skips.py for the classification).
from ci_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401


@pytest.fixture
def rb_file(tmp_path):
    """Factory: write `content` to a new file under tmp_path and return it opened
    with `mode` (default "rb"). Every file it opened is closed at teardown."""
    opened = []

    def make(content=b"p2prpc test bytes\n", name=None, mode="rb"):
        path = tmp_path / (name or "file%d.bin" % len(opened))
        path.write_bytes(content)
        f = open(path, mode)
        opened.append(f)
        return f

    yield make
    for f in opened:
        f.close()


@pytest.fixture
def make_broker(tmp_path, request):
    """Factory: a started in-process broker serving the test module's FUNCTIONS,
    each in its own data dir (keywords go to _core.Broker); stopped at teardown.
    test_broker.py keeps its own, over one data dir."""
    from p2prpc import _core

    started = []

    def make(**kw):
        b = _core.Broker(json.dumps(request.module.FUNCTIONS),
                         str(tmp_path / ("data%d" % len(started))), **kw)
        b.start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def write_module(tmp_path):
    """Factory: write dedented Python `source` to tmp_path/<name> and return its Path."""

    def write(source, name="function.py"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        return path

    return write


@pytest.fixture
def client(broker):
    """A raw HTTP client (tests/python/broker_client.py) of the test module's
    `broker` fixture, closed at teardown. Modules with their own `client` keep it."""
    from broker_client import BrokerClient

    c = BrokerClient(broker.port)
    yield c
    c.close()
