"""Shared fixtures: an isolated GPTZOO_HOME per test, the local data copy, and one tiny trained variant per session.

Tiny means 2 layers, width 32: it trains in about a second, so tests exercise the real model, never a mock."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GPTZOO_DATA_SOURCE") or REPO.parent / "shared" / "data")

# Hyper-parameters of the tiny variant every test trains from.
TINY = dict(n_embd=32, n_head=2, block_size=32, batch_size=8, max_iters=30, eval_interval=10, eval_iters=4,
            warmup_iters=5)


def pytest_configure(config):
    if not (SHARED_DATA / "tinyshakespeare.txt").is_file():
        raise pytest.UsageError(f"no local data copy at {SHARED_DATA}; set GPTZOO_DATA_SOURCE to ../shared/data")
    os.environ["GPTZOO_DATA_SOURCE"] = str(SHARED_DATA)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Every test gets its own GPTZOO_HOME and a fixed seed; nothing leaks into ~/.gptzoo."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("GPTZOO_HOME", str(home))
    monkeypatch.delenv("GPTZOO_STORE", raising=False)
    monkeypatch.delenv("GPTZOO_DATA", raising=False)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """tiny-Shakespeare prepared once per session (char level)."""
    from gptzoo.trainer.data import prepare

    os.environ["GPTZOO_DATA_SOURCE"] = str(SHARED_DATA)
    d = tmp_path_factory.mktemp("data")
    prepare("shakespeare_char", d)
    return d


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory, data_dir) -> Path:
    """A store holding one tiny trained variant, `shakespeare-char-2l`. Tests that modify it must copy it."""
    from gptzoo.trainer.loop import train
    from gptzoo.zoo.store import Store

    root = tmp_path_factory.mktemp("store")
    train(2, "cpu", dict(TINY), Store(root), data_dir, show_progress=False)
    return root


@pytest.fixture
def store_copy(tmp_path, trained_store) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(trained_store, dst)
    return dst


@pytest.fixture(scope="session")
def exported_store(tmp_path_factory, trained_store) -> Path:
    """A copy of `trained_store` whose variant is exported to ONNX (model.onnx, parity checked). Read-only for tests:
    copy it (like `store_copy`) before changing anything."""
    from gptzoo.exports.onnx_export import export_variant
    from gptzoo.zoo.store import Store

    root = tmp_path_factory.mktemp("exported") / "store"
    shutil.copytree(trained_store, root)
    export_variant(Store(root).load("shakespeare-char-2l"))
    return root


@pytest.fixture(scope="session")
def drafted_store(tmp_path_factory, data_dir) -> Path:
    """A store of two tiny variants trained ten times longer than `trained_store`'s (its greedy text is one
    character over and over; theirs varies), both exported: `shakespeare-char-2l` and `shakespeare-char-1l`, a
    shallower variant of the same tokenizer and dataset to draft for it. Read-only for tests: copy it first."""
    from gptzoo.exports.onnx_export import export_variant
    from gptzoo.trainer.loop import train
    from gptzoo.zoo.store import Store

    root = tmp_path_factory.mktemp("drafted") / "store"
    for layers in (2, 1):
        train(layers, "cpu", TINY | {"max_iters": 300, "eval_interval": 100}, Store(root), data_dir,
              show_progress=False)
        export_variant(Store(root).load(f"shakespeare-char-{layers}l"))
    return root


# The tiny oss variant (docs/oss.md): 2 query heads on 1 kv head, window 8 of block 32.
OSS_TINY = TINY | dict(arch="oss", kv_heads=1, window=8)


@pytest.fixture(scope="session")
def families_store(tmp_path_factory, drafted_store, data_dir) -> Path:
    """Both block families of one dataset, all exported and trained as long as `drafted_store`'s (varied greedy
    text): its gpt2 `shakespeare-char-2l` and `-1l`, and `shakespeare-char-2l-oss` and `-1l-oss`. Read-only for
    tests: copy it first."""
    from gptzoo.exports.onnx_export import export_variant
    from gptzoo.trainer.loop import train
    from gptzoo.zoo.store import Store

    root = tmp_path_factory.mktemp("families") / "store"
    shutil.copytree(drafted_store, root)
    for layers in (2, 1):
        vid = f"shakespeare-char-{layers}l-oss"
        train(layers, "cpu", OSS_TINY | {"max_iters": 300, "eval_interval": 100}, Store(root), data_dir, name=vid,
              show_progress=False)
        export_variant(Store(root).load(vid))
    return root
