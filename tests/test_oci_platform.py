"""Platform parsing, normalisation and matching (containerd's ``platforms`` package)."""

from __future__ import annotations

import pytest

from ocistore import errors
from ocistore.oci import (
    Platform,
    PlatformMatcher,
    all_platforms,
    any_of,
    matcher_for,
    normalize_arch,
    only,
    only_strict,
    ordered,
    preference_key,
)

P = Platform.parse


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("arch", "variant", "expected"),
    [
        ("x86_64", "", ("amd64", "")),
        ("x86-64", "", ("amd64", "")),
        ("AMD64", "v1", ("amd64", "")),
        ("amd64", "v3", ("amd64", "v3")),
        ("i386", "", ("386", "")),
        ("i386", "v7", ("386", "")),
        ("aarch64", "", ("arm64", "")),
        ("arm64", "v8", ("arm64", "")),
        ("arm64", "8", ("arm64", "")),
        ("arm64", "v8.0", ("arm64", "")),
        ("arm64", "v8.2", ("arm64", "v8.2")),
        ("arm64", "9", ("arm64", "v9")),
        ("arm64", "v9.0", ("arm64", "v9")),
        ("armhf", "", ("arm", "v7")),
        ("armel", "", ("arm", "v6")),
        ("arm", "", ("arm", "v7")),
        ("arm", "7", ("arm", "v7")),
        ("arm", "6", ("arm", "v6")),
        ("arm", "5", ("arm", "v5")),
        ("arm", "8", ("arm", "v8")),
        ("s390x", "", ("s390x", "")),
    ],
)
def test_normalize_arch(arch: str, variant: str, expected: tuple[str, str]) -> None:
    assert normalize_arch(arch, variant) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("Linux/AMD64", "linux/amd64"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/i386", "linux/386"),
        ("macos/arm64", "darwin/arm64"),
        ("arm64", "linux/arm64"),
    ],
)
def test_parse_normalises(spec: str, expected: str) -> None:
    assert str(P(spec)) == expected


@pytest.mark.parametrize("spec", ["", "linux/", "linux/amd64/v1/x", "linux/am d64", "/amd64"])
def test_parse_rejects(spec: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="invalid platform"):
        P(spec)


def test_os_features_sorted_and_deduplicated() -> None:
    p = Platform("windows", "amd64", os_features=("win32k", "a", "win32k")).normalized()
    assert p.os_features == ("a", "win32k")


def test_json_round_trip() -> None:
    p = Platform("windows", "amd64", os_version="10.0.17763.1", os_features=("win32k",))
    assert Platform.from_json(p.to_json()) == p
    assert p.to_json() == {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.17763.1",
        "os.features": ["win32k"],
    }


# ---------------------------------------------------------------- matchers

# the platforms of a multi-arch index, in index order
INDEX_ORDER = [P("linux/arm64/v8"), P("linux/386"), P("linux/amd64")]


def _select(matcher: PlatformMatcher, platforms: list[Platform]) -> list[Platform]:
    return sorted((p for p in platforms if matcher.match(p)), key=preference_key(matcher))


def test_strict_amd64_takes_only_amd64() -> None:
    m = only_strict("linux/amd64")
    assert _select(m, INDEX_ORDER) == [P("linux/amd64")]
    assert not m.match(P("linux/386"))


def test_non_strict_amd64_accepts_386_but_prefers_amd64() -> None:
    m = only("linux/amd64")
    assert m.match(P("linux/386"))
    assert not m.match(P("linux/arm64"))
    assert _select(m, INDEX_ORDER) == [P("linux/amd64"), P("linux/386")]
    assert m.less(P("linux/amd64"), P("linux/386"))
    assert not m.less(P("linux/386"), P("linux/amd64"))


def test_strict_matches_non_canonical_forms() -> None:
    m = only_strict("linux/arm64")
    assert m.match(Platform("linux", "aarch64", "v8"))
    assert m.match(Platform("linux", "arm64", "8"))
    assert only_strict("linux/amd64").match(Platform("Linux", "x86_64"))
    assert not only_strict("linux/arm/v7").match(P("linux/arm/v6"))


