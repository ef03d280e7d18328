import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import p2prpc
import p2prpc._core

ROOT = Path(__file__).resolve().parents[2]


def test_core_imports_from_installed_package():
    assert p2prpc._core.__name__ == "p2prpc._core"
    assert "site-packages" in p2prpc.__file__


def test_engine_beside_the_sources_is_the_installed_one():
    # `make install` copies the engine it installed into p2prpc/ for Python run
    # from the repository root; a stale copy would run other code than the tests.
    inplace = Path(ROOT, "p2prpc", Path(p2prpc._core.__file__).name)
    assert inplace.is_file(), "%s is missing: run make install" % inplace
    assert filecmp.cmp(str(inplace), p2prpc._core.__file__, shallow=False), \
        "%s differs from the installed engine: run make install" % inplace


def test_source_folder_without_the_engine_says_how_to_build_it(tmp_path):
    shutil.copytree(str(ROOT / "p2prpc"), str(tmp_path / "p2prpc"),
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    r = subprocess.run([sys.executable, "-c", "import p2prpc"], cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: p2prpc's engine, the C extension p2prpc._core, is not "
                           "built in %s" % (tmp_path / "p2prpc")), r.stderr
    assert "make install" in last and "pip install ." in last, r.stderr
