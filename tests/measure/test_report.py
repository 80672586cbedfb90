from typer.testing import CliRunner

from gptzoo.cli.main import app


def test_report_regenerates_study_with_plots(tmp_path, exported_store):
    r = CliRunner().invoke(app, ["report", "--out", str(tmp_path), "--store", str(exported_store)])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "depth-study.md").read_text()
    assert "| 2 | 32 |" in text and "seed" in text
    for png in ("depth-val-curves.png", "depth-val-loss.png", "depth-speed.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"]({png})" in text


def test_report_on_empty_store(tmp_path):
    r = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "o"), "--store", str(tmp_path / "s")])
    assert r.exit_code == 1 and "no variants" in r.stderr


def test_an_unscored_import_is_left_out_of_the_study(tmp_path, exported_store):
    """`gptzoo import nanogpt --no-eval` leaves val_loss empty: the report plots the others instead of failing."""
    import json
    import shutil

    store = tmp_path / "store"
    shutil.copytree(exported_store, store)
    shutil.copytree(store / "shakespeare-char-2l", store / "shakespeare-char-unscored")
    card = json.loads((store / "shakespeare-char-unscored" / "card.json").read_text())
    card |= {"id": "shakespeare-char-unscored", "val_loss": None}
    (store / "shakespeare-char-unscored" / "card.json").write_text(json.dumps(card))
    r = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "o"), "--store", str(store), "--no-measure"])
    assert r.exit_code == 0, r.output
    assert "unscored" not in (tmp_path / "o" / "depth-study.md").read_text()
