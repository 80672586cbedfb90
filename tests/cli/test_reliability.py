"""Hostile but realistic inputs to the CLI and the trainer: names that try to leave the store, two trainers of one
variant, diverging training, oversized runs, broken cards, commands on a read-only store, odd checkpoints."""

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from gptzoo.trainer.loop import TrainError, train
from gptzoo.zoo.names import InvalidName
from gptzoo.zoo.store import CARD, TRAIN_LOG, Store, StoreError
from tests.cli.test_cli import TINY_FLAGS, assert_one_line_error, run
from tests.conftest import TINY

MODEL = "shakespeare-char-2l"


def _victim(folder):
    folder.mkdir(parents=True)
    (folder / "precious.txt").write_text("keep me")
    return folder


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_train_name_cannot_escape_the_store_even_with_overwrite(tmp_path, data_dir, kind):
    victim = _victim(tmp_path / "victim")
    name = str(victim) if kind == "absolute" else "../victim"
    r = run("train", "--layers", 1, "--max-iters", 1, "--name", name, "--overwrite", "--store", tmp_path / "store",
            "--data-dir", data_dir, "--quiet")
    assert_one_line_error(r, "invalid variant id", code=2)
    assert [p.name for p in victim.iterdir()] == ["precious.txt"]
    assert not (tmp_path / "store").exists()  # refused before anything was touched


def test_data_prepare_name_cannot_escape_the_data_folder(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("some text to prepare " * 20)
    r = run("data", "prepare", "text", "--source", src, "--name", "../../x", "--data-dir", tmp_path / "data" / "d")
    assert_one_line_error(r, "invalid dataset name", code=2)
    assert not (tmp_path / "data").exists() and not (tmp_path / "x").exists()


def test_text_dataset_name_from_a_file_stem_is_made_valid(tmp_path):
    src = tmp_path / "My Play (v2).txt"
    src.write_text("some text to prepare " * 20)
    r = run("data", "prepare", "text", "--source", src, "--data-dir", tmp_path / "data")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "data" / "my-play-v2" / "meta.json").is_file()


@pytest.mark.parametrize("cmd", [["export", "--model"], ["eval", "--model"], ["generate", "--prompt", "a", "--model"]])
def test_other_commands_refuse_a_path_as_model(store_copy, cmd):
    r = run(*cmd, "../../etc", "--store", store_copy)
    assert_one_line_error(r, "invalid variant id", code=2)


def test_overwrite_removes_only_a_folder_the_store_made(tmp_path, data_dir):
    store = Store(tmp_path / "store")
    victim = _victim(store.root / "my-notes")
    with pytest.raises(TrainError, match="not a gptzoo variant .*refusing to delete it"):
        train(1, "cpu", dict(TINY, max_iters=1), store, data_dir, name="my-notes", overwrite=True,
              show_progress=False)
    assert [p.name for p in victim.iterdir()] == ["precious.txt"]


def test_a_second_trainer_of_the_same_variant_exits_saying_who_holds_it(store_copy, data_dir):
    with Store(store_copy).lock(MODEL, "training"):
        r = run("train", "--layers", 2, "--preset", "cpu", *TINY_FLAGS, "--overwrite", "--store", store_copy,
                "--data-dir", data_dir, "--quiet")
    assert_one_line_error(r, f"variant {MODEL} is busy: pid {os.getpid()}")
    assert Store(store_copy).load(MODEL).card.iterations == 30  # the running one's folder is intact


