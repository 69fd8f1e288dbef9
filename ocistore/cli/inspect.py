"""``ocistore images inspect NAME``: what the store knows of one image."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ocistore.cli import pull
from ocistore.cli.args import for_each
from ocistore.cli.context import Context
from ocistore.cli.output import human_size, print_json, print_table

if TYPE_CHECKING:
    from ocistore.transfer.inspect import ImageInspection

__all__ = ["register"]


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``images inspect``."""
    p = verbs.add_parser("inspect", help="manifest, config, chain IDs, sizes, unpack state and blobs of images")
    p.add_argument("names", nargs="+", metavar="NAME")
    pull.add_platform_argument(p)
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(ctx: Context, args: argparse.Namespace) -> int:
    """``images inspect NAME...``: a block per image, or a JSON list with ``--json``."""
    found: list[ImageInspection] = []
    status = for_each(ctx, args.names, lambda n: found.append(ctx.store.inspect(n, platform=args.platform)))
    if ctx.json:
        print_json(ctx.stdout, found)
        return status
    for i, info in enumerate(found):
        if i:
            ctx.out("")
        _print(ctx, info)
    return status


def _print(ctx: Context, info: ImageInspection) -> None:
    present = sum(b.present for b in info.blobs)
    fields = [
        ("name", info.image.name),
        ("target", f"{info.image.target.digest} ({info.image.target.media_type})"),
        ("manifest", f"{info.manifest.digest} ({info.manifest.media_type})"),
        ("platform", info.platform),
        ("platforms present", ", ".join(info.platforms) or "-"),
        ("config", info.config.digest),
        ("chain ID", info.chain_id or "-"),
        ("compressed", human_size(info.compressed_size)),
        ("blobs present", f"{present}/{len(info.blobs)}"),
    ]
    for u in info.unpacked:
        state = "unpacked" if u.unpacked else f"{u.committed_layers}/{u.layers} layers"
        fields.append((f"unpacked in {u.snapshotter}", f"{state}, {human_size(u.size)}"))
    width = max(len(k) for k, _ in fields)
    for k, v in fields:
        ctx.out(f"{k + ':':<{width + 1}} {v}")
    ctx.out("")
    print_table(ctx.stdout, ("LAYER", "DIFF ID", "CHAIN ID"),
                [(str(n), d, c) for n, (d, c) in enumerate(zip(info.diff_ids, info.chain_ids, strict=True))])
    ctx.out("")
    print_table(ctx.stdout, ("KIND", "DIGEST", "SIZE", "PRESENT"),
                [(b.kind, b.digest, human_size(b.size), "yes" if b.present else "no") for b in info.blobs])
