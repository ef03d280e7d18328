"""`p2prpc generate-broker|generate-worker|generate-client`: a deployable directory
from a function file.

Each command reads the function file through the declaration parser (so a bad file
fails here, not later in a container), writes the whole directory into a temporary
directory next to the target and only then moves it into place: bad input leaves
nothing behind. Files that already exist are never replaced without `force`; with it
only the generated files are replaced and anything else in the directory (node data,
the client's cache, a wheel in dist/) is kept.

Generated files never hold a password: the apps and compose files read it from
$P2PRPC_PASSWORD or a file at run time.
"""
import keyword
import os
import re
import shutil
import sys
import tempfile

from ._client import read_discovery
from ._spec import read_module_functions
from .errors import P2PRPCError

__all__ = ["GenerateError", "generate_broker", "generate_worker", "generate_client"]

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
STORES = ("sqlite", "mongodb")
MONGODB_URI = "mongodb://mongo:27017/p2prpc"
_APP_NAMES = ("brokerapp.py", "workerapp.py", "clientapp.py")
_PLACEHOLDER = re.compile(r"\{\{([A-Z][A-Z_]*)\}\}")

# Placeholder arguments of the generated client, by kind: each runs as generated.
_PLACEHOLDERS = {
    "file": "open(__file__, 'rb')",
    "int": "1",
    "float": "1.0",
    "bool": "True",
    "str": "\"text\"",
}
_KIND_WORDS = {
    "file": "a file opened with open(path, 'rb')",
    "int": "an int",
    "float": "a float",
    "bool": "a bool",
    "str": "a str",
}


class GenerateError(ValueError):
    """A generate command cannot go on; the message says what to change."""


def generate_broker(function_file, out=".", store="sqlite", force=False):
    """Write OUT/broker/ for the functions of function_file; returns its path."""
    if store not in STORES:
        raise GenerateError("unknown store %r; choose one of %s" % (store, ", ".join(STORES)))
    source, specs = _read_functions(function_file)
    name = os.path.basename(source)
    mongo = store == "mongodb"
    values = _common_values(name, specs, "broker")
    values.update({
        "STORE_WHAT": "MongoDB, service mongo" if mongo else "SQLite, embedded",
        "STORE_ARGS": ', "--store", "%s"' % MONGODB_URI if mongo else "",
        "STORE_FLAG": " --store mongodb" if mongo else "",
        "MONGO_SERVICE": _MONGO_SERVICE if mongo else "",
        "MONGO_VOLUME": "  mongo-data:\n" if mongo else "",
        "MONGO_ROW": ", and a MongoDB service (`mongo`, volume `mongo-data`)" if mongo else "",
        "MONGO_SECTION": _MONGO_SECTION if mongo else "",
        "CMD": '["--host", "0.0.0.0", "--port", "5001", "--data-dir", "/data"]',
    })
    files = {
        "brokerapp.py": _render("brokerapp.py.tmpl", values),
        "Dockerfile": _render("Dockerfile.tmpl", values),
        "broker.docker-compose.yml": _render("broker.docker-compose.yml.tmpl", values),
        "README.md": _render("broker-README.md.tmpl", values),
        ".dockerignore": _render("dockerignore.tmpl", values),
        "dist/README.txt": _render("dist-README.txt.tmpl", values),
    }
    return _write_tree(out, "broker", files, {name: source}, force)


def generate_worker(function_file, discovery_file, out=".", force=False):
    """Write OUT/worker/ for the functions of function_file, finding brokers
    through a copy of discovery_file; returns its path."""
    source, specs = _read_functions(function_file)
    discovery = _read_discovery(discovery_file)
    name = os.path.basename(source)
    values = _common_values(name, specs, "worker")
    values["CMD"] = '["--discovery", "/app/discovery.txt", "--data-dir", "/data"]'
    files = {
        "workerapp.py": _render("workerapp.py.tmpl", values),
        "Dockerfile": _render("Dockerfile.tmpl", values),
        "worker.docker-compose.yml": _render("worker.docker-compose.yml.tmpl", values),
        "README.md": _render("worker-README.md.tmpl", values),
        ".dockerignore": _render("dockerignore.tmpl", values),
        "dist/README.txt": _render("dist-README.txt.tmpl", values),
    }
    return _write_tree(out, "worker", files, {name: source, "discovery.txt": discovery}, force)


