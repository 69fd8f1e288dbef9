"""``Store.what_if`` / ``ocistore du --what-if``: mode estimates without unpacking, against real unpacks."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from test_cli import ok, run

from ocistore import Store, errors
from ocistore.archive import layer_footprint
from ocistore.images import image_parts
from ocistore.testing.layout import build_layer
from ocistore.transfer.pull import discard_unpacked_layers
from ocistore.transfer.usage import FOOTPRINT_LABEL


def _within(estimate: int, actual: int, tolerance: float) -> bool:
    return abs(estimate - actual) <= tolerance * actual


def test_estimates_agree_with_a_real_pull_and_discard_on_the_corpus(tmp_path: Path, corpus_dir: Path) -> None:
    with Store(tmp_path / "root") as s:
        names = [i.name for i in s.import_archive(corpus_dir, fetch_only=True)]
        before = s.disk_usage().total
        w = s.what_if()
        assert {e.name for e in w.images} == set(names)
        assert w.now == s.disk_usage().total and _within(w.total.fetched, before, 0.01)
        assert all(e.unpacked_layers == 0 and e.unpack_adds > 0 for e in w.images)
        assert w.total.unpack_adds == w.total.pulled - w.total.fetched
        gzip_ = next(e for e in w.images if e.name.endswith("debian:gzip"))
        zstd_ = next(e for e in w.images if e.name.endswith("debian:zstd"))
        assert gzip_.unpack_adds == zstd_.unpack_adds  # the same tree behind two compressions
        # the footprints are cached in content labels: nothing is read again
        parts = image_parts(s.content, s.images.get(gzip_.name).target)
        assert s.content.info(parts.layers[0].digest).labels[FOOTPRINT_LABEL].startswith(f"{w.block_size}:")
        assert s.what_if() == w

        for name in names:
            s.unpack(name)
        pulled = s.disk_usage().total
        assert _within(w.total.pulled, pulled, 0.05), (w.total.pulled, pulled)
        after = s.what_if()
        assert after.total.unpack_adds == 0 and all(e.unpacked_layers == e.layers for e in after.images)
        assert _within(after.total.pulled, pulled, 0.01)

        for name in names:
            p = image_parts(s.content, s.images.get(name).target)
            discard_unpacked_layers(s.content, p.manifest_desc, p.layers)
        s.gc()
        discarded = s.disk_usage().total
        assert discarded < pulled
        assert _within(w.total.discarded, discarded, 0.05), (w.total.discarded, discarded)
        assert s.check().ok


def test_du_what_if_prints_the_modes_and_the_eviction(tmp_path: Path, corpus_dir: Path) -> None:
    root = tmp_path / "root"
    with Store(root) as s:
        s.import_archive(corpus_dir, fetch_only=True)
        expected = s.what_if()
    res = ok(run(root, "du", "--what-if", "--json")).json()
    assert res["modes"]["total"]["pulled"] == expected.total.pulled
    assert {i["name"] for i in res["modes"]["images"]} == {e.name for e in expected.images}
    assert res["evictable"] == 0  # nothing unpacked: the eviction part is empty
    out = ok(run(root, "du", "--what-if")).out
    assert "PULLED+DISCARD" in out and "(all images)" in out and "evict would free" in out
    with Store(root, readonly=True) as ro:  # a read-only store still answers (labels cached or not)
        assert ro.what_if().total == expected.total
    bad = run(root, "du", "--what-if", "--snapshotter", "nope")
    assert bad.code == 1 and "nope" in bad.stderr


def test_footprint_counts_blocks_links_and_duplicates(tmp_path: Path) -> None:
    blob, tar = build_layer({
        "a": "x" * 5000,                      # 2 blocks
        "d/b": "",                            # 0 blocks
        "d/long": ("symlink", "t" * 80),      # a slow symlink: 1 block
        "d/short": ("symlink", "a"),          # in the inode: 0
        "d/h": ("hardlink", "a"),             # 0
        "e/f/g": "y" * 4096,                  # 1 block, parents e and e/f implied
    })
    fp = layer_footprint(io.BytesIO(blob).read, None)  # compression detected by magic
    # dirs: the root, d, e, e/f -> 4 blocks
    assert fp.allocated == (2 + 1 + 1 + 4) * 4096
    assert fp.tar_bytes == len(tar) and fp.dirs == 4
    # a path listed twice counts once (the last one)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for size in (9000, 10):
            info = tarfile.TarInfo("f")
            info.size = size
            tf.addfile(info, io.BytesIO(b"z" * size))
    assert layer_footprint(io.BytesIO(buf.getvalue()).read, "application/vnd.oci.image.layer.v1.tar").allocated \
        == (1 + 1) * 4096
    with pytest.raises(errors.InvalidArgument):
        layer_footprint(io.BytesIO(b"\x1f\x8b" + b"not gzip" * 10).read, None)
