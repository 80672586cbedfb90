"""The oss block (issue 25) through the slot-cache step: ONNX export with its parity check, the torch and onnxruntime
backends of generation, and an HTTP completion from the served engine, on a tiny trained oss variant."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from gptzoo.cli.main import app
from gptzoo.exports.onnx_export import export_model, export_variant
from gptzoo.exports.parity import logit_diff
from gptzoo.zoo.errors import GptzooError
from gptzoo.zoo.generate import Batch
from gptzoo.zoo.kv_step import TorchModel
from gptzoo.zoo.oss import OSS, OSSConfig
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.step_contract import Call
from gptzoo.zoo.store import Store
from tests.conftest import TINY

OSS_TINY = TINY | dict(arch="oss", kv_heads=1, window=8)  # 2 query heads on 1 kv head; window 8 of block 32
VID = "shakespeare-char-2l-oss"


@pytest.fixture(scope="module")
def oss_store(tmp_path_factory, data_dir):
    """A store with one tiny trained oss variant (2 layers, width 32), exported to ONNX."""
    from gptzoo.trainer.loop import train

    root = tmp_path_factory.mktemp("oss") / "store"
    train(2, "cpu", dict(OSS_TINY), Store(root), data_dir, name=VID, show_progress=False)
    export_variant(Store(root).load(VID))
    return root


class _NoText:
    def decode_bytes(self, ids: list[int]) -> bytes:
        return b""


def _random_oss(std: float | None = None, **kw) -> OSS:
    """An untrained oss model with the parts that training leaves near zero made large: sinks, q/k/v biases, a wide
    embedding, so a wrong window, sink or head mapping would show in the logits. `std`: every block matrix drawn
    that wide (0.4 makes greedy decoding vary instead of repeating one token)."""
    torch.manual_seed(0)
    m = OSS(OSSConfig(**(dict(block_size=32, vocab_size=65, n_layer=2, n_head=4, n_embd=32, kv_heads=2) | kw)))
    with torch.no_grad():
        for p in m.h.parameters():
            if std and p.dim() == 2:
                p.normal_(0, std)
        for b in m.h:
            b.attn.sinks.normal_(0, 1.0)
            b.attn.qkv.bias.normal_(0, 0.1)
        m.wte.weight.normal_(0, 0.5)
    return m.eval()


@pytest.mark.parametrize("kw", [dict(window=3), dict(window=1, kv_heads=1), dict(window=8, experts=4,
                                                                                 experts_per_token=2),
                                # heads of 16: RoPE inside GroupQueryAttention (do_rotary), tables shared by layers
                                dict(window=3, n_head=2, kv_heads=1), dict(window=5, n_head=4, n_embd=64)])
def test_graph_matches_torch_step_with_window_sinks_gqa_and_experts(tmp_path, kw):
    m = _random_oss(**kw)
    export_model(m, tmp_path / "m.onnx", "t")
    onnx_model = OnnxModel(tmp_path / "m.onnx", device="cpu")
    # prefill 8 then 24 decode steps: past every window tried here, at batch 1 and 3 in slots 1..
    assert max(logit_diff(m, onnx_model, b) for b in (1, 3)) <= 1e-4
    # the cached step is the trained forward: every position's logits without a cache, within float error
    ids = torch.randint(0, 65, (2, 20))
    with torch.no_grad():
        want = m.lm_head(m.hidden_states(ids, torch.arange(20).view(1, -1))).numpy()
    torch_step = TorchModel(m)
    got = torch_step.run(torch_step.new_cache(2, 20), Call.fill(0, ids.numpy(), np.zeros(2, np.int64),
                                                                 wanted=list(range(20))))
    assert np.abs(got - want).max() <= 1e-4


def test_export_of_a_trained_oss_variant_is_checked_and_described(oss_store):
    v = Store(oss_store).load(VID)
    p = v.card.onnx.parity
    assert p["passed"] and p["max_abs_logit_diff"] <= 1e-4
    assert p["greedy_tokens_identical"] == p["greedy_tokens"] == 300  # past block_size (32), window 8
    m = onnx.load(str(v.path("model.onnx")))
    meta = {x.key: x.value for x in m.metadata_props}
    assert meta["arch"] == "oss" and meta["n_head"] == "2"
    # one kv head per slot for two query heads (grouped-query attention): half the gpt2 block's cache
    dims = [d.dim_param or d.dim_value for d in m.graph.input[5].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "cache_length", 16]
    gqa = [n for n in m.graph.node if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == 2 and all(n.input[11] for n in gqa)  # head_sink bound: the sinks
    windows = [next(a.i for a in n.attribute if a.name == "local_window_size") for n in gqa]
    assert windows == [8, -1]  # even layers slide, odd layers see everything
    # heads of 16: the op rotates q and k itself, from one pair of cos/sin tables for both layers
    assert [next(a.i for a in n.attribute if a.name == "do_rotary") for n in gqa] == [1, 1]
    assert len({(n.input[7], n.input[8], n.input[9]) for n in gqa}) == 1
    assert sorted(n.op_type for n in m.graph.node if n.op_type in ("Cos", "Sin")) == ["Cos", "Sin"]


def test_onnxruntime_fuses_each_rms_norm_into_one_op(oss_store, tmp_path):
    """The step's norms are written so that onnxruntime's optimizer makes each one SimplifiedLayerNormalization
    (2 per layer and the final one) instead of seven elementwise ops."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(Store(oss_store).load(VID).path("model.onnx")), opts,
                         providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("SimplifiedLayerNormalization") + ops.count("SkipSimplifiedLayerNormalization") == 5
    assert "Sqrt" not in ops and "ReduceMean" not in ops


