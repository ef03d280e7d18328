"""The engine's layout (csrc/README.md): no include cycle, the README's include
graph is the one tools/include_graph.py draws now, and the broker's files
stay small enough to hold in one's head."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "include_graph.py"
CSRC = REPO / "csrc"
BEGIN = "<!-- include-graph:begin -->"
END = "<!-- include-graph:end -->"
BROKER_FILE_MAX_LINES = 900


def include_graph(*args):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          timeout=60)


def test_csrc_has_no_include_cycle():
    r = include_graph("--check")
    assert r.returncode == 0, r.stderr


def test_readme_include_graph_is_current():
    r = include_graph()
    assert r.returncode == 0, r.stderr
    readme = (CSRC / "README.md").read_text()
    assert readme.count(BEGIN) == 1 and readme.count(END) == 1
    block = readme[readme.index(BEGIN) + len(BEGIN):readme.index(END)]
    assert block == "\n```text\n" + r.stdout + "```\n", \
        "csrc/README.md's include graph is stale: run tools/include_graph.py --write"


def test_broker_files_are_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in CSRC.glob("broker*.c")}
    assert "broker.c" in sizes and len(sizes) > 1
    big = {name: n for name, n in sizes.items() if n > BROKER_FILE_MAX_LINES}
    assert not big, "over %d lines: %s" % (BROKER_FILE_MAX_LINES, big)


def test_checker_names_a_cycle(tmp_path):
    # A .c including its own header is no cycle; two headers including each
    # other are.
    (tmp_path / "a.c").write_text('#include "a.h"\n#include "b.h"\n')
    (tmp_path / "a.h").write_text('#include <stdio.h>\n')
    (tmp_path / "b.h").write_text('#include "c.h"\n')
    (tmp_path / "c.h").write_text('/* nothing */\n')
    r = include_graph("--check", str(tmp_path))
    assert r.returncode == 0, r.stderr
    (tmp_path / "c.h").write_text('#include "b.h"\n')
    r = include_graph("--check", str(tmp_path))
    assert r.returncode == 1
    assert "include cycle: b -> c -> b" in r.stderr
