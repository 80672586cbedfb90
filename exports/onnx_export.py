"""torch -> ONNX with a KV cache: export, name the dynamic dimensions, stamp metadata, prove parity, write atomically.

Exporter: torch.onnx.export(dynamo=True), the default in torch 2.13. Against the legacy TorchScript exporter it writes
a smaller graph (the legacy one rebuilds the mask in every layer and stores the tied embedding twice) and takes
dynamic shapes from torch.export. Opset 20: the exporter's default, with native Gelu and LayerNormalization, and
run by onnxruntime >= 1.17. `external_data=False` keeps the file self-contained (fine below ONNX's 2 GB limit).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from datetime import UTC, datetime
from pathlib import Path

import torch

from gptzoo.exports.graph import CachedStep, example_inputs, input_names, output_names
from gptzoo.exports.parity import ParityError, check_parity
from gptzoo.zoo import atomic, checkpoint
from gptzoo.zoo.sources import sha256_file
from gptzoo.zoo.store import ONNX, Store, Variant

EXPORTER = f"torch.onnx.export(dynamo=True) torch {torch.__version__.split('+')[0]}"
OPSET = 20


def _export_to(model, path: Path) -> None:
    n = model.config.n_layer
    A = torch.export.Dim.AUTO
    dyn = {
        "input_ids": {0: A, 1: A},
        "position_ids": {0: A, 1: A},
        "attn_bias": {0: A, 2: A, 3: A},
        "past": tuple({0: A, 2: A} for _ in range(2 * n)),
    }
    # The exporter narrates every stage and warns about optional torchvision ops; keep the CLI's output clean.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_logs():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            CachedStep(model), example_inputs(model), input_names=input_names(n), output_names=output_names(n),
            dynamic_shapes=dyn, dynamo=True, external_data=False, optimize=True, opset_version=OPSET, verbose=False,
        )
    program.save(str(path), external_data=False)


@contextlib.contextmanager
def _quiet_logs():
    logger = logging.getLogger("torch.onnx")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def _finish_graph(path: Path, meta: dict) -> None:
    """Give the dynamic dimensions readable names and stamp the metadata the runtime and server read."""
    import onnx

    m = onnx.load(str(path))
    n_layer = meta["n_layer"]
    names = {"batch", "new_tokens", "past_length", "total_length"}

    def set_dims(value_info, dims):
        for d, name in zip(value_info.type.tensor_type.shape.dim, dims, strict=True):
            if name in names:
                d.ClearField("dim_value")
                d.dim_param = name

    kv = ["batch", None, "past_length", None]
    for vi in m.graph.input:
        if vi.name in ("input_ids", "position_ids"):
            set_dims(vi, ["batch", "new_tokens"])
        elif vi.name == "attn_bias":
            set_dims(vi, ["batch", None, "new_tokens", "total_length"])
        else:
            set_dims(vi, kv)
    for vi in m.graph.output:
        if vi.name == "logits":
            set_dims(vi, ["batch", "new_tokens", None])
        else:
            set_dims(vi, ["batch", None, "total_length", None])
    del m.graph.value_info[:]  # intermediate shapes still carry the tracer's symbols; onnxruntime re-infers them
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v if isinstance(v, str) else json.dumps(v))
    assert len(m.graph.input) == 3 + 2 * n_layer
    onnx.save(m, str(path))


def export_variant(variant: Variant, say=lambda msg: None) -> dict:
    """Export `variant` to <variant>/model.onnx after a parity check; returns the export facts put in its card.
    Raises ParityError (nothing written) when the ONNX model does not match the torch model."""
    Store(variant.dir.parent).ensure_writable(variant.dir)  # before the minutes of export and parity
    _, model = checkpoint.load_variant(variant)
    card = variant.card
    meta = {
        "gptzoo_id": variant.id,
        "n_layer": card["n_layer"],
        "n_head": card["n_head"],
        "n_embd": card["n_embd"],
        "block_size": card["block_size"],
        "vocab_size": card["vocab_size"],
        "tokenizer": card["tokenizer"],
        "val_loss": card.get("val_loss"),
        "opset": OPSET,
        "exporter": EXPORTER,
    }
    target = variant.path(ONNX)
    with atomic.atomic_path(target) as tmp:
        say(f"exporting {variant.id} ({card['n_layer']} layers) with {EXPORTER}, opset {OPSET}")
        _export_to(model, tmp)
        _finish_graph(tmp, meta)
        say("checking parity against the torch model")
        parity = check_parity(model, tmp)
        if not parity["passed"]:
            raise ParityError(parity)
    facts = {
        "file": ONNX,
        "sha256": sha256_file(target),
        "bytes": target.stat().st_size,
        "opset": OPSET,
        "exporter": EXPORTER,
        "parity": parity,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    variant.card["onnx"] = facts
    variant.save_card()
    return facts


def export_store(store: Store, variants: list[Variant], say=lambda msg: None) -> list[dict]:
    return [export_variant(v, say) for v in variants]
