"""`make demo`: the seed's example end to end on this machine.

Starts a broker (no execution of its own) and a worker on loopback, runs the seed's
clientapp.py twice (the second answer comes from the client's cache), and stops
everything. Everything it writes goes under ./demo-run/.
"""
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(os.getcwd(), "demo-run")
PASSWORD = "super secret password"


def start(args, log):
    env = dict(os.environ, P2PRPC_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "p2prpc"] + args, stdout=log,
                            stderr=subprocess.STDOUT, env=env, cwd=RUN)


def wait_for_line(path, pattern, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(path) as f:
            m = re.search(pattern, f.read())
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    with open(path) as f:
        sys.exit("demo: the node did not start:\n" + f.read())


def main():
    shutil.rmtree(RUN, ignore_errors=True)
    os.makedirs(RUN)
    function_file = os.path.join(HERE, "function.py")
    procs = []
    try:
        broker_log = os.path.join(RUN, "broker.log")
        with open(broker_log, "w") as log:
            broker = start(["broker", function_file, "--port", "0", "--no-execute",
                            "--data-dir", os.path.join(RUN, "broker")], log)
        procs.append(broker)
        address = wait_for_line(broker_log, r"listening on (\S+)", broker).group(1)
        print("demo: broker listening on", address)
        discovery = os.path.join(RUN, "discovery.txt")
        with open(discovery, "w") as f:
            f.write(address + "\n")
        with open(os.path.join(RUN, "worker.log"), "w") as log:
            procs.append(start(["worker", function_file, "--discovery", discovery,
                                "--data-dir", os.path.join(RUN, "worker")], log))
        print("demo: worker started (it opens no port; it pulls work from the broker)")
        # clientapp.py reads discovery.txt and keeps clientdb/ in the folder it runs in.
        for attempt in ("first call (runs on the worker)", "same call again (client cache)"):
            t = time.time()
            print("demo: %s:" % attempt)
            subprocess.run([sys.executable, os.path.join(HERE, "clientapp.py")],
                           cwd=RUN, check=True, timeout=120)
            print("demo:   answered in %.3f s" % (time.time() - t))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    print("demo: done; logs in", RUN)


if __name__ == "__main__":
    main()
