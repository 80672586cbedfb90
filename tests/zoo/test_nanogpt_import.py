"""Importing a nanoGPT checkpoint scores it the zoo's way: the whole validation split as val_loss, nanoGPT's own
figure as reported_val_loss; the dataset is prepared if needed, and a checkpoint that cannot be scored is refused
unless imported unscored."""

import pytest

from gptzoo.trainer.evaluation import evaluate_variant
from gptzoo.zoo.checkpoint import CheckpointError
from gptzoo.zoo.datasets import DataError, load
from gptzoo.zoo.evaluate import mean_loss, model_loss_fn
from gptzoo.zoo.nanogpt import import_checkpoint
from gptzoo.zoo.store import Store
from tests.zoo.nanogpt_files import shakespeare_chars, write_nanogpt_checkpoint


def test_import_scores_the_whole_validation_split_and_keeps_nanogpts_figure(tmp_path, data_dir):
    """The card's val_loss is the zoo's figure (every window of the validation split, as for trained variants);
    nanoGPT's own estimate is reported_val_loss. `gptzoo eval` then agrees with the card."""
    reference = write_nanogpt_checkpoint(tmp_path, shakespeare_chars(data_dir))
    v = import_checkpoint(Store(tmp_path / "store"), tmp_path / "ckpt.pt", tmp_path / "meta.pkl", data_dir=data_dir)
    val = load("shakespeare_char", data_dir).val
    whole = mean_loss(model_loss_fn(reference), val, 16, 64, None)
    assert v.card.val_loss == pytest.approx(whole, abs=1e-6)
    assert whole > 3.5  # an untrained model: nothing like the 1.4697 its checkpoint claims
    assert v.card.reported_val_loss == pytest.approx(1.4697, abs=1e-6)
    assert v.card.eval.windows_per_split is None
    assert v.card.dataset.sha256 == load("shakespeare_char", data_dir).meta["sha256"]
    again = evaluate_variant(v, data_dir)
    assert again["val"] == pytest.approx(v.card.val_loss, abs=1e-6)


def test_import_prepares_the_dataset_it_scores_on(tmp_path, data_dir):
    write_nanogpt_checkpoint(tmp_path, shakespeare_chars(data_dir))
    said = []
    v = import_checkpoint(Store(tmp_path / "store"), tmp_path / "ckpt.pt", tmp_path / "meta.pkl",
                          data_dir=tmp_path / "fresh", say=said.append)
    assert (tmp_path / "fresh" / "shakespeare_char" / "meta.json").is_file()
    assert any("preparing it now" in m for m in said) and v.card.val_loss is not None


def test_a_checkpoint_that_cannot_be_scored_is_refused_unless_no_eval(tmp_path, data_dir):
    store = Store(tmp_path / "store")
    write_nanogpt_checkpoint(tmp_path, "abcdefgh")  # a vocabulary shakespeare_char does not use
    with pytest.raises(CheckpointError, match="tokenized differently.*--no-eval"):
        import_checkpoint(store, tmp_path / "ckpt.pt", tmp_path / "meta.pkl", data_dir=data_dir)
    assert not (tmp_path / "store" / "nanogpt-shakespeare-char-2l").exists()  # nothing written
    write_nanogpt_checkpoint(tmp_path, shakespeare_chars(data_dir), dataset="openwebtext")  # not prepared here
    with pytest.raises(DataError, match="not prepared.*--dataset NAME.*--no-eval"):
        import_checkpoint(store, tmp_path / "ckpt.pt", tmp_path / "meta.pkl", data_dir=data_dir)
    v = import_checkpoint(store, tmp_path / "ckpt.pt", tmp_path / "meta.pkl", data_dir=data_dir,
                          dataset="shakespeare_char")  # scored on the dataset named instead
    assert v.id == "nanogpt-shakespeare-char-2l" and v.card.val_loss is not None
    v = import_checkpoint(store, tmp_path / "ckpt.pt", tmp_path / "meta.pkl", name="unscored", score=False)
    assert v.card.val_loss is None and v.card.reported_val_loss == pytest.approx(1.4697, abs=1e-6)
