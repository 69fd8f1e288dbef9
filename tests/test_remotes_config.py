"""Registry configuration without a network: hosts.toml, defaults, credentials, challenges."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from ocistore import errors
from ocistore.remotes import RegistryOptions, Timeout
from ocistore.remotes.auth import Challenge, parse_www_authenticate
from ocistore.remotes.credentials import CredentialSource, DockerConfig
from ocistore.remotes.hosts import configure_hosts, host_directory, is_localhost


@pytest.fixture(autouse=True)
def _no_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))


# -- defaults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref_host", "scheme", "host", "fallback", "verify"),
    [
        ("docker.io", "https", "registry-1.docker.io", False, True),
        ("ghcr.io", "https", "ghcr.io", False, True),
        ("example.com:5000", "https", "example.com:5000", False, True),
        ("127.0.0.1:5000", "https", "127.0.0.1:5000", True, False),
        ("localhost:5000", "https", "localhost:5000", True, False),
        ("[::1]:5000", "https", "[::1]:5000", True, False),
        ("localhost:80", "http", "localhost:80", False, True),
        ("localhost", "https", "localhost", False, True),
        ("127.0.0.1:443", "https", "127.0.0.1:443", False, True),
    ],
)
def test_default_hosts(ref_host: str, scheme: str, host: str, fallback: bool, verify: bool) -> None:
    (h,) = configure_hosts(ref_host, RegistryOptions())
    assert (h.scheme, h.host, h.path, h.http_fallback, h.tls.verify) == (scheme, host, "/v2", fallback, verify)
    assert h.ns == "" and h.can("push") and h.can("resolve")


def test_plain_http_and_ca_file_options(tmp_path: Path) -> None:
    (h,) = configure_hosts("registry.example:5000", RegistryOptions(plain_http=True))
    assert h.scheme == "http" and h.base_url == "http://registry.example:5000/v2"
    ca = tmp_path / "ca.pem"
    (h,) = configure_hosts("127.0.0.1:5000", RegistryOptions(ca_file=ca))
    assert h.tls.verify and h.tls.ca_files == (str(ca),)  # a given CA is used, not skipped
    (h,) = configure_hosts("example.com", RegistryOptions(skip_verify=True))
    assert not h.tls.verify


def test_is_localhost_and_host_directory() -> None:
    assert is_localhost("localhost:5000") and is_localhost("127.0.0.2") and is_localhost("[::1]:80")
    assert not is_localhost("example.com:5000") and not is_localhost("10.0.0.1")
    assert host_directory("127.0.0.1:5000") == "127.0.0.1_5000_"
    assert host_directory("docker.io") == "docker.io"


def test_options_are_values() -> None:
    opts = RegistryOptions(timeout=5)
    assert opts.timeout == Timeout(5.0, 5.0)
    with pytest.raises(AttributeError):
        opts.plain_http = True  # type: ignore[misc]


# -- hosts.toml ------------------------------------------------------------------------------------


def _write(root: Path, name: str, text: str) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "hosts.toml").write_text(text)
    return d


def test_hosts_toml_mirrors_in_order_then_server(tmp_path: Path) -> None:
    d = _write(
        tmp_path,
        "docker.io",
        """
server = "https://registry-1.docker.io"

[host."http://127.0.0.1:5181"]
  capabilities = ["pull", "resolve"]
  header = { X-Mirror = ["a", "b"] }

[host."https://mirror.example/some/prefix"]
  capabilities = ["pull"]
  ca = "certs/ca.pem"
  client = [["certs/c.pem", "certs/c.key"]]
  skip_verify = true

[host."https://flat.example/api"]
  override_path = true
