"""The content store conformance suite: containerd's content testsuite, case by case.

Subclass :class:`ContentStoreSuite` in a pytest module and provide the ``make_store``
fixture: a callable ``(namespace: str) -> ContentStore`` that returns views of ONE root
(so the cross-namespace cases can share blobs). Every case uses fresh refs and data.

A store without labels or namespaces (the bare blob store, as containerd runs its suite
on ``plugins/content/local`` too) turns the capability switches of
:class:`ContentStoreSuite` off: cases then assert what such a store does instead (labels
refused with FailedPrecondition, deleting or aborting what is missing is not an error),
and only the cross-namespace cases skip.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from ocistore import errors
from ocistore.oci.digest import EMPTY_DIGEST

__all__ = ["ContentStoreSuite", "MakeStore"]

MakeStore = Callable[[str], Any]
SLACK = timedelta(seconds=1)


def _now() -> datetime:
    return datetime.now(UTC)


def _root_labels() -> dict[str, str]:
    return {"containerd.io/gc.root": _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _random(n: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(f"{seed}-{n}".encode()).digest(n) if n <= 1 << 16 else os.urandom(n)


def _write_chunks(w: Any, data: bytes, chunk: int = 32) -> None:
    for i in range(0, len(data), chunk):
        w.write(data[i:i + chunk])


def _check_within(t: datetime | None, start: datetime, end: datetime) -> None:
    assert t is not None
    assert start - SLACK <= t <= end + SLACK, f"{t} not within [{start}, {end}]"


def _copy(w: Any, src: Any, size: int, expected: str, mode: str, labels: dict[str, str] | None = None) -> None:
    """content.Copy: reposition the source at the writer's offset, copy, commit."""
    offset = w.status().offset
    if offset:
        if mode == "seek":
            src.seek(offset)
        elif mode == "readat":
            src = io.BytesIO(src.getvalue()[offset:])
        else:  # plain reader: discard
            left = offset
            while left:
                chunk = src.read(min(left, 1 << 16))
                assert chunk, "short source"
                left -= len(chunk)
    copied = 0
    while chunk := src.read(1 << 16):
        w.write(chunk)
        copied += len(chunk)
    assert copied == size - offset, "short copy"
    with contextlib.suppress(errors.AlreadyExists):
        w.commit(size, expected, labels=labels)


def _write_blob(cs: Any, ref: str, data: bytes, labels: dict[str, str]) -> str:
    """content.WriteBlob: a writer for the data's digest, copied and committed; already present is fine."""
    d = _digest(data)
    try:
        w = cs.writer(ref, total=len(data), expected=d)
    except errors.AlreadyExists:
        return d
    with w:
        _copy(w, io.BytesIO(data), len(data), d, "seek", labels)
    return d


