"""Inline file dedup at apply (issue 12, part 1): ``Store(dedup=True)``, the LMDB index, safety.

Real layers (the fixture corpus and variants of it that share files but not layers, see
benches/dedup_variants.py), real overlay mounts, real crashes (SIGKILL at the ``dedup.link``
fault point).
"""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash
from registry_fixtures import CORPUS_DIR
from test_cli import ok, run

from ocistore import Store
from ocistore.archive import FileDeduper, apply_layer
from ocistore.archive._dedup import DEFAULT_THRESHOLD
from ocistore.images import image_parts
from ocistore.metadata import dedup as index
from ocistore.mount import mounted
from ocistore.testing.layout import build_layer, write_layout

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benches"))
from dedup_variants import build_variants  # noqa: E402

BIG = b"".join(i.to_bytes(4, "little") for i in range(20000))  # 80 000 bytes, above the threshold
OTHER = bytes(reversed(BIG))
CORPUS_IMAGES = ["debian:gzip", "debian:zstd", "app:layers", "multi:index",
                 "variant:split", "variant:swapped", "variant:app"]


# -- helpers -------------------------------------------------------------------------------------


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root``: type, mode, owner, xattrs, mtime and content (not atime,
    which reading changes, and not inode numbers or link counts)."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            try:
                xattrs = tuple(sorted((k, os.getxattr(p, k, follow_symlinks=False))
                                      for k in os.listxattr(p, follow_symlinks=False)))
            except OSError:
                xattrs = ()
            if stat.S_ISREG(st.st_mode):
                h = xxhash.xxh3_128()
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                what: Any = h.hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            else:
                what = st.st_rdev
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, xattrs,
                                             st.st_size if not stat.S_ISDIR(st.st_mode) else 0, what)
    return out


def index_entries(store: Store) -> list[tuple[str, str, int, str]]:
    with store.db.read() as txn:
        return list(index.entries(txn))


def inodes(path: Path) -> dict[tuple[int, int], str]:
    out = {}
    for p in path.rglob("*"):
        st = p.lstat()
        if stat.S_ISREG(st.st_mode):
            out[st.st_dev, st.st_ino] = str(p.relative_to(path))
    return out


def shared_file(a: Path, b: Path) -> str:
    """A path of ``b`` whose inode ``a`` also holds (a deduplicated file), largest first."""
    ia = inodes(a)
    found = sorted(((b / rel).stat().st_size, rel) for key, rel in inodes(b).items() if key in ia)
    assert found, f"no file of {b} is linked to {a}"
    return found[-1][1]


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (CORPUS_DIR / "index.json").exists():
        pytest.skip(f"prebuilt corpus not found at {CORPUS_DIR}")
    out = tmp_path_factory.mktemp("variants") / "layout"
    build_variants(CORPUS_DIR, out, level=1)
    return out


@pytest.fixture
def small_layout(tmp_path: Path) -> Path:
    layout = tmp_path / "layout"
    write_layout(layout, {
        "example.com/a:1": [{"etc/": None, "usr/lib/big.so": BIG, "small": "s"}],
        "example.com/b:1": [{"etc/": None, "other": "o"}, {"usr/lib/big.so": BIG, "usr/lib/copy.so": BIG,
                                                            "small": "s", "usr/lib/other.so": OTHER}],
    })
    return layout


def _unpack_ab(store: Store, snapshotter: str = "overlayfs", **kw: Any) -> tuple[Path, Path]:
    """Import the small layout fetch-only, unpack a then b; their top snapshots' paths."""
    store.import_archive(store.root.parent / "layout", fetch_only=True)
    store.unpack("example.com/a:1", snapshotter=snapshotter, **kw)
    store.unpack("example.com/b:1", snapshotter=snapshotter, **kw)
    sn = store.snapshots(snapshotter)
    return sn.path(_top(store, "example.com/a:1")), sn.path(_top(store, "example.com/b:1"))


