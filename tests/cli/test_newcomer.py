"""What a newcomer trips over (issue 22): the server's names (`2l`) in the CLI, `report` writing into the current
folder, output cut at 80 columns when captured, three unlabelled speed figures, `<bool>` in --help, `nan` speeds."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import typer.main

from gptzoo.cli.main import app
from gptzoo.zoo.store import CARD, Store
from tests.cli.test_cli import TINY_FLAGS, assert_one_line_error, run
from tests.conftest import TINY

MODEL = "shakespeare-char-2l"


def _copy_as(store, src_id: str, new_id: str) -> None:
    """Another variant: the same files under a new id (the card names its folder)."""
    shutil.copytree(store / src_id, store / new_id)
    card = json.loads((store / new_id / CARD).read_text())
    (store / new_id / CARD).write_text(json.dumps(card | {"id": new_id}))


def test_generate_and_eval_accept_the_alias_the_server_uses(exported_store, data_dir):
    by_id = run("generate", "--model", MODEL, "-p", "ROMEO:", "-n", 8, "--temperature", 0, "--store", exported_store)
    by_alias = run("generate", "--model", "2l", "-p", "ROMEO:", "-n", 8, "--temperature", 0, "--store",
                   exported_store)
    assert by_alias.exit_code == 0, by_alias.output
    assert by_alias.stdout == by_id.stdout and MODEL in by_alias.stderr
    ev = run("eval", "-m", "2l", "--json", "--store", exported_store, "--data-dir", data_dir)
    assert ev.exit_code == 0 and json.loads(ev.stdout)["agrees"] is True, ev.output


def test_an_alias_of_several_variants_names_them(tmp_path, exported_store):
    store = tmp_path / "store"
    shutil.copytree(exported_store, store)
    _copy_as(store, MODEL, "other-2l")
    r = run("generate", "--model", "2l", "-p", "a", "--store", store)
    assert_one_line_error(r, "'2l' matches several variants (other-2l, shakespeare-char-2l)")
    assert_one_line_error(run("generate", "--model", "3l", "-p", "a", "--store", store), "no variant '3l'")


def test_report_writes_under_gptzoo_home_not_into_the_current_folder(tmp_path, store_copy, monkeypatch):
    clone = tmp_path / "clone"
    (clone / "docs").mkdir(parents=True)
    (clone / "docs" / "depth-study.md").write_text("the tracked study")
    monkeypatch.chdir(clone)
    r = run("report", "--no-measure", "--store", store_copy)
    assert r.exit_code == 0, r.output
    target = os.path.join(os.environ["GPTZOO_HOME"], "report", "depth-study.md")
    assert (clone / "docs" / "depth-study.md").read_text() == "the tracked study"
    assert os.path.isfile(target) and target in r.stdout
    r = run("report", "--no-measure", "--store", store_copy, "--out", tmp_path / "elsewhere")
    assert r.exit_code == 0 and (tmp_path / "elsewhere" / "depth-study.md").is_file()
    assert "$GPTZOO_HOME/report" in " ".join(run("report", "--help").stdout.split())


def _commands(cmd, path=()):
    yield path
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_no_help_shows_a_bool_placeholder():
    paths = list(_commands(typer.main.get_command(app)))
    assert len(paths) >= 14  # the root, 8 commands, 3 groups and their commands
    for path in paths:
        r = run(*path, "--help")
        assert r.exit_code == 0 and "--help" in r.stdout, path
        assert "<bool>" not in r.stdout, path


def _tok_s(text: str, label: str) -> int:
    """The last `N tok/s <label>` figure in `text`."""
    found = re.findall(r"([\d,]+) tok/s " + re.escape(label), text)
    assert found, text
    return int(found[-1].replace(",", ""))


def test_one_speed_figure_labelled_alike_in_the_bar_the_summary_and_the_card(tmp_path, data_dir):
    r = run("train", "--layers", 2, "--preset", "cpu", *TINY_FLAGS, "--store", tmp_path, "--data-dir", data_dir)
    assert r.exit_code == 0, r.output
    bar = _tok_s(r.stderr, "(median step)")
    summary = _tok_s(r.stdout, "(median step:")
    card = Store(tmp_path).load(MODEL).card
    assert bar == summary  # the bar's last figure is the median over the same steps
    tokens_per_step = TINY["batch_size"] * TINY["block_size"]
    assert summary == pytest.approx(tokens_per_step / (card.ms_per_iter / 1000), rel=0.01)
    assert f"{card.ms_per_iter:.1f} ms" in r.stdout


def test_a_one_step_run_prints_no_nan(tmp_path, data_dir):
    r = run("train", "--layers", 2, "--preset", "cpu", *TINY_FLAGS, "--max-iters", 1, "--store", tmp_path,
            "--data-dir", data_dir)
    assert r.exit_code == 0, r.output
    assert "nan" not in r.output.lower()
    assert "speed not measured" in r.stdout
    assert Store(tmp_path).load(MODEL).card.ms_per_iter is None


def test_output_captured_through_a_pipe_is_not_cut(tmp_path, data_dir):
    """The real CLI in a subprocess, stdout and stderr pipes (not terminals), no COLUMNS: nothing cut at 80."""
    name = "a-variant-with-a-rather-long-name-for-a-table-2l"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    gptzoo = [sys.executable, "-m", "gptzoo.cli.main"]
    tr = subprocess.run([*gptzoo, "train", "--layers", "2", "--preset", "cpu", *TINY_FLAGS, "--name", name,
                         "--store", tmp_path, "--data-dir", data_dir], capture_output=True, text=True, env=env,
                        timeout=600)
    assert tr.returncode == 0, tr.stderr
    bar = [line for line in tr.stderr.splitlines() if line.startswith(name)]
    assert bar and f"{TINY['max_iters']}/{TINY['max_iters']}" in bar[-1] and "tok/s (median step)" in bar[-1], bar
    ls = subprocess.run([*gptzoo, "zoo", "list", "--store", tmp_path], capture_output=True, text=True, env=env,
                        timeout=120)
    card = Store(tmp_path).load(name).card
    for text in (name, f"{card.params:,}", f"{card.val_loss:.4f}", "exported"):
        assert text in ls.stdout, (text, ls.stdout)
    assert "…" not in tr.stdout + tr.stderr + ls.stdout
