"""Reading eStargz images without unpacking: the merged TOC tree, read_file and open_file.

Every file is compared with the real overlayfs unpack of the same converted image (corpus
images from ../shared/fixtures/corpus, and small layered images with whiteouts, opaque
directories, hard links and symlinks that climb out of the root).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from archive_helpers import CORPUS
from lazy_helpers import merged_tree_entries, store_plain_image, tar_layer, unpacked_tree
from process_helpers import modules_loaded

from ocistore import Descriptor, Store, errors
from ocistore import estargz as esgz
from ocistore.estargz.toc import TOC, TOCEntry
from ocistore.estargz.tree import merge_tocs
from ocistore.transfer import lazyread

BIG = hashlib.sha256(b"big").digest() * 50_000  # 1.6 MB: four chunks of 512 KiB

LAYERS: list[list[tuple[str, Any]]] = [
    [
        ("a/", None), ("a/x", b"x0"), ("a/y", b"y0"), ("d/", None), ("d/1", b"1"), ("d/2", b"2"),
        ("lib/", None), ("lib/real", b"real"), ("etc/", None), ("etc/passwd", b"root:x:0:0\n"),
        ("up", ("sym", "../../../etc/passwd")), ("abs", ("sym", "/etc/passwd")), ("dirlink", ("sym", "a")),
        ("escape", ("sym", "/../../a")), ("big", BIG), ("gone/", None), ("gone/deep", b"deep"),
    ],
    [
        ("a/.wh.x", b""), ("d/.wh..wh..opq", b""), ("d/3", b"3"), ("dirlink/z", b"through the link"),
        ("h1", b"hard"), ("h2", ("hard", "h1")), ("a/y/", None), ("a/y/q", b"q"), ("etc/passwd", b"new\n"),
        ("escape/w", b"written through an escaping link"), (".wh.gone", b""),
    ],
    [
        (".wh.lib", b""), ("newdir/sub/file", b"implied parents"), ("d/.wh.3", b""), ("d/4", b"4"),
        ("h1", b"replaced"),
    ],
]


@pytest.fixture(scope="module")
def layered(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("lazy-layered")
    store = Store(root)
    store_plain_image(store, "example.com/plain:1", [tar_layer(m) for m in LAYERS])
    image = store.convert("example.com/plain:1", dst="example.com/lazy:1", chunk_size=512 << 10,
                          compression_level=1)
    yield store, image.name, root
    store.close()


def test_merged_tree_follows_the_unpack(layered: Any, tmp_path: Path) -> None:
    """Against the native unpack: it applies each layer onto the merged view of the ones below
    (as containerd does), so a parent path is resolved through a lower layer's symlink."""
    store, name, _root = layered
    expected = unpacked_tree(store, name, tmp_path, snapshotter="native")
    image = lazyread.lazy_image(store._ops, name)
    try:
        ours = merged_tree_entries(image.tree, image.read)
    finally:
        image.close()
    assert ours == expected
    # the cases are really there
    assert "a/x" not in ours and "a/z" in ours and "a/y/q" in ours
    assert sorted(p for p in ours if p.startswith("d/")) == ["d/4"]
    assert "lib" not in ours and "gone" not in ours and "newdir/sub/file" in ours
    assert "a/w" in ours  # the link /../../a is clamped to /a


def test_read_file_resolves_symlinks_inside_the_root(layered: Any) -> None:
    store, name, _root = layered
    assert store.read_file(name, "up") == b"new\n"  # ../../../etc/passwd is clamped to /etc/passwd
    assert store.read_file(name, "/abs") == b"new\n"
    assert store.read_file(name, "dirlink/z") == b"through the link"
    assert store.read_file(name, "a/z") == b"through the link"
    assert store.read_file(name, "h2") == b"hard"  # h1 was replaced; h2 keeps the old inode
    assert store.read_file(name, "h1") == b"replaced"
    assert store.read_file(name, "big") == BIG
    assert store.read_file(name, "a/../../../big") == BIG


