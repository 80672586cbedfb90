"""`gptzoo train` states the expected time before it starts (issue 23): of one depth with no flags, of every depth
with --all; not when a flag changes what the run costs (the reference would not apply)."""

import shutil

from typer.testing import CliRunner

from gptzoo.cli.main import app
from gptzoo.zoo.presets import REFERENCE_MINUTES

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def broken_data(data_dir, tmp_path):
    """A prepared dataset whose training split is truncated: the run stops on it right after the statement."""
    broken = tmp_path / "d"
    shutil.copytree(data_dir, broken)
    (broken / "shakespeare_char" / "train.bin").write_bytes(b"\0\0")
    return broken


def test_train_all_states_the_total_before_it_starts(data_dir, tmp_path):
    broken = broken_data(data_dir, tmp_path)
    r = run("train", "--all", "--preset", "cpu", "--store", tmp_path / "s", "--data-dir", broken)
    assert r.exit_code == 1 and "missing or truncated" in r.stderr
    total = sum(REFERENCE_MINUTES["cpu"].values())
    first = r.stdout.splitlines()[0]
    assert first.startswith(f"expected time: about {total:.0f} min in all"), r.stdout
    assert all(f"{d} layer" in first for d in REFERENCE_MINUTES["cpu"])


def test_train_one_depth_with_no_flag_states_its_time(data_dir, tmp_path):
    r = run("train", "--layers", 4, "--preset", "cpu", "--store", tmp_path / "s", "--data-dir",
            broken_data(data_dir, tmp_path))
    assert r.exit_code == 1
    assert f"expected time: about {REFERENCE_MINUTES['cpu'][4]:.1f} min" in r.stdout


def test_no_statement_when_a_flag_changes_the_cost(data_dir, tmp_path):
    r = run("train", "--layers", 4, "--preset", "cpu", "--max-iters", 10, "--store", tmp_path / "s", "--data-dir",
            broken_data(data_dir, tmp_path))
    assert r.exit_code == 1 and "expected time" not in r.stdout