def generate_client(function_file, discovery_file, out=".", force=False):
    """Write OUT/client/ (clientapp.py, copies of function_file and
    discovery_file); returns its path."""
    source, specs = _read_functions(function_file)
    name = os.path.basename(source)
    module = os.path.splitext(name)[0]
    # clientapp.py imports the functions by the file's name, so it must be one
    # Python can import, and not one that p2prpc or the standard library already
    # took (their module would be imported instead of the copy).
    if not name.endswith(".py") or not module.isidentifier() or keyword.iskeyword(module) \
            or module == "p2prpc" or module in getattr(sys, "stdlib_module_names", ()):
        raise GenerateError(
            "%s: the client imports the functions by the file's name, so it must be a Python "
            "module name ending in .py (letters, digits, '_'; not 'p2prpc' nor a standard "
            "library module); rename it, e.g. to function.py" % source)
    discovery = _read_discovery(discovery_file)
    values = _common_values(name, specs, "client")
    values.update({
        "MODULE": module,
        "IMPORTS": ", ".join(s.name for s in specs),
        "CALLS_WHAT": specs[0].name if len(specs) == 1
        else "each function of the file (%s)" % ", ".join(s.name for s in specs),
        "REGISTER": "\n".join("%s = client_app.register_p2p_func()(%s)" % (s.name, s.name)
                              for s in specs),
        "CALLS": "\n\n".join(_client_call(s) for s in specs),
    })
    files = {"clientapp.py": _render("clientapp.py.tmpl", values)}
    return _write_tree(out, "client", files, {name: source, "discovery.txt": discovery}, force)


def _client_call(spec):
    lines = ["    # %s: put your real arguments here;" % spec.name]
    for a in spec.args:
        lines.append("    #   %s is %s" % (a.name, _KIND_WORDS[a.kind]))
    args = ", ".join("%s=%s" % (a.name, _PLACEHOLDERS[a.kind]) for a in spec.args)
    lines.append("    res = %s(%s)" % (spec.name, args))
    lines.append("    # res.get() waits for the result dict, with the keys")
    lines.append("    #   %s" % ", ".join("%r (%s)" % (r.name, r.kind) for r in spec.returns))
    lines.append("    # meanwhile res.progress, res.terminate(), res.restart() and res.delete()"
                 " do what they say.")
    lines.append("    print(res.get())")
    return "\n".join(lines)


def _common_values(name, specs, kind):
    return {
        "KIND": kind,
        "FUNCTION_FILE": name,
        "FUNCTION_FILE_REPR": repr(name),
        "FUNCTION_NAMES": ", ".join(s.name for s in specs),
    }


def _read_functions(function_file):
    """The absolute path of function_file and its specs; GenerateError or the
    parser's P2PFunctionDeclarationError saying what is wrong with it."""
    path = os.path.abspath(function_file)
    if not os.path.isfile(path):
        raise GenerateError("function file %s: no such file" % path)
    if os.path.basename(path) in _APP_NAMES:
        raise GenerateError(
            "function file %s has the name of a generated app; rename it, e.g. to function.py"
            % path)
    folder = os.path.dirname(path)
    before = set(sys.modules)
    try:
        specs = read_module_functions(path)
    except P2PRPCError:
        raise
    except (Exception, SystemExit) as e:  # its module code may even call sys.exit()
        raise GenerateError("cannot import the function file %s: %s: %s"
                            % (path, type(e).__name__, e)) from None
    # The directory carries a copy of the file only: say which of its neighbours
    # it imported, so they can be copied too.
    local = sorted(
        m.__name__ for k, m in list(sys.modules.items())
        if k not in before and not k.startswith("_p2prpc_user_")
        and getattr(m, "__file__", None)
        and os.path.dirname(os.path.abspath(m.__file__)) == folder)
    if local:
        print("p2prpc: note: %s imports %s from its own directory; copy %s next to the "
              "generated copy of it" % (os.path.basename(path), ", ".join(local),
                                        "it" if len(local) == 1 else "them"),
              file=sys.stderr)
    return path, specs