@pytest.mark.parametrize("kw", [dict(n_head=2, kv_heads=1), dict(n_head=4, kv_heads=2)])  # rotary in the op / not
def test_graph_matches_torch_step_at_positions_far_past_the_cache(tmp_path, kw):
    """RoPE's tables hold the call's own positions, so a position of 1000 in a cache of 33 columns turns q and k
    as the torch step does (only position differences reach the scores, so a wrong rotation would show)."""
    m = _random_oss(window=4, **kw)
    export_model(m, tmp_path / "m.onnx", "t")
    runners = TorchModel(m), OnnxModel(tmp_path / "m.onnx", device="cpu")
    caches = [r.new_cache(2) for r in runners]
    ids = np.random.default_rng(0).integers(0, 65, (2, 12))
    fill = Call.fill(0, ids[:, :10], np.zeros(2, np.int64), wanted=list(range(10)))
    fill.positions = fill.positions + 1000
    got = [r.run(c, fill) for r, c in zip(runners, caches, strict=True)]
    for i in (10, 11):
        step = Call.decode(0, ids[:, i], np.full(2, i), np.ones(2, bool))
        step.positions = step.positions + 1000
        got += [r.run(c, step) for r, c in zip(runners, caches, strict=True)]
    assert max(float(np.abs(a - b).max()) for a, b in zip(got[::2], got[1::2], strict=True)) <= 1e-4


def _greedy(runner, prompt: list[int], n: int) -> list[int]:
    batch = Batch(runner, _NoText(), policy="exact")
    row = batch.new_row(prompt, SamplingParams(max_tokens=n, temperature=0.0))
    batch.add([row])
    while not row.done:
        batch.step()
    return row.generated


def test_torch_and_onnx_engines_decode_the_same_greedy_tokens_past_block_size(tmp_path):
    m = _random_oss(std=0.4, window=8, experts=4, experts_per_token=1)
    export_model(m, tmp_path / "m.onnx", "t")
    prompt = [5, 17, 42, 8, 30]
    tokens = {name: _greedy(runner, prompt, 100) for name, runner in (
        ("torch", TorchModel(m)), ("onnx", OnnxModel(tmp_path / "m.onnx", device="cpu")))}
    with torch.no_grad():  # nanoGPT's cache-free generate, cropping to block_size as the exact policy does
        reference = m.generate(torch.tensor([prompt]), 100, top_k=1)[0, len(prompt):].tolist()
    assert tokens["torch"] == tokens["onnx"] == reference
    assert len(set(reference)) > 5  # a varied sequence, not one token repeated


def test_generate_cli_gives_the_same_greedy_text_from_torch_and_onnx(oss_store):
    out = {}
    for backend in ("torch", "onnx"):
        r = CliRunner().invoke(app, ["generate", "--model", VID, "--store", str(oss_store), "-p", "ROMEO:",
                                     "-n", "80", "--temperature", "0", "--backend", backend])
        assert r.exit_code == 0, r.output
        out[backend] = r.stdout
    # the tiny trained model's greedy text is mostly newlines; the varied comparison is the test above
    assert out["torch"] == out["onnx"] and len(out["onnx"]) >= 80


def test_served_oss_variant_completes_over_http_in_its_own_family(oss_store, exported_store, tmp_path):
    """One store, a gpt2 and an oss variant of the same dataset: each block family is its own family id, so a
    family name (or `auto`) never routes across blocks silently; the oss engine answers over HTTP."""
    from litestar.testing import TestClient

    from gptzoo.server.app import create_app
    from gptzoo.server.settings import Settings

    store = tmp_path / "store"
    shutil.copytree(oss_store, store)
    shutil.copytree(exported_store / "shakespeare-char-2l", store / "shakespeare-char-2l")
    settings = Settings.build(store=str(store), allowed_hosts=["testserver.local"], max_tokens=64, threads=1)
    with TestClient(app=create_app(settings)) as client:
        kinds = {m["id"]: m["kind"] for m in client.get("/v1/models").json()["data"]}
        assert {k: kinds.get(k) for k in (VID, "shakespeare-char-2l", "shakespeare-char", "shakespeare-char-oss")} \
            == {VID: "variant", "shakespeare-char-2l": "variant", "shakespeare-char": "family",
                "shakespeare-char-oss": "family"}
        served = {}
        for name in (VID, "shakespeare-char-oss", "shakespeare-char", "2l-oss"):
            r = client.post("/v1/completions", json={"model": name, "prompt": "ROMEO:", "max_tokens": 40,
                                                     "temperature": 0})
            assert r.status_code == 200, r.text
            served[name] = r.json()
    assert [served[n]["model"] for n in served] == [VID, VID, "shakespeare-char-2l", VID]
    body = served[VID]
    assert body["usage"]["completion_tokens"] == 40
    # the engine's text is the torch backend's greedy text
    r = CliRunner().invoke(app, ["generate", "--model", VID, "--store", str(oss_store), "-p", "ROMEO:", "-n", "40",
                                 "--temperature", "0", "--backend", "torch"])
    assert body["choices"][0]["text"] in r.stdout