def _top(store: Store, name: str) -> str:
    return image_parts(store.content, store.images.find(name).target).chain_id


# -- the deduper on its own ------------------------------------------------------------------------


def _layer(files: dict[str, Any], mtime: int = 1_700_000_000) -> bytes:
    return build_layer(files, "none", mtime=mtime)[1]


def _candidate(path: Path, data: bytes, mtime: int = 1_700_000_000) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o644)
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))
    return str(path)


def test_links_only_after_a_byte_comparison(tmp_path: Path) -> None:
    """A lookup hit whose bytes differ (as a fingerprint collision would) is never linked."""
    liar = _candidate(tmp_path / "c" / "liar", OTHER[:-1] + b"!")  # same size and metadata, other bytes
    twin = _candidate(tmp_path / "c" / "twin", BIG)
    root = tmp_path / "root"
    root.mkdir()
    keys: list[str] = []

    def lookup(key: str) -> list[str]:  # claims both candidates for every key
        keys.append(key)
        return [liar, twin]

    d = FileDeduper(lookup)
    result = apply_layer(io.BytesIO(_layer({"big": BIG, "other": OTHER})), root, dedup=d)
    assert result.deduplicated == 1 and d.linked == 1
    assert os.stat(root / "big").st_ino == os.stat(twin).st_ino
    assert os.stat(root / "other").st_ino != os.stat(liar).st_ino
    assert (root / "other").read_bytes() == OTHER
    assert {rel for _k, rel in d.entries} == {"big", "other"}
    assert len(set(keys)) == 2
    assert not list(root.glob(".ocistore-dedup*"))


def test_links_only_when_the_inode_metadata_matches(tmp_path: Path) -> None:
    """Same bytes but another mtime (or mode): a link would change what the tar says."""
    old = _candidate(tmp_path / "c" / "old", BIG, mtime=1_600_000_000)
    mode = _candidate(tmp_path / "c" / "mode", BIG)
    os.chmod(mode, 0o600)
    root = tmp_path / "root"
    root.mkdir()
    d = FileDeduper(lambda k: [old, mode])
    apply_layer(io.BytesIO(_layer({"f": BIG})), root, dedup=d)
    assert d.linked == 0
    st = os.stat(root / "f")
    assert st.st_nlink == 1 and st.st_mtime_ns == 1_700_000_000 * 10**9 and stat.S_IMODE(st.st_mode) == 0o644


def test_small_files_are_written_as_usual(tmp_path: Path) -> None:
    small = b"x" * (DEFAULT_THRESHOLD - 1)
    cand = _candidate(tmp_path / "c" / "s", small)
    root = tmp_path / "root"
    root.mkdir()
    calls: list[str] = []
    d = FileDeduper(lambda k: calls.append(k) or [cand])
    apply_layer(io.BytesIO(_layer({"s": small})), root, dedup=d)
    assert calls == [] and d.entries == [] and os.stat(root / "s").st_nlink == 1


# -- the store: switches, index, gc, check, du ------------------------------------------------------


@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
def test_store_dedup_links_files_of_committed_snapshots(tmp_path: Path, small_layout: Path,
                                                        snapshotter: str) -> None:
    store = Store(tmp_path / "root", dedup=True)
    a, b = _unpack_ab(store, snapshotter)
    ino = os.stat(a / "usr/lib/big.so").st_ino
    assert os.stat(b / "usr/lib/big.so").st_ino == ino
    assert os.stat(b / "usr/lib/copy.so").st_ino == ino  # same bytes in the same layer: the same target
    assert os.stat(b / "usr/lib/other.so").st_nlink == 1
    assert os.stat(b / "small").st_nlink == 1
    assert (b / "usr/lib/big.so").read_bytes() == BIG
    entries = index_entries(store)
    assert {(sn, rel) for _k, sn, _sid, rel in entries} == {
        (snapshotter, "usr/lib/big.so"), (snapshotter, "usr/lib/other.so")}
    report = store.check()
    assert report.ok, report.problems


