"""A worker behind NAT: the worker runs in a network namespace from which it reaches the
broker while nothing outside can open a connection to it (tests/python/e2e/netns.py),
and the seed example still completes, with the worker never listening on a port.

Needs root and network namespaces; skips with the reason printed where they are missing.
"""
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from e2e import functions
from e2e.netns import NatNamespace, Unavailable
from e2e.nodes import records, start_broker, start_worker, write_discovery
from p2prpc.p2p_client import create_p2p_client_app

PASSWORD = "nat test password"

# Run inside the namespace: connect to argv[1]:argv[2]; exit 0 when connected.
CONNECT = ("import socket, sys\n"
           "socket.create_connection((sys.argv[1], int(sys.argv[2])), 3).close()\n")
# Run inside the namespace: listen on argv[1], print the port, hold it until stdin closes.
LISTEN = ("import socket, sys\n"
          "s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen()\n"
          "print(s.getsockname()[1], flush=True); sys.stdin.read()\n")


def skip(reason):
    print("\nSKIPPED %s: %s" % (__name__, reason), file=sys.stderr)
    pytest.skip(reason)


def make_namespace():
    try:
        return NatNamespace.create()
    except Unavailable as e:
        skip("network namespaces are unavailable here: %s" % e)


@pytest.fixture
def nat():
    ns = make_namespace()
    yield ns
    ns.close()  # also when the test failed; raises if anything is left behind


@pytest.fixture
def record(tmp_path):
    d = tmp_path / "record"
    d.mkdir()
    return str(d)


@pytest.fixture
def broker(nat, tmp_path, record):
    """A broker in the root namespace on the host end of the veth, not executing: every
    call has to go to the worker behind the NAT."""
    b = start_broker(tmp_path, extra=["--no-execute"], env={"P2PRPC_TEST_RECORD": record},
                     password=PASSWORD, host=nat.host_ip)
    yield b
    b.stop()


def outside_connect_error(host, port):
    """Try to open a connection from the root namespace; the error, or None if it opened."""
    try:
        socket.create_connection((host, port), 3).close()
    except OSError as e:
        return e
    return None


def assert_only_outbound(nat, broker):
    """The NAT's asymmetry: the namespace reaches the broker, the root namespace cannot
    open a connection into the namespace."""
    host, port = broker.address.rsplit(":", 1)
    assert host == nat.host_ip
    inside = nat.exec([sys.executable, "-c", CONNECT, host, port], check=False)
    assert inside.returncode == 0, "the namespace cannot reach the broker: " + inside.stderr
    if nat.firewall is None:
        print("\nno working nft/iptables: the namespace is unreachable only because "
              "nothing in it listens", file=sys.stderr)
        e = outside_connect_error(nat.inner_ip, 9)
        assert isinstance(e, ConnectionRefusedError), e
        return
    # With a listener inside, the firewall alone must keep the root namespace out.
    probe = subprocess.Popen(nat.prefix + [sys.executable, "-c", LISTEN, nat.inner_ip],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        probe_port = probe.stdout.readline().strip()
        assert probe_port.isdigit(), "the listener inside did not start"
        inside = nat.exec([sys.executable, "-c", CONNECT, nat.inner_ip, probe_port],
                          check=False)
        assert inside.returncode == 0, "the listener inside is not reachable from inside"
        e = outside_connect_error(nat.inner_ip, int(probe_port))
        assert e is not None, "the root namespace opened a connection into the NAT (%s)" % (
            nat.firewall)
        assert isinstance(e, (ConnectionRefusedError, socket.timeout)), e
    finally:
        probe.stdin.close()
        probe.wait(10)
    assert [s for s in nat.sockets() if s.listening] == []


class SocketWatch:
    """Samples every socket of the namespace every 50 ms from a thread until stop()."""

    def __init__(self, nat):
        self.nat = nat
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            self.samples.append(self.nat.sockets())
            self._stop.wait(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        return self.samples


def wait_for_worker(worker, nat):
    deadline = time.time() + 30
    while "serving" not in worker.log():
        assert worker.proc.poll() is None, "the worker exited:\n" + worker.log()
        assert time.time() < deadline, "the worker did not start:\n" + worker.log()
        time.sleep(0.05)
    # `ip netns exec` execs the command: the process we started is the worker itself.
    assert nat.contains(worker.proc.pid), "the worker is not inside %s" % nat.name


def test_worker_behind_nat_runs_the_seed_example(nat, broker, tmp_path, record):
    assert_only_outbound(nat, broker)
    discovery = write_discovery(tmp_path, broker.address)
    watch = SocketWatch(nat)
    worker = start_worker(tmp_path, discovery, env={"P2PRPC_TEST_RECORD": record},
                          password=PASSWORD, prefix=nat.prefix)
    app = None
    try:
        wait_for_worker(worker, nat)
        app = create_p2p_client_app(discovery, password=PASSWORD,
                                    cache_path=str(tmp_path / "clientdb"))
        f = app.register_p2p_func()(functions.p2prpc_analyze_large_file)
        data = os.urandom(9 * 1024 * 1024 + 5)  # more than one 8 MiB chunk each way
        src = tmp_path / "video.bin"
        src.write_bytes(data)
        res = f(video_handle=open(src, "rb"), arg2=160).get(timeout=60)
        try:
            assert res["res_var"] == 1600
            assert res["results_file1"].read() == data
            with open(functions.__file__, "rb") as own:
                assert res["results_file2"].read() == own.read()
        finally:
            for v in res.values():
                if hasattr(v, "close"):
                    v.close()
        time.sleep(0.2)  # a few samples after the result, while the worker still runs
        assert worker.proc.poll() is None, "the worker exited:\n" + worker.log()
    finally:
        samples = watch.stop()
        if app is not None:
            app.background_server.shutdown()
        worker.stop()

    # The broker never executes: the call ran in the worker's executor, in the namespace.
    runs = records(record, "analyze")
    assert len(runs) == 1 and runs[0][1] == worker.proc.pid, (runs, worker.proc.pid)

    assert len(samples) >= 5, "too few socket samples (%d) to say anything" % len(samples)
    listening = sorted({s.line for sample in samples for s in sample if s.listening})
    assert listening == [], "the worker listened: %r" % listening
    # The samples saw the worker at work: its connections go out to the broker.
    outbound = [s for sample in samples for s in sample
                if s.state == "ESTAB" and s.peer == broker.address]
    assert outbound, "no sample saw the worker connected to the broker"
    assert all(s.local.startswith(nat.inner_ip + ":") for s in outbound), outbound


def test_close_leaves_nothing_behind():
    ns = make_namespace()
    try:
        sleeper = subprocess.Popen(ns.prefix + ["sleep", "60"])
        deadline = time.time() + 10
        while not ns.contains(sleeper.pid):
            assert time.time() < deadline, "the process did not enter %s" % ns.name
            time.sleep(0.02)
    finally:
        ns.close()
    assert sleeper.wait(5) == -9  # what still ran inside was killed
    assert ns.name not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                         text=True, check=True).stdout.split()
    link = subprocess.run(["ip", "link", "show", ns.host_if], capture_output=True, text=True)
    assert link.returncode != 0 and ns.host_if in link.stderr, link
    ns.close()  # idempotent
