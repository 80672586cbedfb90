import json
import math
import shutil

from typer.testing import CliRunner

from gptzoo.cli.main import app
from gptzoo.measure.report import DepthRow, frontier, pareto_front

PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = ("depth-val-curves.png", "depth-val-loss.png", "depth-speed.png", "depth-pareto-speed.png",
         "depth-pareto-training.png")  # what every report draws, whichever families it holds


def test_report_regenerates_study_with_plots(tmp_path, exported_store):
    r = CliRunner().invoke(app, ["report", "--out", str(tmp_path), "--store", str(exported_store)])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "depth-study.md").read_text()
    assert "| 2 | 32 |" in text and "seed" in text
    for png in PLOTS:
        data = (tmp_path / png).read_bytes()
        assert data[:8] == PNG and len(data) > 5000
        assert f"]({png})" in text
    # a single variant is on both frontiers whatever it measured
    assert "worth serving: 2L (" in text and "worth training: 2L (" in text
    assert "| ms/token, training time | shakespeare-char-2l |" in text


def test_report_on_empty_store(tmp_path):
    r = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "o"), "--store", str(tmp_path / "s")])
    assert r.exit_code == 1 and "no variants" in r.stderr


def test_an_unscored_import_is_left_out_of_the_study(tmp_path, exported_store):
    """`gptzoo import nanogpt --no-eval` leaves val_loss empty: the report plots the others instead of failing."""
    store = tmp_path / "store"
    shutil.copytree(exported_store, store)
    shutil.copytree(store / "shakespeare-char-2l", store / "shakespeare-char-unscored")
    card = json.loads((store / "shakespeare-char-unscored" / "card.json").read_text())
    card |= {"id": "shakespeare-char-unscored", "val_loss": None}
    (store / "shakespeare-char-unscored" / "card.json").write_text(json.dumps(card))
    r = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "o"), "--store", str(store), "--no-measure"])
    assert r.exit_code == 0, r.output
    assert "unscored" not in (tmp_path / "o" / "depth-study.md").read_text()


def test_pareto_front_on_hand_made_points():
    points = [
        (1.0, 3.0),  # 0 fastest: on it
        (2.0, 2.0),  # 1 on it
        (2.0, 2.0),  # 2 an exact tie with 1: both stay on it
        (3.0, 2.0),  # 3 as good as 1 but slower: dominated
        (2.5, 2.5),  # 4 slower and worse than 1: dominated
        (4.0, 1.0),  # 5 best loss: on it
        (1.0, 3.5),  # 6 as fast as 0 but worse: dominated
        (None, 0.5),  # 7 no speed figure: left out, and does not knock 5 off
        (0.5, math.nan),  # 8 no loss figure: left out, and does not knock 0 off
    ]
    assert pareto_front(points) == [0, 1, 2, 5]  # ordered by the first axis
    assert pareto_front([]) == [] and pareto_front([(None, 1.0)]) == [] and pareto_front([(5.0, 9.0)]) == [0]


def test_frontier_is_taken_per_dataset():
    """A BPE loss and a char loss do not compare: each dataset has its own frontier."""
    def row(vid, dataset, loss, ms_per_iter):
        return DepthRow(vid, 2, 32, 1000, loss, 100, ms_per_iter, None, None, None, dataset)

    rows = [row("a", "char", 1.5, 10.0), row("b", "char", 1.6, 20.0), row("c", "bpe", 3.0, 30.0),
            row("d", "char", 1.4, 40.0), row("e", "bpe", 3.5, 5.0),
            row("f", "char", 1.0, None), DepthRow("g", 2, 32, 1000, 1.0, 100, 1.0, None, None, None, "char", "int8")]
    # b is beaten by a; c is not beaten by the cheaper char variants; f (imported) and g (int8) have no training time
    assert frontier(rows, lambda r: r.train_seconds) == [0, 3, 4, 2]


