"""The Docker image, built and run: the serving image (no torch in it) answers /readyz and a completion over an
exported store mounted at /store. Needs a Docker engine (skips with the reason otherwise).

Docker Hub may be out of reach (the project's CI reaches only package registries), so the base image is made by
scripts/docker-base-image.sh (debootstrap + docker import) and passed as the Dockerfile's PYTHON_IMAGE; set
GPTZOO_TEST_PYTHON_IMAGE (e.g. python:3.11-slim) to build on another base instead. No verdict depends on speed:
the deadlines below only stop a hung step."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import httpx
import pytest

from tests.deploy.conftest import REPO
from tests.server.conftest import free_port

pytestmark = pytest.mark.slow

IMAGE = "gptzoo-test:cpu"
BASE_IMAGE = "gptzoo-base:bookworm"  # made by BASE_SCRIPT, kept as a cache
BASE_SCRIPT = REPO / "scripts" / "docker-base-image.sh"
# Generous bounds for steps that normally take seconds to a few minutes (a hung network, a wedged engine).
BASE_TIMEOUT = 1800
BUILD_TIMEOUT = 1800
READY_TIMEOUT = 600


def sh(*cmd, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@pytest.fixture(scope="session")
def docker() -> str:
    """The docker client's path, once an engine answers (skips otherwise; session-scoped and asked for first, so
    that a skip costs no slow fixture)."""
    path = shutil.which("docker")
    if not path:
        pytest.skip("docker is not installed (Debian: apt-get install -y docker.io, then start dockerd)")
    try:
        r = sh(path, "info", "--format", "{{.ServerVersion}}", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.skip("`docker info` did not answer within 60 s: the Docker engine is not usable")
    if r.returncode != 0 or not r.stdout.strip():
        why = tail(r.stderr or r.stdout, 3) or f"exit {r.returncode}"
        pytest.skip(f"no Docker engine can run here (`docker info` failed: {why})")
    return path


@pytest.fixture(scope="session")
def base_image(docker) -> str:
    if given := os.environ.get("GPTZOO_TEST_PYTHON_IMAGE"):
        return given
    have = sh(docker, "image", "inspect", BASE_IMAGE).returncode == 0
    if not have and (os.geteuid() != 0 or not shutil.which("debootstrap")):
        pytest.skip(f"making the base image {BASE_IMAGE} without Docker Hub needs root and debootstrap (Debian: "
                    "apt-get install -y debootstrap); or set GPTZOO_TEST_PYTHON_IMAGE=python:3.11-slim")
    r = sh(BASE_SCRIPT, BASE_IMAGE, timeout=BASE_TIMEOUT)  # does nothing when the image exists
    assert r.returncode == 0, f"{BASE_SCRIPT.name} failed:\n{tail(r.stdout + r.stderr)}"
    return BASE_IMAGE


@pytest.fixture(scope="session")
def image(docker, base_image) -> str:
    """The CPU image built from the repository's Dockerfile, as a user would (host network: the build reaches PyPI
    the way the host does)."""
    r = sh(docker, "build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={base_image}", "-t", IMAGE, REPO,
           timeout=BUILD_TIMEOUT)
    assert r.returncode == 0, f"docker build failed:\n{tail(r.stdout + r.stderr)}"
    return IMAGE


def test_the_serving_image_has_no_torch_and_runs_the_cli(docker, image):
    r = sh(docker, "run", "--rm", "--entrypoint", "python", image, "-c", "import torch")
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr, r.stdout + r.stderr
    r = sh(docker, "run", "--rm", "--entrypoint", "python", image, "-c", "import onnxruntime, gptzoo.server.app")
    assert r.returncode == 0, r.stdout + r.stderr
    r = sh(docker, "run", "--rm", image, "--help")  # the entrypoint is `gptzoo serve`
    assert r.returncode == 0 and "--store" in r.stdout, r.stdout + r.stderr


def test_the_container_serves_an_exported_store(docker, image, exported_store, tmp_path):
    # The image runs as uid 10001: give it a world-readable copy of the store, mounted read-only (serving never
    # writes to the store).
    store = tmp_path / "store"
    shutil.copytree(exported_store, store)
    for path in [store, *store.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    port = free_port()
    name = f"gptzoo-test-{uuid.uuid4().hex[:12]}"
    base = f"http://127.0.0.1:{port}"
    r = sh(docker, "run", "-d", "--name", name, "--network", "host", "-v", f"{store}:/store:ro", image,
           "--port", port, "--threads", 1)
    try:
        assert r.returncode == 0, f"docker run failed:\n{r.stdout + r.stderr}"

        def logs() -> str:
            out = sh(docker, "logs", "--tail", "40", name)
            return tail(out.stdout + out.stderr)

        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            state = sh(docker, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name).stdout.strip()
            assert state.startswith("running"), f"the container stopped ({state}):\n{logs()}"
            try:
                ready = httpx.get(f"{base}/readyz", timeout=10)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"/readyz not 200 after {READY_TIMEOUT} s:\n{logs()}"
            time.sleep(0.5)
        assert [(m["id"], m["ready"]) for m in ready.json()["models"]] == [("shakespeare-char-2l", True)], ready.text

        r = httpx.post(f"{base}/v1/completions", json={"model": "2l", "prompt": "ROMEO:", "max_tokens": 5},
                       timeout=120)
        assert r.status_code == 200, f"{r.status_code} {r.text}\n{logs()}"
        body = r.json()
        assert body["object"] == "text_completion" and body["model"] == "shakespeare-char-2l", body
        assert body["usage"]["completion_tokens"] == 5 and len(body["choices"][0]["text"]) == 5, body
    finally:
        sh(docker, "rm", "--force", "--volumes", name)
