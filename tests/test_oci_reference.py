"""Image reference parsing and Docker normalisation."""

from __future__ import annotations

import pytest

from ocistore import errors
from ocistore.oci import Reference, parse_reference, registry_host

D256 = "sha256:" + "a" * 64
D512 = "sha512:" + "b" * 128


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("user/app", "docker.io/user/app:latest"),
        ("user/app:v1", "docker.io/user/app:v1"),
        ("docker.io/nginx", "docker.io/library/nginx:latest"),
        ("docker.io/library/nginx:latest", "docker.io/library/nginx:latest"),
        ("index.docker.io/nginx", "docker.io/library/nginx:latest"),
        ("index.docker.io/user/app:x", "docker.io/user/app:x"),
        ("ghcr.io/o/r:1", "ghcr.io/o/r:1"),
        ("quay.io/a/b/c/d", "quay.io/a/b/c/d:latest"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
        (f"localhost:5000/a/b@{D256}", f"localhost:5000/a/b@{D256}"),
        ("127.0.0.1:5000/debian:gzip", "127.0.0.1:5000/debian:gzip"),
        (f"nginx@{D256}", f"docker.io/library/nginx@{D256}"),
        (f"nginx:1.25@{D256}", f"docker.io/library/nginx:1.25@{D256}"),
        (f"reg.example.com:443/x/y:t@{D512}", f"reg.example.com:443/x/y:t@{D512}"),
        ("[::1]:5000/app:1", "[::1]:5000/app:1"),
        ("Registry.Example.com/app", "Registry.Example.com/app:latest"),
        ("example/a__b-c.d_e", "docker.io/example/a__b-c.d_e:latest"),
        ("nginx:Latest_1.2-x", "docker.io/library/nginx:Latest_1.2-x"),
        ("localhost", "docker.io/library/localhost:latest"),
        ("localhost:5000", "docker.io/library/localhost:5000"),
    ],
)
def test_normalisation(ref: str, expected: str) -> None:
    parsed = parse_reference(ref)
    assert str(parsed) == expected
    assert str(parse_reference(str(parsed))) == expected  # idempotent


def test_fields_and_properties() -> None:
    r = parse_reference(f"localhost:5000/team/app:v2@{D256}")
    assert r == Reference(domain="localhost:5000", path="team/app", tag="v2", digest=D256)
    assert r.repository == "team/app"
    assert r.name == r.locator == "localhost:5000/team/app"
    assert r.object == D256  # the digest wins when both are given
    assert r.registry_host == "localhost:5000"

    n = parse_reference("nginx")
    assert (n.domain, n.path, n.tag, n.digest) == ("docker.io", "library/nginx", "latest", None)
    assert n.object == "latest"
    assert n.registry_host == "registry-1.docker.io"
    assert n.familiar_name == "nginx:latest"
    assert parse_reference("user/app:1").familiar_name == "user/app:1"
    assert parse_reference("ghcr.io/o/r:1").familiar_name == "ghcr.io/o/r:1"

    d = parse_reference(f"nginx@{D256}")
    assert d.tag is None
    assert d.object == D256


def test_registry_host() -> None:
    assert registry_host("docker.io") == "registry-1.docker.io"
    assert registry_host("index.docker.io") == "registry-1.docker.io"
    assert registry_host("ghcr.io") == "ghcr.io"
    assert registry_host("127.0.0.1:5000") == "127.0.0.1:5000"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "empty"),
        ("   ", "whitespace"),
        (" nginx", "whitespace"),
        ("https://registry.example.com/app", "scheme"),
        ("NGINX", "lowercase"),
        ("user/App", "lowercase"),
        ("docker.io/Library/nginx", "lowercase"),
        ("a" * 64, "image ID"),
        ("nginx@sha256:abc", "bad digest"),
        ("nginx@md5:" + "a" * 32, "bad digest"),
        ("nginx@sha256:" + "A" * 64, "bad digest"),
        ("nginx@", "bad digest"),
        ("nginx:", "bad tag"),
        ("nginx:-x", "bad tag"),
        ("nginx:.x", "bad tag"),
        ("nginx:" + "t" * 129, "bad tag"),
        ("nginx:a b", "bad tag"),
        ("user/app!", "bad repository name"),
        ("a//b", "bad repository name"),
        ("user/-app", "bad repository name"),
        ("user/app_", "bad repository name"),
        ("user/a___b", "bad repository name"),
        ("localhost/", "empty"),
        (":tag", "empty"),
        ("-bad.host/app", "bad registry host"),
        ("example.com/" + "a" * 256, "255"),
    ],
)
def test_invalid(ref: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message) as info:
        parse_reference(ref)
    assert repr(ref) in str(info.value)


def test_name_length_limit() -> None:
    path = "/".join(["a" * 50] * 5)  # 254 characters
    path += "b"
    assert len(path) == 255
    assert parse_reference(f"example.com/{path}").path == path
    with pytest.raises(errors.InvalidArgument):
        parse_reference(f"example.com/{path}e")


def test_not_a_string() -> None:
    with pytest.raises(errors.InvalidArgument, match="string"):
        parse_reference(42)  # type: ignore[arg-type]


def test_reference_is_hashable_value() -> None:
    assert parse_reference("nginx") == parse_reference("docker.io/library/nginx:latest")
    assert len({parse_reference("nginx"), parse_reference("index.docker.io/library/nginx")}) == 1