def _read_discovery(discovery_file):
    """The bytes of a discovery file that lists at least one broker."""
    path = os.path.abspath(discovery_file)
    if not os.path.isfile(path):
        raise GenerateError("discovery file %s: no such file; write one broker host:port per "
                            "line (the broker's README shows how)" % path)
    read_discovery(path)  # ClientNoBrokerFound when it lists none
    with open(path, "rb") as f:
        return f.read()


def _render(template, values):
    with open(os.path.join(TEMPLATES, template), encoding="utf-8") as f:
        text = f.read()

    def sub(m):
        if m.group(1) not in values:
            raise KeyError("template %s uses {{%s}}, which has no value" % (template, m.group(1)))
        return values[m.group(1)]

    return _PLACEHOLDER.sub(sub, text)


def _write_tree(out, dirname, files, copies, force):
    """Write files ({relpath: text}) and copies ({relpath: source path or bytes})
    as OUT/dirname/. Refuses, before writing anything, when any of them exists
    and force is false."""
    target = os.path.join(os.path.abspath(out), dirname)
    if os.path.exists(target) and not os.path.isdir(target):
        raise GenerateError("%s exists and is not a directory; remove it or choose another "
                            "--out" % target)
    paths = sorted(set(files) | set(copies))
    if not force and os.path.isdir(target):
        existing = [p for p in paths if os.path.lexists(os.path.join(target, p))]
        if existing:
            raise GenerateError(
                "%s already holds %s, which may have your edits; nothing was written. "
                "Pass --force to replace the generated files (anything else there is kept), "
                "or choose another --out" % (target + os.sep, ", ".join(existing)))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".%s.tmp-" % dirname, dir=os.path.dirname(target))
    try:
        for rel in paths:
            dest = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            content = files.get(rel)
            if content is not None:
                with open(dest, "w", encoding="utf-8") as f:
                    f.write(content)
            elif isinstance(copies[rel], bytes):
                with open(dest, "wb") as f:
                    f.write(copies[rel])
            else:
                shutil.copyfile(copies[rel], dest)
        if not os.path.isdir(target):
            os.rename(tmp, target)
            tmp = None
        else:
            for rel in paths:
                dest = os.path.join(target, rel)
                if os.path.isdir(dest) and not os.path.islink(dest):
                    raise GenerateError("%s is a directory; remove it to generate %s"
                                        % (dest, rel))
            for rel in paths:
                dest = os.path.join(target, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.replace(os.path.join(tmp, rel), dest)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


_MONGO_SERVICE = """    depends_on:
      - mongo

  # The MongoDB store is wired here, ready for the broker's MongoDB backend: until the
  # installed p2prpc has it, the broker stops at once, refusing --store (see README.md).
  mongo:
    image: mongo:7
    restart: unless-stopped
    volumes:
      - mongo-data:/data/db
"""

_MONGO_SECTION = """
## MongoDB

This broker was generated with `--store mongodb`: the compose file adds a `mongo`
service (data in the volume `mongo-data`, reachable only inside the compose network) and
starts the broker with `--store %s`.
The MongoDB store backend is a later p2prpc issue: until the installed p2prpc has it, the
broker refuses `--store` and stops; generate again without `--store` (SQLite, the
default) to run now.
""" % MONGODB_URI
