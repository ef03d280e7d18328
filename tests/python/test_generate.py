"""p2prpc generate-broker / generate-worker / generate-client (p2prpc/_generate.py):
the generated directories, their compose files, running the generated apps with plain
Python on loopback, and every bad input."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "function.py")
PASSWORD = "generate-test-pw-5c1e9a"
COMPOSE = shutil.which("docker-compose")


def cli(*args, cwd=None, env=None):
    """Run `python -m p2prpc ARGS` (the same main as the p2prpc console script) outside
    the checkout, so the installed package is the one imported."""
    full_env = dict(os.environ, P2PRPC_PASSWORD=PASSWORD)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "p2prpc"] + [str(a) for a in args],
                          cwd=str(cwd or tempfile.gettempdir()), env=full_env, capture_output=True,
                          text=True, timeout=60)


def tree(path):
    """{relative path: bytes} of every file under path."""
    out = {}
    for d, _, files in os.walk(str(path)):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, str(path))] = fh.read()
    return out


@pytest.fixture
def discovery(tmp_path):
    path = tmp_path / "discovery.txt"
    path.write_text("127.0.0.1:5001\n")
    return path


@pytest.fixture
def generated(tmp_path, discovery):
    out = tmp_path / "out"
    for args in (["generate-broker", EXAMPLE], ["generate-worker", EXAMPLE, discovery],
                 ["generate-client", EXAMPLE, discovery]):
        r = cli(*args, "--out", out)
        assert r.returncode == 0, r.stderr
        assert "wrote %s" % (out / args[0].split("-")[1]) in r.stdout
    return out


# -- the CLI -------------------------------------------------------------------------


def test_help_lists_every_command_on_one_line_each():
    script = os.path.join(os.path.dirname(sys.executable), "p2prpc")
    r = subprocess.run([script, "--help"], capture_output=True, text=True,
                       env=dict(os.environ, COLUMNS="80"))
    assert r.returncode == 0, r.stderr
    for command in ("broker", "worker", "generate-broker", "generate-worker",
                    "generate-client"):
        assert re.search(r"^ +%s +\S" % command, r.stdout, re.M), (command, r.stdout)


# -- what is generated ---------------------------------------------------------------


def test_generated_directories_are_self_contained(generated, discovery):
    with open(EXAMPLE, "rb") as f:
        function = f.read()
    files = tree(generated)
    assert {"broker/brokerapp.py", "broker/function.py", "broker/Dockerfile",
            "broker/broker.docker-compose.yml", "broker/README.md", "broker/.dockerignore",
            "broker/dist/README.txt",
            "worker/workerapp.py", "worker/function.py", "worker/discovery.txt",
            "worker/Dockerfile", "worker/worker.docker-compose.yml", "worker/README.md",
            "client/clientapp.py", "client/function.py", "client/discovery.txt"} <= set(files)
    for d in ("broker", "worker", "client"):
        assert files[d + "/function.py"] == function
    assert files["worker/discovery.txt"] == files["client/discovery.txt"] == discovery.read_bytes()
    for d in ("broker", "worker"):
        dockerfile = files[d + "/Dockerfile"].decode()
        assert dockerfile.startswith("# The p2prpc %s" % d)
        assert "FROM ${PYTHON_IMAGE}" in dockerfile and "python:3.11-slim-bookworm" in dockerfile
        for lib in ("libh2o-evloop0.13", "libcurl4", "libbson-1.0-0", "libmongoc-1.0-0",
                    "libsqlite3-0", "libh2o-evloop-dev"):
            assert lib in dockerfile
        assert 'ENTRYPOINT ["python", "/app/%sapp.py"]' % d in dockerfile
    readme = files["broker/README.md"].decode()
    assert "docker inspect" in readme and "> discovery.txt" in readme
    assert "{{" not in readme.replace("{{range", "").replace("{{.IPAddress}}", "").replace(
        "{{end}}", "")
    client = files["client/clientapp.py"].decode()
    assert "from function import p2prpc_analyze_large_file" in client
    assert "video_handle=open(__file__, 'rb'), arg2=1)" in client
    assert "print(res.get())" in client and "background_server.shutdown()" in client


def test_no_password_in_generated_files(generated):
    for rel, data in tree(generated).items():
        assert PASSWORD.encode() not in data, rel


def test_client_placeholders_for_every_kind_and_every_function(tmp_path, discovery,
                                                               write_module):
    src = write_module("""
        import io
        def p2prpc_one(f: io.IOBase, n: int, x: float, flag: bool, s: str) -> {"out": int}:
            return {"out": 1}
        def p2prpc_two(s: str) -> {"a": str, "b": io.IOBase}:
            return {"a": s, "b": __file__}
    """, name="funcs.py")
    r = cli("generate-client", src, discovery, "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "o" / "client" / "clientapp.py").read_text()
    assert "from funcs import p2prpc_one, p2prpc_two" in text
    assert ("p2prpc_one(f=open(__file__, 'rb'), n=1, x=1.0, flag=True, s=\"text\")" in text)
    assert 'p2prpc_two(s="text")' in text
    assert "'a' (str), 'b' (file)" in text
    compile(text, "clientapp.py", "exec")


# -- compose files -------------------------------------------------------------------


def compose_config(path, env=None):
    if COMPOSE is None:
        print("docker-compose is not installed: compose files not validated")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("P2PRPC_")}
    full_env.update(env or {})
    return subprocess.run([COMPOSE, "-f", str(path), "config"], capture_output=True, text=True,
                          env=full_env, timeout=60)


def test_broker_compose_validates_with_volume_and_password_from_env(generated):
    path = generated / "broker" / "broker.docker-compose.yml"
    r = compose_config(path, {"P2PRPC_PASSWORD": "pw-from-env"})
    assert r.returncode == 0, r.stderr
    assert "broker-data:/data" in r.stdout and "P2PRPC_PASSWORD: pw-from-env" in r.stdout
    assert "0.0.0.0" in r.stdout and "mongo" not in r.stdout
    r = compose_config(path)
    assert r.returncode != 0
    assert "set P2PRPC_PASSWORD to the network password" in r.stderr


def test_broker_compose_with_mongodb_store(tmp_path):
    r = cli("generate-broker", EXAMPLE, "--store", "mongodb", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    r = compose_config(tmp_path / "broker" / "broker.docker-compose.yml",
                       {"P2PRPC_PASSWORD": "pw"})
    assert r.returncode == 0, r.stderr
    assert "image: mongo:" in r.stdout and "mongo-data:/data/db" in r.stdout
    assert "mongodb://mongo:27017/p2prpc" in r.stdout
    assert "MongoDB store backend is a later" in (tmp_path / "broker" / "README.md").read_text()


def test_unknown_store_is_refused(tmp_path):
    r = cli("generate-broker", EXAMPLE, "--store", "redis", "--out", tmp_path)
    assert r.returncode != 0 and "invalid choice: 'redis'" in r.stderr
    assert os.listdir(str(tmp_path)) == []


def test_worker_compose_scales_and_gpu_block_validates(generated, tmp_path):
    path = generated / "worker" / "worker.docker-compose.yml"
    text = path.read_text()
    assert "container_name" not in text and "ports:" not in text
    r = compose_config(path, {"P2PRPC_PASSWORD": "pw"})
    assert r.returncode == 0, r.stderr
    assert "/app/discovery.txt:ro" in r.stdout
    # The GPU reservation, uncommented as a user would, is valid too.
    lines = text.splitlines()
    start = lines.index("    # deploy:")
    for i in range(start, start + 7):
        assert lines[i].startswith("    # "), lines[i]
        lines[i] = "    " + lines[i][6:]
    gpu = generated / "worker" / "gpu.docker-compose.yml"
    gpu.write_text("\n".join(lines) + "\n")
    r = compose_config(gpu, {"P2PRPC_PASSWORD": "pw"})
    assert r.returncode == 0, r.stderr
    assert "driver: nvidia" in r.stdout and "- gpu" in r.stdout


def test_project_demo_compose_validates():
    r = compose_config(os.path.join(ROOT, "docker", "docker-compose.yml"),
                       {"P2PRPC_PASSWORD": "pw"})
    assert r.returncode == 0, r.stderr
    assert "dockerfile: docker/Dockerfile" in r.stdout
    assert "broker:" in r.stdout and "worker:" in r.stdout and "broker-data:/data" in r.stdout


# -- running the generated apps ------------------------------------------------------


def test_generated_apps_run_end_to_end_with_plain_python(tmp_path):
    out = tmp_path / "out"
    assert cli("generate-broker", EXAMPLE, "--out", out).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PRPC_")}
    env.update(P2PRPC_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
    procs = []
    try:
        log = tmp_path / "broker.log"
        with open(str(log), "w") as f:
            # Run from elsewhere: the apps find their files next to themselves.
            procs.append(subprocess.Popen(
                [sys.executable, str(out / "broker" / "brokerapp.py"), "--port", "0",
                 "--no-execute"], stdout=f, stderr=subprocess.STDOUT, env=env,
                cwd=str(tmp_path)))
        deadline = time.time() + 30
        m = None
        while m is None and time.time() < deadline and procs[0].poll() is None:
            time.sleep(0.05)
            m = re.search(r"listening on (\S+) .*\(data: (\S+)\)", log.read_text())
        assert m, log.read_text()
        assert m.group(2) == str(out / "broker" / "p2prpc-broker")
        discovery = tmp_path / "discovery.txt"
        discovery.write_text(m.group(1) + "\n")
        for kind in ("generate-worker", "generate-client"):
            r = cli(kind, EXAMPLE, discovery, "--out", out)
            assert r.returncode == 0, r.stderr
        with open(str(tmp_path / "worker.log"), "w") as f:
            procs.append(subprocess.Popen(
                [sys.executable, str(out / "worker" / "workerapp.py")], stdout=f,
                stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path)))
        r = subprocess.run([sys.executable, str(out / "client" / "clientapp.py")],
                           capture_output=True, text=True, env=env, cwd=str(tmp_path),
                           timeout=60)
        assert r.returncode == 0, r.stderr + (tmp_path / "worker.log").read_text()
        assert re.search(r"\{'results_file1': <.*>, 'results_file2': <.*>, 'res_var': 10\}",
                         r.stdout), r.stdout
        assert (out / "client" / "clientdb").is_dir()
        assert (out / "worker" / "p2prpc-worker").is_dir()
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    for rel, data in tree(out).items():
        assert PASSWORD.encode() not in data, rel


def test_generated_broker_takes_the_broker_flags(generated):
    r = subprocess.run([sys.executable, str(generated / "broker" / "brokerapp.py"), "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for flag in ("--host", "--port", "--data-dir", "--password-file", "--no-execute"):
        assert flag in r.stdout
    r = subprocess.run([sys.executable, str(generated / "worker" / "workerapp.py"), "--bogus"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr


# -- refusing to overwrite, --force --------------------------------------------------


def test_existing_files_are_kept_unless_force(generated, discovery):
    app = generated / "client" / "clientapp.py"
    app.write_text("# my edits\n")
    (generated / "client" / "notes.txt").write_text("mine\n")
    r = cli("generate-client", EXAMPLE, discovery, "--out", generated)
    assert r.returncode == 1
    assert "%s%s already holds clientapp.py, discovery.txt, function.py" % (
        generated / "client", os.sep) in r.stderr
    assert "--force" in r.stderr
    assert app.read_text() == "# my edits\n"
    r = cli("generate-client", EXAMPLE, discovery, "--out", generated, "--force")
    assert r.returncode == 0, r.stderr
    assert "create_p2p_client_app" in app.read_text()
    assert (generated / "client" / "notes.txt").read_text() == "mine\n"
    assert not [n for n in os.listdir(str(generated)) if n.startswith(".")]


def test_force_replaces_generated_files_but_keeps_data(generated):
    data = generated / "broker" / "p2prpc-broker"
    data.mkdir()
    (data / "store.db").write_bytes(b"data")
    (generated / "broker" / "Dockerfile").write_text("edited")
    r = cli("generate-broker", EXAMPLE, "--out", generated)
    assert r.returncode == 1 and "Dockerfile" in r.stderr
    assert (generated / "broker" / "Dockerfile").read_text() == "edited"
    r = cli("generate-broker", EXAMPLE, "--out", generated, "--force")
    assert r.returncode == 0, r.stderr
    assert (generated / "broker" / "Dockerfile").read_text().startswith("# The p2prpc broker")
    assert (data / "store.db").read_bytes() == b"data"


def test_target_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "broker").write_text("x")
    r = cli("generate-broker", EXAMPLE, "--out", tmp_path, "--force")
    assert r.returncode == 1
    assert "%s exists and is not a directory" % (tmp_path / "broker") in r.stderr


# -- bad input: a message, a non-zero exit, nothing written --------------------------

BAD_FUNCTION_FILES = {
    "no_function": ("import io\n\ndef helper(x: int) -> {\"y\": int}:\n    return {\"y\": x}\n",
                    "defines no function whose name starts with 'p2prpc_'"),
    "syntax": ("def p2prpc_f(x: int) -> {\"y\": int}\n    return {\"y\": x}\n",
               "syntax error in %(path)s, line 1"),
    "unannotated": ("def p2prpc_f(x) -> {\"y\": int}:\n    return {\"y\": x}\n",
                    "function 'p2prpc_f', argument 'x': the annotation is missing"),
    "bad_return": ("def p2prpc_f(x: int) -> int:\n    return x\n",
                   "function 'p2prpc_f', return annotation"),
    "reserved": ("def p2prpc_f(identifier: int) -> {\"y\": int}:\n    return {}\n",
                 "the name is reserved by p2prpc"),
    "import_error": ("import no_such_module_p2prpc\n",
                     "cannot import the function file %(path)s: ModuleNotFoundError"),
    "exits": ("import sys\nsys.exit(3)\n",
              "cannot import the function file %(path)s: SystemExit: 3"),
}


def commands(function_file, discovery, out):
    return [["generate-broker", function_file, "--out", out],
            ["generate-worker", function_file, discovery, "--out", out],
            ["generate-client", function_file, discovery, "--out", out]]


@pytest.mark.parametrize("case", sorted(BAD_FUNCTION_FILES))
def test_bad_function_file(tmp_path, discovery, case):
    source, message = BAD_FUNCTION_FILES[case]
    path = tmp_path / ("%s.py" % case)
    path.write_text(source)
    out = tmp_path / "out"
    for args in commands(path, discovery, out):
        r = cli(*args)
        assert r.returncode == 1, (args, r.stdout)
        assert message % {"path": path} in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("p2prpc %s: " % args[0])
        assert not out.exists()


def test_missing_function_file(tmp_path, discovery):
    missing = tmp_path / "nope.py"
    for args in commands(missing, discovery, tmp_path / "out"):
        r = cli(*args)
        assert r.returncode == 1
        assert "function file %s: no such file" % missing in r.stderr
    assert sorted(os.listdir(str(tmp_path))) == ["discovery.txt"]


@pytest.mark.parametrize("content,message", [
    (None, "discovery file %(path)s: no such file"),
    ("# only a comment\n\n", "the discovery file %(path)s lists no broker"),
])
def test_bad_discovery_file(tmp_path, content, message):
    path = tmp_path / "discovery.txt"
    if content is not None:
        path.write_text(content)
    for kind in ("generate-worker", "generate-client"):
        r = cli(kind, EXAMPLE, path, "--out", tmp_path / "out")
        assert r.returncode == 1
        assert message % {"path": path} in r.stderr, r.stderr
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["my-functions.py", "p2prpc.py", "json.py"])
def test_function_file_the_client_cannot_import(tmp_path, discovery, name):
    path = tmp_path / "src" / name
    path.parent.mkdir()
    shutil.copyfile(EXAMPLE, str(path))
    r = cli("generate-client", path, discovery, "--out", tmp_path / "out")
    assert r.returncode == 1
    assert "%s: the client imports the functions by the file's name" % path in r.stderr
    assert not (tmp_path / "out").exists()
    # The broker and worker run it by path, so any name will do for them.
    r = cli("generate-broker", path, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "broker" / name).is_file()


def test_function_file_named_like_a_generated_app(tmp_path):
    path = tmp_path / "brokerapp.py"
    shutil.copyfile(EXAMPLE, str(path))
    r = cli("generate-broker", path, "--out", tmp_path / "out")
    assert r.returncode == 1 and "has the name of a generated app" in r.stderr
    assert not (tmp_path / "out").exists()


def test_neighbour_modules_are_named(tmp_path, discovery):
    (tmp_path / "helpers_p2prpc_test.py").write_text("SCALE = 10\n")
    (tmp_path / "function.py").write_text(
        "import helpers_p2prpc_test\n\n"
        "def p2prpc_f(x: int) -> {\"y\": int}:\n    return {\"y\": x}\n")
    r = cli("generate-broker", tmp_path / "function.py", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "function.py imports helpers_p2prpc_test from its own directory" in r.stderr