class _PlainReader:
    """A reader that is neither seekable nor random-access."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)


class ContentStoreSuite:
    """All cases of containerd's ContentSuite plus the shared cross-namespace suite.

    The class attributes say what the store under test can do; a subclass for a store
    without labels or namespaces turns them off.
    """

    supports_labels: ClassVar[bool] = True
    """Commits keep ``labels`` and ``update()`` edits them. Off: the store keeps no labels, so a
    commit with labels and ``update()`` raise FailedPrecondition (containerd's local store
    without a label store, rule 1.20) and every blob's labels are empty."""
    supports_namespaces: ClassVar[bool] = True
    """``make_store`` gives distinct namespaces of one root. Off: the cross-namespace cases skip."""
    missing_is_not_found: ClassVar[bool] = True
    """``delete()`` of a missing blob and ``abort()`` of a missing ingest raise NotFound (the
    metadata layer, rules 2.13/2.15). Off: both are no-ops, as in containerd's backend (rule 1.22)."""

    @pytest.fixture
    def make_store(self) -> MakeStore:  # pragma: no cover - provided by subclasses
        """Override: a callable ``namespace -> content store`` giving views of one root."""
        raise NotImplementedError

    def _commit_labels(self) -> dict[str, str]:
        """The labels the cases commit with: containerd's ``gc.root``, or none where labels are off."""
        return _root_labels() if self.supports_labels else {}

    def _need_namespaces(self) -> None:
        if not self.supports_namespaces:
            pytest.skip("needs two namespaces of one root; the bare blob store has no namespaces")

    # 1
    def test_writer(self, make_store: MakeStore) -> None:
        """Writers with and without ``total``/``expected`` commit; info has the size, labels and commit times."""
        cs = make_store("writer")
        small, big = _random(256, 1), os.urandom(32 << 20)
        cases = [("c1", small, False, False), ("c2", small, True, False), ("c3", small, False, True),
                 ("c4", small, True, True), ("c5", big, True, True)]
        for i, (ref, base, with_size, with_digest) in enumerate(cases):
            data = base if i in (0, 4) else _random(256, 10 + i)
            start = _now()
            w = cs.writer(ref, total=len(data) if with_size else None,
                          expected=_digest(data) if with_digest else None)
            step = 32 if len(data) < 4096 else 1 << 20
            _write_chunks(w, data, step)
            labels = self._commit_labels()
            d = w.commit(0, None, labels=labels)
            end = _now()
            assert d == _digest(data) == w.digest()
            info = cs.info(d)
            assert info.size == len(data)
            assert info.labels == labels
            _check_within(info.created_at, start, end)
            _check_within(info.updated_at, start, end)

    # 2
    def test_update_status(self, make_store: MakeStore) -> None:
        """status() and digest() follow every write: offset, total, ref, start and update times."""
        cs = make_store("status")
        data = _random(256, 2)
        before = _now()
        w = cs.writer("status-1", total=256, expected=_digest(data))
        after = _now()
        st = w.status()
        assert (st.offset, st.total, st.ref) == (0, 256, "status-1")
        assert w.digest() == EMPTY_DIGEST
        _check_within(st.started_at, before, after)
        for upto in (64, 192, 256):
            prev = w.status().offset
            t0 = _now()
            w.write(data[prev:upto])
            t1 = _now()
            st = w.status()
            assert st.offset == upto and w.digest() == _digest(data[:upto])
            _check_within(st.updated_at, t0, t1)
        labels = self._commit_labels()
        d = w.commit(256, _digest(data), labels=labels)
        assert cs.info(d).labels == labels and cs.info(d).size == 256

    # 3
    def test_commit_exists(self, make_store: MakeStore) -> None:
        """Committing the bytes of a blob already present raises AlreadyExists, with or without ``expected``."""
        cs = make_store("exists")
        data = _random(256, 3)
        _write_blob(cs, "c1", data, self._commit_labels())
        for i, with_digest in enumerate((True, False)):
            w = cs.writer(f"c1-commitexists-{i}")
            w.write(data)
            with pytest.raises(errors.AlreadyExists):
                w.commit(len(data), _digest(data) if with_digest else None)

    # 4
    def test_resume(self, make_store: MakeStore) -> None:
        """A new writer on a closed ingest's ref resumes it: same offset, total, start time and digest."""
        cs = make_store("resume")
        data = _random(256, 4)
        w = cs.writer("resume-1", total=256, expected=_digest(data))
        w.write(data[:128])
        before = w.status()
        d_half = w.digest()
        w.close()
        w = cs.writer("resume-1", total=256, expected=_digest(data))
        st = w.status()
        assert (st.offset, st.total) == (128, 256)
        assert st.started_at == before.started_at
        assert abs((st.updated_at - before.updated_at).total_seconds()) < 1
        assert w.digest() == d_half == _digest(data[:128])
        w.write(data[128:])
        d = w.commit(0, None, labels=self._commit_labels())
        assert cs.info(d).size == 256

    def _resume_matrix(self, make_store: MakeStore, name: str, finish: Callable[..., None]) -> None:
        cs = make_store(name)
        for size in (500, 5000, 50000):
            for frac in (0.0, 0.1, 0.5, 0.9, 1.0):
                data = _random(size, size * 10 + int(frac * 10))
                ref = f"{name}-{size}-{frac}"
                written = int(size * frac)
                w = cs.writer(ref, total=size, expected=_digest(data))
                w.write(data[:written])
                w.close()
                w = cs.writer(ref, total=size, expected=_digest(data))
                assert w.status().offset == written
                finish(w, data)
                assert cs.info(_digest(data)).size == size

    # 5
    def test_resume_truncate(self, make_store: MakeStore) -> None:
        """Resume at several offsets, then ``truncate(0)``, rewrite everything and commit."""
        def finish(w: Any, data: bytes) -> None:
            w.truncate(0)
            assert w.status().offset == 0
            w.write(data)
            w.commit(len(data), _digest(data), labels=self._commit_labels())

        self._resume_matrix(make_store, "rtrunc", finish)

    # 6
    def test_resume_discard(self, make_store: MakeStore) -> None:
        """Resume at several offsets and write only the bytes after ``status().offset``."""
        def finish(w: Any, data: bytes) -> None:
            w.write(data[w.status().offset:])
            w.commit(len(data), _digest(data), labels=self._commit_labels())

        self._resume_matrix(make_store, "rdiscard", finish)

    # 7, 8, 9
    @pytest.mark.parametrize("mode", ["reader", "seek", "readat"])
    def test_resume_copy(self, make_store: MakeStore, mode: str) -> None:
        """Resume the way ``content.Copy`` does: skip, seek or slice the source to the writer's offset."""
        def finish(w: Any, data: bytes) -> None:
            src: Any = _PlainReader(data) if mode == "reader" else io.BytesIO(data)
            _copy(w, src, len(data), _digest(data), mode)

        self._resume_matrix(make_store, f"rcopy{mode}", finish)

    # 10
    def test_small_blob(self, make_store: MakeStore) -> None:
        """A tiny blob commits and reads back through open() and read()."""
        cs = make_store("small")
        data = b"small\n"
        w = cs.writer("small-1", total=len(data), expected=_digest(data))
        w.write(data)
        w.commit(len(data), _digest(data), labels=self._commit_labels())
        with cs.open(_digest(data)) as f:
            assert f.read(len(data) + 1) == data
        assert cs.read(_digest(data)) == data

    # 11
    def test_labels(self, make_store: MakeStore) -> None:
        """Labels from commit; update() replaces them or edits keys by fieldpath, keeping created_at.

        Where labels are off, the commit with labels and every update() are FailedPrecondition:
        nothing is published by the refused commit, its ingest is kept, and the blob committed
        without labels has none.
        """
        cs = make_store("labels")
        data = _random(64, 11)
        d = _digest(data)
        labels = {"k1": "v1", "k2": "v2", **_root_labels()}
        w = cs.writer("c1-checklabels", total=len(data), expected=d)
        w.write(data)
        if not self.supports_labels:
            with pytest.raises(errors.FailedPrecondition):
                w.commit(len(data), d, labels=labels)
            assert not cs.exists(d)
            w = cs.writer("c1-checklabels", total=len(data), expected=d)
            assert w.status().offset == len(data)
            assert w.commit(len(data), d) == d
            for fieldpaths in (None, ["labels"], ["labels.k1"]):
                with pytest.raises(errors.FailedPrecondition):
                    cs.update(d, labels, fieldpaths)
            assert cs.info(d).labels == {}
            return
        w.commit(len(data), d, labels=labels)
        info = cs.info(d)
        assert info.labels == labels
        created = info.created_at
        new = {"k1": "newvalue", "k3": "v3", **_root_labels()}
        t0 = _now()
        info = cs.update(d, new)
        assert info.labels == new and "k2" not in info.labels
        new2 = {"k1": "v1", **_root_labels()}
        info = cs.update(d, new2, ["labels.k3", "labels.k1"])
        assert info.labels == {"k1": "v1", "containerd.io/gc.root": new["containerd.io/gc.root"]}
        assert cs.info(d).labels == info.labels
        assert info.created_at == created
        _check_within(info.updated_at, t0, _now())

    # 12
    def test_commit_error_state(self, make_store: MakeStore) -> None:
        """Error states of commit and what each leaves behind.

        A second writer on a live ref is Unavailable; a duplicate commit is AlreadyExists and
        frees the ref; a wrong digest or size is FailedPrecondition and keeps the data for a
        resume; ``truncate(0)`` then close leaves an empty ingest.
        """
        cs = make_store("errstate")
        data = _random(128, 12)
        ref = "errstate-1"
        w = cs.writer(ref)
        with pytest.raises(errors.Unavailable):
            cs.writer(ref)
        w.write(data)
        expected = _digest(data)
        w.commit(len(data), expected, labels=self._commit_labels())
        # duplicate commits -> AlreadyExists, ref reusable afterwards
        for exp in (expected, None):
            w = cs.writer(ref)
            w.write(data)
            with pytest.raises(errors.AlreadyExists):
                w.commit(len(data), exp)
        # wrong digest -> FailedPrecondition, data kept for resume
        w = cs.writer(ref)
        extra = data + b"more"
        w.write(extra)
        with pytest.raises(errors.FailedPrecondition):
            w.commit(len(extra), expected)
        w = cs.writer(ref)
        assert w.status().offset == len(extra)
        # wrong size -> FailedPrecondition, still resumable
        with pytest.raises(errors.FailedPrecondition):
            w.commit(len(extra) + 1, None)
        w = cs.writer(ref)
        assert w.status().offset == len(extra)
        d = w.commit(len(extra), None, labels=self._commit_labels())
        assert d == _digest(extra)
        # truncate + close frees the ref
        w = cs.writer(ref)
        w.write(b"x")
        w.truncate(0)
        w.close()
        w2 = cs.writer(ref)
        assert w2.status().offset == 0
        w2.close()

    # 13
    def test_cross_namespace_append(self, make_store: MakeStore) -> None:
        """Shared policy: a blob of one namespace starts complete in another, which may append and commit a new blob."""
        self._need_namespaces()
        a, b = make_store("append-n1"), make_store("append-n2")
        data = _random(1000, 13)
        d = _digest(data)
        w = a.writer("cross-append", total=len(data), expected=d)
        w.write(data)
        w.commit(len(data), d, labels=self._commit_labels())
        w = b.writer("cross-append", total=len(data), expected=d)
        st = w.status()
        assert st.offset == st.total == len(data)
        more = data + b"appended"
        w.write(b"appended")
        d2 = w.commit(len(more), _digest(more), labels=self._commit_labels())
        assert b.read(d2) == more
        assert a.read(d) == data
        with pytest.raises(errors.NotFound):
            a.info(d2)

    # 14
    def test_cross_namespace_share(self, make_store: MakeStore) -> None:
        """Shared policy: another namespace commits a blob it never saw without writing a byte."""
        self._need_namespaces()
        a, b = make_store("share-n1"), make_store("share-n2")
        data = _random(1000, 14)
        d = _digest(data)
        a.ingest(data, labels=self._commit_labels())
        with pytest.raises(errors.NotFound):
            b.info(d)
        w = b.writer("cross-share", total=len(data), expected=d)
        st = w.status()
        assert st.offset == st.total == len(data)
        w.commit(len(data), d, labels=self._commit_labels())
        assert b.read(d) == data and a.read(d) == data

    # extra: what cases 13-14 become on one store, status listing and abort
    def test_writer_for_present_blob(self, make_store: MakeStore) -> None:
        """A writer whose ``expected`` blob is already committed is AlreadyExists at open and takes no ref."""
        cs = make_store("present")
        data = _random(1000, 17)
        d = _write_blob(cs, "present-1", data, self._commit_labels())
        for total in (None, len(data)):
            with pytest.raises(errors.AlreadyExists):
                cs.writer("present-2", total=total, expected=d)
        w = cs.writer("present-2")
        assert w.status().offset == 0
        w.close()
        cs.abort("present-2")

    def test_statuses_and_abort(self, make_store: MakeStore) -> None:
        """statuses() lists a closed ingest; abort() removes it; aborting again is NotFound (or a no-op)."""
        cs = make_store("statuses")
        w = cs.writer("st-a", total=10)
        w.write(b"12345")
        w.close()
        refs = {s.ref: s for s in cs.statuses()}
        assert refs["st-a"].offset == 5 and refs["st-a"].total == 10
        cs.abort("st-a")
        assert "st-a" not in {s.ref for s in cs.statuses()}
        if self.missing_is_not_found:
            with pytest.raises(errors.NotFound):
                cs.abort("st-a")
        else:
            cs.abort("st-a")

    def test_abort_under_a_live_writer(self, make_store: MakeStore) -> None:
        """abort() of an ingest a writer holds is Unavailable and changes nothing: the writer
        goes on, its status stays listed, and it commits."""
        cs = make_store("abort-live")
        data = _random(3000, 23)
        w = cs.writer("live-a", total=len(data))
        w.write(data[:1000])
        with pytest.raises(errors.Unavailable):
            cs.abort("live-a")
        assert {s.ref: s.offset for s in cs.statuses()}.get("live-a") == 1000
        w.write(data[1000:])
        w.commit(len(data), _digest(data), labels=self._commit_labels())
        assert cs.read(_digest(data)) == data
        if self.missing_is_not_found:
            with pytest.raises(errors.NotFound):
                cs.abort("live-a")

    def test_delete_and_walk(self, make_store: MakeStore) -> None:
        """walk() with no filter, one filter and alternatives; delete() forgets a blob, twice is NotFound.

        Label filters match nothing where labels are off; deleting twice is a no-op where
        ``missing_is_not_found`` is off.
        """
        cs = make_store("walk")
        on = self.supports_labels
        d1 = _write_blob(cs, "walk-1", b"one", {"a": "1"} if on else {})
        d2 = _write_blob(cs, "walk-2", b"two", {"a": "2"} if on else {})
        assert {i.digest for i in cs.walk()} >= {d1, d2}
        assert [i.digest for i in cs.walk(f"digest=={d2}")] == [d2]
        assert {i.digest for i in cs.walk([f"digest=={d1}", f"digest=={d2}"])} == {d1, d2}
        assert [i.digest for i in cs.walk("labels.a==2")] == ([d2] if on else [])
        assert {i.digest for i in cs.walk(["labels.a==1", "labels.a==2"])} == ({d1, d2} if on else set())
        with pytest.raises(errors.InvalidArgument):
            list(cs.walk("labels.a=="))
        cs.delete(d1)
        with pytest.raises(errors.NotFound):
            cs.info(d1)
        assert d1 not in {i.digest for i in cs.walk()}
        if self.missing_is_not_found:
            with pytest.raises(errors.NotFound):
                cs.delete(d1)
        else:
            cs.delete(d1)

    def test_invalid_input(self, make_store: MakeStore) -> None:
        """Malformed digests, an empty ref and an oversized label raise InvalidArgument.

        The label size limit is the labelling layer's (rule 0.1): where labels are off, any
        label is refused (see :meth:`test_labels`).
        """
        cs = make_store("invalid")
        for bad in ("sha256:xyz", "md5:" + "0" * 32, "sha256:" + "A" * 64, "../../etc/passwd", ""):
            for op in (cs.info, cs.exists, cs.open, cs.read):
                with pytest.raises(errors.InvalidArgument):
                    op(bad)
            with pytest.raises(errors.InvalidArgument):
                cs.writer("invalid-1", expected=bad or "sha256:")
        with pytest.raises(errors.InvalidArgument):
            cs.writer("")
        if self.supports_labels:
            with pytest.raises(errors.InvalidArgument):
                cs.ingest(b"x", labels={"k": "v" * 5000})


