"""Starting real broker and worker processes on loopback for the end-to-end tests."""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FUNCTIONS = os.path.join(HERE, "functions.py")


# A function file's source: p2prpc_digest hashes its file argument as the
# worker received it, so a test compares that with the file it sent.
DIGEST_FUNCTIONS = '''
import hashlib
import io


def p2prpc_digest(data: io.IOBase, n: int) -> {"sha": str, "size": int, "n": int}:
    h = hashlib.sha256()
    size = 0
    for b in iter(lambda: data.read(1 << 20), b""):
        h.update(b)
        size += len(b)
    return {"sha": h.hexdigest(), "size": size, "n": n}
'''


def http_req(address, method, path):
    """(status, lower-cased headers, body) of one unsigned request to a broker."""
    host, port = address.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def metrics(address):
    """A broker's GET /v1/metrics counters, plus bytes_sent: blob bytes it sent
    in all, whether from a held blob (bytes_served) or following an upload
    still arriving (bytes_followed)."""
    status, _, body = http_req(address, "GET", "/v1/metrics")
    assert status == 200, body
    m = json.loads(body)
    m["bytes_sent"] = m["bytes_served"] + m["bytes_followed"]
    return m


class Node:
    def __init__(self, proc, log_path):
        self.proc = proc
        self.log_path = log_path
        self.address = None

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_node(args, tmp_path, name, env=None, password=None, prefix=()):
    log_path = str(tmp_path / ("%s.log" % name))
    full_env = dict(os.environ, PYTHONUNBUFFERED="1")
    full_env.pop("P2PRPC_PASSWORD", None)
    if password:
        full_env["P2PRPC_PASSWORD"] = password
    full_env.update(env or {})
    with open(log_path, "w") as log:
        proc = subprocess.Popen(list(prefix) + [sys.executable, "-m", "p2prpc"] + args,
                                stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                cwd=str(tmp_path))
    return Node(proc, log_path)


def start_broker(tmp_path, name="broker", function_file=FUNCTIONS, extra=(), env=None,
                 password=None, host="127.0.0.1"):
    node = start_node(["broker", function_file, "--host", host, "--port", "0", "--data-dir",
                       str(tmp_path / name)] + list(extra), tmp_path, name, env, password)
    deadline = time.time() + 30
    while time.time() < deadline:
        m = re.search(r"listening on (\S+)", node.log())
        if m:
            node.address = m.group(1)
            return node
        if node.proc.poll() is not None:
            break
        time.sleep(0.02)
    node.stop()
    raise AssertionError("broker did not start:\n" + node.log())


def write_discovery(tmp_path, *addresses, name="discovery.txt"):
    path = tmp_path / name
    path.write_text("".join(a + "\n" for a in addresses))
    return str(path)


def start_worker(tmp_path, discovery, name="worker", function_file=FUNCTIONS, env=None,
                 password=None, extra=(), prefix=()):
    return start_node(["worker", function_file, "--discovery", discovery, "--data-dir",
                       str(tmp_path / name)] + list(extra), tmp_path, name, env, password,
                      prefix=prefix)


def records(record_dir, what):
    path = os.path.join(record_dir, what)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [tuple(int(x) for x in line.split()) for line in f if line.strip()]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped) counts as gone.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
