"""Adds the licences of the libraries auditwheel bundled into a wheel (`make wheel`).

usage: python scripts/wheel_licenses.py REPAIRED.whl OUTDIR

auditwheel copies libcurl, OpenSSL, h2o, libbson, SQLite and what they link
(GnuTLS, Kerberos, ...) into the wheel's p2prpc.libs/, renamed NAME-<hash>.so...
Several of them are (L)GPL or BSD-style and ask that their notice travel with
the binary. For each bundled file this finds the Debian package that installed
it (dpkg-query -S) and copies that package's /usr/share/doc/PKG/copyright into
the wheel as <dist-info>/licenses/bundled/PKG.copyright, names it in METADATA
(License-File, PEP 639) and repacks the wheel (`wheel pack` rewrites RECORD).
Fails when a bundled library cannot be traced to a package: a wheel must not
ship a library whose licence nobody looked up.

The build machine is Debian (or a derivative); nothing here runs at install time.
"""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

LIBS_DIR = "p2prpc.libs"


def original_name(grafted):
    """libcurl-02fbea31.so.4.8.0 -> libcurl.so.4.8.0 (auditwheel puts -<8 hex> before the first dot)."""
    name = re.sub(r"-[0-9a-f]{8}(?=\.)", "", grafted, count=1)
    if name == grafted:
        raise SystemExit("wheel_licenses: %s does not look like a library auditwheel bundled" % grafted)
    return name


def debian_package(libname):
    """The Debian package that installed libname, looked up under the library directories."""
    arch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    dirs = ["/usr/lib/" + arch, "/lib/" + arch, "/usr/lib", "/lib", "/usr/local/lib"]
    for d in dirs:
        path = os.path.join(d, libname)
        if not os.path.exists(path):
            continue
        # /lib is a link to /usr/lib on merged-/usr systems, and dpkg knows each
        # file under the one name its package used: try both spellings.
        for p in (path, path[4:] if path.startswith("/usr/") else "/usr" + path):
            r = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True)
            if r.returncode == 0:
                return r.stdout.split(":", 1)[0].strip()
    raise SystemExit("wheel_licenses: no Debian package owns %s (looked in %s)" % (libname, ", ".join(dirs)))


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.split("\n\n")[1])
    wheel, outdir = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "wheel", "unpack", "-d", tmp, wheel], check=True,
                       stdout=subprocess.DEVNULL)
        (top,) = os.listdir(tmp)
        root = os.path.join(tmp, top)
        (distinfo,) = [d for d in os.listdir(root) if d.endswith(".dist-info")]
        libs = sorted(os.listdir(os.path.join(root, LIBS_DIR)))
        if not libs:
            raise SystemExit("wheel_licenses: %s has no bundled libraries" % wheel)
        packages = sorted({debian_package(original_name(f)) for f in libs})
        dest = os.path.join(root, distinfo, "licenses", "bundled")
        os.makedirs(dest)
        for pkg in packages:
            shutil.copyfile("/usr/share/doc/%s/copyright" % pkg, os.path.join(dest, pkg + ".copyright"))
        with open(os.path.join(root, distinfo, "METADATA"), encoding="utf-8") as f:
            head, sep, body = f.read().partition("\n\n")
        head += "".join("\nLicense-File: bundled/%s.copyright" % pkg for pkg in packages)
        with open(os.path.join(root, distinfo, "METADATA"), "w", encoding="utf-8") as f:
            f.write(head + sep + body)
        os.makedirs(outdir, exist_ok=True)
        subprocess.run([sys.executable, "-m", "wheel", "pack", "-d", outdir, root], check=True,
                       stdout=subprocess.DEVNULL)
    print("wheel_licenses: %d bundled libraries from %d Debian packages, their copyright files added:"
          % (len(libs), len(packages)))
    print("  " + " ".join(packages))


if __name__ == "__main__":
    main()
