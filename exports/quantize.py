"""Dynamic int8 quantization of an exported variant, written as a variant of its own (<id>-int8).

Its validation loss is measured by running the quantized graph on the validation split (the same windows as the
fp32 card), never copied from fp32. Parity with torch is recorded but not gated: int8 is expected to differ.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec

from gptzoo.exports.parity import greedy_agreement, logit_diff
from gptzoo.zoo import atomic, checkpoint
from gptzoo.zoo import datasets as dsmod
from gptzoo.zoo.card import EvalFacts, OnnxFacts
from gptzoo.zoo.evaluate import mean_loss, onnx_loss_fn
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sources import sha256_file
from gptzoo.zoo.store import ONNX, Store, StoreError, Variant


def quantize_variant(store: Store, variant: Variant, data_dir: Path | None = None, say=lambda m: None) -> Variant:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = variant.path(ONNX)
    if not src.is_file():
        raise StoreError(f"{variant.id} has no ONNX file to quantize; export it first")
    qid = f"{variant.id}-int8"
    qdir = store.variant_dir(qid)
    store.ensure_writable(qdir)
    dataset = dsmod.for_variant(variant, data_dir)
    say(f"quantizing {variant.id} to int8 (dynamic, weights only)")
    with atomic.atomic_path(qdir / ONNX) as tmp:
        # ONNX shape inference cannot see through the GroupQueryAttention contrib op: say what type lies beyond it
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        m = onnx.load(str(tmp))
        props = {p.key: p.value for p in m.metadata_props}
        del m.metadata_props[:]
        for k, v in (props | {"gptzoo_id": qid, "quantization": "int8-dynamic"}).items():
            m.metadata_props.add(key=k, value=v)
        onnx.save(m, str(tmp))
        session = OnnxModel(tmp, device="cpu")
        ev = variant.card.eval or EvalFacts()
        say("measuring the int8 model's validation loss with onnxruntime")
        val = mean_loss(onnx_loss_fn(session), dataset.val, variant.card.block_size, ev.batch_size,
                        ev.windows_per_split)
        _, model = checkpoint.load_variant(variant)
        parity = {
            "max_abs_logit_diff": logit_diff(model, session, 1),
            "greedy_tokens": 300,
            "greedy_tokens_identical": greedy_agreement(model, session),
            "gated": False,
        }
    fp32 = variant.card.onnx or OnnxFacts()
    onnx_facts = OnnxFacts(file=ONNX, sha256=sha256_file(qdir / ONNX), bytes=(qdir / ONNX).stat().st_size,
                           opset=fp32.opset,
                           exporter=f"{fp32.exporter} + onnxruntime.quantization.quantize_dynamic(QInt8)",
                           parity=parity, exported_at=datetime.now(UTC).isoformat(timespec="seconds"))
    card = msgspec.structs.replace(variant.card, id=qid, quantization="int8-dynamic", source_variant=variant.id,
                                   val_loss=val, val_loss_fp32=variant.card.val_loss, onnx=onnx_facts,
                                   checkpoint_sha256=None)
    return store.save_card(card)
