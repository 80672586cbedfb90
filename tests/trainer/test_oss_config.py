"""The oss family through the training configuration, presets, card and CLI (issue 25)."""

import msgspec
import pytest
from typer.testing import CliRunner

from gptzoo.cli.main import app
from gptzoo.trainer.config import TrainConfig
from gptzoo.zoo import card as cardmod
from gptzoo.zoo.arch import card_fields, make_model
from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.model import GPT
from gptzoo.zoo.oss import OSS


def test_gpt2_stays_the_default_with_model_args_nanogpt_reads():
    cfg = TrainConfig.from_preset("cpu", 2, cuda_available=False)
    args = cfg.model_args(65)
    assert cfg.arch == "gpt2" and "arch" not in args and "window" not in args
    assert isinstance(make_model(args), GPT) and card_fields(args) == {}


def test_oss_preset_and_overrides_reach_the_model():
    cfg = TrainConfig.from_preset("cpu", 2, cuda_available=False, arch="oss", n_embd=32, experts=4)
    assert (cfg.window, cfg.kv_heads, cfg.experts) == (64, 2, 4)  # half the cpu context; 2 kv heads
    model = make_model(cfg.model_args(65))
    assert isinstance(model, OSS) and len(model.h[1].mlp.experts) == 4
    assert model.h[0].attn.window == 64 and model.h[1].attn.window is None
    fields = card_fields(cfg.model_args(65))
    assert fields["arch"] == "oss" and fields["arch_args"]["window"] == 64 and "n_layer" not in fields["arch_args"]
    card = cardmod.Card(id="x", n_layer=2, n_head=4, n_embd=32, block_size=128, vocab_size=3,
                        tokenizer={"kind": "char", "chars": "abc"}, **fields)
    back = cardmod.from_dict(msgspec.json.decode(cardmod.encode(card)))
    assert back.arch == "oss" and back.arch_args == fields["arch_args"]


@pytest.mark.parametrize("overrides, phrase", [(dict(arch="llama"), "unknown arch"),
                                               (dict(arch="oss", kv_heads=3), "kv_heads"),
                                               (dict(arch="oss", experts=2, experts_per_token=3), "experts_per_token")])
def test_bad_oss_settings_are_refused_by_name(overrides, phrase):
    with pytest.raises(BadValue, match=phrase):
        TrainConfig.from_preset("cpu", 2, cuda_available=False, **overrides)


def test_cli_trains_every_canonical_depth_of_the_oss_family(tmp_path, data_dir):
    from gptzoo.zoo.store import Store
    from tests.conftest import TINY

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in (TINY | {"max_iters": 6, "eval_interval": 3}).items()]
    r = CliRunner().invoke(app, ["train", "--all", "--preset", "cpu", *flags, "--arch", "oss", "--kv-heads", "1",
                                 "--store", str(tmp_path), "--data-dir", str(data_dir), "--quiet"])
    assert r.exit_code == 0, r.output
    variants = {v.id: v for v in Store(tmp_path).variants()}
    assert sorted(variants) == [f"shakespeare-char-{n}l-oss" for n in (12, 1, 4, 6)]
    for n in (1, 4, 6, 12):
        card = variants[f"shakespeare-char-{n}l-oss"].card
        assert card.arch == "oss" and card.n_layer == n and card.arch_args["kv_heads"] == 1


def test_cli_trains_a_tiny_moe_oss_variant_end_to_end(tmp_path, data_dir):
    from tests.conftest import TINY

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    r = CliRunner().invoke(app, ["train", "--layers", "2", "--preset", "cpu", *flags, "--arch", "oss",
                                 "--kv-heads", "1", "--window", "8", "--experts", "2", "--experts-per-token", "1",
                                 "--store", str(tmp_path), "--data-dir", str(data_dir), "--quiet"])
    assert r.exit_code == 0, r.output
    vdir = tmp_path / "shakespeare-char" / "shakespeare-char-2l-oss"
    vdir = vdir if vdir.is_dir() else next(tmp_path.rglob("shakespeare-char-2l-oss"))
    card = cardmod.from_dict(msgspec.json.decode((vdir / "card.json").read_bytes()))
    assert card.arch == "oss" and card.arch_args["kv_heads"] == 1 and card.arch_args["experts"] == 2
    logs = [msgspec.json.decode(line) for line in (vdir / "train-log.jsonl").read_bytes().splitlines()]
    assert all(rec["balance_loss"] >= 1.0 for rec in logs if "iter" in rec)  # 1 is perfectly balanced
    from gptzoo.zoo import checkpoint

    model = checkpoint.build_model(checkpoint.load(vdir / "ckpt-best.pt"))
    assert isinstance(model, OSS) and model.h[0].attn.window == 8
    # what the oss block does not do (GGUF: llama.cpp's gpt2 graph) is refused in one line, and nothing is written
    # (ONNX export, generation and serving: tests/exports/test_oss_export.py)
    r = CliRunner().invoke(app, ["export", "--format", "gguf", "--data-dir", str(data_dir), "--model", card.id,
                                 "--store", str(tmp_path)])
    assert r.exit_code == 1 and "oss block" in r.output and "Traceback" not in r.output, r.output
    assert not (vdir / "model.gguf").exists()


def test_the_last_layer_of_a_trained_oss_model_attends_fully_and_old_checkpoints_keep_their_pattern():
    def windows(model):
        return [b.attn.window for b in model.h]

    for layers, want in ((1, [None]), (3, [64, None, None]), (4, [64, None, 64, None])):
        cfg = TrainConfig.from_preset("cpu", layers, cuda_available=False, arch="oss")
        assert windows(make_model(cfg.model_args(65))) == want  # a 1-layer model sees its whole context
    old = TrainConfig.from_preset("cpu", 1, cuda_available=False, arch="oss").model_args(65)
    del old["last_full"]  # as a checkpoint written before the setting existed
    assert windows(make_model(old)) == [64]
