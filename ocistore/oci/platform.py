"""Platforms (``os/arch/variant``): parsing, normalisation and matching as containerd does."""

from __future__ import annotations

import functools
import platform as _pyplatform
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from ocistore import errors

__all__ = [
    "Platform",
    "PlatformArg",
    "PlatformLike",
    "normalize_arch",
    "PlatformMatcher",
    "only_strict",
    "only",
    "ordered",
    "any_of",
    "all_platforms",
    "matcher_for",
    "preference_key",
]


_COMPONENT = re.compile(r"[A-Za-z0-9_.-]+\Z")


def _tuple(value: Any) -> tuple[str, ...]:
    return tuple(value or ())


@attrs.frozen
class Platform:
    """An OCI platform. ``str(p)`` gives ``"linux/arm64/v8"`` form."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = attrs.field(default=(), converter=_tuple)

    @classmethod
    def parse(cls, spec: str | Platform) -> Platform:
        """Parse ``os[/arch[/variant]]`` (or just an arch); the result is normalised."""
        if isinstance(spec, Platform):
            return spec.normalized()
        if not isinstance(spec, str) or not spec.strip():
            raise errors.InvalidArgument(f"invalid platform {spec!r}: expected 'os/arch[/variant]'")
        parts = spec.strip().split("/")
        if len(parts) > 3 or not all(_COMPONENT.match(p) for p in parts):
            raise errors.InvalidArgument(
                f"invalid platform {spec!r}: expected 'os/arch[/variant]', e.g. 'linux/arm64/v8'"
            )
        if len(parts) == 1:
            known_os = {"linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "macos"}
            if parts[0].lower() in known_os:
                p = cls(os=parts[0], architecture=_host_arch()[0], variant=_host_arch()[1])
            else:
                p = cls(os="linux", architecture=parts[0])
        elif len(parts) == 2:
            p = cls(os=parts[0], architecture=parts[1])
        else:
            p = cls(os=parts[0], architecture=parts[1], variant=parts[2])
        return p.normalized()

    @classmethod
    def host(cls) -> Platform:
        """The platform of this machine (Linux assumed for a store of Linux images)."""
        arch, variant = _host_arch()
        os_name = "linux" if sys.platform.startswith("linux") else sys.platform
        return cls(os=os_name, architecture=arch, variant=variant).normalized()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Platform:
        """From OCI JSON (``os``, ``architecture``, ``variant``, ``os.version``, ``os.features``)."""
        if not isinstance(data, Mapping):
            raise errors.InvalidArgument("platform must be a JSON object")
        os_name = data.get("os", "")
        arch = data.get("architecture", "")
        if not isinstance(os_name, str) or not isinstance(arch, str):
            raise errors.InvalidArgument("platform os/architecture must be strings")
        features = data.get("os.features") or ()
        if not isinstance(features, list | tuple) or not all(isinstance(f, str) for f in features):
            raise errors.InvalidArgument("platform os.features must be a list of strings")
        return cls(
            os=os_name,
            architecture=arch,
            variant=data.get("variant") or None,
            os_version=data.get("os.version") or None,
            os_features=tuple(features),
        )

    def to_json(self) -> dict[str, Any]:
        """To OCI JSON (``os.version`` and ``os.features`` keys only when set)."""
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    def normalized(self) -> Platform:
        """containerd's ``platforms.Normalize``."""
        os_name = (self.os or sys.platform).lower()
        if os_name == "macos":
            os_name = "darwin"
        arch, variant = normalize_arch(self.architecture, self.variant or "")
        return Platform(
            os=os_name,
            architecture=arch,
            variant=variant or None,
            os_version=self.os_version,
            os_features=tuple(sorted(set(self.os_features))),
        )

    def __str__(self) -> str:
        parts = [self.os or "unknown", self.architecture or "unknown"]
        if self.variant:
            parts.append(self.variant)
        return "/".join(parts)


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's architecture/variant normalisation."""
    arch = arch.lower()
    variant = variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            return "arm64", ""
        if variant in ("9", "9.0", "v9.0"):
            return "arm64", "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
        return "arm", variant
    return arch, variant


def _host_arch() -> tuple[str, str | None]:
    arch, variant = normalize_arch(_pyplatform.machine() or "amd64", "")
    return arch, variant or None


# --------------------------------------------------------------------------------------------
# Matching (containerd's ``platforms.MatchComparer`` family)
# --------------------------------------------------------------------------------------------

PlatformLike = Platform | str


