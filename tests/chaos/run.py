"""Run the chaos scenarios and print their figures.

    python tests/chaos/run.py                  # every scenario, short form
    python tests/chaos/run.py --long           # every scenario, long form
    python tests/chaos/run.py --long broker_kills lost_replies

Each scenario runs in a process of its own (its client may need fault
injection from its first request) under a fresh directory, kept with --keep.
Exit status 1 when any scenario broke a rule, with the reasons printed.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def run_child(name, form, workdir, json_path):
    """In the scenario's own process: run it, print and save its report."""
    from harness import Report, dump_json
    from scenarios import SCENARIOS

    fn, _ = SCENARIOS[name]
    try:
        rep = fn(workdir, form)
    except Exception as e:
        import traceback

        rep = Report(name, form)
        rep.problem("the scenario itself failed: %s: %s\n%s"
                    % (type(e).__name__, e, traceback.format_exc()))
    rep.print()
    dump_json(rep, json_path)
    return 0


def run_scenario(name, form, root, timeout=None):
    """Start the scenario in its own process; its report as a dict."""
    from scenarios import SCENARIOS

    _, env_extra = SCENARIOS[name]
    workdir = os.path.join(root, name)
    os.makedirs(workdir, exist_ok=True)
    json_path = os.path.join(workdir, "report.json")
    env = dict(os.environ)
    env.pop("P2PRPC_FAULTS", None)
    env.update(env_extra)
    t = time.time()
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name,
                            "--form", form, "--workdir", workdir, "--json", json_path],
                           env=env, timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout after %ss" % timeout
    try:
        with open(json_path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"scenario": name, "form": form, "skipped": None, "figures": {},
                "problems": ["the scenario process ended (%s) without a report after %.0f s"
                             % (rc, time.time() - t)]}


def main(argv=None):
    from scenarios import SCENARIOS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", metavar="SCENARIO",
                    help="scenarios to run (default all): %s" % ", ".join(SCENARIOS))
    ap.add_argument("--long", action="store_true", help="the long form (by hand; minutes)")
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--form", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_child(args.child, args.form, args.workdir, args.json)
    names = args.names or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error("unknown scenario(s) %s; known: %s" % (", ".join(unknown), ", ".join(SCENARIOS)))
    form = "long" if args.long else "short"
    root = tempfile.mkdtemp(prefix="p2prpc-chaos-")
    failed = []
    try:
        for name in names:
            rep = run_scenario(name, form, root)
            if rep.get("problems"):
                failed.append((name, rep["problems"]))
    finally:
        if args.keep or failed:
            print("work directories (logs, records): %s" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    for name, problems in failed:
        print("FAILED %s: %d problem(s); first: %s" % (name, len(problems), problems[0]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
