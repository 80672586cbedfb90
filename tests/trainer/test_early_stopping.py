"""Early stopping (`patience`): a tiny dataset that a small model overfits in seconds, so validation loss turns up
early and training must stop by itself; the counter survives --resume exactly."""

import json

import pytest

from gptzoo.trainer.data import prepare
from gptzoo.trainer.loop import TrainError, train
from gptzoo.zoo import checkpoint
from gptzoo.zoo.store import CKPT_BEST, CKPT_LAST, TRAIN_LOG, Store
from tests.conftest import SHARED_DATA

VID = "overfit-2l"
# A 2-layer model, 64 wide, on 1,350 characters of training text: it memorises them within ~120 steps, after which
# its validation loss only rises. max_iters is far past that, so only early stopping ends these runs early.
OVERFIT = dict(dataset="overfit", n_embd=64, n_head=2, block_size=32, batch_size=16, max_iters=600, eval_interval=10,
               eval_iters=2, warmup_iters=0, learning_rate=3e-3, min_lr=3e-4, weight_decay=0.0, dropout=0.0)


@pytest.fixture(scope="module")
def overfit_data(tmp_path_factory):
    src = tmp_path_factory.mktemp("src") / "overfit.txt"
    src.write_text((SHARED_DATA / "tinyshakespeare.txt").read_text()[:1500])
    d = tmp_path_factory.mktemp("data")
    prepare("text", d, source=str(src), name="overfit")
    return d


def _log(root):
    return [json.loads(line) for line in (root / VID / TRAIN_LOG).read_text().splitlines()]


def _train(root, data, resume=False, stop_at=None, **hp):
    return train(2, "cpu", OVERFIT | hp, Store(root), data, name=VID, resume=resume, show_progress=False,
                 stop_at=stop_at)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, overfit_data):
    root = tmp_path_factory.mktemp("stopped")
    return root, _train(root, overfit_data, patience=3)


def test_patience_stops_an_overfitting_run(stopped):
    root, r = stopped
    assert r.stop_reason == "patience" and not r.interrupted
    assert r.iterations < OVERFIT["max_iters"] // 2
    log = _log(root)
    best = min(log, key=lambda e: e["val_loss"])
    # it stopped exactly `patience` evaluations after the best one, none of which improved on it
    assert r.iterations == best["iter"] + 3 * OVERFIT["eval_interval"] == log[-1]["iter"]
    assert all(e["val_loss"] >= best["val_loss"] for e in log[-3:])
    assert log[-1]["val_loss"] > best["val_loss"]  # overfitting, not a plateau
    assert log[-1]["train_loss"] < best["train_loss"]  # while the training loss still falls
    card = Store(root).load(VID).card
    assert card.stop_reason == "patience" and card.stopped_at_iter == r.iterations == card.iterations
    assert card.best_iter == best["iter"] and card.val_loss_windows == best["val_loss"]
    assert checkpoint.load(root / VID / CKPT_BEST)["iter_num"] == best["iter"]
    assert checkpoint.load(root / VID / CKPT_LAST)["iter_num"] == r.iterations


def test_without_patience_the_same_run_goes_on(tmp_path, overfit_data, stopped):
    """The control: patience 0 (the cpu preset's default) trains past the point where patience stopped."""
    _, with_patience = stopped
    r = _train(tmp_path, overfit_data, max_iters=with_patience.iterations + 20)
    assert r.stop_reason == "max_iters" and r.iterations == with_patience.iterations + 20
    card = Store(tmp_path).load(VID).card
    assert card.stop_reason == "max_iters" and card.stopped_at_iter == r.iterations


def test_resume_keeps_the_patience_count(tmp_path, overfit_data, stopped):
    """Interrupted one evaluation after the best, the resumed run stops where the uninterrupted one did: the count of
    evaluations without improvement is in ckpt-last.pt, not restarted."""
    root, straight = stopped
    best_iter = Store(root).load(VID).card.best_iter
    first = _train(tmp_path, overfit_data, patience=3, stop_at=best_iter + OVERFIT["eval_interval"])
    assert first.interrupted and first.stop_reason == "interrupted"
    card = Store(tmp_path).load(VID).card
    assert card.stop_reason == "interrupted" and card.stopped_at_iter == best_iter + OVERFIT["eval_interval"]
    assert checkpoint.load(tmp_path / VID / CKPT_LAST)["evals_since_best"] == 1
    resumed = _train(tmp_path, overfit_data, resume=True, patience=3)
    assert resumed.stop_reason == "patience" and resumed.iterations == straight.iterations
    assert [e["val_loss"] for e in _log(tmp_path)] == pytest.approx([e["val_loss"] for e in _log(root)], abs=1e-6)
    assert Store(tmp_path).load(VID).card.val_loss == pytest.approx(Store(root).load(VID).card.val_loss, abs=1e-6)


def test_a_stopped_run_resumes_with_another_patience(tmp_path, overfit_data, stopped):
    _, straight = stopped
    again = _train(tmp_path, overfit_data, patience=3)
    assert again.iterations == straight.iterations
    same = _train(tmp_path, overfit_data, resume=True, patience=3)  # nothing new to wait for: stops at once
    assert same.stop_reason == "patience" and same.iterations == straight.iterations
    more = _train(tmp_path, overfit_data, resume=True, patience=0, max_iters=straight.iterations + 20)
    assert more.stop_reason == "max_iters" and more.iterations == straight.iterations + 20


def test_negative_patience_is_refused(tmp_path, overfit_data):
    with pytest.raises(TrainError, match="patience must be >= 0"):
        _train(tmp_path, overfit_data, patience=-1)