def test_reading_a_local_image_never_loads_the_registry_client(layered: Any, tmp_path: Path) -> None:
    """Every blob of the converted image is local, so read_file (and the FUSE helper serving it)
    has no use for the HTTP stack: it is made on the first lazily fetched layer only."""
    _store, name, root = layered
    loaded = modules_loaded(
        "from ocistore import Store\n"
        f"with Store({str(root)!r}) as s:\n"
        f"    assert s.read_file({name!r}, 'dirlink/z') == b'through the link'",
        tmp_path,
    )
    assert "ocistore.estargz" in loaded  # the read did go through the TOCs
    assert not {"ocistore.remotes", "ocistore.transfer.lazyfetch", "urllib3", "ssl"} & loaded


@pytest.mark.parametrize(("path", "kind"), [
    ("a/x", errors.NotFound), ("lib/real", errors.NotFound), ("nothing", errors.NotFound),
    ("a", errors.InvalidArgument), ("dirlink", errors.InvalidArgument), ("big/x", errors.InvalidArgument),
    ("stargz.index.json", errors.NotFound), (".prefetch.landmark", errors.NotFound),
    (".no.prefetch.landmark", errors.NotFound),
])
def test_read_file_errors_are_typed(layered: Any, path: str, kind: type[Exception]) -> None:
    store, name, _root = layered
    with pytest.raises(kind):
        store.read_file(name, path)
    assert store.check().ok