class IsolatedContentSuite:
    """containerd's isolated-policy cases (15, 16); ``make_store`` gives isolated views of one root."""

    @pytest.fixture
    def make_store(self) -> MakeStore:  # pragma: no cover - provided by subclasses
        """Override: a callable ``namespace -> content store`` giving views of one root."""
        raise NotImplementedError

    # 15
    def test_cross_namespace_isolate(self, make_store: MakeStore) -> None:
        """Isolated policy: another namespace's writer for a present blob starts empty and must send every byte."""
        a, b = make_store("isolate-n1"), make_store("isolate-n2")
        data = _random(1000, 15)
        d = _digest(data)
        a.ingest(data, labels=_root_labels())
        t0 = _now()
        w = b.writer("cross-isolate", total=len(data), expected=d)
        st = w.status()
        assert st.offset == 0 and w.digest() == EMPTY_DIGEST
        _check_within(st.started_at, t0, _now())
        w.write(data)
        w.commit(len(data), d, labels=_root_labels())
        assert b.read(d) == data

    # 16
    def test_shared_namespace_isolate(self, make_store: MakeStore) -> None:
        """Isolated policy: a blob of a namespace labelled shareable starts complete elsewhere."""
        a, b = make_store("shareable-n1"), make_store("shareable-n2")
        a.set_namespace_labels({"containerd.io/namespace.shareable": "true"})
        data = _random(1000, 16)
        d = _digest(data)
        a.ingest(data, labels=_root_labels())
        w = b.writer("cross-shareable", total=len(data), expected=d)
        st = w.status()
        assert st.offset == st.total == len(data)
        w.commit(len(data), d, labels=_root_labels())
        assert b.read(d) == data