LOCK_AND_WAIT = """
import sys
from gptzoo.zoo.store import Store
with Store(sys.argv[1]).lock("x-1l"):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.mark.slow
def test_a_killed_trainer_leaves_no_stale_lock(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", LOCK_AND_WAIT, str(tmp_path)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=f"busy: pid {p.pid} "), Store(tmp_path).lock("x-1l"):
            pass
    finally:
        p.kill()  # SIGKILL: no cleanup code runs
        p.wait(timeout=60)
    with Store(tmp_path).lock("x-1l"):  # the OS dropped the lock with the process
        pass


def test_diverging_training_stops_with_exit_1_and_keeps_a_valid_log(tmp_path, data_dir):
    r = run("train", "--layers", 2, "--preset", "cpu", *TINY_FLAGS, "--lr", "1e6", "--min-lr", "1e5", "--store",
            tmp_path, "--data-dir", data_dir, "--quiet")
    assert_one_line_error(r, "training diverged: the loss is nan")
    vdir = tmp_path / MODEL
    log = [json.loads(line) for line in (vdir / TRAIN_LOG).read_text().splitlines()]  # strict JSON: no bare NaN
    assert [rec["iter"] for rec in log] == [0]
    card = Store(tmp_path).load(MODEL).card  # the last good checkpoint (iter 0) and its card stay
    assert card.best_iter == 0 and card.val_loss == log[0]["val_loss"]


def test_a_huge_run_needs_yes(tmp_path, data_dir):
    r = run("train", "--layers", 1000, "--preset", "cpu", "--store", tmp_path, "--data-dir", data_dir, "--quiet")
    assert_one_line_error(r, "about 197M parameters")
    assert "--yes" in r.stderr and not any(tmp_path.iterdir())


def test_zoo_list_shows_a_broken_card_and_the_rest(store_copy):
    bad = store_copy / "bad-4l"
    bad.mkdir()
    (bad / CARD).write_text(json.dumps({"id": "bad-4l", "n_layer": "four"}))
    r = run("zoo", "list", "--store", store_copy)
    assert r.exit_code == 0, r.output
    assert MODEL in r.stdout and "bad-4l" in r.stdout and "broken" in r.stdout
    assert "bad-4l: broken: card.json is invalid: Expected `int`, got `str` - at `$.n_layer`" in r.stderr
    rows = json.loads(run("zoo", "list", "--json", "--store", store_copy).stdout)
    assert {row["id"]: row["broken"] is None for row in rows} == {MODEL: True, "bad-4l": False}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_export_on_a_read_only_store_fails_before_the_work(store_copy):
    (store_copy / MODEL).chmod(0o555)
    try:
        r = run("export", "--model", MODEL, "--store", store_copy)
    finally:
        (store_copy / MODEL).chmod(0o755)
    assert_one_line_error(r, "is not writable")
    assert "exporting" not in r.stderr


def test_export_checks_writability_first(store_copy, monkeypatch):
    """As root (CI) a chmod does not stop writes: make the probe fail the way a read-only mount does."""
    from pathlib import Path

    real = Path.write_bytes

    def read_only(self, data):
        if self.name == ".write-probe":
            raise OSError(30, "Read-only file system", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    r = run("export", "--model", MODEL, "--store", store_copy)
    assert_one_line_error(r, "Read-only file system")
    assert not (store_copy / MODEL / "model.onnx").exists()


def test_import_of_an_empty_file_is_one_line(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    r = run("import", "nanogpt", tmp_path / "empty.pt", "--store", tmp_path / "store")
    assert_one_line_error(r, "cannot read checkpoint")


def _nanogpt_ckpt(path, vocab_size=4):
    from gptzoo.zoo.model import GPT, GPTConfig

    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=vocab_size, bias=False)
    torch.save({"model": GPT(cfg).state_dict(), "model_args": cfg.to_dict(), "iter_num": 1, "best_val_loss": 3.0,
                "config": {"dataset": "Shakespeare Char!"}}, path)


def test_import_refuses_a_meta_pkl_with_repeated_characters(tmp_path):
    _nanogpt_ckpt(tmp_path / "ckpt.pt")
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 4, "itos": {0: "a", 1: "b", 2: "a", 3: "c"}}, f)
    r = run("import", "nanogpt", tmp_path / "ckpt.pt", "--meta", tmp_path / "meta.pkl", "--store", tmp_path / "s")
    assert_one_line_error(r, "itos repeats character(s) 'a'")
    assert not (tmp_path / "s").exists() or not Store(tmp_path / "s").variants()


def test_import_names_are_checked_and_derived_names_made_valid(tmp_path):
    _nanogpt_ckpt(tmp_path / "ckpt.pt")
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 4, "itos": dict(enumerate("abcd"))}, f)
    args = ["import", "nanogpt", tmp_path / "ckpt.pt", "--meta", tmp_path / "meta.pkl", "--store", tmp_path / "s",
            "--no-eval"]  # names only: there is no prepared `shakespeare-char` dataset to score it on
    assert_one_line_error(run(*args, "--name", "../up"), "invalid variant id", code=2)
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert [v.id for v in Store(tmp_path / "s").variants()] == ["nanogpt-shakespeare-char-1l"]


def test_library_calls_refuse_bad_names_too(tmp_path, data_dir):
    with pytest.raises(InvalidName):
        train(1, "cpu", dict(TINY, dataset="../data"), Store(tmp_path), data_dir, show_progress=False)
    assert not any(tmp_path.iterdir())
