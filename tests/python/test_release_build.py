"""Fault injection lives only in test builds (csrc/fault.h).

A release build - what a plain `pip install .` makes, without P2PRPC_TEST_BUILD=1 - has no
fault-injection code (no prpc_fault symbol), and refuses to import while P2PRPC_FAULTS is set,
naming the variable, instead of running without the faults it was asked for. The test build
that `make install` puts in .venv for this suite has it. The release wheel is built once, the
way pip install builds it (build isolation, pyproject.toml's requirements), into a temp dir.
"""
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

from p2prpc import _core

REPO = pathlib.Path(__file__).resolve().parents[2]
SWITCHES = ("P2PRPC_TEST_BUILD", "P2PRPC_DEBUG", "P2PRPC_SANITIZE", "P2PRPC_NO_MONGO",
            "P2PRPC_FAULTS", "P2PRPC_FAULTS_SEED")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def release_site(tmp_path_factory):
    """The release wheel of this source tree, unpacked: a directory to put first on sys.path."""
    out = tmp_path_factory.mktemp("release-build")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                        "-w", str(out / "dist"), str(REPO)],
                       cwd=out, env=clean_env(), capture_output=True, text=True)
    assert p.returncode == 0, "pip wheel . failed:\n%s\n%s" % (p.stdout, p.stderr)
    wheels = list((out / "dist").glob("p2prpc-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as z:
        z.extractall(out / "site")
    return out / "site"


def core_so(site):
    found = list((site / "p2prpc").glob("_core*.so"))
    assert len(found) == 1, found
    return found[0]


def fault_symbols(so):
    p = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True,
                       check=True)
    return sorted(line.split()[-1] for line in p.stdout.splitlines()
                  if line.split() and line.split()[-1].startswith("prpc_fault"))


def import_core(site, tmp_path, **env):
    """Import p2prpc._core in a new interpreter, from site first when given."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]) if sys.argv[1] else None\n"
            "import p2prpc._core as c; print(c.__file__); print(c.fault_injection)")
    return subprocess.run([sys.executable, "-c", code, str(site or "")], cwd=tmp_path,
                          env=clean_env(**env), capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_release_build_has_no_fault_injection_code(release_site):
    assert fault_symbols(core_so(release_site)) == []
    # The same check finds them in the test build this suite runs on.
    assert "prpc_fault" in fault_symbols(pathlib.Path(_core.__file__))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_release_build_refuses_p2prpc_faults(release_site, tmp_path):
    p = import_core(release_site, tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [str(core_so(release_site)), "False"]

    p = import_core(release_site, tmp_path, P2PRPC_FAULTS="drop_reply=1")
    assert p.returncode != 0
    assert "ImportError: p2prpc._core: P2PRPC_FAULTS is set (drop_reply=1) but this is a " \
           "release build, without fault injection" in p.stderr, p.stderr
    # Empty names no fault: nothing to refuse.
    assert import_core(release_site, tmp_path, P2PRPC_FAULTS="").returncode == 0


def test_this_suite_runs_the_test_build(tmp_path):
    """The fault tests need it; with the release build they would fail to start their nodes."""
    assert _core.fault_injection is True, (
        "p2prpc._core is a release build; the tests need the test build: `make install` "
        "(P2PRPC_TEST_BUILD=1 pip install .)")
    p = import_core(None, tmp_path, P2PRPC_FAULTS="drop_reply=1")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[1] == "True"
