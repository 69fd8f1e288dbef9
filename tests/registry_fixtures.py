"""Shared pytest fixtures: real registries (CNCF distribution) on loopback, loaded with the corpus.

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["registry_fixtures"]``; then any
test may ask for:

* ``corpus`` -- the parsed ``corpus.json`` of the prebuilt corpus (expected digests, sizes);
* ``corpus_dir`` -- the read-only OCI layout holding that corpus;
* ``registry_plain`` / ``registry_tls`` / ``registry_basic`` / ``registry_token`` -- a
  ``Registry`` (session-scoped, started once, stopped at the end) serving every image of
  the corpus as ``<address>/debian:gzip`` and so on;
* ``registry_mirror`` -- a second registry configured as a pull-through cache of
  ``registry_plain`` (empty until something is pulled through it).

``Registry.client_options()`` returns the keyword arguments that ocistore's registry
options take (``plain_http``, ``ca_file``, ``credentials``), so a test can write
``Store(root, **reg.client_options())`` or ``RegistryOptions(**reg.client_options())``.

Every registry binds 127.0.0.1 only, on a free port picked in 5100-5199 (so parallel runs
and other suites do not collide). Tests using these fixtures should be marked
``@pytest.mark.registry``; the fixtures skip (with the reason) when the registry binary or
the fixture kit is missing, and fail loudly when a registry does not start.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

__all__ = [
    "CORPUS_DIR",
    "FIXTURES_DIR",
    "REGISTRY_BINARY",
    "Registry",
    "corpus",
    "corpus_dir",
    "find_free_port",
    "registry_basic",
    "registry_mirror",
    "registry_plain",
    "registry_tls",
    "registry_token",
    "start_registry",
    "stop_registry",
]

FIXTURES_DIR = Path(
    os.environ.get("OCISTORE_FIXTURES_DIR") or Path(__file__).resolve().parents[2] / "shared" / "fixtures"
)
CORPUS_DIR = FIXTURES_DIR / "corpus"
REGISTRY_SCRIPT = FIXTURES_DIR / "registry"
REGISTRY_BINARY = "/usr/bin/docker-registry"
PORT_RANGE = range(5100, 5200)

# First port tried per mode; the search walks up from there (token mode needs port+1 too).
_BASE_PORTS = {"plain": 5100, "tls": 5120, "basic": 5140, "token": 5160, "mirror": 5180}


@attrs.frozen
class Registry:
    """A running registry as described by its ``registry.env``."""

    address: str
    mode: str
    scheme: str
    dir: Path
    user: str = ""
    password: str = ""
    ca: str = ""
    hosts_dir: str = ""
    realm: str = ""

    @property
    def url(self) -> str:
        """``http[s]://127.0.0.1:PORT``."""
        return f"{self.scheme}://{self.address}"

    def ref(self, name: str) -> str:
        """``127.0.0.1:PORT/<name>`` (``name`` like ``debian:gzip``)."""
        return f"{self.address}/{name}"

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ocistore's registry options (``RegistryOptions``, ``Store``)."""
        opts: dict[str, Any] = {}
        if self.scheme == "http":
            opts["plain_http"] = True
        if self.ca:
            opts["ca_file"] = self.ca
        opts["credentials"] = {self.address: (self.user, self.password)} if self.user else {}
        return opts


def _registry_available() -> str | None:
    """Why registry tests cannot run here, or ``None``."""
    if not os.path.exists(REGISTRY_BINARY):
        return f"{REGISTRY_BINARY} is missing (apt-get install docker-registry)"
    if not REGISTRY_SCRIPT.exists():
        return f"fixture kit not found at {FIXTURES_DIR} (set OCISTORE_FIXTURES_DIR)"
    if not (CORPUS_DIR / "corpus.json").exists():
        return f"prebuilt corpus not found at {CORPUS_DIR}"
    return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def find_free_port(start: int, need: int = 1) -> int:
    """The first port >= ``start`` in 5100-5199 such that ``need`` consecutive ports are free."""
    for port in range(start, PORT_RANGE.stop - need + 1):
        if all(_port_free(port + i) for i in range(need)):
            return port
    for port in range(PORT_RANGE.start, start):
        if all(_port_free(port + i) for i in range(need)):
            return port
    raise RuntimeError("no free port in 127.0.0.1:5100-5199")


