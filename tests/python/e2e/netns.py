"""A network namespace that models a machine behind NAT, for the end-to-end tests.

NatNamespace.create() makes a namespace joined to the root namespace by a veth pair
(host end HOST_IP/30 in the root namespace, inner end INNER_IP/30 inside, default route
out through the host end) and, where nft or iptables works, a firewall inside that
rejects every connection opened from outside: what a NAT does. Processes started with
`prefix` run inside; they can reach HOST_IP, nothing outside can reach them.

It needs root and iproute2; where namespaces or veth cannot be made it raises
Unavailable with the reason, so a test can skip instead of failing. close() removes
everything it made and raises when something is left behind.
"""
import fcntl
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time

_counter = itertools.count()
# One lock for every test run on this machine: two runs choosing the same 10.200.N.0/30
# at once would both get addresses, and routing to either would break.
_LOCK_PATH = os.path.join(tempfile.gettempdir(), "p2prpc-netns.lock")


class Unavailable(Exception):
    """Namespaces cannot be made here; the message says why."""


def _run(args, check=True, timeout=15, **kw):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (exit %d): %s"
                             % (" ".join(args), p.returncode, (p.stderr or p.stdout).strip()))
    return p


def _subnet_in_use(n):
    """True when some interface or route of the root namespace already uses 10.200.n.*."""
    text = _run(["ip", "-o", "-4", "addr", "show"]).stdout + _run(["ip", "-4", "route"]).stdout
    return ("10.200.%d." % n) in text


class Socket:
    """One line of `ss -tuanp`: netid (tcp/udp), state, local and peer address, process."""

    def __init__(self, line):
        fields = line.split()
        self.netid, self.state, self.local, self.peer = (fields[0], fields[1], fields[4],
                                                         fields[5])
        self.process = " ".join(fields[6:])
        self.line = line.strip()

    @property
    def listening(self):
        # A bound, unconnected UDP socket receives from anyone: it counts as listening.
        return self.state in ("LISTEN", "UNCONN")

    def __repr__(self):
        return self.line


class NatNamespace:
    """A namespace behind a NAT (see the module comment). Attributes: name, host_if,
    inner_if, host_ip, inner_ip, firewall ("nft", "iptables" or None), prefix (the
    command prefix that runs a program inside)."""

    def __init__(self, name, host_if, inner_if):
        self.name = name
        self.host_if = host_if
        self.inner_if = inner_if
        self.host_ip = self.inner_ip = None
        self.firewall = None
        self.prefix = ["ip", "netns", "exec", name]
        self._closed = False

    @classmethod
    def create(cls):
        if os.geteuid() != 0:
            raise Unavailable("not root (euid %d): network namespaces need CAP_SYS_ADMIN"
                              % os.geteuid())
        for tool in ("ip", "ss"):
            if shutil.which(tool) is None:
                raise Unavailable("`%s` (iproute2) is not installed" % tool)
        k = next(_counter)
        pid = os.getpid()
        ns = cls("p2prpc-nat-%d-%d" % (pid, k), "p2pn%dh%d" % (pid, k), "p2pn%dw%d" % (pid, k))
        p = _run(["ip", "netns", "add", ns.name], check=False)
        if p.returncode != 0:
            raise Unavailable("`ip netns add %s` failed: %s" % (ns.name, p.stderr.strip()))
        try:
            ns._setup()
        except BaseException:
            ns.close()
            raise
        return ns

    def _setup(self):
        p = _run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name",
                  self.inner_if, "netns", self.name], check=False)
        if p.returncode != 0:
            raise Unavailable("cannot make a veth pair: %s" % p.stderr.strip())
        with open(_LOCK_PATH, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            start = os.getpid() % 256
            for i in range(256):
                n = (start + i) % 256
                if not _subnet_in_use(n):
                    break
            else:
                raise AssertionError("every 10.200.N.0/24 is in use on this machine")
            self.host_ip, self.inner_ip = "10.200.%d.1" % n, "10.200.%d.2" % n
            _run(["ip", "addr", "add", self.host_ip + "/30", "dev", self.host_if])
            _run(["ip", "link", "set", self.host_if, "up"])
        self.exec(["ip", "link", "set", "lo", "up"])
        self.exec(["ip", "addr", "add", self.inner_ip + "/30", "dev", self.inner_if])
        # IPv4 only: the firewall below then need not cover IPv6 (link-local addresses
        # would otherwise make the inside reachable around iptables).
        self.exec(["sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/%s/disable_ipv6"
                   % self.inner_if], check=False)
        self.exec(["ip", "link", "set", self.inner_if, "up"])
        self.exec(["ip", "route", "add", "default", "via", self.host_ip])
        self.firewall = self._firewall()

    def _firewall(self):
        """Reject connections opened from outside, as a NAT does: only the replies of
        connections opened from inside come in. Returns the tool that did it, or None
        where neither nft nor iptables works here (the namespace alone still has nothing
        listening, which the tests check with ss)."""
        if shutil.which("nft"):
            rules = ('table inet p2prpc_nat {\n'
                     ' chain input {\n'
                     '  type filter hook input priority 0; policy accept;\n'
                     '  iifname "%(i)s" ct state established,related accept\n'
                     '  iifname "%(i)s" meta l4proto tcp reject with tcp reset\n'
                     '  iifname "%(i)s" drop\n'
                     ' }\n'
                     '}\n') % {"i": self.inner_if}
            if self.exec(["nft", "-f", "-"], check=False, input=rules).returncode == 0:
                return "nft"
        if shutil.which("iptables") is None:
            return None
        for rule in (["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
                     ["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
                     ["-j", "DROP"]):
            if self.exec(["iptables", "-A", "INPUT", "-i", self.inner_if] + rule,
                         check=False).returncode != 0:
                return None
        return "iptables"

    def exec(self, args, check=True, **kw):
        """Run a command inside the namespace and wait; CompletedProcess (text)."""
        return _run(self.prefix + list(args), check=check, **kw)

    def sockets(self):
        """Every TCP and UDP socket of the namespace (all of its processes), as Socket."""
        out = self.exec(["ss", "-H", "-t", "-u", "-a", "-n", "-p"]).stdout
        return [Socket(line) for line in out.splitlines() if line.strip()]

    def inode(self):
        """The namespace's inode: /proc/PID/ns/net of a process inside reads net:[inode]."""
        return os.stat("/run/netns/" + self.name).st_ino

    def contains(self, pid):
        try:
            return os.readlink("/proc/%d/ns/net" % pid) == "net:[%d]" % self.inode()
        except FileNotFoundError:
            return False

    def pids(self):
        out = _run(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(x) for x in out.split()]

    def close(self):
        """Kill what still runs inside, delete the veth pair and the namespace, and raise
        AssertionError when any of them is still there. Idempotent."""
        if self._closed:
            return
        self._closed = True
        # Only processes this namespace holds: the tests started every one of them.
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.time() + 5
        while self.pids() and time.time() < deadline:
            time.sleep(0.05)
        # Deleting the host end removes both ends now; a namespace's own interfaces
        # go only when the kernel gets round to freeing it.
        _run(["ip", "link", "del", self.host_if], check=False)
        _run(["ip", "netns", "del", self.name], check=False)
        left = []
        if self.name in _run(["ip", "netns", "list"]).stdout.split():
            left.append("namespace %s" % self.name)
        if _run(["ip", "link", "show", self.host_if], check=False).returncode == 0:
            left.append("interface %s" % self.host_if)
        if left:
            raise AssertionError("left behind: " + ", ".join(left))
