"""Image records: ``name -> target descriptor`` plus labels (containerd ``core/metadata/images.go``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from ocistore import _time, errors
from ocistore._lazy import lazy_module
from ocistore.metadata.db import DB, key, prefix, split_key
from ocistore.metadata.labels import apply_fieldpaths, validate_labels
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.reference import normalize_name

if TYPE_CHECKING:
    from ocistore import filters as _filters
else:
    _filters = lazy_module("ocistore.filters")  # compiled on the first filtered listing

__all__ = ["Image", "ImageStore"]

EXPIRE_LABEL = "containerd.io/gc.expire"


@attrs.frozen
class Image:
    """A named image: its target descriptor (index or manifest) and labels."""

    name: str
    target: Descriptor
    labels: dict[str, str] = attrs.field(factory=dict, hash=False)
    created_at: datetime | None = None
    updated_at: datetime | None = None


def _to_record(img: Image, created: int, updated: int) -> dict[str, Any]:
    return {"target": img.target.to_json(), "labels": dict(img.labels),
            "created_at": created, "updated_at": updated}


def _from_record(name: str, rec: Mapping[str, Any]) -> Image:
    return Image(
        name=name,
        target=Descriptor.from_json(rec["target"]),
        labels=dict(rec.get("labels") or {}),
        created_at=_time.from_ns(rec["created_at"]),
        updated_at=_time.from_ns(rec["updated_at"]),
    )


def _validate(img: Image) -> None:
    if not img.name:
        raise errors.InvalidArgument("image name must not be empty")
    validate_labels(img.labels, f"image {img.name}: ")
    if img.target.size <= 0:
        raise errors.InvalidArgument(f"image {img.name}: target size must be greater than zero")
    if not img.target.media_type:
        raise errors.InvalidArgument(f"image {img.name}: target media type must be set")


class ImageStore:
    """``Store.images`` for one namespace."""

    def __init__(self, db: DB, namespace: str, gc: Callable[[], object] | None = None) -> None:
        self.db = db
        self.ns = namespace
        self._gc = gc

    def get(self, name: str) -> Image:
        """The image ``name``; NotFound if this namespace has no such record."""
        with self.db.read() as txn:
            rec = txn.get("images", key(self.ns, name))
        if rec is None:
            raise errors.NotFound(f"image {name!r} not found in namespace {self.ns!r}")
        return _from_record(name, rec)

    def find(self, name: str) -> Image:
        """The image ``name``, or the one its normalised reference names (``debian:gzip`` finds
        ``docker.io/library/debian:gzip``). NotFound names what the caller asked for."""
        try:
            return self.get(name)
        except errors.NotFound:
            normalised = normalize_name(name)
            if normalised is None or normalised == name:
                raise
            return self.get(normalised)

    def upsert(self, name: str, target: Descriptor, labels: Mapping[str, str] | None = None) -> Image:
        """Create the record, or replace target and labels of an existing one (containerd 6.7)."""
        img = Image(name=name, target=target, labels=dict(labels or {}))
        for _ in range(3):
            try:
                return self.create(img)
            except errors.AlreadyExists:
                try:
                    return self.update(img)
                except errors.NotFound:
                    continue
        raise errors.Unavailable(f"image {name!r} changed concurrently; retry")

    def list(self, filters: str | Sequence[str] | None = None) -> list[Image]:
        """Images of the namespace matching ``filters`` (``name``, ``target.digest``,
        ``target.mediatype``, ``labels.<k>``, ``annotations.<k>``)."""
        flt = _filters.parse_filters(filters)
        with self.db.read() as txn:
            items = list(txn.scan("images", prefix(self.ns)))
        out = []
        for k, rec in items:
            img = _from_record(split_key(k)[1], rec)
            fields = {"name": img.name, "target.digest": img.target.digest,
                      "target.mediatype": img.target.media_type}
            if flt.match(_filters.label_adaptor(fields, img.labels, {"annotations": img.target.annotations})):
                out.append(img)
        return out

    def __iter__(self) -> Iterator[Image]:
        """Every image of the namespace."""
        return iter(self.list())

    def create(self, image: Image) -> Image:
        """Create the record ``image.name``; AlreadyExists if it exists."""
        _validate(image)
        image = attrs.evolve(image, labels=validate_labels(image.labels))
        t = _time.to_ns(_time.now())
        with self.db.write() as txn:
            k = key(self.ns, image.name)
            if txn.has("images", k):
                raise errors.AlreadyExists(f"image {image.name!r} already exists in namespace {self.ns!r}")
            self.db.ensure_namespace(txn, self.ns)
            txn.put("images", k, _to_record(image, t, t))
            if EXPIRE_LABEL in image.labels:
                self.db.add_to_lease(txn, self.ns, "images", image.name)
        return attrs.evolve(image, created_at=_time.from_ns(t), updated_at=_time.from_ns(t))

    def update(self, image: Image, fieldpaths: Sequence[str] | None = None) -> Image:
        """Replace target and labels, or only the ``fieldpaths`` named (``labels``,
        ``labels.<k>``, ``target``, ``annotations``, ``annotations.<k>``); NotFound if absent."""
        if not image.name:
            raise errors.InvalidArgument("image name must not be empty")
        with self.db.write() as txn:
            k = key(self.ns, image.name)
            rec = txn.get("images", k)
            if rec is None:
                raise errors.NotFound(f"image {image.name!r} not found in namespace {self.ns!r}")
            cur = _from_record(image.name, rec)
            if not fieldpaths:
                new = attrs.evolve(image, labels=validate_labels(image.labels))
            else:
                labels, rest = apply_fieldpaths(
                    cur.labels, image.labels, list(fieldpaths), f"image {image.name}: ",
                    allowed=("target", "annotations"),
                )
                target = cur.target
                for path in rest:
                    if path == "target":
                        target = image.target
                    elif path == "annotations":
                        target = attrs.evolve(target, annotations=dict(image.target.annotations))
                    elif path.startswith("annotations."):
                        ak = path[len("annotations."):]
                        ann = dict(target.annotations)
                        if image.target.annotations.get(ak):
                            ann[ak] = image.target.annotations[ak]
                        else:
                            ann.pop(ak, None)
                        target = attrs.evolve(target, annotations=ann)
                    else:
                        raise errors.InvalidArgument(f"image {image.name}: cannot update field {path!r}")
                new = attrs.evolve(cur, labels=labels, target=target)
            _validate(new)
            t = _time.to_ns(_time.now())
            txn.put("images", k, _to_record(new, rec["created_at"], t))
            if EXPIRE_LABEL in new.labels:
                self.db.add_to_lease(txn, self.ns, "images", image.name)
        return attrs.evolve(new, created_at=_time.from_ns(rec["created_at"]), updated_at=_time.from_ns(t))

    def delete(self, name: str, sync: bool = False, target: str | None = None) -> None:
        """Delete the record; data goes at the next gc (``sync=True`` runs it now)."""
        with self.db.write() as txn:
            k = key(self.ns, name)
            rec = txn.get("images", k)
            if rec is None:
                raise errors.NotFound(f"image {name!r} not found in namespace {self.ns!r}")
            if target is not None and rec["target"]["digest"] != target:
                raise errors.NotFound(f"image {name!r} does not point at {target}")
            txn.delete("images", k)
            self.db.remove_from_lease(txn, self.ns, "images", name)
        self.db.dirty += 1
        if sync and self._gc is not None:
            self._gc()
