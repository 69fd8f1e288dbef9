"""The ``ocistore`` command line, run for real on temporary roots.

Most tests call :func:`ocistore.cli.main` in-process with captured streams (fast); a few
run ``python -m ocistore.cli`` as a subprocess to see exit codes and stderr as a user does.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import attrs
import pytest
from process_helpers import modules_loaded

from ocistore.cli import main
from ocistore.cli.app import default_root
from ocistore.cli.args import parse_duration
from ocistore.cli.context import Context
from ocistore.cli.output import human_duration, human_size, print_table
from ocistore.cli.progress import ProgressPrinter
from ocistore.cli.registry import registry_options
from ocistore.cli.snapshots import tree_lines
from ocistore.oci.reference import parse_reference
from ocistore.snapshots.types import Kind, SnapshotInfo
from ocistore.transfer.progress import ProgressEvent

REPO = Path(__file__).resolve().parents[1]


@attrs.frozen
class Result:
    code: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode()

    def json(self) -> Any:
        return json.loads(self.stdout)


def run(root: Path, *argv: str, stdin: bytes = b"") -> Result:
    """``ocistore --root ROOT ARGV...`` in this process."""
    out_buf, in_buf = io.BytesIO(), io.BytesIO(stdin)
    stdout = io.TextIOWrapper(out_buf, encoding="utf-8", write_through=True)
    stdin_text = io.TextIOWrapper(in_buf, encoding="utf-8")
    stderr = io.StringIO()
    from ocistore.cli.app import main as app_main

    code = app_main(["--root", str(root), *argv], stdout=stdout, stderr=stderr, stdin=stdin_text)
    stdout.flush()
    return Result(code, out_buf.getvalue(), stderr.getvalue())


def run_process(*argv: str, env: dict[str, str] | None = None,
                stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``python -m ocistore.cli ARGV...`` as a separate process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OCISTORE_")}
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "ocistore.cli", *argv], input=stdin, capture_output=True,
                          env=full_env, timeout=300, check=False)


def ok(result: Result) -> Result:
    assert result.code == 0, result.stderr
    return result


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layout(corpus_dir: Path, dest: Path, refs: list[str]) -> Path:
    """A layout naming only ``refs`` of the corpus (blobs linked, not copied)."""
    index = json.loads((corpus_dir / "index.json").read_text())
    index["manifests"] = [d for d in index["manifests"]
                          if d.get("annotations", {}).get("org.opencontainers.image.ref.name") in refs]
    dest.mkdir()
    (dest / "index.json").write_text(json.dumps(index))
    (dest / "oci-layout").write_text((corpus_dir / "oci-layout").read_text())
    (dest / "blobs").symlink_to(corpus_dir / "blobs")
    return dest


# -- helpers that need no store ------------------------------------------------------------------------
def test_default_root_follows_env_then_user() -> None:
    assert default_root({"OCISTORE_ROOT": "/x/y"}, euid=1000) == Path("/x/y")
    assert default_root({"OCISTORE_ROOT": "/x/y"}, euid=0) == Path("/x/y")
    assert default_root({}, euid=0) == Path("/var/lib/ocistore")
    assert default_root({"HOME": "/home/u"}, euid=1000) == Path("/home/u/.local/share/ocistore")
    assert default_root({"HOME": "/home/u", "XDG_DATA_HOME": "/d"}, euid=1000) == Path("/d/ocistore")


def test_root_option_wins_over_env(tmp_path: Path) -> None:
    env_root, opt_root = tmp_path / "env", tmp_path / "opt"
    p = run_process("--root", str(opt_root), "content", "ls", env={"OCISTORE_ROOT": str(env_root)})
    assert p.returncode == 0, p.stderr
    assert (opt_root / "metadata.lmdb").exists() and not env_root.exists()
    p = run_process("content", "ls", env={"OCISTORE_ROOT": str(env_root)})
    assert p.returncode == 0, p.stderr
    assert (env_root / "metadata.lmdb").exists()


def test_human_formats() -> None:
    assert human_size(326) == "326.0 B"
    assert human_size(30298107) == "28.9 MiB"
    assert human_duration(0.2) == "Less than a second"
    assert human_duration(75) == "About a minute"
    assert human_duration(3 * 3600) == "3 hours"
    assert parse_duration("24h").total_seconds() == 86400  # type: ignore[union-attr]
    assert parse_duration("1h30m").total_seconds() == 5400  # type: ignore[union-attr]
    assert parse_duration("0") is None
    out = io.StringIO()
    print_table(out, ("A", "BB"), [("xxx", "y"), ("z", "")])
    assert out.getvalue().splitlines() == ["A   BB", "xxx y", "z"]


def test_progress_plain_prints_each_status_once() -> None:
    out = io.StringIO()
    p = ProgressPrinter(out, tty=False)
    for status, offset in (("downloading", 0), ("downloading", 5), ("complete", 10)):
        p(ProgressEvent(ref="layer-sha256:" + "a" * 64, digest="sha256:" + "a" * 64, kind="layer",
                        status=status, offset=offset, total=10))
    p.close()
    lines = out.getvalue().splitlines()
    assert lines == [f"layer-sha256:{'a' * 64}: downloading", f"layer-sha256:{'a' * 64}: complete 10.0 B"]


def test_progress_on_a_terminal_redraws_in_place() -> None:
    out = io.StringIO()
    clock = iter(float(i) for i in range(100))
    p = ProgressPrinter(out, tty=True, clock=lambda: next(clock))
    ref = "layer-sha256:" + "b" * 64
    p(ProgressEvent(ref=ref, digest="sha256:" + "b" * 64, kind="layer", status="downloading", total=100))
    p(ProgressEvent(ref=ref, digest="sha256:" + "b" * 64, kind="layer", status="downloading", offset=50,
                    total=100))
    p.close()
    text = out.getvalue()
    assert "\x1b[2A" in text  # moved back up over the object line and the summary line
    assert "layer-sha256:bbbbbbbbbbbb: downloading" in text
    assert "elapsed:" in text


def test_tree_lines_like_ctr() -> None:
    infos = [SnapshotInfo("a", "", Kind.COMMITTED), SnapshotInfo("b", "a", Kind.COMMITTED),
             SnapshotInfo("c", "b", Kind.ACTIVE), SnapshotInfo("d", "a", Kind.VIEW)]
    assert tree_lines(infos) == [" a", "  \\_ b", "    \\_ c", "  \\_ d"]


def test_user_option_reads_password_from_stdin(tmp_path: Path) -> None:
    from ocistore.cli.app import build_parser

    args = build_parser().parse_args(["images", "fetch", "--user", "alice", "--plain-http",
                                      "127.0.0.1:5000/debian:gzip"])
    ctx = Context(tmp_path, "default", stdin=io.StringIO("s3cret\n"), stderr=io.StringIO())
    opts = registry_options(ctx, args, args.ref)
    assert opts["plain_http"] is True
    assert opts["credentials"]["127.0.0.1:5000"] == ("alice", "s3cret")
    args = build_parser().parse_args(["images", "pull", "-u", "bob:pw", "docker.io/library/debian:12"])
    creds = registry_options(ctx, args, args.ref)["credentials"]
    assert creds["docker.io"] == creds["registry-1.docker.io"] == ("bob", "pw")


# -- content --------------------------------------------------------------------------------------------------
def test_content_ingest_ls_get_label_rm(tmp_path: Path) -> None:
    data = b"hello, ocistore\n"
    digest = ok(run(tmp_path, "content", "ingest", "--label", "team=a", "-", stdin=data)).out.strip()
    assert digest == _sha(data)

    listing = ok(run(tmp_path, "content", "ls")).out.splitlines()
    assert listing[0].split() == ["DIGEST", "SIZE", "AGE", "LABELS"]
    assert any(line.startswith(digest) and "team=a" in line for line in listing[1:])
    [info] = ok(run(tmp_path, "--json", "content", "ls")).json()
    assert info["digest"] == digest and info["size"] == len(data) and info["labels"] == {"team": "a"}

    assert ok(run(tmp_path, "content", "get", digest)).stdout == data

    ok(run(tmp_path, "content", "label", digest, "owner=me", "team="))
    [info] = ok(run(tmp_path, "--json", "content", "ls")).json()
    assert info["labels"] == {"owner": "me"}

    ok(run(tmp_path, "content", "rm", digest))
    assert ok(run(tmp_path, "content", "ls", "-q")).out == ""
    missing = run(tmp_path, "content", "get", digest)
    assert missing.code == 1
    assert len(missing.stderr.splitlines()) == 1 and digest in missing.stderr


def test_content_ingest_file_with_expected_digest(tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(3000))
    root = tmp_path / "root"
    good = ok(run(root, "--json", "content", "ingest", "--expected", _sha(blob.read_bytes()), str(blob)))
    assert good.json() == {"digest": _sha(blob.read_bytes()), "size": 3000}
    bad = run(root, "content", "ingest", "--expected", _sha(b"other"), "-", stdin=b"not it")
    assert bad.code == 1 and len(bad.stderr.splitlines()) == 1
    assert ok(run(root, "content", "active")).out.splitlines()[0].split() == ["REF", "SIZE", "AGE"]


def test_content_rm_reports_each_missing_digest(tmp_path: Path) -> None:
    d = ok(run(tmp_path, "content", "ingest", stdin=b"x")).out.strip()
    missing = "sha256:" + "0" * 64
    r = run(tmp_path, "content", "rm", missing, d)
    assert r.code == 1
    assert r.stderr.count("\n") == 1 and missing in r.stderr
    assert ok(run(tmp_path, "content", "ls", "-q")).out == ""


# -- images from the corpus ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fetched_root(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    """A root with the whole corpus imported fetch-only (shared; tests must not change it)."""
    root = tmp_path_factory.mktemp("cli-corpus") / "root"
    r = run(root, "images", "import", "--fetch-only", str(corpus_dir))
    assert r.code == 0, r.stderr
    return root


def _expected_names(corpus: dict[str, Any]) -> dict[str, str]:
    return {str(parse_reference(ref)): img["digest"] for ref, img in corpus["images"].items()}


def test_import_fetch_only_then_images_ls_json(fetched_root: Path, corpus: dict[str, Any]) -> None:
    listed = ok(run(fetched_root, "images", "ls", "--json")).json()
    assert {i["name"]: i["digest"] for i in listed} == _expected_names(corpus)
    by_name = {i["name"]: i for i in listed}
    gz = by_name["docker.io/library/debian:gzip"]
    assert gz["media_type"] == corpus["images"]["debian:gzip"]["mediaType"]
    assert isinstance(gz["size"], int) and gz["size"] > corpus["images"]["debian:gzip"]["layers"][0]["size"]
    assert gz["platforms"] == ["linux/amd64"] and gz["labels"] == {}
    assert gz["created_at"].endswith("Z")
    # the global flag works the same
    assert ok(run(fetched_root, "--json", "images", "ls")).json() == listed


def test_images_ls_table_and_quiet(fetched_root: Path, corpus: dict[str, Any]) -> None:
    lines = ok(run(fetched_root, "images", "ls")).out.splitlines()
    assert lines[0].split() == ["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"]
    assert len(lines) == 1 + len(corpus["images"])
    gz = next(line for line in lines if line.startswith("docker.io/library/debian:gzip "))
    assert "28.9 MiB" in gz and "linux/amd64" in gz
    assert lines[1].index("application/") == lines[0].index("TYPE")  # aligned columns
    quiet = ok(run(fetched_root, "images", "ls", "-q")).out.split()
    assert sorted(quiet) == sorted(_expected_names(corpus))


def test_images_size_matches_corpus(fetched_root: Path, corpus: dict[str, Any]) -> None:
    img = corpus["images"]["debian:gzip"]
    expected = img["size"] + img["config"]["size"] + sum(layer["size"] for layer in img["layers"])
    [entry] = ok(run(fetched_root, "images", "size", "--json", "debian:gzip")).json()
    assert entry == {"name": "docker.io/library/debian:gzip", "size": expected}
    table = ok(run(fetched_root, "images", "size", "debian:gzip")).out.splitlines()
    assert table[0].split() == ["REF", "SIZE", "BYTES"] and table[1].endswith(str(expected))


def test_images_check_fetched_is_complete_not_unpacked(fetched_root: Path) -> None:
    rows = ok(run(fetched_root, "images", "check", "--json")).json()
    assert rows and all(r["complete"] and not r["unpacked"] for r in rows)
    lines = ok(run(fetched_root, "images", "check", "debian:zstd")).out.splitlines()
    assert lines[0].split() == ["REF", "TYPE", "DIGEST", "STATUS", "SIZE", "UNPACKED"]
    assert "complete" in lines[1] and lines[1].endswith("false")


def test_du_json_is_integers(fetched_root: Path, corpus: dict[str, Any]) -> None:
    usage = ok(run(fetched_root, "du", "--json")).json()
    assert set(usage) == {"content", "ingest", "snapshots", "metadata", "total"}
    assert all(type(v) is int for v in usage.values())
    blobs = sum(layer["size"] for img in corpus["images"].values() for layer in img.get("layers", []))
    assert usage["content"] >= corpus["images"]["debian:gzip"]["layers"][0]["size"]
    assert usage["total"] >= usage["content"] + usage["metadata"]
    assert blobs > 0
    table = ok(run(fetched_root, "du")).out.splitlines()
    assert table[0].split() == ["WHAT", "SIZE"] and table[-1].startswith("TOTAL")


def test_missing_image_is_one_line_exit_1(fetched_root: Path) -> None:
    for argv in (["images", "rm", "nope:missing"], ["images", "unpack", "nope:missing"],
                 ["images", "size", "nope:missing"], ["containers", "create", "c", "nope:missing"]):
        r = run(fetched_root, *argv)
        assert r.code == 1, argv
        assert len(r.stderr.splitlines()) == 1 and "nope" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


# -- lazy unpack, snapshots, gc, check on a root of their own ------------------------------------------------
def test_container_create_unpacks_lazily(tmp_path: Path, corpus_dir: Path, corpus: dict[str, Any]) -> None:
    root = tmp_path / "root"
    layout = _layout(corpus_dir, tmp_path / "layout", ["debian:gzip"])
    imported = ok(run(root, "images", "import", "--fetch-only", str(layout))).out.splitlines()
    layer = corpus["images"]["debian:gzip"]["layers"][0]["digest"]
    assert f"layer-{layer}: complete 28.9 MiB" in imported  # progress: plain lines off a terminal
    assert imported[-1].split() == ["docker.io/library/debian:gzip", corpus["images"]["debian:gzip"]["digest"]]
    assert ok(run(root, "snapshots", "ls")).out.splitlines()[1:] == []

    assert ok(run(root, "containers", "create", "c1", "debian:gzip")).out.strip() == "c1"
    chain = corpus["images"]["debian:gzip"]["chain_id"]
    snaps = {s["name"]: s for s in ok(run(root, "--json", "snapshots", "ls")).json()}
    assert snaps[chain]["kind"] == "committed"
    assert snaps["c1"]["kind"] == "active" and snaps["c1"]["parent"] == chain
    table = ok(run(root, "snapshots", "ls")).out.splitlines()
    assert table[0].split() == ["KEY", "PARENT", "KIND"]
    assert any(line.split() == ["c1", chain, "Active"] for line in table)
    assert ok(run(root, "snapshots", "tree")).out.splitlines() == [f" {chain}", "  \\_ c1"]

    [row] = ok(run(root, "images", "check", "--json", "debian:gzip")).json()
    assert row["unpacked"] is True
    [c] = ok(run(root, "--json", "containers", "ls")).json()
    assert c["id"] == "c1" and c["image"] == "docker.io/library/debian:gzip" and c["snapshotter"] == "overlayfs"
    mounts = ok(run(root, "snapshots", "mounts", "/mnt/c1", "c1")).out.splitlines()
    assert mounts and mounts[0].startswith("mount -t overlay overlay /mnt/c1 -o ")
    usage = ok(run(root, "--json", "snapshots", "usage", chain)).json()
    assert usage[0]["size"] > 0 and usage[0]["inodes"] > 1000

    ok(run(root, "containers", "rm", "c1"))
    assert ok(run(root, "containers", "ls", "-q")).out == ""
    ok(run(root, "images", "rm", "debian:gzip"))
    stats = ok(run(root, "gc", "--json")).json()
    assert set(stats) >= {"removed_content", "removed_snapshots", "bytes_freed", "duration"}
    assert stats["removed_snapshots"] >= 1 and stats["removed_content"] >= 3
    assert ok(run(root, "content", "ls", "-q")).out == ""
    assert ok(run(root, "check")).out.strip().splitlines()[-1] == "ok"
    assert ok(run(root, "--json", "check")).json()["ok"] is True


def test_images_unpack_tag_rm_and_export_import(tmp_path: Path, corpus_dir: Path,
                                                corpus: dict[str, Any]) -> None:
    root = tmp_path / "root"
    layout = _layout(corpus_dir, tmp_path / "layout", ["multi:index"])
    ok(run(root, "images", "import", "--fetch-only", "--all-platforms", str(layout)))
    name = "docker.io/library/multi:index"
    platforms = ok(run(root, "images", "ls", "--json")).json()[0]["platforms"]
    assert len(platforms) > 1 and "linux/amd64" in platforms
    chain = ok(run(root, "images", "unpack", "--snapshotter", "native", "multi:index")).out.splitlines()[-1]
    assert chain.startswith("sha256:")
    assert chain in ok(run(root, "snapshots", "--snapshotter", "native", "ls")).out

    assert ok(run(root, "images", "tag", "multi:index", "example.com/copy:1")).out.strip() == \
        "example.com/copy:1"
    again = run(root, "images", "tag", name, "example.com/copy:1")
    assert again.code == 1 and "--force" in again.stderr
    ok(run(root, "images", "tag", "--force", name, "example.com/copy:1"))

    out = tmp_path / "out.tar"
    ok(run(root, "images", "export", "--all-platforms", str(out), "example.com/copy:1"))
    with tarfile.open(out) as tar:
        assert {"index.json", "oci-layout"} <= set(tar.getnames())
    other = tmp_path / "other"
    imported = ok(run(other, "--json", "images", "import", "--fetch-only", str(out))).json()
    assert [i["name"] for i in imported] == ["example.com/copy:1"]
    assert imported[0]["digest"] == corpus["images"]["multi:index"]["digest"]

    ok(run(root, "images", "rm", "--sync", name, "example.com/copy:1"))
    assert ok(run(root, "images", "ls", "-q")).out == ""


def test_images_export_to_stdout_and_import_from_stdin(tmp_path: Path, corpus_dir: Path) -> None:
    root = tmp_path / "root"
    ok(run(root, "images", "import", "--fetch-only", str(_layout(corpus_dir, tmp_path / "l", ["multi:index"]))))
    tar_bytes = ok(run(root, "images", "export", "-", "multi:index")).stdout
    assert tarfile.is_tarfile(io.BytesIO(tar_bytes))
    other = tmp_path / "other"
    last = ok(run(other, "images", "import", "--fetch-only", "-", stdin=tar_bytes)).out.splitlines()[-1]
    assert last.split()[0] == "docker.io/library/multi:index"


def test_snapshot_verbs_native(tmp_path: Path) -> None:
    sn = ("snapshots", "--snapshotter", "native")
    mounts = ok(run(tmp_path, *sn, "prepare", "--target", "/mnt/x", "base-work")).out.splitlines()
    assert len(mounts) == 1 and mounts[0].startswith("mount -t bind ") and " /mnt/x" in mounts[0]
    ok(run(tmp_path, *sn, "commit", "--label", "k=v", "base", "base-work"))
    ok(run(tmp_path, *sn, "view", "v1", "base"))
    ok(run(tmp_path, *sn, "prepare", "w1", "base"))
    info = ok(run(tmp_path, *sn, "info", "base")).json()
    assert info["kind"] == "committed" and info["labels"] == {"k": "v"}
    assert ok(run(tmp_path, *sn, "tree")).out.splitlines() == [" base", "  \\_ v1", "  \\_ w1"]
    usage = ok(run(tmp_path, *sn, "usage", "--bytes")).out.splitlines()
    assert usage[0].split() == ["KEY", "SIZE", "INODES"] and len(usage) == 4
    busy = run(tmp_path, *sn, "rm", "base")
    assert busy.code == 1 and len(busy.stderr.splitlines()) == 1
    ok(run(tmp_path, *sn, "rm", "v1", "w1", "base"))
    assert ok(run(tmp_path, "--json", *sn, "ls")).json() == []
    bad_parent = run(tmp_path, *sn, "prepare", "x", "no-such-parent")
    assert bad_parent.code == 1 and "no-such-parent" in bad_parent.stderr


# -- leases, gc, check ---------------------------------------------------------------------------------------
def test_leases_create_ls_rm(tmp_path: Path) -> None:
    assert ok(run(tmp_path, "leases", "create", "--id", "l1", "--expire", "1h", "--label", "a=b")).out == "l1\n"
    random_id = ok(run(tmp_path, "leases", "create", "--expire", "0")).out.strip()
    leases = {lease["id"]: lease for lease in ok(run(tmp_path, "--json", "leases", "ls")).json()}
    assert set(leases) == {"l1", random_id}
    assert leases["l1"]["labels"]["a"] == "b" and "containerd.io/gc.expire" in leases["l1"]["labels"]
    assert "containerd.io/gc.expire" not in leases[random_id]["labels"]
    assert ok(run(tmp_path, "leases", "ls")).out.splitlines()[0].split() == ["ID", "CREATED", "AT", "LABELS"]
    dup = run(tmp_path, "leases", "create", "--id", "l1")
    assert dup.code == 1 and "l1" in dup.stderr
    ok(run(tmp_path, "leases", "rm", "--sync", "l1", random_id))
    assert ok(run(tmp_path, "leases", "ls", "-q")).out == ""


def test_gc_and_check_on_empty_root(tmp_path: Path) -> None:
    assert ok(run(tmp_path, "gc")).out.startswith("removed 0 blobs and 0 snapshots")
    assert ok(run(tmp_path, "check")).out.strip() == "ok"
    assert ok(run(tmp_path, "check", "--repair")).out.strip() == "ok"


# -- exit codes as a user sees them ------------------------------------------------------------------------
def test_usage_errors_exit_2(tmp_path: Path) -> None:
    for argv in (["images"], ["images", "bogus"], ["content", "get"], ["--no-such-flag", "gc"],
                 ["leases", "create", "--expire", "soon"], ["content", "label", "sha256:" + "1" * 64, "nokv"],
                 ["images", "pull", "--unpack", "sometimes", "x"]):
        r = run(tmp_path, *argv)
        assert r.code == 2, argv
    assert run(tmp_path, "--help").code == 0


def test_subprocess_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    p = run_process("--root", str(tmp_path), "images", "rm", "example.com/missing:1")
    assert p.returncode == 1
    err = p.stderr.decode()
    assert err.count("\n") == 1 and "example.com/missing:1" in err and "Traceback" not in err
    p = run_process("--root", str(tmp_path), "--namespace", "bad namespace!", "images", "ls")
    assert p.returncode == 1 and p.stderr.decode().count("\n") == 1 and b"Traceback" not in p.stderr
    p = run_process("--root", str(tmp_path), "snapshots", "prepare")
    assert p.returncode == 2 and b"usage:" in p.stderr
    p = run_process("--version")
    assert p.returncode == 0 and p.stdout.startswith(b"ocistore ")


def test_console_entry_point_returns_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path), "--json", "du"]) == 0
    assert set(json.loads(capsys.readouterr().out)) >= {"content", "total"}
    assert main(["--root", str(tmp_path), "images", "rm", "gone:1"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


# -- registry (the real CNCF registry on loopback) -------------------------------------------------------------
@pytest.mark.registry
def test_fetch_and_pull_from_registry(tmp_path: Path, registry_plain: Any, registry_basic: Any,
                                      corpus: dict[str, Any]) -> None:
    root = tmp_path / "root"
    ref = registry_plain.ref("debian:gzip")
    fetched = ok(run(root, "--json", "images", "fetch", "--plain-http", ref)).json()
    assert fetched["name"] == ref and fetched["digest"] == corpus["images"]["debian:gzip"]["digest"]
    [row] = ok(run(root, "--json", "images", "check", ref)).json()
    assert row["complete"] and not row["unpacked"]

    pulled = ok(run(root, "--json", "images", "pull", "--plain-http", "--snapshotter", "native", ref)).json()
    assert pulled["unpacked"] is True
    never = ok(run(root, "--json", "images", "pull", "--plain-http", "--unpack", "never",
                   registry_plain.ref("debian:zstd"))).json()
    assert never["unpacked"] is False

    basic = registry_basic.ref("multi:index")
    denied = run(root, "content", "fetch", "--plain-http", basic)
    assert denied.code == 1 and len(denied.stderr.splitlines()) == 1
    user = registry_basic.user
    got = ok(run(root, "content", "fetch", "--plain-http", "--user", user, basic,
                 stdin=f"{registry_basic.password}\n".encode()))
    assert got.out.splitlines()[-1].split()[0] == basic


def test_json_is_accepted_after_every_verb(tmp_path: Path) -> None:
    """``--json`` works after the verb as well as before it, for every verb of the parser."""
    import argparse

    from ocistore.cli.app import build_parser

    def leaves(p: argparse.ArgumentParser, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [(path, p)]
        return [leaf for a in subs for name, child in a.choices.items() for leaf in leaves(child, (*path, name))]

    all_verbs = leaves(build_parser(), ())
    assert len(all_verbs) > 30
    assert all("--json" in p._option_string_actions for _, p in all_verbs), [
        " ".join(v) for v, p in all_verbs if "--json" not in p._option_string_actions
    ]
    ok(run(tmp_path, "leases", "create", "--id", "l1"))
    assert [lease["id"] for lease in ok(run(tmp_path, "leases", "ls", "--json")).json()] == ["l1"]
    assert ok(run(tmp_path, "snapshots", "ls", "--json")).json() == []
    assert ok(run(tmp_path, "containers", "ls", "--json")).json() == []
    assert ok(run(tmp_path, "--json", "containers", "ls")).json() == []


def test_messages_name_the_problem_not_the_library(tmp_path: Path) -> None:
    """A refused connection, an impossible port and a root that is a file: one plain line each."""
    import socket

    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        refused = run(tmp_path / "root", "images", "fetch", "--plain-http", f"127.0.0.1:{port}/debian:gzip")
    assert refused.code == 1
    assert "connection refused" in refused.stderr and "Connection(" not in refused.stderr
    assert refused.stderr.count("\n") == 1

    bad_port = run(tmp_path / "root", "images", "fetch", "127.0.0.1:99999/debian:gzip")
    assert bad_port.code == 1 and "port 99999 is not between 1 and 65535" in bad_port.stderr
    assert "Failed to parse" not in bad_port.stderr

    afile = tmp_path / "afile"
    afile.write_text("")
    for root in (afile, afile / "sub"):
        res = run(root, "images", "ls")
        assert res.code == 1 and f"{afile} is not a directory" in res.stderr
        assert "File exists" not in res.stderr


def test_lazy_unpack_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    """``containers create`` of a fetched-only image draws unpack progress on a terminal only."""
    import pty

    from ocistore.testing.layout import write_layout

    layout = tmp_path / "layout"
    write_layout(layout, {"example.com/lazy:1": [{"a.txt": "a" * 4096}, {"b.txt": "b"}]})
    root = tmp_path / "root"
    ok(run(root, "images", "import", "--fetch-only", str(layout)))
    # off a terminal: stdout is the id alone (scripts read it)
    assert ok(run(root, "containers", "create", "plain", "example.com/lazy:1")).out == "plain\n"
    ok(run(root, "containers", "rm", "plain"))
    ok(run(root, "images", "rm", "example.com/lazy:1"))
    ok(run(root, "gc"))
    ok(run(root, "images", "import", "--fetch-only", str(layout)))

    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCISTORE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "ocistore.cli", "--root", str(root), "containers", "create", "tty",
         "example.com/lazy:1"], stdout=secondary, stderr=subprocess.PIPE, env=env, timeout=120, check=False,
    )
    os.close(secondary)
    chunks = []
    with contextlib.suppress(OSError):
        while chunk := os.read(primary, 65536):
            chunks.append(chunk)
    os.close(primary)
    shown = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, proc.stderr
    assert "layer-sha256:" in shown and "extracted" in shown, shown
    assert shown.rstrip().endswith("tty")


def test_images_inspect(tmp_path: Path) -> None:
    """``images inspect`` / ``store.inspect``: chain IDs, sizes, unpack state and blob presence."""
    from ocistore import Store
    from ocistore.oci.identity import chain_ids
    from ocistore.testing.layout import write_layout

    layout = tmp_path / "layout"
    write_layout(layout, {"example.com/insp:1": [{"a.txt": "a" * 8192}, {"b.txt": "b"}]})
    root = tmp_path / "root"
    ok(run(root, "images", "import", "--fetch-only", str(layout)))
    [before] = ok(run(root, "images", "inspect", "--json", "example.com/insp:1")).json()
    assert before["chain_ids"] == chain_ids(before["diff_ids"]) and before["chain_id"] == before["chain_ids"][-1]
    assert [b["kind"] for b in before["blobs"]] == ["manifest", "config", "layer", "layer"]
    assert all(b["present"] for b in before["blobs"])
    assert before["compressed_size"] == sum(b["size"] for b in before["blobs"])
    assert {u["snapshotter"]: u["unpacked"] for u in before["unpacked"]} == {"native": False, "overlayfs": False}

    ok(run(root, "images", "unpack", "--snapshotter", "native", "example.com/insp:1"))
    with Store(root) as store:
        info = store.inspect("example.com/insp:1")
        layer = info.blobs[2].digest
        store.content.delete(layer)  # as pull --discard-layers leaves it
    [after] = ok(run(root, "images", "inspect", "--json", "example.com/insp:1")).json()
    native = next(u for u in after["unpacked"] if u["snapshotter"] == "native")
    assert native["unpacked"] and native["committed_layers"] == 2 and native["size"] > 8192
    assert [b["present"] for b in after["blobs"]] == [True, True, False, True]
    text = ok(run(root, "images", "inspect", "example.com/insp:1")).out
    assert "blobs present:" in text and "3/4" in text and f"layer    {layer}" in text
    missing = run(root, "images", "inspect", "example.com/nope:1")
    assert missing.code == 1 and "nope" in missing.stderr


@pytest.mark.root
def test_snapshots_and_containers_mount_and_umount(tmp_path: Path) -> None:
    """``containers mount ID DIR`` / ``snapshots mount KEY DIR`` really mount; ``umount`` undoes it."""
    from ocistore import mount as m
    from ocistore.testing.layout import write_layout
    from ocistore.testing.snapshot_suite import mount_failure_reason

    reason = mount_failure_reason(tmp_path)
    if reason:
        pytest.skip(f"mounting failed: {reason}")
    layout = tmp_path / "layout"
    write_layout(layout, {"example.com/m:1": [{"etc/": None, "etc/base": "base\n"}, {"etc/app": "app\n"}]})
    root, target = tmp_path / "root", tmp_path / "mnt"
    target.mkdir()
    ok(run(root, "images", "import", "--fetch-only", str(layout)))
    ok(run(root, "containers", "create", "c1", "example.com/m:1"))
    try:
        assert ok(run(root, "containers", "mount", "c1", str(target))).out == f"{target}\n"
        assert m.is_mounted(target)
        assert (target / "etc" / "base").read_text() == "base\n" and (target / "etc" / "app").read_text() == "app\n"
        (target / "etc" / "written").write_text("x")  # a container rootfs is writable
    finally:
        ok(run(root, "containers", "umount", str(target)))
    assert not m.is_mounted(target) and not (target / "etc").exists()

    top = ok(run(root, "images", "inspect", "--json", "example.com/m:1")).json()[0]["chain_id"]
    ok(run(root, "snapshots", "view", "v1", top))
    ok(run(root, "snapshots", "mount", "v1", str(target)))
    try:
        assert (target / "etc" / "app").read_text() == "app\n"
        assert not (target / "etc" / "written").exists()  # the container's write stayed in its snapshot
    finally:
        ok(run(root, "snapshots", "unmount", str(target)))
    assert not m.is_mounted(target)
    bad = run(root, "snapshots", "mount", "v1", str(tmp_path / "nowhere"))
    assert bad.code == 2 and "not a directory" in bad.stderr


def test_content_verbs_take_unique_digest_prefixes(tmp_path: Path) -> None:
    """``content get/label/rm`` accept a unique prefix (with or without ``sha256:``), as ctr does."""
    digests = {}
    for n in range(40):  # enough blobs that some share their first hex character
        data = f"blob {n}\n".encode()
        digests[data] = ok(run(tmp_path, "content", "ingest", stdin=data)).out.strip()
    data, digest = next(iter(digests.items()))
    hexpart = digest.split(":", 1)[1]
    assert ok(run(tmp_path, "content", "get", hexpart[:12])).out == data.decode()
    assert ok(run(tmp_path, "content", "get", f"sha256:{hexpart[:8]}")).out == data.decode()
    assert ok(run(tmp_path, "content", "label", hexpart[:10], "a=b")).out.startswith(digest)
    from ocistore import Store

    with Store(tmp_path) as store:  # ingest until two digests share their first 4 hex characters
        seen: dict[str, str] = {d.split(":", 1)[1][:4]: d for d in digests.values()}
        n = 0
        while True:
            d = store.content.ingest(f"more {n}".encode()).digest
            n += 1
            if d.split(":", 1)[1][:4] in seen:
                clash = d.split(":", 1)[1][:4]
                break
            seen[d.split(":", 1)[1][:4]] = d
    ambiguous = run(tmp_path, "content", "get", clash)
    assert ambiguous.code == 1 and "ambiguous" in ambiguous.stderr and d in ambiguous.stderr
    short = run(tmp_path, "content", "get", hexpart[:3])
    assert short.code == 1 and "at least 4" in short.stderr
    none = run(tmp_path, "content", "get", "ffff0000")
    assert none.code == 1 and "no content" in none.stderr
    ok(run(tmp_path, "content", "rm", hexpart[:12]))
    assert digest not in ok(run(tmp_path, "content", "ls", "-q")).out
# -- platform selection and hints in CLI words ---------------------------------------------------------------
def test_platform_mismatch_names_the_cli_flags(tmp_path: Path, corpus_dir: Path) -> None:
    root = tmp_path / "root"
    layout = _layout(corpus_dir, tmp_path / "layout", ["multi:index"])
    r = run(root, "images", "import", "--fetch-only", "--platform", "linux/s390x", str(layout))
    assert r.code == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "linux/s390x" in r.stderr and "linux/arm64/v8, linux/386, linux/amd64" in r.stderr
    assert "--platform" in r.stderr and "--all-platforms" in r.stderr
    assert "all_platforms" not in r.stderr and "platform=" not in r.stderr
    assert ok(run(root, "images", "ls", "-q")).out == ""  # nothing recorded


def test_namespaces_ls_create_label_rm(tmp_path: Path) -> None:
    root = tmp_path / "root"
    blob = tmp_path / "blob"
    blob.write_bytes(b"hello")
    ok(run(root, "-n", "busy", "content", "ingest", str(blob)))
    ok(run(root, "namespaces", "create", "team-a", "owner=me"))
    assert run(root, "namespaces", "create", "team-a").code == 1
    ok(run(root, "ns", "label", "team-a", "tier=gold", "owner="))
    assert ok(run(root, "ns", "label", "team-a")).out == "tier=gold\n"
    lines = ok(run(root, "namespaces", "ls")).out.splitlines()
    assert lines[0].split() == ["NAME", "LABELS"]
    assert [line.split() for line in lines[1:]] == [["busy", "-"], ["team-a", "tier=gold"]]
    assert ok(run(root, "namespaces", "ls", "-q")).out.split() == ["busy", "team-a"]
    assert ok(run(root, "--json", "namespaces", "ls")).json() == [
        {"name": "busy", "labels": {}}, {"name": "team-a", "labels": {"tier": "gold"}}]
    r = run(root, "namespaces", "rm", "busy", "team-a", "nope")
    assert r.code == 1 and r.out.split() == ["team-a"]
    errs = r.stderr.splitlines()
    assert len(errs) == 2
    assert "busy" in errs[0] and "must be empty" in errs[0] and "blobs" in errs[0]
    assert "nope" in errs[1] and "not found" in errs[1]
    assert ok(run(root, "namespaces", "ls", "-q")).out.split() == ["busy"]


@pytest.mark.registry
def test_images_check_after_discarded_layers_says_unpacked(tmp_path: Path, registry_plain: Any,
                                                           corpus: dict[str, Any]) -> None:
    """ctr's images check: STATUS counts the blobs present, UNPACKED asks the snapshotter."""
    root = tmp_path / "root"
    ref = registry_plain.ref("app:layers")
    n = 2 + len(corpus["images"]["app:layers"]["layers"])
    ok(run(root, "images", "pull", "--plain-http", "--snapshotter", "native", "--discard-layers", ref))
    ok(run(root, "gc"))
    [row] = ok(run(root, "--json", "images", "check", "--snapshotter", "native", ref)).json()
    assert row["status"] == f"incomplete (2/{n})" and not row["complete"]
    assert row["unpacked"] is True
    line = ok(run(root, "images", "check", "--snapshotter", "native", ref)).out.splitlines()[1]
    assert f"incomplete (2/{n})" in line and line.endswith("true")
    ok(run(root, "containers", "create", "--snapshotter", "native", "c1", ref))
    assert ok(run(root, "check")).out.strip() == "ok"