def test_family_ids_tell_block_families_apart(oss_store):
    from gptzoo.zoo.store import card_family, family_id

    assert card_family(Store(oss_store).load(VID).card) == "shakespeare-char-oss"
    assert family_id("shakespeare_char") == "shakespeare-char"  # gpt2's stay as they were
    # a variant may not take a family's name, the oss family's included
    with pytest.raises(GptzooError, match="family"):
        Store(oss_store).variant_dir("shakespeare-char-oss", dataset="shakespeare_char")


@pytest.mark.parametrize("experts,k,bias", [(4, 1, False), (8, 2, True)])
def test_moe_op_export_matches_the_torch_step_and_runs_only_chosen_experts(tmp_path, experts, k, bias):
    """export_model(moe_op=True) writes each mixture of experts as onnxruntime's MoE op (SwiGLU with gpt-oss's
    alpha, clamps and +1; softmax over the chosen logits), which gives the torch step's logits."""
    m = _random_oss(std=0.4, window=4, n_head=2, kv_heads=1, experts=experts, experts_per_token=k, bias=bias)
    export_model(m, tmp_path / "m.onnx", "t", moe_op=True)
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    moe = [n for n in graph.node if n.op_type == "MoE"]
    assert len(moe) == 2 and all(n.domain == "com.microsoft" for n in moe)
    assert {a.name: onnx.helper.get_attribute_value(a) for a in moe[0].attribute}["k"] == k
    assert "Sigmoid" not in {n.op_type for n in graph.node}  # no expert runs outside the op
    onnx_model = OnnxModel(tmp_path / "m.onnx", device="cpu")
    assert max(logit_diff(m, onnx_model, b) for b in (1, 3)) <= 1e-4
    prompt = [5, 17, 42, 8, 30]
    with torch.no_grad():
        reference = m.generate(torch.tensor([prompt]), 60, top_k=1)[0, len(prompt):].tolist()
    assert _greedy(onnx_model, prompt, 60) == reference and len(set(reference)) > 5


def test_moe_op_is_the_dense_step_within_float_error():
    """The op's torch meaning (moe_swiglu, interleaved weights) against the dense step's MoE (dense_moe)."""
    from gptzoo.zoo.oss_step import _moe_op, dense_moe

    m = _random_oss(std=0.4, experts=8, experts_per_token=2, bias=True)
    x = torch.randn(3, 5, 32)
    with torch.no_grad():
        assert torch.allclose(_moe_op(m.h[0].mlp, x), dense_moe(m.h[0].mlp, x), atol=1e-4)


def test_export_cli_writes_an_moe_variant_through_the_moe_op_by_default_or_dense(tmp_path, data_dir):
    from gptzoo.trainer.loop import train

    hp = dict(TINY, max_iters=10, eval_interval=5, arch="oss", kv_heads=1, window=8, experts=4,
              experts_per_token=1)
    train(2, "cpu", hp, Store(tmp_path), data_dir, name="moe", show_progress=False)
    ops = {}
    for how in ("dense", "op"):
        r = CliRunner().invoke(app, ["export", "--model", "moe", "--moe", how, "--store", str(tmp_path)])
        assert r.exit_code == 0, r.output
        card = Store(tmp_path).load("moe").card
        assert card.onnx.parity["passed"] and card.onnx.parity["greedy_tokens_identical"] == 300
        ops[how] = {n.op_type for n in onnx.load(str(tmp_path / "moe" / "model.onnx")).graph.node}
    assert "MoE" in ops["op"] and "MoE" not in ops["dense"]
    default = CliRunner().invoke(app, ["export", "--model", "moe", "--store", str(tmp_path)])
    assert default.exit_code == 0 and "MoE" in {n.op_type for n in onnx.load(str(tmp_path / "moe" / "model.onnx"))
                                                .graph.node}
    bad = CliRunner().invoke(app, ["export", "--model", "moe", "--moe", "sparse", "--store", str(tmp_path)])
    assert bad.exit_code == 2 and "--moe" in bad.stderr
