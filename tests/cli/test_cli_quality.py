"""The CLI side of one comparable validation loss and early stopping: `train` says what it scored and why it
stopped, `eval` prepares the dataset like `train` and agrees with the card, `import nanogpt` reports both figures."""

import json

import pytest
from typer.testing import CliRunner

from gptzoo.cli.main import app
from tests.conftest import SHARED_DATA
from tests.zoo.nanogpt_files import shakespeare_chars, write_nanogpt_checkpoint

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_train_help_names_the_new_presets_and_patience():
    out = " ".join(run("train", "--help").stdout.split())
    for phrase in ("--patience", "nanogpt-cpu", "nanogpt-gpu", "early stopping", "whole validation split"):
        assert phrase in out, phrase


def test_eval_prepares_the_dataset_and_agrees_with_the_whole_split_card(store_copy, tmp_path):
    fresh = tmp_path / "fresh-data"  # the variant's dataset is not prepared here yet
    r = run("eval", "-l", 2, "--json", "--store", store_copy, "--data-dir", fresh)
    assert r.exit_code == 0, r.output
    assert "preparing it now" in r.stderr and (fresh / "shakespeare_char" / "meta.json").is_file()
    got = json.loads(r.stdout)
    assert got["agrees"] is True
    full = json.loads(run("eval", "-l", 2, "--json", "--full", "--store", store_copy, "--data-dir", fresh).stdout)
    assert full["val"] == got["val"]  # the card's val_loss already is the whole split
    text = run("eval", "-l", 2, "--store", store_copy, "--data-dir", fresh).stdout
    assert "train on 32 fixed windows, val on every window" in text


def test_train_reports_an_early_stop(tmp_path):
    """Early stopping end to end: the overfitting setup of tests/trainer/test_early_stopping.py through the CLI."""
    src = tmp_path / "small.txt"
    src.write_text((SHARED_DATA / "tinyshakespeare.txt").read_text()[:1500])
    prepared = run("data", "prepare", "text", "--source", src, "--name", "small", "--data-dir", tmp_path / "d")
    assert prepared.exit_code == 0, prepared.output
    r = run("train", "-l", 2, "--preset", "cpu", "--dataset", "small", "--n-embd", 64, "--n-head", 2, "--block-size",
            32, "--batch-size", 16, "--max-iters", 600, "--eval-interval", 10, "--eval-iters", 2, "--warmup-iters", 0,
            "--lr", 3e-3, "--min-lr", 3e-4, "--weight-decay", 0, "--patience", 2, "-q", "--store", tmp_path / "s",
            "--data-dir", tmp_path / "d")
    assert r.exit_code == 0, r.output
    assert "(early stop: patience)" in r.stdout and "on the whole validation split" in r.stdout
    card = json.loads((tmp_path / "s" / "small-2l" / "card.json").read_text())
    assert card["stop_reason"] == "patience" and card["stopped_at_iter"] == card["best_iter"] + 20 < 600


def test_import_nanogpt_reports_both_figures(tmp_path, data_dir):
    write_nanogpt_checkpoint(tmp_path, shakespeare_chars(data_dir))
    r = run("import", "nanogpt", tmp_path / "ckpt.pt", "--meta", tmp_path / "meta.pkl", "--store", tmp_path / "s",
            "--data-dir", data_dir)
    assert r.exit_code == 0, r.output
    assert "(whole split), nanoGPT reported 1.4697" in r.stdout
    listed = json.loads(run("zoo", "list", "--json", "--store", tmp_path / "s").stdout)
    assert listed[0]["reported_val_loss"] == pytest.approx(1.4697, abs=1e-6) and listed[0]["val_loss"] > 3.5
    r = run("import", "nanogpt", tmp_path / "ckpt.pt", "--meta", tmp_path / "meta.pkl", "--store", tmp_path / "s",
            "--data-dir", data_dir, "--name", "raw", "--no-eval")
    assert r.exit_code == 0 and "not scored, nanoGPT reported 1.4697" in r.stdout
