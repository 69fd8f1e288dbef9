"""Platforms (``os/arch/variant``): parsing, normalisation and matching as containerd does."""

from __future__ import annotations

import platform as _pyplatform
import sys
from collections.abc import Mapping
from typing import Any

import attrs

from ocistore import errors

__all__ = ["Platform", "normalize_arch"]


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
        if len(parts) > 3 or any(not p or not p.replace("_", "").replace("-", "").replace(".", "").isalnum() for p in parts):
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
