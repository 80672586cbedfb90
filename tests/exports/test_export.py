import json
import shutil

import onnx
import pytest
import torch

from gptzoo.exports import onnx_export
from gptzoo.exports.parity import ParityError
from gptzoo.exports.quantize import quantize_variant
from gptzoo.zoo import step_contract as contract
from gptzoo.zoo.runtime import OnnxLoadError, OnnxModel
from gptzoo.zoo.store import Store


def test_export_writes_one_checked_file(exported_store):
    v = Store(exported_store).load("shakespeare-char-2l")
    files = sorted(p.name for p in v.dir.iterdir())
    assert "model.onnx" in files and not any(f.endswith((".data", ".tmp")) for f in files)
    facts = v.card.onnx
    p = facts.parity
    assert p["passed"] and p["max_abs_logit_diff"] <= 1e-4
    assert p["greedy_tokens_identical"] == p["greedy_tokens"] == 300  # runs far past block_size (32)
    assert facts.opset == 20 and "dynamo=True" in facts.exporter
    m = onnx.load(str(v.path("model.onnx")))
    meta = {x.key: x.value for x in m.metadata_props}
    assert {"n_layer", "vocab_size", "block_size", "tokenizer", "val_loss", "opset", "exporter"} <= set(meta)
    assert meta["cache_format"] == "slots"
    assert list(meta) == list(contract.METADATA_KEYS)
    assert int(meta["n_layer"]) == 2 and json.loads(meta["tokenizer"])["kind"] == "char"
    ids = m.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in ids] == ["batch", "new_tokens"]
    assert [d.dim_param or d.dim_value for d in m.graph.input[5].type.tensor_type.shape.dim] == [
        "batch", 2, "cache_length", 16]


def test_graph_is_the_step_contract(exported_store):
    """Names and dimensions are what the server and exports already on disk rely on: spelled out, not derived."""
    m = onnx.load(str(Store(exported_store).load("shakespeare-char-2l").path("model.onnx")))

    def dims(vi):
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    kv = [f"{x}_{kind}_{i}" for x in ("past", "present") for i in range(2) for kind in ("key", "value")]
    assert [vi.name for vi in m.graph.input] == ["input_ids", "position_ids", "seqlens_k", "total_length",
                                                  "logits_index", *kv[:4]]
    assert [vi.name for vi in m.graph.output] == ["logits", *kv[4:]]
    assert [vi.name for vi in m.graph.input] == contract.input_names(2)
    assert [vi.name for vi in m.graph.output] == contract.output_names(2)
    assert dims(m.graph.input[2]) == ["batch"] and dims(m.graph.input[3]) == []
    assert dims(m.graph.input[4]) == ["batch", "wanted"]
    assert "GroupQueryAttention" in {n.op_type for n in m.graph.node}  # onnxruntime's in-place attention
    assert dims(m.graph.output[0]) == ["batch", "wanted", 65]
    assert dims(m.graph.output[1]) == ["batch", 2, "cache_length", 16]
    for vi in [*m.graph.input, *m.graph.output]:
        assert [d if isinstance(d, str) else None for d in dims(vi)] == contract.dims(vi.name), vi.name


def test_failed_parity_writes_nothing(store_copy, monkeypatch):
    real = onnx_export._export_to

    def export_a_different_model(model, path):
        broken = type(model)(model.config)
        broken.load_state_dict(model.state_dict())
        with torch.no_grad():
            broken.transformer.h[0].mlp.c_fc.weight.mul_(1.01)  # a 1% weight error must be caught
        real(broken.eval(), path)

    monkeypatch.setattr(onnx_export, "_export_to", export_a_different_model)
    v = Store(store_copy).load("shakespeare-char-2l")
    with pytest.raises(ParityError, match=r"max \|Δlogits\|.*nothing was written") as e:
        onnx_export.export_variant(v)
    assert e.value.figures["max_abs_logit_diff"] > 1e-4
    assert sorted(p.name for p in v.dir.iterdir()) == ["card.json", "ckpt-best.pt", "ckpt-last.pt", "train-log.jsonl"]
    assert Store(store_copy).load("shakespeare-char-2l").card.onnx is None


def test_int8_variant_has_measured_val_loss(tmp_path, exported_store, data_dir):
    root = tmp_path / "store"
    shutil.copytree(exported_store, root)
    store = Store(root)
    fp32 = store.load("shakespeare-char-2l")
    q = quantize_variant(store, fp32, data_dir)
    assert q.id == "shakespeare-char-2l-int8" and q.card.quantization == "int8-dynamic"
    assert q.card.val_loss != fp32.card.val_loss  # measured, not copied
    assert abs(q.card.val_loss - fp32.card.val_loss) < 0.1
    assert q.card.onnx.bytes < fp32.card.onnx.bytes
    assert OnnxModel(q.path("model.onnx")).shape.block_size == 32
    # the fp32 variant is still what `--layers 2` resolves to
    assert store.resolve(layers=2).id == "shakespeare-char-2l"


def test_corrupt_or_foreign_onnx_is_refused(tmp_path, exported_store):
    bad = tmp_path / "model.onnx"
    bad.write_bytes((exported_store / "shakespeare-char-2l" / "model.onnx").read_bytes()[:5000])
    with pytest.raises(OnnxLoadError, match="cannot load"):
        OnnxModel(bad)
    with pytest.raises(OnnxLoadError, match="no ONNX file"):
        OnnxModel(tmp_path / "missing.onnx")
