"""Runs inside tests/wheel/chroot_test.sh's clean chroot, with the venv the wheel went into.

Checks, each reported, exit status 1 if any failed:
- the premise: no C compiler, no libcurl / libh2o / libbson on the system (only the wheel has them);
- `ldd` of the installed p2prpc._core: every library resolves, and each one is in the wheel's
  p2prpc.libs/ or is glibc's (libc, libm, libpthread, libdl, librt, libresolv, ld-linux) or libz,
  which the python3 binary itself links (and the manylinux policies assume present);
- p2prpc._core hashes like hashlib with the system OpenSSL loaded too, and the p2prpc command runs;
- the seed's example, examples/demo.py (a broker, a worker, clientapp.py twice), gives
  res_var 1600 both times.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

ALLOWED_OUTSIDE = {"linux-vdso.so.1", "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6",
                   "libpthread.so.0", "libdl.so.2", "librt.so.1", "libresolv.so.2", "libz.so.1"}
NOT_ON_SYSTEM = ["libcurl", "libh2o", "libbson", "libmongoc"]
failures = []


def check(ok, what):
    print("  %s %s" % ("ok  " if ok else "FAIL", what), flush=True)
    if not ok:
        failures.append(what)


print("inside: premise: a machine with Python and nothing else", flush=True)
for cc in ("cc", "gcc", "clang"):
    check(shutil.which(cc) is None, "no %s on PATH" % cc)
for lib in NOT_ON_SYSTEM:
    found = [p for d in ("/lib", "/usr/lib", "/usr/local/lib")
             for p in glob.glob("%s/**/%s*.so*" % (d, lib), recursive=True)]
    check(not found, "no system %s (%s)" % (lib, ", ".join(found) or "none"))

print("inside: ldd of the installed extension", flush=True)
site = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['platlib'])"],
                      capture_output=True, text=True, check=True).stdout.strip()
cores = glob.glob(os.path.join(site, "p2prpc", "_core*.so"))
check(len(cores) == 1, "one p2prpc/_core*.so under %s" % site)
libs_dir = os.path.realpath(os.path.join(site, "p2prpc.libs"))
if cores:
    out = subprocess.run(["ldd", cores[0]], capture_output=True, text=True)
    print(out.stdout + out.stderr, end="")
    check(out.returncode == 0, "ldd exits 0")
    n_bundled = 0
    for line in out.stdout.splitlines():
        line = line.strip()
        m = re.match(r"(\S+) => (.+?)(?: \(0x[0-9a-f]+\))?$", line) or re.match(r"(\S+) \(0x[0-9a-f]+\)$", line)
        if not m:
            check(False, "ldd line understood: %r" % line)
            continue
        name = os.path.basename(m.group(1))
        target = m.group(2) if m.lastindex == 2 else m.group(1)
        if target == "not found":
            check(False, "%s resolves (ldd: not found)" % name)
        elif os.path.realpath(target).startswith(libs_dir + os.sep):
            n_bundled += 1
        elif name not in ALLOWED_OUTSIDE:
            check(False, "%s comes from the wheel or glibc, not %s" % (name, target))
    check(n_bundled > 0, "%d libraries resolved from p2prpc.libs/" % n_bundled)

print("inside: the bundled OpenSSL beside the system's (Python's ssl module loads that one first)",
      flush=True)
probe = subprocess.run([sys.executable, "-c", """if True:
    import hashlib, ssl, sys
    from p2prpc import _core
    with open(sys.executable, "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    got = _core.sha256_file(sys.executable)
    print("sha256", got, ssl.OPENSSL_VERSION)
    sys.exit(0 if got == want else 1)
"""], capture_output=True, text=True)
print(probe.stdout + probe.stderr, end="")
check(probe.returncode == 0, "p2prpc._core.sha256_file agrees with hashlib after `import ssl`")
cli = subprocess.run([os.path.join(os.path.dirname(sys.executable), "p2prpc"), "--help"],
                     capture_output=True, text=True)
check(cli.returncode == 0 and "broker" in cli.stdout, "the p2prpc command runs (--help)")

print("inside: the seed's example (examples/demo.py)", flush=True)
try:
    demo = subprocess.run([sys.executable, "examples/demo.py"], capture_output=True, text=True, timeout=300)
    print(demo.stdout + demo.stderr, end="", flush=True)
    check(demo.returncode == 0, "demo.py exits 0 (got %s)" % demo.returncode)
    check(demo.stdout.count("'res_var': 1600") == 2, "both calls answer res_var 1600")
except subprocess.TimeoutExpired:
    check(False, "demo.py ends within 300 s")
if failures:
    for p in sorted(glob.glob("demo-run/*.log")):
        print("---- %s (last 40 lines)" % p)
        with open(p, errors="replace") as f:
            print("".join(f.readlines()[-40:]), end="")

print("inside: %s" % ("PASS" if not failures else "FAIL: " + "; ".join(failures)), flush=True)
sys.exit(1 if failures else 0)