def test_report_marks_the_frontier(tmp_path, exported_store, data_dir):
    """The tiny trained variant under three ids (training one per depth costs seconds each) and its real int8 copy;
    the cards' step times and losses are set so that the training-time frontier does not depend on this machine."""
    from gptzoo.exports.quantize import quantize_variant
    from gptzoo.zoo.store import Store

    root = tmp_path / "store"
    shutil.copytree(exported_store, root)
    quantize_variant(Store(root), Store(root).load("shakespeare-char-2l"), data_dir)
    # 30 iterations each: cheap 3 s at 3.0, 2l 6 s at 2.5, slow 9 s at 2.6 (slower and worse than 2l: dominated)
    for vid, ms, loss in (("cheap", 100.0, 3.0), ("2l", 200.0, 2.5), ("slow", 300.0, 2.6)):
        vid = f"shakespeare-char-{vid}"
        if vid != "shakespeare-char-2l":
            shutil.copytree(root / "shakespeare-char-2l", root / vid)
        path = root / vid / "card.json"
        card = json.loads(path.read_text())
        assert card["iterations"] == 30
        path.write_text(json.dumps(card | {"id": vid, "ms_per_iter": ms, "val_loss": loss}))
    (root / "shakespeare-char-slow" / "model.onnx").unlink()  # not exported: no speed figure

    out = tmp_path / "plain"
    r = CliRunner().invoke(app, ["report", "--out", str(out), "--store", str(root), "--no-measure"])
    assert r.exit_code == 0, r.output
    text = (out / "depth-study.md").read_text()
    # three 2-layer variants: labelled by id; the int8 copy's label is unambiguous
    assert ("worth training: shakespeare-char-cheap (3.0 s, 3.0000), shakespeare-char-2l (6.0 s, 2.5000). "
            "Dominated: shakespeare-char-slow.") in text
    assert "Left out, no training time of their own (imported, or int8 copies): 2L int8." in text
    assert "| training time | shakespeare-char-cheap |" in text and "| - | shakespeare-char-slow |" in text
    assert (out / "depth-pareto-training.png").read_bytes()[:8] == PNG and "](depth-pareto-training.png)" in text
    # no speed run: no speed plot, and the report says why instead of drawing an empty one
    assert not (out / "depth-pareto-speed.png").exists() and "depth-pareto-speed" not in text
    assert "no speed run (`--no-measure`)" in text and "so no ms/token frontier" in text

    out = tmp_path / "measured"
    r = CliRunner().invoke(app, ["report", "--out", str(out), "--store", str(root)])
    assert r.exit_code == 0, r.output
    text = (out / "depth-study.md").read_text()
    assert (out / "depth-pareto-speed.png").read_bytes()[:8] == PNG and "](depth-pareto-speed.png)" in text
    speed = next(line for line in text.splitlines() if line.startswith("- **ms/token**"))
    # which of the measured ones wins is this machine's business; that the int8 copy takes part is not
    assert all(name in speed for name in ("2L int8", "shakespeare-char-2l", "shakespeare-char-cheap"))
    assert "Left out, not measured: shakespeare-char-slow." in text
    assert "| 2 int8 | 32 |" in text


def test_report_shows_both_block_families(tmp_path, families_store):
    """A store of gpt2 and oss variants (1 and 2 layers each): the table names each variant's block, the depth plots
    draw one series per family, both families stand on one frontier (labelled by family), and a section sets each
    depth's two families side by side."""
    from gptzoo.measure.report_rows import collect, depth_series, labels
    from gptzoo.zoo.store import Store

    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["report", "--out", str(out), "--store", str(families_store)])
    assert r.exit_code == 0, r.output
    text = (out / "depth-study.md").read_text()
    assert "| 2 | 32 | oss kv1 w8 |" in text and "| 2 | 32 | gpt2 |" in text
    for png in PLOTS:
        assert (out / png).read_bytes()[:8] == PNG and f"]({png})" in text
    rows = collect(Store(families_store), measure=False)
    series = dict(depth_series(rows))
    assert {name: [r.id for r in rs] for name, rs in series.items()} == {
        "gpt2, 32 wide": ["shakespeare-char-1l", "shakespeare-char-2l"],
        "oss, 32 wide": ["shakespeare-char-1l-oss", "shakespeare-char-2l-oss"]}
    assert sorted(labels(rows)) == ["1L gpt2", "1L oss", "2L gpt2", "2L oss"]
    # one frontier per dataset, across families: every point is on it or named dominated, by its family's label
    line = next(x for x in text.splitlines() if x.startswith("- **training time**"))
    assert all(f"{d}L {a}" in line for d in (1, 2) for a in ("gpt2", "oss")), line
    assert "## The block families" in text
    by_id = {r.id: r for r in rows}
    for d in (1, 2):
        g, o = by_id[f"shakespeare-char-{d}l"], by_id[f"shakespeare-char-{d}l-oss"]
        assert (f"| {d} | 32 | {g.val_loss:.4f} | {o.val_loss:.4f} | {o.val_loss - g.val_loss:+.4f} |") in text
    assert "the oss block's best validation loss is" in text and "the gpt2 block's best validation loss is" in text


def test_one_family_reads_as_before():
    """A store of one block family: series and labels name the width and depth only."""
    from gptzoo.measure.report_rows import depth_series, labels

    rows = [DepthRow(f"v{d}", d, 32, 1000, 2.0, 10, None, None, None, None, "char") for d in (2, 1)]
    assert [(name, [r.n_layer for r in rs]) for name, rs in depth_series(rows)] == [("32 wide", [1, 2])]
    assert labels(rows) == ["2L", "1L"]
