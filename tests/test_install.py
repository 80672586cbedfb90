"""The extras mean what they say, checked in fresh virtual environments built from the project's own files: a base
install runs the CLI and names the extra a command lacks; `[serve,cpu]` serves an exported store without torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.server.conftest import server_process

pytestmark = pytest.mark.slow


def _sources(dst: Path) -> Path:
    """A copy of the tracked files (and new ones not ignored), so building never writes into the working tree."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst / rel)
    return dst


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> tuple[Path, Path]:
    """(bin folder, source copy) of a venv holding gptzoo with no extras at all."""
    root = tmp_path_factory.mktemp("install")
    src = _sources(root / "src")
    subprocess.run([sys.executable, "-m", "venv", root / "venv"], check=True)
    bin_ = root / "venv" / "bin"
    r = subprocess.run([bin_ / "pip", "install", "--quiet", str(src)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Deprecat" not in r.stderr, r.stderr  # the project's own metadata warns about nothing
    return bin_, src


def _cli(bin_: Path, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([bin_ / "gptzoo", *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_base_install_runs_the_cli_and_names_missing_extras(venv, tmp_path):
    bin_, _ = venv
    assert subprocess.run([bin_ / "python", "-c", "import torch"], capture_output=True).returncode != 0
    assert "Usage: gptzoo" in _cli(bin_, "--help").stdout
    r = _cli(bin_, "zoo", "list", "--store", tmp_path / "store")
    assert r.returncode == 0 and "is empty" in r.stdout, r.stderr
    r = _cli(bin_, "data", "prepare", "shakespeare_char", "--data-dir", tmp_path / "data")
    assert r.returncode == 0 and "prepared shakespeare_char" in r.stdout, r.stderr
    for cmd, extra in [(["train", "--layers", "1"], "train"), (["export", "--layers", "1"], "export,cpu"),
                       (["serve", "--store", tmp_path], "serve,cpu"), (["loadtest", "-m", "4l"], "serve")]:
        r = _cli(bin_, *cmd, "--help")
        assert r.returncode == 0, r.stderr  # every command's help works without its extra
        r = _cli(bin_, *cmd)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"pip install 'gptzoo[{extra}]'" in r.stderr.strip().splitlines()[-1], r.stderr


def test_serve_and_cpu_extras_serve_an_exported_store_without_torch(venv, exported_store, tmp_path):
    bin_, src = venv
    r = subprocess.run([bin_ / "pip", "install", "--quiet", f"{src}[serve,cpu]"], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert subprocess.run([bin_ / "python", "-c", "import torch"], capture_output=True).returncode != 0
    # generous start-up: its speed is not what this test checks
    with server_process(tmp_path, exported_store, cli=[bin_ / "gptzoo"], startup_s=180) as (proc, base, log):
        r = httpx.post(f"{base}/v1/completions", json={"model": "2l", "prompt": "ROMEO:", "max_tokens": 5},
                       timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5, r.text
        proc.terminate()
        proc.wait(timeout=60)
    assert "torch" not in log.read_text()