""",
    )
    hosts = configure_hosts("docker.io", RegistryOptions(hosts_dir=tmp_path))
    assert [h.base_url for h in hosts] == [
        "http://127.0.0.1:5181/v2",
        "https://mirror.example/some/prefix/v2",
        "https://flat.example/api",
        "https://registry-1.docker.io/v2",
    ]
    m1, m2, flat, server = hosts
    assert m1.capabilities == {"pull", "resolve"} and not m1.can("push")
    assert m1.headers == (("X-Mirror", "a, b"),)
    assert m1.ns == m2.ns == flat.ns == "docker.io"
    assert server.ns == ""  # registry-1.docker.io serves docker.io: not a mirror
    assert m2.tls.ca_files == (str(d / "certs/ca.pem"),)
    assert (m2.tls.client_cert, m2.tls.client_key) == (str(d / "certs/c.pem"), str(d / "certs/c.key"))
    assert not m2.tls.verify
    assert server.can("push")


def test_hosts_toml_directory_lookup_order(tmp_path: Path) -> None:
    _write(tmp_path, "_default", 'server = "https://default.example"\n')
    assert configure_hosts("other.example", RegistryOptions(hosts_dir=tmp_path))[0].host == "default.example"
    _write(tmp_path, "reg.example:5000", 'server = "https://colon.example"\n')
    assert configure_hosts("reg.example:5000", RegistryOptions(hosts_dir=tmp_path))[0].host == "colon.example"
    _write(tmp_path, "reg.example_5000_", 'server = "https://underscore.example"\n')
    assert configure_hosts("reg.example:5000", RegistryOptions(hosts_dir=tmp_path))[0].host == "underscore.example"


def test_hosts_toml_without_server_uses_the_reference_host(tmp_path: Path) -> None:
    _write(tmp_path, "127.0.0.1:5000", '[host."http://127.0.0.1:6000"]\n')
    hosts = configure_hosts("127.0.0.1:5000", RegistryOptions(hosts_dir=tmp_path))
    assert [h.host for h in hosts] == ["127.0.0.1:6000", "127.0.0.1:5000"]
    assert hosts[0].scheme == "http" and hosts[0].ns == "127.0.0.1:5000"
    assert hosts[1].http_fallback  # loopback default still applies


def test_http_host_with_tls_settings_tries_tls_first(tmp_path: Path) -> None:
    _write(tmp_path, "r.example", 'server = "http://r.example:5000"\nca = "ca.pem"\n')
    (h,) = configure_hosts("r.example", RegistryOptions(hosts_dir=tmp_path))
    assert (h.scheme, h.http_fallback) == ("https", True)
    _write(tmp_path, "s.example", 'server = "http://s.example:80"\nca = "ca.pem"\n')
    (h,) = configure_hosts("s.example", RegistryOptions(hosts_dir=tmp_path))
    assert (h.scheme, h.http_fallback) == ("http", False)


@pytest.mark.parametrize(
    "text",
    [
        "server = [",  # not TOML
        "server = 5\n",
        '[host."https://m"]\n capabilities = ["pull", "teleport"]\n',
        '[host."ftp://m"]\n',
        '[host."https://m"]\n skip_verify = "yes"\n',
        '[host."https://m"]\n header = { X = 1 }\n',
    ],
)
def test_malformed_hosts_toml_is_invalid_argument(tmp_path: Path, text: str) -> None:
    _write(tmp_path, "bad.example", text)
    with pytest.raises(errors.InvalidArgument, match=r"hosts\.toml"):
        configure_hosts("bad.example", RegistryOptions(hosts_dir=tmp_path))


def test_docker_certs_d_files_without_hosts_toml(tmp_path: Path) -> None:
    d = tmp_path / "r.example:5000"
    d.mkdir()
    for name in ("ca.crt", "client.cert", "client.key"):
        (d / name).write_text("x")
    (h,) = configure_hosts("r.example:5000", RegistryOptions(hosts_dir=tmp_path))
    assert h.tls.ca_files == (str(d / "ca.crt"),)
    assert (h.tls.client_cert, h.tls.client_key) == (str(d / "client.cert"), str(d / "client.key"))


# -- challenges -------------------------------------------------------------------------------------


def test_parse_www_authenticate() -> None:
    got = parse_www_authenticate(
        [
            'Basic realm="Registry Realm"',
            'Bearer realm="https://auth.example/token",service="registry.example",'
            'scope="repository:a/b:pull,push" , error="insufficient_scope"',
        ]
    )
    assert got == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.example/token",
                "service": "registry.example",
                "scope": "repository:a/b:pull,push",
                "error": "insufficient_scope",
            },
        ),
        Challenge("basic", {"realm": "Registry Realm"}),
    ]
    assert parse_www_authenticate(['Basic realm="a", Bearer realm="b"'])[0].params == {"realm": "b"}
    assert parse_www_authenticate(['Digest realm="x", nonce="y"']) == []
    assert parse_www_authenticate(['Bearer realm="a \\"quoted\\" b"'])[0].params["realm"] == 'a "quoted" b'


# -- credentials -------------------------------------------------------------------------------------


def test_credentials_option_mapping_and_callable() -> None:
    src = CredentialSource({"r.example:5000": ("u", "p"), "docker.io": ("hub", "pw")})
    assert src.get("r.example:5000") == ("u", "p")
    assert src.get("r.example") is None
    assert src.get("registry-1.docker.io") == ("hub", "pw")
    assert CredentialSource(lambda host: ("x", host)).get("h") == ("x", "h")


def _docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: dict[str, object]) -> None:
    d = tmp_path / "dockercfg"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(data))
    monkeypatch.setenv("DOCKER_CONFIG", str(d))


def test_docker_config_auths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enc = base64.b64encode(b"alice:pa:ss").decode()
    _docker_config(
        tmp_path,
        monkeypatch,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:hubpw").decode()},
                "r.example:5000": {"auth": enc},
                "http://plain.example/v2/": {"username": "bob", "password": "pw"},
                "tok.example": {"identitytoken": "refresh-me"},
            }
        },
    )
    src = CredentialSource()
    assert src.get("r.example:5000") == ("alice", "pa:ss")
    assert src.get("registry-1.docker.io") == ("hub", "hubpw")
    assert src.get("docker.io") == ("hub", "hubpw")
    assert src.get("plain.example") == ("bob", "pw")
    assert src.get("tok.example") == ("", "refresh-me")
    assert src.get("unknown.example") is None


def test_missing_docker_config_is_anonymous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "missing"))
    assert CredentialSource().get("r.example") is None
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert DockerConfig.load().path == str(tmp_path / "home" / ".docker" / "config.json")


def test_malformed_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _docker_config(tmp_path, monkeypatch, {"auths": {"r.example": {"auth": "%%%"}}})
    with pytest.raises(errors.InvalidArgument, match="base64"):
        CredentialSource().get("r.example")


def _fake_helper(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / f"docker-credential-{name}"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)


def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    _fake_helper(
        bin_dir,
        "fake",
        '[ "$1" = get ] || exit 2\nread server\n'
        'case "$server" in\n'
        '  r.example) echo \'{"ServerURL":"r.example","Username":"helper-user","Secret":"s1"}\' ;;\n'
        '  https://index.docker.io/v1/) echo \'{"Username":"<token>","Secret":"idtok"}\' ;;\n'
        '  *) echo "credentials not found in native keychain"; exit 1 ;;\n'
        "esac\n",
    )
    _fake_helper(bin_dir, "broken", 'echo "boom" >&2; exit 3\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    _docker_config(
        tmp_path,
        monkeypatch,
        {
            "credHelpers": {
                "r.example": "fake",
                "docker.io": "fake",
                "bad.example": "broken",
                "gone.example": "absent",
            },
            "credsStore": "fake",
            "auths": {"other.example": {}},
        },
    )
    src = CredentialSource()
    assert src.get("r.example") == ("helper-user", "s1")
    assert src.get("registry-1.docker.io") == ("", "idtok")
    assert src.get("other.example") is None  # credsStore asked, it has nothing
    with pytest.raises(errors.Unavailable, match="boom"):
        src.get("bad.example")
    with pytest.raises(errors.NotFound, match="docker-credential-absent"):
        src.get("gone.example")
