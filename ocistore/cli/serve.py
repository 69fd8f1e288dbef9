"""``ocistore serve``: the store's images over the OCI distribution API (read side)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from typing import Any

from ocistore.cli.context import Context, UsageError
from ocistore.cli.output import print_json

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve``."""
    p = sub.add_parser("serve", help="serve the store's images to registry clients (containerd, skopeo ...)",
                       description="Serve one namespace of the store over the read side of the OCI "
                                   "distribution API, e.g. as a containerd mirror (see --print-hosts-toml).")
    p.add_argument("--listen", default="127.0.0.1:5000", metavar="HOST:PORT",
                   help="address to listen on (default: 127.0.0.1:5000; port 0 picks a free one)")
    p.add_argument("--upstream", metavar="HOST|URL",
                   help="pull what the store lacks through from this registry (docker.io, 127.0.0.1:5100, "
                        "https://host:port); also the upstream of --print-hosts-toml (default docker.io there)")
    p.add_argument("--default-registry", metavar="HOST",
                   help="registry meant by requests without ?ns= (default: match the repository path in any)")
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM, may hold the key)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument("--user", "-u", metavar="USER[:PASSWORD]",
                   help="require basic auth for this user (read-only); the password is read from stdin if absent")
    p.add_argument("--allow-push", action="store_true",
                   help="accept pushes into the namespace (from whoever passes --user, or anyone without it)")
    p.add_argument("--workers", type=int, default=16, metavar="N", help="worker threads (default: 16)")
    p.add_argument("--queue", type=int, default=64, metavar="N",
                   help="connections waiting for a worker before new ones get 429 (default: 64)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="for a request's headers to arrive, and for a stalled send (default: 30)")
    p.add_argument("--keepalive", type=float, default=5.0, metavar="SECONDS",
                   help="idle time before a kept-alive connection is closed (default: 5)")
    p.add_argument("--access-log", action="store_true", help="log every request on stderr")
    p.add_argument("--print-hosts-toml", action="store_true",
                   help="print a containerd hosts.toml naming this server a mirror of --upstream, and exit")
    p.add_argument("--mirror-url", metavar="URL",
                   help="the server's URL as containerd reaches it, for --print-hosts-toml (default: from --listen)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    p.set_defaults(func=cmd_serve)


def _mirror_url(args: argparse.Namespace) -> str:
    if args.mirror_url:
        return str(args.mirror_url).rstrip("/")
    from ocistore.server.httpd import parse_listen

    host, port = parse_listen(args.listen)
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - only naming what the user asked to listen on
        raise UsageError(f"--listen {args.listen} listens on every interface: give --mirror-url with the address "
                         "containerd should use")
    scheme = "https" if args.tls_cert else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


@contextlib.contextmanager
def _server_logging(access_log: bool) -> Iterator[None]:
    logger = logging.getLogger("ocistore.server")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if access_log else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def cmd_serve(ctx: Context, args: argparse.Namespace) -> int:
    """Serve until interrupted (SIGINT or SIGTERM), or print a hosts.toml with ``--print-hosts-toml``."""
    if args.print_hosts_toml:
        from ocistore.server.hoststoml import hosts_toml

        ctx.stdout.write(hosts_toml(_mirror_url(args), args.upstream or "docker.io"))
        return 0
    if args.tls_key and not args.tls_cert:
        raise UsageError("--tls-key needs --tls-cert")
    credentials: dict[str, str] | None = None
    if args.user:
        from ocistore.cli.registry import _password

        user, sep, password = args.user.partition(":")
        if not user:
            raise UsageError("--user needs a user name")
        credentials = {user: password if sep else _password(ctx, user)}
    options: dict[str, Any] = {
        "workers": args.workers, "queue_size": args.queue, "timeout": args.timeout, "keepalive": args.keepalive,
        "tls_cert": args.tls_cert, "tls_key": args.tls_key, "credentials": credentials,
        "default_registry": args.default_registry, "access_log": args.access_log, "allow_push": args.allow_push,
    }
    server = ctx.store.serve(args.listen, args.upstream, **options)
    with _server_logging(args.access_log):
        server.start()
        previous = _on_sigterm()
        try:
            if ctx.json:
                print_json(ctx.stdout, {"address": server.address, "url": server.url, "root": str(ctx.store.root),
                                        "namespace": ctx.store.namespace, "upstream": args.upstream})
            else:
                mode = "accepting pushes" if args.allow_push else "read-only"
                through = f", pulling through from {args.upstream}" if args.upstream else ""
                ctx.out(f"serving {ctx.store.root} (namespace {ctx.store.namespace}) at {server.url}, "
                        f"{mode}{through}")
            ctx.stdout.flush()
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
            _restore_sigterm(previous)
    return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _on_sigterm() -> Any:
    try:
        return signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread (an embedding program): leave signals alone
        return None


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)
