"""``ocistore leases ...``: named holds that keep content and snapshots from the collector."""

from __future__ import annotations

import argparse

from ocistore.cli.args import for_each, parse_duration, parse_labels
from ocistore.cli.context import Context
from ocistore.cli.output import format_labels, print_json, print_table, timestamp

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``leases`` group (alias ``lease``) and its verbs."""
    group = sub.add_parser("leases", aliases=["lease"], help="leases: list, create, remove")
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("ls", aliases=["list"], help="list leases: ID CREATED AT LABELS")
    p.add_argument("-q", "--quiet", action="store_true", help="print only ids")
    p.add_argument("filters", nargs="*", metavar="FILTER", help="containerd filters, e.g. id==mylease")
    p.set_defaults(func=cmd_ls)

    p = verbs.add_parser("create", help="create a lease; prints its id")
    p.add_argument("--id", metavar="ID", help="lease id (default: random)")
    p.add_argument("--expire", "--expires", "-x", default="24h", metavar="DURATION",
                   help="expire after DURATION, e.g. 24h, 90m; 0 = never (default: 24h)")
    p.add_argument("--label", "-l", action="append", default=[], metavar="KEY=VALUE", help="label the lease")
    p.set_defaults(func=cmd_create)

    p = verbs.add_parser("rm", aliases=["remove", "delete", "del"], help="delete leases")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--sync", action="store_true", help="collect garbage before returning")
    p.set_defaults(func=cmd_rm)


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    """``leases ls``."""
    leases = sorted(ctx.store.leases.list(args.filters or None), key=lambda lease: lease.id)
    if ctx.json:
        print_json(ctx.stdout, leases)
    elif args.quiet:
        for lease in leases:
            ctx.out(lease.id)
    else:
        print_table(ctx.stdout, ("ID", "CREATED AT", "LABELS"),
                    [(lease.id, timestamp(lease.created_at) or "-", format_labels(lease.labels))
                     for lease in leases])
    return 0


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    """``leases create``: prints the new lease's id."""
    labels = parse_labels(args.label, allow_empty=False)
    lease = ctx.store.leases.create(id=args.id, expire=parse_duration(args.expire), labels=labels or None)
    if ctx.json:
        print_json(ctx.stdout, lease)
    else:
        ctx.out(lease.id)
    return 0


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    """``leases rm ID... [--sync]``: one collection at the end, not one per lease."""
    status = for_each(ctx, args.ids, ctx.store.leases.delete)
    if args.sync:
        ctx.store.gc()
    return status
