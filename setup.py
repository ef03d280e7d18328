"""Builds the engine extension p2prpc._core from csrc/*.c via pkg-config.

Switches (environment): P2PRPC_DEBUG=1 builds -O0 -g; P2PRPC_SANITIZE=1 adds
ASan+UBSan (load libasan first with LD_PRELOAD to import it); P2PRPC_TEST_BUILD=1
compiles in fault injection (csrc/fault.h: P2PRPC_FAULTS, for the test suites).
Without it (a plain `pip install .`) the release build has none, and refuses to
import while P2PRPC_FAULTS is set. Each combination of switches builds in its
own build/py-<variant> folder: setuptools skips an extension whose .so is newer
than its sources, so a shared folder would hand one variant's .so to another.
CUDA is never linked: the GPU probe dlopen()s it at run time. The package's
version is read from csrc/version.h, its one source.
"""
import glob
import os
import re
import shlex
import subprocess

from setuptools import Extension, setup

REQUIRED = ["libh2o-evloop", "libcurl", "libbson-1.0", "sqlite3", "libcrypto"]
OPTIONAL_MONGO = "libmongoc-1.0"


def pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit("p2prpc: pkg-config is missing; run `make deps` or apt-get install pkg-config")
    except subprocess.CalledProcessError as e:
        raise SystemExit(
            "p2prpc: pkg-config could not find %s (%s); install the Debian packages with `make deps`"
            % (" ".join(args[2:]), e.stderr.strip())
        )
    return shlex.split(out.stdout)


def read_version():
    """The version, from its one source: csrc/version.h (see there why)."""
    with open(os.path.join("csrc", "version.h"), encoding="utf-8") as f:
        m = re.search(r'^#define PRPC_VERSION "([^"]+)"$', f.read(), re.M)
    if m is None:
        raise SystemExit("p2prpc: csrc/version.h has no line #define PRPC_VERSION \"X.Y.Z\"")
    return m.group(1)


def have(pkg):
    return subprocess.run(["pkg-config", "--exists", pkg]).returncode == 0


pkgs = list(REQUIRED)
macros = [("H2O_USE_LIBUV", "0"), ("_GNU_SOURCE", "1")]
if have(OPTIONAL_MONGO) and os.environ.get("P2PRPC_NO_MONGO") != "1":
    pkgs.append(OPTIONAL_MONGO)
    macros.append(("PRPC_HAVE_MONGOC", "1"))

include_dirs, library_dirs, libraries, extra_cflags = ["csrc"], [], [], []
for flag in pkg_config("--cflags", "--libs", *pkgs):
    if flag.startswith("-I"):
        include_dirs.append(flag[2:])
    elif flag.startswith("-L"):
        library_dirs.append(flag[2:])
    elif flag.startswith("-l"):
        libraries.append(flag[2:])
    else:
        extra_cflags.append(flag)
libraries += ["ssl", "pthread", "dl"]

cflags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers"]
ldflags = []
variant = []
if os.environ.get("P2PRPC_TEST_BUILD") == "1":
    macros.append(("PRPC_FAULT_INJECTION", "1"))
    variant.append("test")
if os.environ.get("P2PRPC_DEBUG") == "1":
    cflags += ["-O0", "-g"]
    variant.append("debug")
else:
    cflags += ["-O2"]
if os.environ.get("P2PRPC_SANITIZE") == "1":
    cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    ldflags += ["-fsanitize=address,undefined"]
    variant.append("sanitize")
if "PRPC_HAVE_MONGOC" not in dict(macros):
    variant.append("nomongo")

core = Extension(
    "p2prpc._core",
    sources=sorted(glob.glob("csrc/*.c")),
    depends=sorted(glob.glob("csrc/*.h")),
    include_dirs=include_dirs,
    library_dirs=library_dirs,
    libraries=libraries,
    define_macros=macros,
    extra_compile_args=extra_cflags + cflags,
    extra_link_args=ldflags,
)

setup(version=read_version(), ext_modules=[core],
      options={"build": {"build_base": os.path.join("build", "py-" + ("-".join(variant) or "release"))}})
