"""Registry options of ``fetch`` and ``pull`` and their mapping onto the store's keywords."""

from __future__ import annotations

import argparse
from typing import Any

from ocistore.cli.context import Context, UsageError
from ocistore.oci.reference import parse_reference, registry_host

__all__ = ["add_registry_options", "registry_options"]


def add_registry_options(p: argparse.ArgumentParser) -> None:
    """``--hosts-dir``, ``--plain-http``, ``--skip-verify``, ``--ca-file``, ``--user``."""
    g = p.add_argument_group("registry")
    g.add_argument("--hosts-dir", metavar="DIR",
                   help="containerd hosts.toml directory (<DIR>/<host>/hosts.toml)")
    g.add_argument("--plain-http", action="store_true", help="talk HTTP, not HTTPS, to the registry")
    g.add_argument("--skip-verify", "-k", action="store_true",
                   help="do not verify the registry's TLS certificate")
    g.add_argument("--ca-file", metavar="FILE", help="CA certificates (PEM) to trust for the registry")
    g.add_argument("--user", "-u", metavar="USER[:PASSWORD]",
                   help="credentials for the registry; the password is read from stdin when absent")


def _password(ctx: Context, user: str) -> str:
    """Prompt on the terminal, or read one line from a non-terminal stdin."""
    isatty = getattr(ctx.stdin, "isatty", None)
    if isatty is not None and isatty():
        import getpass  # (and termios)

        return getpass.getpass(f"Password for {user}: ", stream=ctx.stderr)
    line = ctx.stdin.readline()
    if not line:
        raise UsageError(f"--user {user}: no password given and none could be read from stdin")
    return line.rstrip("\r\n")


def _credentials(ctx: Context, spec: str, ref: str) -> dict[str, tuple[str, str]]:
    user, sep, secret = spec.partition(":")
    if not user and not secret:
        raise UsageError("--user needs a user name")
    if not sep:
        secret = _password(ctx, user)
    domain = parse_reference(ref).domain
    creds = (user, secret)
    return {domain: creds, registry_host(domain): creds}


def registry_options(ctx: Context, args: argparse.Namespace, ref: str) -> dict[str, Any]:
    """The ``Store.fetch``/``pull`` registry keywords for these arguments (only those given)."""
    opts: dict[str, Any] = {}
    if args.hosts_dir:
        opts["hosts_dir"] = args.hosts_dir
    if args.plain_http:
        opts["plain_http"] = True
    if args.skip_verify:
        opts["skip_verify"] = True
    if args.ca_file:
        opts["ca_file"] = args.ca_file
    if args.user:
        opts["credentials"] = _credentials(ctx, args.user, ref)
    return opts
