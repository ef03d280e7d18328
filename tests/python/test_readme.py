"""The README's walk-through, run as written from a copy of the repository root:
its shell commands (a broker, discovery.txt, a worker; then the generated apps)
and its client, examples/clientapp.py, checked by what the client prints.

The copy holds p2prpc/ and examples/ as `make install` leaves them (the engine
beside the sources), so Python run there imports the source folder, as it does
for a reader. `make install` and `. .venv/bin/activate` are what ran these tests
(this interpreter's folder goes first on PATH). One liberty is taken: the broker
gets a free port instead of 5001, and the commands that name 5001 get its address.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
README_ADDRESS = "127.0.0.1:5001"


def block(lang, marker):
    """The README's one ```lang block that contains marker."""
    found = [b for b in re.findall(r"^```%s\n(.*?)^```" % lang, README, re.S | re.M)
             if marker in b]
    assert len(found) == 1, "README.md: %d %s blocks with %r" % (len(found), lang, marker)
    return found[0]


def strip_comment(line):
    """The command of a line, without its # comment (a # outside quotes that
    starts a word)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip()
    return line.strip()


def copy_root(tmp_path):
    root = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "clientdb")
    for name in ("p2prpc", "examples"):
        shutil.copytree(str(ROOT / name), str(root / name), ignore=ignore)
    shutil.copy(str(ROOT / "README.md"), str(root / "README.md"))
    return root


class Shell:
    """Runs README lines in `cwd` as a reader's shell would: `export` sets the
    environment, a trailing & runs the line in the background (stopped at the
    end), anything else runs to completion and must succeed."""

    def __init__(self, cwd):
        self.cwd = cwd
        venv_bin = os.path.dirname(sys.executable)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("P2PRPC_")}
        self.env.update(PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""),
                        VIRTUAL_ENV=os.path.dirname(venv_bin), PYTHONUNBUFFERED="1")
        self.env.pop("PYTHONPATH", None)
        self.background = []
        self.address = None

    def run_block(self, text):
        """Run text's lines; the output of the last one run to completion."""
        out = None
        for line in text.splitlines():
            cmd = strip_comment(line)
            if not cmd or cmd.startswith("make ") or cmd == ". .venv/bin/activate":
                continue
            if cmd.startswith("export "):
                name, _, value = cmd[len("export "):].partition("=")
                self.env[name] = value.strip("'\"")
                continue
            cmd = self.free_port(cmd)
            if cmd.endswith("&"):
                self.start(cmd[:-1].strip())
            else:
                r = subprocess.run(["bash", "-c", cmd], cwd=str(self.cwd), env=self.env,
                                   capture_output=True, text=True, timeout=120)
                assert r.returncode == 0, "%s\n%s%s%s" % (cmd, r.stdout, r.stderr, self.logs())
                out = r.stdout
        return out

    def free_port(self, cmd):
        if README_ADDRESS in cmd:
            assert self.address, "%r before a broker was started" % cmd
            return cmd.replace(README_ADDRESS, self.address)
        if "--port 5001" in cmd:
            return cmd.replace("--port 5001", "--port 0")
        if re.search(r"python broker/brokerapp\.py\s*&$", cmd):
            return cmd[:-1].rstrip() + " --port 0 &"
        return cmd

    def start(self, cmd):
        log = self.cwd / ("background%d.log" % len(self.background))
        with open(str(log), "w") as f:
            p = subprocess.Popen(["bash", "-c", cmd], cwd=str(self.cwd), env=self.env, stdout=f,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        self.background.append((cmd, p, log))
        if "broker" in cmd:
            self.address = self.wait_listening(p, log)

    def wait_listening(self, p, log):
        # The reader starts the next command once the broker is up; so does this.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            m = re.search(r"listening on (\S+)", log.read_text())
            if m:
                return m.group(1)
            time.sleep(0.05)
        pytest.fail("the broker did not start:\n" + log.read_text())

    def logs(self):
        return "".join("\n--- %s\n%s" % (cmd, log.read_text()) for cmd, _, log in self.background)

    def stop(self):
        for _, p, _ in reversed(self.background):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for _, p, _ in self.background:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.fixture
def shell(tmp_path):
    sh = Shell(copy_root(tmp_path))
    yield sh
    sh.stop()


RESULT = re.compile(r"\{'results_file1': <.*>, 'results_file2': <.*>, 'res_var': (\d+)\}")


def test_readme_client_is_examples_clientapp():
    snippet = block("python", "create_p2p_client_app")
    assert snippet in (ROOT / "examples" / "clientapp.py").read_text(encoding="utf-8")
    assert "python examples/clientapp.py" in README


def test_readme_walkthrough_from_the_repository_root(shell):
    shell.run_block(block("sh", "python -m p2prpc broker"))
    for attempt in ("first", "again, from clientdb"):
        out = shell.run_block("python examples/clientapp.py")
        m = RESULT.search(out)
        assert m and m.group(1) == "1600", attempt + ": " + out
    assert (shell.cwd / "p2prpc-broker").is_dir() and (shell.cwd / "p2prpc-worker").is_dir()
    assert (shell.cwd / "clientdb").is_dir()
    assert_ignored(shell.cwd)


def test_readme_generated_apps_from_the_repository_root(shell):
    for line in block("sh", "python -m p2prpc broker").splitlines():  # the password
        if line.startswith("export "):
            shell.run_block(line)
    out = shell.run_block(block("sh", "generate-broker"))
    m = RESULT.search(out)
    assert m and m.group(1) == "10", out  # the generated client passes arg2=1
    assert_ignored(shell.cwd)


def assert_ignored(copy):
    """Every file the walk-through left in the copy that the repository does
    not track is one its .gitignore ignores (git answers for ROOT's rules)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("no git checkout to ask")
    tracked = set(subprocess.run(["git", "ls-files"], cwd=str(ROOT), capture_output=True,
                                 text=True, check=True).stdout.splitlines())
    left = sorted(str(p.relative_to(copy)) for p in copy.rglob("*")
                  if p.is_file() and not p.name.startswith("background"))
    new = [p for p in left if p not in tracked]
    assert any(p.startswith(("clientdb/", "client/")) for p in new), new  # it did leave some
    r = subprocess.run(["git", "check-ignore", "--no-index", "--verbose", "--non-matching",
                        "--stdin"], input="\n".join(new) + "\n", cwd=str(ROOT),
                       capture_output=True, text=True)
    not_ignored = [line.split("\t")[1] for line in r.stdout.splitlines() if line.startswith("::")]
    assert not not_ignored, "not in .gitignore: %s" % not_ignored