def test_dedup_is_off_by_default_and_per_call(tmp_path: Path, small_layout: Path) -> None:
    store = Store(tmp_path / "root")
    _a, b = _unpack_ab(store)
    assert os.stat(b / "usr/lib/big.so").st_nlink == 1 and index_entries(store) == []
    store.close()
    store = Store(tmp_path / "root2")
    store.import_archive(small_layout, fetch_only=True)
    store.unpack("example.com/a:1", dedup=True)
    store.unpack("example.com/b:1", dedup=True)
    sn = store.snapshots()
    assert os.stat(sn.path(_top(store, "example.com/b:1")) / "usr/lib/big.so").st_nlink == 3  # a, b and copy.so
    store.close()
    store = Store(tmp_path / "root3", dedup=True)
    store.import_archive(small_layout, fetch_only=True)
    store.unpack("example.com/a:1")
    store.unpack("example.com/b:1", dedup=False)
    sn = store.snapshots()
    assert os.stat(sn.path(_top(store, "example.com/b:1")) / "usr/lib/big.so").st_nlink == 1


def test_lazy_create_follows_the_store_setting(tmp_path: Path, small_layout: Path) -> None:
    store = Store(tmp_path / "root", dedup=True)
    store.import_archive(small_layout, fetch_only=True)
    store.containers.create("ca", "example.com/a:1")
    store.containers.create("cb", "example.com/b:1")
    sn = store.snapshots()
    assert os.stat(sn.path(_top(store, "example.com/b:1")) / "usr/lib/big.so").st_nlink == 3  # a, b and copy.so


def test_removal_gc_and_evict_drop_index_entries(tmp_path: Path, small_layout: Path) -> None:
    store = Store(tmp_path / "root", dedup=True)
    a, b = _unpack_ab(store)
    assert len(index_entries(store)) == 3
    # eviction removes b's top layer: its entries go in that transaction
    top_b = _top(store, "example.com/b:1")
    sid_b = int(b.parent.name)
    store.remove_unpacked("example.com/b:1")
    assert all(sid != sid_b for _k, _sn, sid, _rel in index_entries(store))
    assert (a / "usr/lib/big.so").read_bytes() == BIG and os.stat(a / "usr/lib/big.so").st_nlink == 1
    store.unpack("example.com/b:1")
    assert top_b and len(index_entries(store)) == 3
    for name in ("example.com/a:1", "example.com/b:1"):
        store.images.delete(name)
    store.gc()
    assert index_entries(store) == []
    with store.db.read() as txn:
        assert list(index.reverse_entries(txn)) == []
    report = store.check()
    assert report.ok, report.problems


def test_check_reports_and_repairs_stale_entries(tmp_path: Path, small_layout: Path) -> None:
    store = Store(tmp_path / "root", dedup=True)
    _a, b = _unpack_ab(store)
    with store.db.write() as txn:
        index.add(txn, "overlayfs", 9999, [("0" * 32 + ".10.0", "nowhere")])
    (b / "usr/lib/other.so").unlink()  # damage under a committed snapshot (never done by ocistore)
    report = store.check()
    assert not report.ok
    stale = [p for p in report.problems if p.startswith("dedup index entry")]
    assert len(stale) == 2, report.problems
    assert any("9999" in p and "not a committed snapshot" in p for p in stale)
    assert any("other.so" in p and "no regular file" in p for p in stale)
    repaired = store.check(repair=True)
    assert len([r for r in repaired.repaired if "dedup index entry" in r]) == 2
    assert not [p for p in store.check().problems if p.startswith("dedup index entry")]
    assert len(index_entries(store)) == 2


