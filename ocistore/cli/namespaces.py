"""``ocistore namespaces ...``: list, create, label and remove namespaces (ctr's ``namespaces``)."""

from __future__ import annotations

import argparse

from ocistore.cli.args import add_json_flag, for_each, parse_labels
from ocistore.cli.context import Context
from ocistore.cli.output import format_labels, print_json, print_table

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``namespaces`` group (aliases ``namespace``, ``ns``) and its verbs."""
    group = sub.add_parser("namespaces", aliases=["namespace", "ns"],
                           help="namespaces: list, create, label, remove")
    verbs = group.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("ls", aliases=["list"], help="list namespaces: NAME LABELS")
    p.add_argument("-q", "--quiet", action="store_true", help="print only names")
    add_json_flag(p)
    p.set_defaults(func=cmd_ls)

    p = verbs.add_parser("create", aliases=["c"], help="create a namespace (it must not exist)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE", help="labels of the new namespace")
    p.set_defaults(func=cmd_create)

    p = verbs.add_parser("label", help="set and clear labels of a namespace (KEY= clears KEY); "
                                       "without labels, print them")
    p.add_argument("name", metavar="NAME")
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE")
    add_json_flag(p)
    p.set_defaults(func=cmd_label)

    p = verbs.add_parser("rm", aliases=["remove", "delete", "del"],
                         help="remove namespaces; each must hold no images, blobs, containers, leases "
                              "or snapshots")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_rm)


def cmd_ls(ctx: Context, args: argparse.Namespace) -> int:
    """``namespaces ls``: NAME LABELS, as ctr prints it."""
    namespaces = ctx.store.namespaces
    names = namespaces.list()
    if ctx.json:
        print_json(ctx.stdout, [{"name": n, "labels": namespaces.labels(n)} for n in names])
    elif args.quiet:
        for name in names:
            ctx.out(name)
    else:
        print_table(ctx.stdout, ("NAME", "LABELS"), [(n, format_labels(namespaces.labels(n))) for n in names])
    return 0


def cmd_create(ctx: Context, args: argparse.Namespace) -> int:
    """``namespaces create NAME [KEY=VALUE...]``."""
    ctx.store.namespaces.create(args.name, parse_labels(args.labels, allow_empty=False))
    return 0


def cmd_label(ctx: Context, args: argparse.Namespace) -> int:
    """``namespaces label NAME [KEY=VALUE...]``: one label at a time, as ctr (empty value clears)."""
    namespaces = ctx.store.namespaces
    for k, v in parse_labels(args.labels).items():
        namespaces.set_label(args.name, k, v)
    if not args.labels:
        labels = namespaces.labels(args.name)
        if ctx.json:
            print_json(ctx.stdout, labels)
        else:
            for k, v in sorted(labels.items()):
                ctx.out(f"{k}={v}")
    return 0


def cmd_rm(ctx: Context, args: argparse.Namespace) -> int:
    """``namespaces rm NAME...``: prints each name removed; one error line per refusal."""

    def remove(name: str) -> None:
        ctx.store.namespaces.delete(name)
        if not ctx.json:
            ctx.out(name)

    return for_each(ctx, args.names, remove)
