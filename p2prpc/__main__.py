"""The p2prpc command line: `p2prpc COMMAND ...` or `python -m p2prpc COMMAND ...`."""

import argparse
import os
import sys

from .errors import P2PRPCError


def _size(text):
    """Bytes of a size such as 500M, 20G, 1T or 4096."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().rstrip("B").rstrip("I")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = float(num) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError("not a size: %r (e.g. 500M, 20G)" % text) from None
    if value < 1:
        raise argparse.ArgumentTypeError("a size must be positive: %r" % text)
    return int(value)


def _add_password(p):
    p.add_argument("--password-file", metavar="F",
                   help="file holding the network password (else $P2PRPC_PASSWORD; "
                        "no password = no authentication)")


class _CommandListFormatter(argparse.HelpFormatter):
    """Aligns help past the longest command name, so each command takes one line:
    argparse measures subcommands without their extra indent and would wrap the
    long generate-* names."""

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction) and action.choices:
            width = max(len(name) for name in action.choices)
            width += self._current_indent + 2 * self._indent_increment
            self._action_max_length = max(self._action_max_length, width)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="p2prpc",
        description="Remote procedure calls for heavy functions across machines behind NAT.",
        formatter_class=_CommandListFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser("broker", help="run a broker: serve the p2prpc_ functions of a file",
                       description="Run a broker node: an HTTP server that stores calls and "
                                   "files, and hands calls to workers (or runs them itself).")
    b.add_argument("function_file", metavar="FUNCTION_FILE",
                   help="Python file declaring one or more p2prpc_ functions (all are served)")
    b.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    b.add_argument("--port", type=int, default=5001, help="TCP port (default 5001; 0 = any free)")
    b.add_argument("--data-dir", default="p2prpc-broker",
                   help="directory of the store and blobs (default ./p2prpc-broker)")
    _add_password(b)
    b.add_argument("--execute", action="store_true", default=None,
                   help="run calls on this broker too (default: only when a GPU is found)")
    b.add_argument("--no-execute", dest="execute", action="store_false",
                   help="never run calls here, only hand them to workers")
    b.add_argument("--concurrency", type=int, default=1,
                   help="calls run at once when executing (default 1)")
    b.add_argument("--lease-ms", type=int, default=30000,
                   help="how long a worker holds a call without a heartbeat (default 30000)")
    b.add_argument("--heartbeat-ms", type=int, default=2000,
                   help="heartbeat interval told to workers (default 2000)")
    b.add_argument("--max-attempts", type=int, default=3,
                   help="leases of a call before it fails (default 3)")
    b.add_argument("--expire-after", type=float, default=7 * 24 * 3600, metavar="SECONDS",
                   help="remove finished calls and the files only they used this long after "
                        "they finished (default 7 days; 0 = never)")
    b.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without a password (anyone who can "
                        "connect can then run calls)")
    b.add_argument("--peer", action="append", default=[], metavar="HOST:PORT",
                   help="another broker to learn of (repeatable); brokers share the brokers "
                        "they know on GET /v1/nodes and forget those that stop answering")
    b.add_argument("--advertise", metavar="HOST:PORT",
                   help="the address other nodes should use for this broker "
                        "(default: --host:--port)")
    b.add_argument("--tls-cert", metavar="PEM",
                   help="serve HTTPS with this certificate chain (clients and workers then use "
                        "https://host:port in their discovery file)")
    b.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    b.add_argument("--ca", metavar="PEM",
                   help="with --tls-cert and --execute: the CA this broker's own executor "
                        "checks the certificate against (default: the system's trusted CAs)")
    lim = b.add_argument_group("limits (each answered with a JSON error naming it)")
    lim.add_argument("--max-body", type=_size, default="1M", metavar="SIZE",
                     help="largest metadata (JSON) body, at most 1M (default 1M; 413)")
    lim.add_argument("--request-timeout", type=float, default=120.0, metavar="SECONDS",
                     help="time to send one request, also the keep-alive idle time "
                          "(default 120; slow clients are cut off)")
    lim.add_argument("--max-connections", type=int, default=1024, metavar="N",
                     help="open connections; more are answered 503 (default 1024)")
    lim.add_argument("--max-headers", type=int, default=64, metavar="N",
                     help="request headers (default 64; 431)")
    lim.add_argument("--max-header-bytes", type=_size, default="64K", metavar="SIZE",
                     help="bytes of all request headers (default 64K; 431)")
    lim.add_argument("--max-depth", type=int, default=32, metavar="N",
                     help="nesting of a JSON body (default 32; 413)")
    lim.add_argument("--upload-stall", type=float, default=25.0, metavar="SECONDS",
                     help="a worker fetching an argument still being uploaded waits this long "
                          "for its next chunk; then its download is cut and, when no chunk "
                          "came, the call fails naming the blob (default 25)")
    lim.add_argument("--max-leases-per-worker", type=int, default=64, metavar="N",
                     help="calls one worker may hold at once; more are answered 429 "
                          "(default 64)")
    b.add_argument("--synchronous", choices=["full", "normal", "off"], default=None,
                   help="store durability (default full: acknowledged = on disk)")

    w = sub.add_parser("worker", help="run a worker: pull calls from brokers and run them",
                       description="Run a worker node. It opens no port: it pulls work from the "
                                   "brokers of the discovery file and pushes results back.")
    w.add_argument("function_file", metavar="FUNCTION_FILE",
                   help="Python file declaring the p2prpc_ functions this worker runs")
    w.add_argument("--discovery", required=True, metavar="FILE",
                   help="discovery.txt: one broker host:port per line, tried in order")
    w.add_argument("--data-dir", default="p2prpc-worker",
                   help="directory of the blob cache and job files (default ./p2prpc-worker)")
    w.add_argument("--concurrency", type=int, default=1, help="calls run at once (default 1)")
    w.add_argument("--ca", metavar="PEM",
                   help="CA certificate(s) that signed the brokers' TLS certificates "
                        "(https:// discovery lines; default: the system's trusted CAs)")
    w.add_argument("--cache-size", type=_size, default="10G", metavar="SIZE",
                   help="bound of the worker's blob cache, least recently used evicted first "
                        "(e.g. 500M, 20G; default 10G)")
    _add_password(w)

    gb = sub.add_parser("generate-broker",
                        help="write broker/: broker app, Dockerfile, compose file",
                        description="Write DIR/broker/ for the functions of a file: brokerapp.py "
                                    "(the broker command with its defaults), a copy of the file, "
                                    "a Dockerfile, broker.docker-compose.yml and a README.")
    _add_function_file(gb)
    gb.add_argument("--store", choices=["sqlite", "mongodb"], default="sqlite",
                    help="the broker's store in the compose file (default sqlite, embedded)")
    _add_generate_flags(gb)

    gw = sub.add_parser("generate-worker",
                        help="write worker/: worker app, Dockerfile, compose file",
                        description="Write DIR/worker/ for the functions of a file: workerapp.py, "
                                    "copies of the file and of the discovery file, a Dockerfile, "
                                    "worker.docker-compose.yml and a README.")
    _add_function_file(gw)
    gw.add_argument("discovery_file", metavar="DISCOVERY_FILE",
                    help="discovery.txt: one broker host:port per line")
    _add_generate_flags(gw)

    gc = sub.add_parser("generate-client",
                        help="write client/: a client app that runs as generated",
                        description="Write DIR/client/: clientapp.py, which calls the functions "
                                    "of the file with placeholder arguments and prints the "
                                    "results, and copies of the file and of the discovery file.")
    _add_function_file(gc)
    gc.add_argument("discovery_file", metavar="DISCOVERY_FILE",
                    help="discovery.txt: one broker host:port per line")
    _add_generate_flags(gc)
    return parser


def _add_function_file(p):
    p.add_argument("function_file", metavar="FUNCTION_FILE",
                   help="Python file declaring one or more p2prpc_ functions")


def _add_generate_flags(p):
    p.add_argument("--out", default=".", metavar="DIR",
                   help="directory to write into (default: the current directory)")
    p.add_argument("--force", action="store_true",
                   help="replace generated files that already exist (other files are kept)")


def _generate(args):
    from . import _generate as g

    if args.command == "generate-broker":
        path = g.generate_broker(args.function_file, args.out, store=args.store, force=args.force)
    elif args.command == "generate-worker":
        path = g.generate_worker(args.function_file, args.discovery_file, args.out,
                                 force=args.force)
    else:
        path = g.generate_client(args.function_file, args.discovery_file, args.out,
                                 force=args.force)
    print("p2prpc: wrote %s%s; see %s" % (path, os.sep, os.path.join(
        path, "clientapp.py" if args.command == "generate-client" else "README.md")))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "broker":
            from ._broker_node import read_password, run_broker

            run_broker(args.function_file, host=args.host, port=args.port,
                       data_dir=args.data_dir, password=read_password(args.password_file),
                       execute=args.execute, concurrency=args.concurrency,
                       lease_ms=args.lease_ms, heartbeat_ms=args.heartbeat_ms,
                       max_attempts=args.max_attempts, synchronous=args.synchronous,
                       expire_after=args.expire_after, insecure=args.insecure,
                       tls_cert=args.tls_cert, tls_key=args.tls_key, peers=args.peer,
                       advertise=args.advertise, ca=args.ca, max_body=args.max_body,
                       request_timeout_ms=int(args.request_timeout * 1000),
                       max_connections=args.max_connections,
                       max_leases_per_worker=args.max_leases_per_worker,
                       max_headers=args.max_headers, max_header_bytes=args.max_header_bytes,
                       max_depth=args.max_depth,
                       upload_stall_ms=int(args.upload_stall * 1000))
        elif args.command == "worker":
            from ._broker_node import read_password
            from ._worker_node import run_worker

            run_worker(args.function_file, args.discovery, args.data_dir, args.concurrency,
                       read_password(args.password_file), ca=args.ca,
                       cache_max_bytes=args.cache_size)
        elif args.command.startswith("generate-"):
            _generate(args)
    except (P2PRPCError, OSError, ValueError) as e:
        print("p2prpc %s: %s" % (args.command, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
