import json

import pytest
import torch

from gptzoo.trainer.config import TrainConfig
from gptzoo.trainer.loop import TrainError, lr_at, train
from gptzoo.zoo import checkpoint
from gptzoo.zoo.datasets import load
from gptzoo.zoo.evaluate import eval_windows, mean_loss, model_loss_fn
from gptzoo.zoo.store import CKPT_BEST, CKPT_LAST, TRAIN_LOG, Store
from tests.conftest import TINY


def _log(store_root, vid="shakespeare-char-2l"):
    return [json.loads(line) for line in (store_root / vid / TRAIN_LOG).read_text().splitlines()]


def test_loss_falls_and_card_is_complete(trained_store):
    log = _log(trained_store)
    assert [r["iter"] for r in log] == [0, 10, 20, 30]
    assert log[-1]["val_loss"] < log[0]["val_loss"] - 0.3
    card = Store(trained_store).load("shakespeare-char-2l").card
    for key in ("id", "n_layer", "n_head", "n_embd", "block_size", "vocab_size", "params", "tokenizer", "dataset",
                "iterations", "tokens_seen", "val_loss", "train_loss", "training_seconds", "torch_version"):
        assert getattr(card, key) is not None, key
    assert card.val_loss_windows == min(r["val_loss"] for r in log)  # the periodic evaluations chose the best
    assert card.best_iter == min(log, key=lambda r: r["val_loss"])["iter"]
    assert card.iterations == 30 and card.tokens_seen == 30 * 8 * 32
    assert card.dataset.sha256.startswith("86c4e6aa")
    assert card.stopped_at_iter == 30 and card.stop_reason == "max_iters"


def test_card_val_loss_is_the_best_checkpoint_on_the_whole_split(trained_store, data_dir):
    """One figure for the zoo: val_loss is the best checkpoint scored on every window of the validation split (not
    the periodic evaluation's fixed windows); train_loss stays on the fixed windows the card names."""
    v = Store(trained_store).load("shakespeare-char-2l")
    card = v.card
    ckpt = checkpoint.load(v.path(CKPT_BEST))
    assert ckpt["iter_num"] == card.best_iter
    model = checkpoint.build_model(ckpt)
    dataset = load("shakespeare_char", data_dir)
    whole = mean_loss(model_loss_fn(model), dataset.val, 32, 8, None)
    windows = mean_loss(model_loss_fn(model), dataset.val, 32, 8, 4 * 8)
    assert card.val_loss == pytest.approx(whole, abs=1e-6)
    assert card.val_loss_windows == pytest.approx(windows, abs=1e-6)
    assert len(eval_windows(len(dataset.val), 32, None)) > 100 > 4 * 8  # really a different, larger set
    assert card.eval.windows_per_split is None and card.eval.train_windows == 4 * 8 and card.eval.batch_size == 8
    train = mean_loss(model_loss_fn(model), dataset.train, 32, 8, 4 * 8)
    assert card.train_loss == pytest.approx(train, abs=1e-6)


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = TrainConfig(max_iters=100, warmup_iters=10, learning_rate=1e-3, min_lr=1e-4)
    lrs = [lr_at(i, cfg) for i in range(101)]
    assert lrs[0] < lrs[9] < lrs[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[100] == pytest.approx(1e-4)


@pytest.mark.parametrize("arch", [{}, {"arch": "oss", "kv_heads": 1, "window": 8, "experts": 2,
                                          "experts_per_token": 1}], ids=["gpt2", "oss-moe"])
def test_resume_equals_uninterrupted_run(tmp_path, data_dir, arch):
    hp = dict(TINY, max_iters=20, eval_interval=10, dropout=0.1) | arch  # dropout: the RNG stream must resume too
    straight = train(2, "cpu", hp, Store(tmp_path / "a"), data_dir, show_progress=False)
    assert straight.iterations == 20 and not straight.interrupted
    first = train(2, "cpu", hp, Store(tmp_path / "b"), data_dir, show_progress=False, stop_at=10)
    assert first.interrupted and first.iterations == 10
    resumed = train(2, "cpu", hp, Store(tmp_path / "b"), data_dir, resume=True, show_progress=False)
    assert resumed.iterations == 20 and not resumed.interrupted
    a, b = _log(tmp_path / "a"), _log(tmp_path / "b")
    assert [r["iter"] for r in b] == [0, 10, 20]
    assert abs(a[-1]["val_loss"] - b[-1]["val_loss"]) < 1e-6
    assert abs(a[-1]["train_loss"] - b[-1]["train_loss"]) < 1e-6
    wa = checkpoint.load(tmp_path / "a" / "shakespeare-char-2l" / CKPT_LAST)["model"]
    wb = checkpoint.load(tmp_path / "b" / "shakespeare-char-2l" / CKPT_LAST)["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)


def test_existing_variant_needs_resume_or_overwrite(store_copy, data_dir):
    with pytest.raises(TrainError, match="already exists.*--resume.*--overwrite"):
        train(2, "cpu", dict(TINY), Store(store_copy), data_dir, show_progress=False)
    r = train(2, "cpu", dict(TINY, max_iters=10), Store(store_copy), data_dir, overwrite=True, show_progress=False)
    assert r.iterations == 10


def test_resume_refuses_architecture_change(store_copy, data_dir):
    with pytest.raises(TrainError, match="cannot change n_embd"):
        train(2, "cpu", dict(TINY, n_embd=64), Store(store_copy), data_dir, resume=True, show_progress=False)


def test_resume_without_checkpoint(tmp_path, data_dir):
    with pytest.raises(TrainError, match="cannot resume.*not found"):
        train(2, "cpu", dict(TINY), Store(tmp_path), data_dir, resume=True, show_progress=False)


def test_best_checkpoint_loads_weights_only(trained_store):
    ckpt = checkpoint.load(trained_store / "shakespeare-char-2l" / CKPT_BEST)  # weights_only=True inside
    assert set(ckpt) >= {"model", "model_args", "iter_num", "best_val_loss", "config", "tokenizer"}
    assert "optimizer" not in ckpt  # the best checkpoint is for inference; the last one resumes
