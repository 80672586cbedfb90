"""torch -> ONNX with a KV cache: export, name the dynamic dimensions, stamp metadata, prove parity, write atomically.

What is exported is gptzoo.zoo.kv_step.CachedStep (the trained GPT's one forward, cache flattened); the graph's names,
dimensions and metadata are gptzoo.zoo.step_contract's.

Attention is exported as onnxruntime's GroupQueryAttention contrib op (gptzoo.exports.attention_op): the files run on
onnxruntime, not on every ONNX runtime.

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

from gptzoo.exports.attention_op import translation_table
from gptzoo.exports.parity import ParityError, check_parity
from gptzoo.zoo import atomic, checkpoint
from gptzoo.zoo import step_contract as contract
from gptzoo.zoo.card import OnnxFacts
from gptzoo.zoo.kv_step import CachedStep
from gptzoo.zoo.model import GPT
from gptzoo.zoo.oss_step import moe_as_op
from gptzoo.zoo.sources import sha256_file
from gptzoo.zoo.store import ONNX, Store, Variant

EXPORTER = f"torch.onnx.export(dynamo=True) torch {torch.__version__.split('+')[0]}"
OPSET = 20


def example_inputs(model: GPT, batch: int = 2, new: int = 4, wanted: int = 3, length: int = 9) -> tuple:
    """Inputs for tracing: rows that hold two tokens already feed `new` more. Every dynamic dimension >= 2 and all
    of them different, so none is specialised to a constant or tied to another."""
    c = model.config
    ids = torch.randint(0, c.vocab_size, (batch, new))
    pos = (torch.arange(new) + 2).expand(batch, new).contiguous()
    seqlens = torch.full((batch,), 2 + new - 1, dtype=torch.int32)
    want = torch.arange(wanted).expand(batch, wanted).contiguous()
    shape = contract.GraphShape.of(c)
    kv = [torch.zeros(shape.slot_shape(batch, length)) for _ in range(shape.cache_tensors)]
    return (ids, pos, seqlens, torch.tensor(2 + new, dtype=torch.int32), want, *kv)


def dynamic_shapes(n_layer: int) -> dict:
    """torch.export's dynamic dimensions of CachedStep.forward's arguments: those the contract names."""

    def dynamic(name: str) -> dict:
        return {i: torch.export.Dim.AUTO for i, d in enumerate(contract.dims(name)) if d}

    fixed = {name: dynamic(name) for name in contract.input_names(n_layer)[:5]}
    return {**fixed, "past": tuple(dynamic(name) for name in contract.past_names(n_layer))}


def _export_to(model, path: Path) -> None:
    n = model.config.n_layer
    # The exporter narrates every stage and warns about optional torchvision ops; keep the CLI's output clean.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_logs():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            CachedStep(model), example_inputs(model), input_names=contract.input_names(n),
            output_names=contract.output_names(n), dynamic_shapes=dynamic_shapes(n), dynamo=True, external_data=False,
            optimize=True, opset_version=OPSET, verbose=False, custom_translation_table=translation_table(),
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
    for vi in [*m.graph.input, *m.graph.output]:
        for d, name in zip(vi.type.tensor_type.shape.dim, contract.dims(vi.name), strict=True):
            if name:
                d.ClearField("dim_value")
                d.dim_param = name
    assert set(contract.RUNTIME_METADATA_KEYS) <= set(meta), "the runtime reads these back"
    del m.graph.value_info[:]  # intermediate shapes still carry the tracer's symbols; onnxruntime re-infers them
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v if isinstance(v, str) else json.dumps(v))
    assert [i.name for i in m.graph.input] == contract.input_names(meta["n_layer"])
    onnx.save(m, str(path))


def export_model(model: GPT, path: Path, gptzoo_id: str, tokenizer: dict | None = None,
                 val_loss: float | None = None, moe_op: bool = False) -> None:
    """Write any GPT (trained or random weights) to `path` as the zoo's cached-step graph with its metadata; no
    parity check (export_variant adds one before a variant's file is kept). Benchmarks export random models here.
    `moe_op`: an oss model's mixtures of experts as onnxruntime's MoE op (only the chosen experts run) instead of
    plain ops that run every expert (docs/oss.md measures both)."""
    c = model.config
    facts = {"gptzoo_id": gptzoo_id, "n_layer": c.n_layer, "n_head": c.n_head, "n_embd": c.n_embd,
             "block_size": c.block_size, "vocab_size": c.vocab_size, "tokenizer": tokenizer, "val_loss": val_loss,
             "opset": OPSET, "exporter": EXPORTER, "cache_format": contract.CACHE_FORMAT,
             "arch": getattr(c, "arch", "gpt2")}
    with moe_as_op() if moe_op else contextlib.nullcontext():
        _export_to(model, path)
    _finish_graph(path, {k: facts[k] for k in contract.METADATA_KEYS})


def export_variant(variant: Variant, say=lambda msg: None, moe_op: bool = False) -> OnnxFacts:
    """Export `variant` to <variant>/model.onnx after a parity check; returns the export facts put in its card.
    Raises ParityError (nothing written) when the ONNX model does not match the torch model. `moe_op`: as
    export_model's (the parity check is the same)."""
    Store(variant.dir.parent).ensure_writable(variant.dir)  # before the minutes of export and parity
    _, model = checkpoint.load_variant(variant)
    card = variant.card
    target = variant.path(ONNX)
    with atomic.atomic_path(target) as tmp:
        experts = getattr(model.config, "experts", 0)
        how = (f", its {experts} experts as onnxruntime's MoE op" if moe_op else f", its {experts} experts dense") \
            if experts else ""
        say(f"exporting {variant.id} ({card.n_layer} layers{how}) with {EXPORTER}, opset {OPSET}")
        export_model(model, tmp, variant.id, card.tokenizer, card.val_loss, moe_op=moe_op)
        say("checking parity against the torch model")
        parity = check_parity(model, tmp)
        if not parity["passed"]:
            raise ParityError(parity)
    card.onnx = OnnxFacts(file=ONNX, sha256=sha256_file(target), bytes=target.stat().st_size, opset=OPSET,
                          exporter=EXPORTER, parity=parity,
                          exported_at=datetime.now(UTC).isoformat(timespec="seconds"))
    Store(variant.dir.parent).save_card(card)
    return card.onnx


def export_store(store: Store, variants: list[Variant], say=lambda msg: None) -> list[OnnxFacts]:
    return [export_variant(v, say) for v in variants]