def test_du_reports_what_dedup_saved(tmp_path: Path, small_layout: Path) -> None:
    store = Store(tmp_path / "root", dedup=True)
    a, _b = _unpack_ab(store)
    rows = {r.name: {u.snapshotter: u for u in r.unpacked} for r in store.image_usage(["overlayfs"])}
    blocks = os.stat(a / "usr/lib/big.so").st_blocks * 512
    assert rows["example.com/a:1"]["overlayfs"].dedup_saved == 0
    # b links big.so and copy.so (one inode, counted once) to a's file
    assert rows["example.com/b:1"]["overlayfs"].dedup_saved == blocks
    assert store.dedup_saved() == blocks
    plain = Store(tmp_path / "plain")
    plain.import_archive(small_layout, fetch_only=True)
    for name in ("example.com/a:1", "example.com/b:1"):
        plain.unpack(name)
    assert plain.dedup_saved() == 0
    assert plain.disk_usage().snapshots - store.disk_usage().snapshots >= blocks
    root = store.root
    store.close()
    table = ok(run(root, "du", "--images", "--bytes")).out.splitlines()
    header = table[0].split("  ")
    assert "(SAVED BY DEDUP)" in table[0] and header
    assert table[-1] == f"saved by dedup: {blocks} in total"
    row_b = next(line.split() for line in table if line.startswith("example.com/b:1"))
    assert str(blocks) in row_b


# -- the corpus, through real mounts ------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_stores(variants: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Any, Any]]:
    base = tmp_path_factory.mktemp("corpus-stores")
    stores: dict[Any, Any] = {flag: Store(base / ("dedup" if flag else "plain"), dedup=flag)
                              for flag in (False, True)}
    stores["started"] = time.time_ns() - 10**9
    for s in (stores[False], stores[True]):
        s.import_archive(variants, fetch_only=True)
        for name in CORPUS_IMAGES:
            s.unpack(s.images.find(name).name)
    yield stores
    for s in (stores[False], stores[True]):
        s.close()