@pytest.mark.parametrize(
    ("spec", "accepted", "rejected"),
    [
        ("linux/amd64/v3", ["linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386"],
         ["linux/amd64/v4"]),
        ("linux/arm/v7", ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"], ["linux/arm/v8", "linux/arm64"]),
        ("linux/arm/v5", ["linux/arm/v5"], ["linux/arm/v6"]),
        ("linux/arm64", ["linux/arm64", "linux/arm/v8", "linux/arm/v7", "linux/arm/v5"],
         ["linux/arm64/v8.1", "linux/amd64"]),
        ("linux/arm64/v8.2", ["linux/arm64/v8.2", "linux/arm64/v8.1", "linux/arm64", "linux/arm/v7"],
         ["linux/arm64/v8.3", "linux/arm64/v9"]),
        ("linux/arm64/v9.2", ["linux/arm64/v9.2", "linux/arm64/v9", "linux/arm64/v8.7", "linux/arm64",
                              "linux/arm/v6"], ["linux/arm64/v8.8", "linux/arm64/v9.3"]),
        ("linux/arm64/v9.5", ["linux/arm64/v8.9"], ["linux/arm64/v9.6"]),
        ("linux/s390x", ["linux/s390x"], ["linux/amd64"]),
        ("windows/amd64", ["windows/amd64", "windows/386"], ["linux/amd64"]),
    ],
)  # fmt: skip
def test_only_vectors(spec: str, accepted: list[str], rejected: list[str]) -> None:
    m = only(spec)
    for a in accepted:
        assert m.match(P(a)), f"{spec} should accept {a}"
    for r in rejected:
        assert not m.match(P(r)), f"{spec} should reject {r}"


def test_only_order_arm64_v9() -> None:
    m = only("linux/arm64/v9.1")
    candidates = [P(s) for s in ["linux/arm/v5", "linux/arm64", "linux/arm64/v8.6", "linux/arm64/v9.1",
                                 "linux/arm/v8", "linux/arm64/v9"]]  # fmt: skip
    assert [str(p) for p in _select(m, candidates)] == [
        "linux/arm64/v9.1",
        "linux/arm64/v9",
        "linux/arm64/v8.6",
        "linux/arm64",
        "linux/arm/v8",
        "linux/arm/v5",
    ]


def test_os_features_subset_rule() -> None:
    m = only_strict(Platform("windows", "amd64", os_features=("win32k", "x")))
    assert m.match(Platform("windows", "amd64"))
    assert m.match(Platform("windows", "amd64", os_features=("x",)))
    assert not m.match(Platform("windows", "amd64", os_features=("y",)))
    plain = only_strict("linux/amd64")
    assert not plain.match(Platform("linux", "amd64", os_features=("f",)))


def test_more_features_preferred_when_both_match() -> None:
    m = only_strict(Platform("linux", "amd64", os_features=("a", "b")))
    rich, poor = Platform("linux", "amd64", os_features=("a",)), Platform("linux", "amd64")
    assert m.less(rich, poor)
    assert not m.less(poor, rich)


def test_windows_os_version() -> None:
    m = only_strict(Platform("windows", "amd64", os_version="10.0.17763.1000"))
    assert m.match(Platform("windows", "amd64", os_version="10.0.17763.5"))
    assert not m.match(Platform("windows", "amd64", os_version="10.0.20348.1"))
    assert m.match(Platform("windows", "amd64"))  # no version on the image: accepted
    ws2025 = only_strict(Platform("windows", "amd64", os_version="10.0.26100.1"))
    assert ws2025.match(Platform("windows", "amd64", os_version="10.0.20348.1"))
    assert not ws2025.match(Platform("windows", "amd64", os_version="10.0.17763.1"))


def test_ordered_prefers_earlier() -> None:
    m = ordered("linux/arm64", "linux/amd64")
    assert _select(m, INDEX_ORDER) == [P("linux/arm64"), P("linux/amd64")]
    m2 = ordered("linux/amd64", "linux/arm64")
    assert _select(m2, INDEX_ORDER) == [P("linux/amd64"), P("linux/arm64")]


def test_any_of_matches_any_without_preference() -> None:
    m = any_of("linux/amd64", only_strict("linux/arm64"))
    assert _select(m, INDEX_ORDER) == [P("linux/arm64"), P("linux/amd64")]  # index order kept
    assert not m.less(P("linux/amd64"), P("linux/arm64"))
    assert m.less(P("linux/amd64"), P("linux/386"))  # a match sorts before a non-match


def test_all_platforms() -> None:
    m = all_platforms()
    assert _select(m, INDEX_ORDER) == INDEX_ORDER
    assert m.match(Platform("plan9", "mips"))


def test_matcher_for() -> None:
    host = Platform.host()
    assert matcher_for(None).match(host)
    assert matcher_for("linux/amd64").match(P("linux/amd64"))
    assert not matcher_for("linux/amd64").match(P("linux/386"))
    assert matcher_for("linux/amd64", strict=False).match(P("linux/386"))
    assert matcher_for(P("linux/arm64"), strict=False).match(P("linux/arm/v7"))
    m = only("linux/amd64")
    assert matcher_for(m) is m
    with pytest.raises(errors.InvalidArgument):
        matcher_for("not a platform")


def test_matchers_are_platform_matchers() -> None:
    for m in (only("linux/amd64"), only_strict("linux/amd64"), any_of("linux/amd64"), all_platforms(),
              ordered("linux/amd64")):  # fmt: skip
        assert isinstance(m, PlatformMatcher)