def _parse_env(path: Path) -> Registry:
    env = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return Registry(
        address=env["address"],
        mode=env["mode"],
        scheme=env["scheme"],
        dir=Path(env["dir"]),
        user=env.get("user", ""),
        password=env.get("password", ""),
        ca=env.get("ca", ""),
        hosts_dir=env.get("hosts_dir", ""),
        realm=env.get("realm", ""),
    )


def start_registry(mode: str, directory: Path, load: bool = True, attempts: int = 5) -> Registry:
    """Start a registry of ``mode`` with its state in ``directory``; load the corpus into it."""
    need = 2 if mode == "token" else 1
    port = _BASE_PORTS[mode]
    last = ""
    for _ in range(attempts):
        port = find_free_port(port, need)
        proc = subprocess.run(
            [str(REGISTRY_SCRIPT), "start", "--mode", mode, "--port", str(port), "--dir", str(directory)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0:
            break
        last = proc.stderr.strip() or proc.stdout.strip()
        if "in use" not in last:
            raise RuntimeError(f"registry start --mode {mode} failed: {last}")
        port += need  # lost a race for the port: try the next one
    else:
        raise RuntimeError(f"registry start --mode {mode}: no port found ({last})")
    reg = _parse_env(directory / "registry.env")
    if load:
        subprocess.run(
            [str(REGISTRY_SCRIPT), "load", "--dir", str(directory), "--from", str(CORPUS_DIR)],
            capture_output=True,
            text=True,
            check=True,
        )
    return reg


def stop_registry(directory: Path) -> None:
    """Stop the registry (and token server) whose state is in ``directory``."""
    subprocess.run([str(REGISTRY_SCRIPT), "stop", "--dir", str(directory)], capture_output=True, check=False)


def _registry_fixture(mode: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    why = _registry_available()
    if why:
        pytest.skip(why)
    directory = tmp_path_factory.mktemp(f"registry-{mode}")
    try:
        yield start_registry(mode, directory)
    finally:
        stop_registry(directory)


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The prebuilt corpus (an OCI image layout); read-only, copy before changing it."""
    if not (CORPUS_DIR / "index.json").exists():
        pytest.skip(f"prebuilt corpus not found at {CORPUS_DIR}")
    return CORPUS_DIR


@pytest.fixture(scope="session")
def corpus(corpus_dir: Path) -> dict[str, Any]:
    """``corpus.json``: expected digests, sizes and layer facts of every corpus image."""
    data: dict[str, Any] = json.loads((corpus_dir / "corpus.json").read_text())
    return data


@pytest.fixture(scope="session")
def registry_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Plain HTTP registry, no auth, corpus loaded."""
    yield from _registry_fixture("plain", tmp_path_factory)


@pytest.fixture(scope="session")
def registry_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """HTTPS registry with a private CA (``Registry.ca``), corpus loaded."""
    yield from _registry_fixture("tls", tmp_path_factory)


@pytest.fixture(scope="session")
def registry_basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """HTTP registry with htpasswd basic auth (``Registry.user`` / ``.password``), corpus loaded."""
    yield from _registry_fixture("basic", tmp_path_factory)


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """HTTP registry with Bearer token auth (token server at ``Registry.realm``), corpus loaded."""
    yield from _registry_fixture("token", tmp_path_factory)


def _wait_for_v2(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            raise RuntimeError(f"mirror registry exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"mirror registry did not answer at {url}: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def registry_mirror(registry_plain: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A pull-through cache (``proxy: remoteurl:``) of ``registry_plain``, over plain HTTP."""
    directory = tmp_path_factory.mktemp("registry-mirror")
    port = find_free_port(_BASE_PORTS["mirror"])
    config = directory / "config.yml"
    config.write_text(
        f"""version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {directory / "data"}
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: 127.0.0.1:{port}
  secret: {os.urandom(16).hex()}
proxy:
  remoteurl: {registry_plain.url}
"""
    )
    log = directory / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [shutil.which("docker-registry") or REGISTRY_BINARY, "serve", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_v2(f"http://127.0.0.1:{port}/v2/", proc, log)
        yield Registry(address=f"127.0.0.1:{port}", mode="mirror", scheme="http", dir=directory)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