@pytest.mark.root
def test_corpus_rootfs_equals_the_one_without_dedup(corpus_stores: dict[Any, Any], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    plain, dd = corpus_stores[False], corpus_stores[True]
    saved = dd.dedup_saved()
    assert saved > 50 * 10**6, saved  # the variants repeat debian's /usr and python
    assert plain.disk_usage().snapshots - dd.disk_usage().snapshots >= saved * 0.9
    for i, name in enumerate(CORPUS_IMAGES):
        trees = []
        for flag, s in ((False, plain), (True, dd)):
            c = s.containers.create(f"eq-{i}", name)
            target = tmp_path / f"m{i}{int(flag)}"
            target.mkdir()
            with mounted(c.mounts, target):
                trees.append(tree(target))
            s.containers.delete(c.id)
        # Directories an overlay layer creates implicitly (a parallel apply has no lower dir to
        # copy them from) get the time of the unpack, with or without dedup: compare those as
        # "made during the unpack"; every other time, and every file's, must be equal.
        made = corpus_stores["started"]
        norm = [{k: (*v[:3], "unpack time", *v[4:]) if stat.S_ISDIR(v[0]) and v[3] >= made else v
                 for k, v in t.items()} for t in trees]
        assert norm[0] == norm[1], name
        assert len(trees[0]) > 1000
    assert dd.check().ok, dd.check().problems


@pytest.mark.root
def test_overlay_container_write_never_reaches_a_shared_file(corpus_stores: dict[Any, Any],
                                                           tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    s = corpus_stores[True]
    sn = s.snapshots()
    deb = sn.path(_top(s, "debian:gzip"))
    split_usr = sn.path(_top(s, "variant:split"))
    rel = shared_file(deb, split_usr)
    path_in_rootfs = f"usr/{rel}" if not rel.startswith("usr/") else rel
    before = tree(deb)
    c1 = s.containers.create("w1", "variant:split")
    c2 = s.containers.create("w2", "debian:gzip")
    m1, m2 = tmp_path / "m1", tmp_path / "m2"
    m1.mkdir()
    m2.mkdir()
    with mounted(c1.mounts, m1), open(m1 / path_in_rootfs, "r+b") as f:
        f.write(b"written by container w1")
    with mounted(c1.mounts, m1), mounted(c2.mounts, m2):
        assert (m1 / path_in_rootfs).read_bytes().startswith(b"written by container w1")
        assert not (m2 / path_in_rootfs).read_bytes().startswith(b"written by container w1")
    assert tree(deb) == before
    assert not (split_usr / rel).read_bytes().startswith(b"written by container w1")
    for c in (c1, c2):
        s.containers.delete(c.id)


def test_native_container_write_never_reaches_a_shared_file(variants: Path, tmp_path: Path) -> None:
    s = Store(tmp_path / "root", dedup=True)
    s.import_archive(variants, fetch_only=True)
    s.unpack(s.images.find("debian:gzip").name, snapshotter="native")
    s.unpack(s.images.find("variant:split").name, snapshotter="native")
    sn = s.snapshots("native")
    deb, split = sn.path(_top(s, "debian:gzip")), sn.path(_top(s, "variant:split"))
    rel = shared_file(deb, split)
    before = tree(deb)
    s.containers.create("w1", "variant:split", snapshotter="native")
    s.containers.create("w2", "debian:gzip", snapshotter="native")
    w1, w2 = sn.path("w1"), sn.path("w2")
    assert os.stat(w1 / rel).st_ino not in {os.stat(deb / rel).st_ino, os.stat(split / rel).st_ino}
    with open(w1 / rel, "r+b") as f:
        f.write(b"written by container w1")
    assert tree(deb) == before
    assert not (split / rel).read_bytes().startswith(b"written by container w1")
    assert not (w2 / rel).read_bytes().startswith(b"written by container w1")
    assert s.check().ok, s.check().problems


# -- crashes --------------------------------------------------------------------------------------------


_CHILD = """
import sys
from ocistore import Store
with Store(sys.argv[1], dedup=True) as s:
    s.unpack(s.images.find(sys.argv[2]).name, snapshotter=sys.argv[3])
"""


@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
def test_a_crash_in_the_link_step_leaves_a_consistent_store(variants: Path, tmp_path: Path,
                                                            snapshotter: str) -> None:
    root = tmp_path / "root"
    with Store(root, dedup=True) as s:
        s.import_archive(variants, fetch_only=True)
        s.unpack(s.images.find("debian:gzip").name, snapshotter=snapshotter)
    env = dict(os.environ, PYTHONPATH=str(REPO), OCISTORE_FAULT="dedup.link:200")
    p = subprocess.run([sys.executable, "-c", _CHILD, str(root), "variant:split", snapshotter],
                       env=env, capture_output=True, check=False)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()[-2000:]
    with Store(root, dedup=True) as s:
        report = s.check()
        # only what the dead unpack's lease held may be left: nothing points at a missing file
        assert not [q for q in report.problems if not q.startswith("orphan")], report.problems
        sn = s.snapshots(snapshotter)
        for _k, sn_name, sid, rel in index_entries(s):
            assert (s.layout.snapshot_fs(sn_name, sid) / rel).is_file()
            assert any(int(sn.path(i.name).parent.name) == sid for i in sn.walk() if i.kind.value == "committed")
        s.unpack(s.images.find("variant:split").name, snapshotter=snapshotter)
        for lease in s.leases.list():
            s.leases.delete(lease.id)
        s.gc()
        report = s.check()
        assert report.ok, report.problems
        top = sn.path(_top(s, "variant:split"))
        plain = Store(tmp_path / "plain")
        plain.import_archive(variants, fetch_only=True)
        plain.unpack(plain.images.find("variant:split").name, snapshotter=snapshotter)
        if snapshotter == "native":
            assert tree(top) == tree(plain.snapshots("native").path(_top(plain, "variant:split")))
        assert shared_file(sn.path(_top(s, "debian:gzip")), top)