@runtime_checkable
class PlatformMatcher(Protocol):
    """Decides which platforms an operation accepts, and which of two it prefers.

    ``less(a, b)`` is true when ``a`` should be chosen before ``b``; it is a strict weak
    ordering suitable for a stable sort (see :func:`preference_key`).
    """

    def match(self, platform: Platform) -> bool:
        """Whether ``platform`` is acceptable."""
        ...

    def less(self, a: Platform, b: Platform) -> bool:
        """Whether ``a`` is preferred over ``b``."""
        ...


PlatformArg = PlatformLike | PlatformMatcher | None
"""What a ``platform=`` argument takes: a Platform, a string such as ``"linux/arm64/v8"``, a
matcher, or None for the host platform."""


def _as_platform(value: PlatformLike) -> Platform:
    return Platform.parse(value) if isinstance(value, str) else value.normalized()


def _windows_build(version: str | None) -> tuple[int, int, int] | None:
    """``major.minor.build`` of a Windows ``os.version`` (``None`` when absent or malformed)."""
    parts = (version or "").split(".")
    if len(parts) < 3:
        return None
    try:
        major, minor, build = int(parts[0]), int(parts[1]), int(parts[2])
    except ValueError:
        return None
    return major, minor, build


# Windows LTSC builds with a stable ABI: a host of one runs containers of the previous one.
_LTSC_2022 = 20348
_WINDOWS_LTSC = (_LTSC_2022, 26100)


def _windows_version_compatible(host: str | None, image: str | None) -> bool:
    """containerd's Windows host/container ``os.version`` compatibility rule."""
    h = _windows_build(host)
    if h is None or h == (0, 0, 0) or not image:
        return True
    c = _windows_build(image) or (0, 0, 0)
    if h[:2] != c[:2]:
        return False
    if h[2] < _LTSC_2022:
        return h[2] == c[2]
    floor = _LTSC_2022
    for i in range(len(_WINDOWS_LTSC) - 1, -1, -1):
        if h[2] >= _WINDOWS_LTSC[i]:
            floor = _WINDOWS_LTSC[max(i - 1, 0)]
            break
    return floor <= c[2] <= h[2]


def _normalized(p: Platform) -> Platform:
    return p.normalized()


@attrs.frozen
class _ExactMatcher:
    """One platform after normalisation; the candidate's OS features must be a subset."""

    platform: Platform = attrs.field(converter=_normalized)

    def match(self, platform: Platform) -> bool:
        want = self.platform
        got = platform.normalized()
        if (got.os, got.architecture, got.variant) != (want.os, want.architecture, want.variant):
            return False
        features = set(got.os_features)
        if want.os == "windows":
            if not _windows_version_compatible(want.os_version, platform.os_version):
                return False
            features.discard("win32k")  # older Windows images were matched without it
        return features <= set(want.os_features)

    def less(self, a: Platform, b: Platform) -> bool:
        return self.match(a) and not self.match(b)


def _prefer_features(a: Platform, b: Platform) -> bool | None:
    """With both matching: more OS features first; ``None`` when that does not decide."""
    if len(a.os_features) != len(b.os_features):
        return len(a.os_features) > len(b.os_features)
    return None


def _strip_features(p: Platform) -> Platform:
    return attrs.evolve(p, os_features=())


@attrs.frozen
class _OrderedMatcher:
    """Matches any of its matchers and prefers platforms matched by earlier ones."""

    matchers: tuple[PlatformMatcher, ...]

    def match(self, platform: Platform) -> bool:
        return any(m.match(platform) for m in self.matchers)

    def less(self, a: Platform, b: Platform) -> bool:
        for m in self.matchers:
            am, bm = m.match(a), m.match(b)
            if am and not bm:
                return True
            if am and bm:
                return bool(_prefer_features(a, b))
            if bm:
                return False
        if a.os_features or b.os_features:
            return self.less(_strip_features(a), _strip_features(b))
        return False

    def __str__(self) -> str:
        return "ordered(" + ", ".join(_describe(m) for m in self.matchers) + ")"


@attrs.frozen
class _AnyMatcher:
    """Matches any of its matchers, with no preference among them."""

    matchers: tuple[PlatformMatcher, ...]

    def match(self, platform: Platform) -> bool:
        return any(m.match(platform) for m in self.matchers)

    def less(self, a: Platform, b: Platform) -> bool:
        am, bm = self.match(a), self.match(b)
        if am and bm:
            return bool(_prefer_features(a, b))
        if not am and not bm and (a.os_features or b.os_features):
            return self.less(_strip_features(a), _strip_features(b))
        return am and not bm

    def __str__(self) -> str:
        return "any(" + ", ".join(_describe(m) for m in self.matchers) + ")"


