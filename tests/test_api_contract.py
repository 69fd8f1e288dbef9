"""The public names and parameters DESIGN.md binds (users and acceptance checks code against them)."""

from __future__ import annotations

import inspect
from datetime import UTC
from pathlib import Path

import attrs

import ocistore
from ocistore import Store


def test_top_level_names() -> None:
    from ocistore import (  # noqa: F401
        CheckReport,
        Container,
        ContentInfo,
        Descriptor,
        DiskUsage,
        GCStats,
        Image,
        IngestStatus,
        Kind,
        Lease,
        Mount,
        Platform,
        ProgressEvent,
        Resource,
        SnapshotInfo,
        Store,
        Usage,
        errors,
    )
    from ocistore.mount import mount, unmount  # noqa: F401
    from ocistore.oci import chain_ids  # noqa: F401

    assert Kind.VIEW and Kind.ACTIVE and Kind.COMMITTED
    for name in ("NotFound", "AlreadyExists", "FailedPrecondition", "Unavailable", "InvalidArgument",
                 "DigestMismatch", "Unauthorized", "RegistryError", "UnsafeArchive", "SizeLimitExceeded"):
        assert issubclass(getattr(ocistore.errors, name), ocistore.errors.Error)
    assert issubclass(ocistore.errors.DigestMismatch, ocistore.errors.FailedPrecondition)
    assert issubclass(ocistore.errors.UnsafeArchive, ocistore.errors.InvalidArgument)
    assert issubclass(ocistore.errors.SizeLimitExceeded, ocistore.errors.InvalidArgument)


def _fields(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls)]


def test_record_fields() -> None:
    assert _fields(ocistore.Descriptor)[:7] == ["media_type", "digest", "size", "annotations", "platform", "urls",
                                                "artifact_type"]
    assert _fields(ocistore.Platform) == ["os", "architecture", "variant", "os_version", "os_features"]
    assert _fields(ocistore.ContentInfo)[:5] == ["digest", "size", "labels", "created_at", "updated_at"]
    assert _fields(ocistore.IngestStatus)[:5] == ["ref", "offset", "total", "started_at", "updated_at"]
    assert _fields(ocistore.Image) == ["name", "target", "labels", "created_at", "updated_at"]
    assert _fields(ocistore.SnapshotInfo) == ["name", "parent", "kind", "labels", "created_at", "updated_at"]
    assert _fields(ocistore.Usage) == ["size", "inodes"]
    assert _fields(ocistore.Mount) == ["type", "source", "options"]
    assert _fields(ocistore.Lease) == ["id", "labels", "created_at"]
    assert _fields(ocistore.Resource) == ["id", "type"]
    assert _fields(ocistore.GCStats)[:4] == ["removed_content", "removed_snapshots", "bytes_freed", "duration"]
    assert _fields(ocistore.DiskUsage) == ["content", "ingest", "snapshots", "metadata", "total"]
    assert _fields(ocistore.CheckReport)[:2] == ["ok", "problems"]
    assert _fields(ocistore.ProgressEvent) == ["ref", "digest", "kind", "status", "offset", "total"]
    assert _fields(ocistore.Container)[:7] == ["id", "image", "snapshotter", "snapshot_key", "labels",
                                               "created_at", "updated_at"]


def _params(fn: object) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]  # type: ignore[arg-type]


def test_store_signatures(tmp_path: Path) -> None:
    assert _params(Store.fetch)[:5] == ["ref", "platform", "strict", "all_platforms", "progress"]
    assert _params(Store.pull)[:4] == ["ref", "snapshotter", "platform", "progress"]
    assert _params(Store.unpack)[:4] == ["name", "snapshotter", "snapshot_labels", "progress"]
    assert _params(Store.is_unpacked)[:2] == ["name", "snapshotter"]
    assert _params(Store.import_archive)[:3] == ["path", "fetch_only", "platform"]
    assert _params(Store.export_archive)[:5] == ["path", "names", "platform", "all_platforms", "format"]
    with Store(tmp_path, namespace="ns1") as s:
        assert s.with_namespace("k8s.io").namespace == "k8s.io"
        assert _params(s.content.writer)[:3] == ["ref", "total", "expected"]
        assert _params(s.content.ingest)[:3] == ["data", "expected", "labels"]
        assert _params(s.containers.create)[:5] == ["id", "image", "snapshotter", "labels", "platform"]
        assert _params(s.leases.create)[:3] == ["id", "expire", "labels"]
        assert _params(s.namespaces.list) == [] and _params(s.namespaces.labels) == ["name"]
        assert _params(s.namespaces.delete)[:1] == ["name"]
        sn = s.snapshots("native")
        assert _params(sn.prepare)[:3] == ["key", "parent", "labels"]
        assert _params(sn.commit)[:3] == ["name", "key", "labels"]
        d = s.content.ingest(b"x")
        info = s.content.info(d.digest)
        assert info.created_at is not None and info.created_at.tzinfo == UTC
        assert s.content.writer("r").status().total == 0
