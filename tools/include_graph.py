#!/usr/bin/env python3
"""The include graph of csrc/: who includes whom, drawn in layers.

Reads the `#include "..."` lines of DIR/*.c and DIR/*.h (DIR is csrc/ unless
given). A file x.c and its header x.h are one node, x: a .c including its own
header is not a cycle. Includes of files not in DIR (system headers) are left
out.

    tools/include_graph.py            print the graph, top layer first
    tools/include_graph.py --check    exit 1 naming a cycle, if there is one
    tools/include_graph.py --write    regenerate the graph in DIR/README.md,
                                      between its include-graph markers

Each node's layer is one more than the highest layer it includes (a node
that includes nothing of DIR is layer 0), so every arrow points down: a
node's includes are all in the layers below it. Standard library only.
"""
import argparse
import pathlib
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
BEGIN = "<!-- include-graph:begin -->"
END = "<!-- include-graph:end -->"
DEFAULT_DIR = pathlib.Path(__file__).resolve().parent.parent / "csrc"


def read_graph(src):
    """{node: set of the nodes it includes} for the .c and .h files of src."""
    src = pathlib.Path(src)
    files = sorted(p for p in src.iterdir() if p.suffix in (".c", ".h") and p.is_file())
    names = {p.name for p in files}
    graph = {p.stem: set() for p in files}
    for p in files:
        for target in INCLUDE.findall(p.read_text(encoding="utf-8", errors="replace")):
            if target in names and pathlib.PurePath(target).stem != p.stem:
                graph[p.stem].add(pathlib.PurePath(target).stem)
    return graph


def find_cycle(graph):
    """A cycle as a list of nodes whose last is its first, or None."""
    state = {}  # absent: not seen; 1: on the current path; 2: done
    path = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layers(graph):
    """{node: layer} of an acyclic graph."""
    layer = {}

    def depth(node):
        if node not in layer:
            layer[node] = 1 + max((depth(d) for d in graph[node]), default=-1)
        return layer[node]

    for node in graph:
        depth(node)
    return layer


def render(graph):
    """The layered list, top layer first: each node and what it includes."""
    layer = layers(graph)
    width = max(len(n) for n in graph)
    lines = []
    for level in range(max(layer.values()), -1, -1):
        lines.append("layer %d" % level)
        for node in sorted(n for n in graph if layer[n] == level):
            if graph[node]:
                lines.append("  %-*s -> %s" % (width, node, " ".join(sorted(graph[node]))))
            else:
                lines.append("  %s" % node)
    return "\n".join(lines) + "\n"


def readme_block(text):
    return "%s\n```text\n%s```\n%s" % (BEGIN, text, END)


def write_readme(readme, text):
    """Replace the block between the markers of readme with text; False when
    the markers are missing."""
    old = readme.read_text(encoding="utf-8")
    start, end = old.find(BEGIN), old.find(END)
    if start < 0 or end < start:
        return False
    new = old[:start] + readme_block(text) + old[end + len(END):]
    if new != old:
        readme.write_text(new, encoding="utf-8")
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", nargs="?", default=str(DEFAULT_DIR), help="default: csrc/")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when the graph has a cycle")
    mode.add_argument("--write", action="store_true", help="regenerate the block in DIR/README.md")
    args = ap.parse_args(argv)

    graph = read_graph(args.dir)
    if not graph:
        print("include_graph: no .c or .h files in %s" % args.dir, file=sys.stderr)
        return 2
    cycle = find_cycle(graph)
    if cycle:
        print("include_graph: include cycle: %s" % " -> ".join(cycle), file=sys.stderr)
        return 1
    if args.check:
        print("include_graph: no include cycle among the %d nodes of %s" % (len(graph), args.dir))
        return 0
    text = render(graph)
    if args.write:
        readme = pathlib.Path(args.dir) / "README.md"
        if not readme.exists() or not write_readme(readme, text):
            print("include_graph: %s lacks the markers %s and %s" % (readme, BEGIN, END),
                  file=sys.stderr)
            return 2
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