# -- one command's parsers only ----------------------------------------------------------------------------
def test_commands_table_names_each_top_level_command_of_the_whole_parser() -> None:
    """``COMMANDS`` maps every command and alias to the module that registers it, and nothing else."""
    import argparse

    from ocistore.cli.app import COMMANDS, GROUP_MODULES, _parser, build_parser

    def names(p: argparse.ArgumentParser) -> set[str]:
        [sub] = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        return set(sub.choices)

    assert set(COMMANDS) == names(build_parser())
    for module in GROUP_MODULES:
        assert names(_parser((module,))) == {name for name, m in COMMANDS.items() if m == module}, module


@pytest.mark.parametrize("argv", [
    ["--root", "R", "containers", "create", "a", "b"],
    ["--ro=R", "-nfoo", "c", "create", "--label", "k=v", "a", "b"],
    ["--json", "images", "ls", "-q"],
    ["-n", "containers", "images", "ls"],
    ["du", "--bytes"],
    ["snapshots", "tree"],
])
def test_the_one_command_parser_reads_argv_as_the_whole_parser(argv: list[str]) -> None:
    from ocistore.cli.app import build_parser, parser_for

    whole = vars(build_parser().parse_args(argv))
    assert vars(parser_for(argv).parse_args(argv)) == whole


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["-h", "containers"], ["--version"], ["bogus"], ["--root"], ["containers"],
    ["containers", "create"], ["containers", "create", "--help"], ["c", "bogus"], ["images", "ls", "--bogus"],
    ["--root", "R", "containers", "ls", "extra"], ["gc", "--help"], ["--root", "R", "--", "containers", "ls"],
    ["--version", "images", "ls"], ["--root", "R", "--vers"], ["--version", "-h"], ["-h", "--version"],
    ["--root", "--version"], ["--version", "bogus"],
])
def test_help_usage_errors_and_exit_codes_are_those_of_the_whole_parser(argv: list[str]) -> None:
    import contextlib as cl

    from ocistore.cli.app import build_parser, parser_for

    def outcome(parser: Any) -> tuple[str, str, object]:
        out, err = io.StringIO(), io.StringIO()
        code: object = None
        with cl.redirect_stdout(out), cl.redirect_stderr(err):
            try:
                parser.parse_args(argv)
            except SystemExit as exc:
                code = exc.code
        return out.getvalue(), err.getvalue(), code

    assert outcome(parser_for(argv)) == outcome(build_parser())


def test_a_fresh_create_loads_only_what_it_needs(tmp_path: Path) -> None:
    """No other command's modules, no applier, eStargz, FUSE, registry client or hashing of blobs."""
    from ocistore.testing.layout import write_layout

    layout = tmp_path / "layout"
    write_layout(layout, {"example.com/small:1": [{"a.txt": "a"}]})
    root = tmp_path / "root"
    ok(run(root, "images", "import", str(layout)))
    loaded = modules_loaded(
        "from ocistore.cli import main\n"
        f"assert main(['--root', {str(root)!r}, 'containers', 'create', 'c1', 'example.com/small:1']) == 0",
        tmp_path,
    )
    unwanted = {
        "ocistore.cli.images", "ocistore.cli.serve", "ocistore.cli.bench", "ocistore.cli.maintenance",
        "ocistore.archive", "ocistore.estargz", "ocistore.remotes", "ocistore.transfer.unpack",
        "ocistore.transfer.lazyread", "ocistore.transfer.lazyrootfs", "ocistore.oci.imagelayout",
        "logging", "concurrent.futures", "tarfile", "ssl", "urllib3", "zstandard", "tempfile", "uuid", "signal",
    }
    assert not unwanted & loaded, sorted(unwanted & loaded)
