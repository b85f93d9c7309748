"""A real container engine for the tests that need one (Docker, or Podman's Docker-compatible API).

`.ci/engine start` sets one up and prints the variables read here; `eval "$(.ci/engine start)"` does the same
on a developer's machine (root, Debian). Without them these fixtures skip, saying why; with
SHEPHERD_TEST_ENGINE_REQUIRED set (CI exports it once the engine ran a container) they fail instead, so a
broken engine cannot pass as a machine without one.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import pytest

HOST_VAR = "SHEPHERD_TEST_DOCKER_HOST"
IMAGE_VAR = "SHEPHERD_TEST_ENGINE_IMAGE"
REQUIRED_VAR = "SHEPHERD_TEST_ENGINE_REQUIRED"
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Engine:
    docker_host: str  # unix:///path or tcp://host:port, as DOCKER_HOST takes it
    image: str  # an image the engine holds, with python3 and git, whose uid 1000 owns /workspace


class EngineUnavailable(Exception):
    """Why no engine can be used here."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=PROBE_TIMEOUT_S)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(PROBE_TIMEOUT_S)
        self.sock.connect(self.path)


def _connection(docker_host: str) -> http.client.HTTPConnection:
    url = urlsplit(docker_host)
    if url.scheme == "unix":
        return _UnixConnection(url.path)
    if url.scheme in ("tcp", "http") and url.hostname:
        return http.client.HTTPConnection(url.hostname, url.port or 2375, timeout=PROBE_TIMEOUT_S)
    raise EngineUnavailable(f"{HOST_VAR}={docker_host!r}: expected unix:///path or tcp://host:port")


def _get(docker_host: str, path: str) -> tuple[int, bytes]:
    conn = _connection(docker_host)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except OSError as exc:
        raise EngineUnavailable(f"no engine answers at {docker_host}: {exc}") from exc
    finally:
        conn.close()


def find_engine() -> Engine:
    """The engine the environment names, once it answered and holds the image; else EngineUnavailable."""
    docker_host, image = os.environ.get(HOST_VAR), os.environ.get(IMAGE_VAR)
    if not docker_host or not image:
        raise EngineUnavailable(f'{HOST_VAR} and {IMAGE_VAR} unset: `eval "$(.ci/engine start)"` sets up Podman (root)')
    status, body = _get(docker_host, "/_ping")
    if status != 200:
        raise EngineUnavailable(f"{docker_host}/_ping answered {status}: {body[:200]!r}")
    status, body = _get(docker_host, f"/images/{quote(image, safe='')}/json")
    if status != 200:
        raise EngineUnavailable(f"the engine at {docker_host} has no image {image} ({status}: {body[:200]!r})")
    if not json.loads(body).get("Id"):
        raise EngineUnavailable(f"the engine at {docker_host} describes {image} without an id")
    return Engine(docker_host=docker_host, image=image)


def require_engine() -> Engine:
    """The engine, or the test skips (fails where one was set up for the run)."""
    try:
        return find_engine()
    except EngineUnavailable as exc:
        if os.environ.get(REQUIRED_VAR):
            pytest.fail(f"a real engine was set up for this run ({REQUIRED_VAR}) but cannot be used: {exc}")
        pytest.skip(f"no container engine: {exc}")


@pytest.fixture(scope="session")
def real_engine() -> Engine:
    return require_engine()


@pytest.fixture(scope="session")
def real_docker_host(real_engine: Engine) -> str:
    """DOCKER_HOST of a real engine (its image: the `real_engine` fixture)."""
    return real_engine.docker_host
