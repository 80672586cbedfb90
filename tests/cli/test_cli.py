"""The CLI's help, happy paths, and every bad input the foundation issue names: one-line error, exit code != 0."""

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from gptzoo.cli.main import app
from tests.conftest import TINY

runner = CliRunner()
TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, phrase, code=1):
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    assert phrase in lines[0], lines[0]


@pytest.mark.parametrize("cmd", [[], ["train"], ["eval"], ["data", "prepare"], ["zoo", "list"]])
def test_help(cmd):
    r = run(*cmd, "--help")
    assert r.exit_code == 0 and "Usage: gptzoo" in r.stdout


def test_train_help_explains_presets_and_resume():
    out = run("train", "--help").stdout
    for phrase in ("--layers", "--preset", "--max-iters", "--resume", "cpu", "gpu", "auto"):
        assert phrase in out


def test_train_eval_list_round_trip(tmp_path, data_dir):
    store = tmp_path / "store"
    r = run("train", "--layers", 2, "--preset", "cpu", *TINY_FLAGS, "--store", store, "--data-dir", data_dir, "-q")
    assert r.exit_code == 0, r.output
    assert "shakespeare-char-2l: val loss" in r.stdout
    listed = json.loads(run("zoo", "list", "--json", "--store", store).stdout)
    assert [c["id"] for c in listed] == ["shakespeare-char-2l"]
    assert {"id", "n_layer", "val_loss", "params"} <= set(listed[0]) and listed[0]["exported"] is False
    ev = run("eval", "--layers", 2, "--json", "--store", store, "--data-dir", data_dir)
    assert ev.exit_code == 0, ev.output
    got = json.loads(ev.stdout)
    assert got["agrees"] is True and abs(got["val"] - listed[0]["val_loss"]) < 1e-4
    table = run("zoo", "list", "--store", store)
    assert table.exit_code == 0 and "shakespeare-char-2l" in table.stdout


def test_store_from_env_var(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("GPTZOO_STORE", str(tmp_path / "envstore"))
    r = run("train", "--layers", 1, "--preset", "cpu", *TINY_FLAGS, "--max-iters", 5, "--data-dir", data_dir, "-q")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "envstore" / "shakespeare-char-1l" / "card.json").is_file()


def test_train_prepares_default_dataset_saying_so(tmp_path):
    r = run("train", "--layers", 1, "--preset", "cpu", *TINY_FLAGS, "--max-iters", 2, "--store", tmp_path / "s",
            "--data-dir", tmp_path / "d")
    assert r.exit_code == 0, r.output
    assert "preparing it now" in r.stderr
    assert (tmp_path / "d" / "shakespeare_char" / "meta.json").is_file()


def test_data_prepare_reports(tmp_path):
    src = os.path.join(os.environ["GPTZOO_DATA_SOURCE"], "tinyshakespeare.txt")
    r = run("data", "prepare", "shakespeare_char", "--source", src, "--data-dir", tmp_path)
    assert r.exit_code == 0 and "1,003,854 train + 111,540 val tokens, vocab 65" in r.stdout


def test_unknown_dataset(tmp_path):
    assert_one_line_error(run("data", "prepare", "wikitext", "--data-dir", tmp_path), "unknown dataset 'wikitext'")


def test_wrong_sha256(tmp_path):
    src = tmp_path / "x.txt"
    src.write_text("hello " * 50)
    r = run("data", "prepare", "text", "--source", src, "--sha256", "0" * 64, "--data-dir", tmp_path / "d")
    assert_one_line_error(r, "sha256 mismatch")
    assert not (tmp_path / "d").exists()


def test_missing_and_corrupt_data(tmp_path, data_dir):
    r = run("train", "--layers", 2, *TINY_FLAGS, "--dataset", "mytext", "--store", tmp_path / "s",
            "--data-dir", tmp_path / "none")
    assert_one_line_error(r, "dataset 'mytext' is not prepared")
    broken = tmp_path / "d"
    shutil.copytree(data_dir, broken)
    (broken / "shakespeare_char" / "train.bin").write_bytes(b"\0\0")
    r = run("train", "--layers", 2, *TINY_FLAGS, "--store", tmp_path / "s", "--data-dir", broken)
    assert_one_line_error(r, "missing or truncated")


def test_depth_zero_is_a_usage_error():
    r = run("train", "--layers", 0)
    assert r.exit_code == 2
    assert "--layers" in r.stderr and "greater than or equal" in r.stderr


def test_width_not_divisible_by_heads(tmp_path, data_dir):
    r = run("train", "--layers", 2, "--preset", "cpu", "--n-embd", 30, "--n-head", 4, "--store", tmp_path,
            "--data-dir", data_dir)
    assert_one_line_error(r, "n_embd (30) must be divisible by n_head (4)")
    assert not any(tmp_path.iterdir())


def test_unwritable_store(tmp_path, data_dir):
    (tmp_path / "file").write_text("")
    r = run("train", "--layers", 2, *TINY_FLAGS, "--store", tmp_path / "file" / "store", "--data-dir", data_dir)
    assert_one_line_error(r, "not writable")


def test_existing_variant(store_copy, data_dir):
    r = run("train", "--layers", 2, "--preset", "cpu", *TINY_FLAGS, "--store", store_copy, "--data-dir", data_dir)
    assert_one_line_error(r, "already exists")


def test_checkpoint_not_matching_card(store_copy, data_dir):
    card_path = store_copy / "shakespeare-char-2l" / "card.json"
    card = json.loads(card_path.read_text())
    json.dump(card | {"n_embd": 64}, card_path.open("w"))
    assert_one_line_error(run("eval", "-l", 2, "--store", store_copy, "--data-dir", data_dir),
                          "does not match its card: n_embd 32 vs card 64")
    json.dump(card, card_path.open("w"))
    ckpt = store_copy / "shakespeare-char-2l" / "ckpt-best.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert_one_line_error(run("eval", "-l", 2, "--store", store_copy, "--data-dir", data_dir), "sha256 differs")


def test_eval_unknown_variant(store_copy):
    assert_one_line_error(run("eval", "-l", 7, "--store", store_copy), "no 7-layer variant")