def test_open_file_seeks_and_reads_only_what_it_needs(layered: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    store, name, _root = layered
    read: list[int] = []
    original = lazyread.LocalSource.read_chunk

    def counting(self: lazyread.LocalSource, chunk: esgz.Chunk) -> bytes:
        read.append(chunk.start)
        return original(self, chunk)

    monkeypatch.setattr(lazyread.LocalSource, "read_chunk", counting)
    with store.open_file(name, "big") as f:
        assert f.seekable()
        f.seek(1_100_000)
        assert f.read(10) == BIG[1_100_000:1_100_010]
        assert read == [1 << 20]  # the third chunk only
        assert f.seek(-5, os.SEEK_END) == len(BIG) - 5
        assert f.read() == BIG[-5:]
        f.seek(0)
        assert f.read(3) == BIG[:3]
        assert f.read(0) == b""
    assert read == [1 << 20, 3 << 19, 0]
    with store.open_file(name, "d/4") as f:
        assert f.read() == b"4"


def test_not_estargz_says_convert(layered: Any) -> None:
    store, _name, _root = layered
    with pytest.raises(errors.FailedPrecondition, match=r"store\.convert"):
        store.read_file("example.com/plain:1", "a/y/q")
    with pytest.raises(errors.NotFound):
        store.read_file("example.com/none:1", "a")


def test_a_missing_blob_is_a_failed_precondition(tmp_path: Path) -> None:
    with Store(tmp_path / "root") as store:
        store_plain_image(store, "example.com/p:1", [tar_layer([("f", b"data")])])
        image = store.convert("example.com/p:1", dst="example.com/e:1")
        manifest = json.loads(store.content.read(image.target.digest))
        store.content.delete(manifest["layers"][0]["digest"])
        with pytest.raises(errors.FailedPrecondition, match="not complete"):
            store.read_file("example.com/e:1", "f")


def test_a_chunk_that_lies_is_caught(tmp_path: Path) -> None:
    with Store(tmp_path / "root") as store:
        store_plain_image(store, "example.com/p:1", [tar_layer([("f", b"data" * 1000)])])
        image = store.convert("example.com/p:1", dst="example.com/e:1")
        manifest = json.loads(store.content.read(image.target.digest))
        desc = store.content.info(manifest["layers"][0]["digest"])
        source = lazyread.LocalSource(store.content, esgz_descriptor(manifest["layers"][0]))
        try:
            (_entry, chunks), = [(e, c) for e, c in source.toc().files() if e.name == "f"]
            bad = esgz.Chunk(chunks[0].name, 0, chunks[0].size, chunks[0].offset, chunks[0].inner_offset,
                             "sha256:" + "0" * 64)
            with pytest.raises(errors.DigestMismatch):
                source.read_chunk(bad)
            shifted = esgz.Chunk(chunks[0].name, 0, chunks[0].size, chunks[0].offset + 1, 0, chunks[0].digest)
            with pytest.raises((errors.InvalidEStargz, errors.DigestMismatch)):
                source.read_chunk(shifted)
        finally:
            source.close()
        assert desc.size > 0 and store.check().ok


def esgz_descriptor(layer: dict[str, Any]) -> Descriptor:
    return Descriptor.from_json(layer)


# -- the merge rules, on TOCs alone -----------------------------------------------------------------------


def _toc(*entries: TOCEntry) -> TOC:
    return TOC(1, list(entries))


def test_tree_rules_on_tocs() -> None:
    lower = _toc(TOCEntry("usr/", "dir", mode=0o755), TOCEntry("usr/lib/", "dir", mode=0o700, uid=5),
                 TOCEntry("lib", "symlink", link_name="usr/lib"), TOCEntry("usr/lib/a", "symlink", link_name="b"),
                 TOCEntry("dev/", "dir"), TOCEntry("dev/null", "char", dev_major=1, dev_minor=3, mode=0o666))
    upper = _toc(TOCEntry("lib/new", "symlink", link_name="/usr/../../lib/a"),
                 TOCEntry("loop", "symlink", link_name="loop"))
    tree = merge_tocs([lower, upper])
    assert tree.lookup("usr/lib/new", follow=False).link_name == "/usr/../../lib/a"  # written through the lib link
    assert tree.lookup("lib/new", follow=False).type == "symlink"
    with pytest.raises(errors.NotFound):
        tree.lookup("lib/new")  # -> /lib/a -> /usr/lib/b, which does not exist
    assert tree.lookup("usr/lib").uid == 5 and tree.lookup("lib").uid == 5
    null = tree.lookup("dev/null")
    assert null.rdev == os.makedev(1, 3) and null.st_mode & 0o777 == 0o666
    with pytest.raises(errors.UnsafeArchive):
        tree.lookup("loop")
    assert tree.listdir("/") == ["dev", "lib", "loop", "usr"]
    assert tree.node(tree.lookup("usr").ino) is tree.lookup("usr")


def test_hard_link_outside_its_layer_is_refused() -> None:
    lower = _toc(TOCEntry("f", "reg", size=0))
    upper = _toc(TOCEntry("g", "hardlink", link_name="f"))
    with pytest.raises(errors.UnsafeArchive):
        merge_tocs([lower, upper])


# -- the real corpus ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("lazy-corpus")
    store = Store(root)
    store.import_archive(CORPUS, fetch_only=True)
    converted = {tag: store.convert(tag, dst=f"example.com/esgz/{tag.replace(':', '-')}:esgz", compression_level=1)
                 for tag in ("debian:gzip", "app:layers")}
    yield store, converted
    store.close()


@pytest.mark.parametrize("tag", ["debian:gzip", "app:layers"])
def test_corpus_files_read_lazily_equal_the_unpack(corpus: Any, tag: str, tmp_path: Path) -> None:
    store, converted = corpus
    name = converted[tag].name
    expected = unpacked_tree(store, name, tmp_path)
    image = lazyread.lazy_image(store._ops, name)
    try:
        ours = merged_tree_entries(image.tree, image.read)
        files = [p for p, n in image.tree.regular_files()]
    finally:
        image.close()
    assert ours == expected
    assert len(files) > 100
    for path in files[:: max(1, len(files) // 40)]:  # the facade on a sample, through open_file too
        data = store.read_file(name, path)
        with store.open_file(name, path) as f:
            assert io.BufferedReader(f).read() == data  # type: ignore[arg-type]
    assert store.check().ok
