"""ci_skips.py (the conftest's CI=true hook): pytest runs a small suite with every kind of skip,
once with CI=true and once without, and the outcomes are read from its JUnit XML."""
import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

HERE = pathlib.Path(__file__).resolve().parent

SUITE = '''
import pytest

def test_env_skip():
    pytest.skip("cannot mount a tmpfs for the disk-full test (needs root)")

@pytest.mark.skipif(True, reason="needs the openssl command")
def test_env_skipif():
    pass

@pytest.fixture
def ns():
    pytest.skip("network namespaces are unavailable here")

def test_fixture_skip(ns):
    pass

def test_optin_skip():
    pytest.skip("P2PRPC_TEST_MONGO_URI is not set")

@pytest.mark.xfail(strict=True, reason="a known bug")
def test_known_bug():
    assert False

def test_passes():
    pass
'''

MODULE_SKIP = '''
import pytest
pytest.skip("docker-compose is not installed", allow_module_level=True)

def test_never_collected():
    pass
'''


def run_suite(tmp_path, ci):
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "test_modskip.py").write_text(MODULE_SKIP)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(HERE)] + [p for p in [env.get("PYTHONPATH")] if p])
    xml = tmp_path / "out.xml"
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "ci_skips", "-p", "no:cacheprovider",
                        "-q", "--junitxml", str(xml), "test_suite.py", "test_modskip.py"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    outcomes = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        msgs = [child.get("message") or "" for child in case]
        outcomes[case.get("name")] = (kinds[0] if kinds else "passed", " ".join(msgs))
    return p, outcomes


def test_without_ci_skips_stay_skips(tmp_path):
    p, got = run_suite(tmp_path, None)
    assert p.returncode == 0, p.stdout + p.stderr
    assert {k: v[0] for k, v in got.items()} == {
        "test_env_skip": "skipped", "test_env_skipif": "skipped", "test_fixture_skip": "skipped",
        "test_optin_skip": "skipped", "test_known_bug": "skipped", "test_passes": "passed",
        "test_modskip": "skipped"}
    # CI=false is not CI.
    p, got = run_suite(tmp_path, "false")
    assert p.returncode == 0, p.stdout + p.stderr


def test_under_ci_environment_skips_fail(tmp_path):
    p, got = run_suite(tmp_path, "true")
    assert p.returncode == 1, p.stdout + p.stderr
    kinds = {k: v[0] for k, v in got.items()}
    assert kinds["test_env_skip"] == "failure"
    assert kinds["test_env_skipif"] == "error"  # skipped in setup: reported as an error there
    assert kinds["test_fixture_skip"] == "error"
    # A module that skips itself is collected as one failing test; the rest still runs.
    assert kinds["environment_skip"] == "failure"
    assert "test_modskip" not in kinds
    # Allowed (not an environment CI has), and strict xfail, are left alone.
    assert kinds["test_optin_skip"] == "skipped"
    assert kinds["test_known_bug"] == "skipped"
    assert kinds["test_passes"] == "passed"
    assert "CI=true: skipped for an environment reason" in p.stdout
    assert "needs root" in p.stdout and "docker-compose is not installed" in p.stdout
