"""How the exporter writes gptzoo.zoo.model.cached_attention (gpt2 block) and gptzoo.zoo.oss_step.oss_cached_attention
(oss block): as onnxruntime's GroupQueryAttention contrib op.

onnxscript knows only the schemas of the standard ONNX domains, so the contrib op's schema (the inputs, outputs and
attributes gptzoo uses; the op has more, optional ones) is declared here. The op reads each row's own length and, with
`present_*` bound to the `past_*` buffers, writes the new keys/values in place (gptzoo.zoo.step_contract).
"""

from __future__ import annotations

import onnxscript
from onnx.defs import OpSchema

_P = OpSchema.FormalParameter
_SCHEMA = OpSchema(
    "GroupQueryAttention", "com.microsoft", 1,
    inputs=[_P("query", "T"), _P("key", "T"), _P("value", "T"), _P("past_key", "T"), _P("past_value", "T"),
            _P("seqlens_k", "M"), _P("total_sequence_length", "M"),
            # optional inputs 7-11; gptzoo passes only head_sink (RoPE is applied before the op, from position_ids)
            *(_P(name, "T", param_option=OpSchema.FormalParameterOption.Optional)
              for name in ("cos_cache", "sin_cache", "position_ids", "attention_bias", "head_sink"))],
    outputs=[_P("output", "T"), _P("present_key", "T"), _P("present_value", "T")],
    type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""), ("M", ["tensor(int32)"], "")],
    attributes=[OpSchema.Attribute(name, kind, "") for name, kind in (
        ("num_heads", OpSchema.AttrType.INT), ("kv_num_heads", OpSchema.AttrType.INT),
        ("scale", OpSchema.AttrType.FLOAT), ("local_window_size", OpSchema.AttrType.INT))],
)
_GQA = onnxscript.values.Op(onnxscript.values.Opset("com.microsoft", 1), "GroupQueryAttention", _SCHEMA)


def group_query_attention(q, k, v, past_key, past_value, seqlens_k, total_length, n_head: int, scale: float):
    # every head has its own keys and values: as many key/value heads as query heads
    return _GQA(q, k, v, past_key, past_value, seqlens_k, total_length, num_heads=n_head, kv_num_heads=n_head,
                scale=scale)


def oss_group_query_attention(q, k, v, past_key, past_value, seqlens_k, total_length, sinks, n_head: int,
                              kv_heads: int, scale: float, window: int):
    # local_window_size = W gives onnxruntime 1.32's CPU kernel the same keys as our window W (the query's own
    # included): measured against the torch reference, W-1 differs by 0.015 in the logits of a tiny model, W by
    # float error (held by tests/exports/test_oss_export.py and the export's parity check). head_sink is the sinks'
    # logits: exp(sink) joins each head's softmax denominator, gpt-oss's sinks exactly.
    return _GQA(q, k, v, past_key, past_value, seqlens_k, total_length, None, None, None, None, sinks,
                num_heads=n_head, kv_num_heads=kv_heads, scale=scale,
                local_window_size=window if window > 0 else -1)


def translation_table() -> dict:
    """torch.onnx.export's custom_translation_table for the zoo's models."""
    import torch

    import gptzoo.zoo.model  # noqa: F401  registers torch.ops.gptzoo.cached_attention
    import gptzoo.zoo.oss_step  # noqa: F401  registers torch.ops.gptzoo.oss_cached_attention

    return {torch.ops.gptzoo.cached_attention.default: group_query_attention,
            torch.ops.gptzoo.oss_cached_attention.default: oss_group_query_attention}