@attrs.frozen
class _AllMatcher:
    """Matches every platform and prefers none."""

    def match(self, platform: Platform) -> bool:
        return True

    def less(self, a: Platform, b: Platform) -> bool:
        return False

    def __str__(self) -> str:
        return "all platforms"


def _describe(m: PlatformMatcher) -> str:
    return str(m.platform) if isinstance(m, _ExactMatcher) else str(m)


def _arm64_versions(variant: str) -> list[str] | None:
    """arm64 variants accepted by ``variant`` (best first), or ``None`` if unknown."""
    major, _, minor_s = (variant or "v8").removeprefix("v").partition(".")
    if major not in ("8", "9") or (minor_s and not minor_s.isdigit()):
        return None
    minor = int(minor_s or "0")
    if minor > 9 or (major == "9" and minor > 7):
        return None
    ranges = [(8, minor)] if major == "8" else [(9, minor), (8, min(minor + 5, 9))]
    out: list[str] = []
    for maj, top in ranges:
        out.extend(f"v{maj}.{m}" if m else f"v{maj}" for m in range(top, -1, -1))
    return out


def _platform_vector(p: Platform) -> list[Platform]:
    """The platforms ``only(p)`` accepts, best first (containerd's ``platformVector``)."""
    variant = p.variant or ""
    number = variant.removeprefix("v")
    if p.architecture == "amd64":
        vector = [p]
        if number.isdigit() and int(number) > 1:
            vector += [attrs.evolve(p, variant=f"v{n}") for n in range(int(number) - 1, 0, -1)]
        return [*vector, attrs.evolve(p, architecture="386", variant=None)]
    if p.architecture == "arm":
        vector = [p]
        if number.isdigit() and int(number) > 5:
            vector += [attrs.evolve(p, variant=f"v{n}") for n in range(int(number) - 1, 4, -1)]
        return vector
    if p.architecture == "arm64":
        versions = _arm64_versions(variant)
        if versions is None:
            return [p]  # an unknown arm64 variant accepts only itself
        arm = attrs.evolve(p, architecture="arm", variant="v8")
        return [attrs.evolve(p, variant=v) for v in versions] + _platform_vector(arm)
    return [p]


def only_strict(platform: PlatformLike) -> PlatformMatcher:
    """Exactly ``platform`` after normalisation (containerd's ``OnlyStrict``).

    An amd64 matcher does not take 386, arm/v7 does not take arm/v6. A candidate's OS
    features must be a subset of ``platform``'s.
    """
    return _OrderedMatcher((_ExactMatcher(_as_platform(platform)),))


def only(platform: PlatformLike) -> PlatformMatcher:
    """``platform`` and what it can also run, best first (containerd's ``Only``).

    amd64/vN takes vN..v1 then 386; arm/vN takes vN..v5; arm64/v8.x takes v8.x..v8 then
    arm/v8..v5; arm64/v9.x takes v9.x..v9, v8.(x+5, at most 9)..v8, then arm/v8..v5.
    """
    return ordered(*_platform_vector(_as_platform(platform)))


def ordered(*platforms: PlatformLike) -> PlatformMatcher:
    """Any of ``platforms``, preferring earlier ones (containerd's ``Ordered``)."""
    return _OrderedMatcher(tuple(_ExactMatcher(_as_platform(p)) for p in platforms))


def any_of(*matchers: PlatformMatcher | PlatformLike) -> PlatformMatcher:
    """Any of ``matchers`` (platforms are matched strictly), with no order among them."""
    return _AnyMatcher(
        tuple(m if isinstance(m, PlatformMatcher) else _ExactMatcher(_as_platform(m)) for m in matchers)
    )


def all_platforms() -> PlatformMatcher:
    """Every platform, none preferred (containerd's ``platforms.All``)."""
    return _AllMatcher()


def matcher_for(platform: PlatformArg = None, strict: bool = True) -> PlatformMatcher:
    """The matcher an operation uses for its ``platform=`` argument.

    ``None`` means the host platform. ``strict`` selects :func:`only_strict` (the default:
    an amd64 host does not take a 386 image) over :func:`only`. A matcher is returned as is.
    """
    if isinstance(platform, PlatformMatcher):
        return platform
    target = Platform.host() if platform is None else platform
    return only_strict(target) if strict else only(target)


def preference_key(matcher: PlatformMatcher) -> Callable[[Platform], Any]:
    """A ``sorted`` key putting the platforms ``matcher`` prefers first (stable for ties)."""

    def compare(a: Platform, b: Platform) -> int:
        if matcher.less(a, b):
            return -1
        if matcher.less(b, a):
            return 1
        return 0

    return functools.cmp_to_key(compare)
