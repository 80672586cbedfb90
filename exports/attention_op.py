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
            # optional inputs 7-11: the oss block passes head_sink, and cos_cache, sin_cache and position_ids when
            # the op rotates (do_rotary)
            *(_P(name, kind, param_option=OpSchema.FormalParameterOption.Optional) for name, kind in (
                ("cos_cache", "T"), ("sin_cache", "T"), ("position_ids", "P"), ("attention_bias", "T"),
                ("head_sink", "T")))],
    outputs=[_P("output", "T"), _P("present_key", "T"), _P("present_value", "T")],
    type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""), ("M", ["tensor(int32)"], ""),
                      ("P", ["tensor(int64)"], "")],
    attributes=[OpSchema.Attribute(name, kind, "") for name, kind in (
        ("num_heads", OpSchema.AttrType.INT), ("kv_num_heads", OpSchema.AttrType.INT),
        ("scale", OpSchema.AttrType.FLOAT), ("local_window_size", OpSchema.AttrType.INT),
        ("do_rotary", OpSchema.AttrType.INT))],
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


def oss_rotary_group_query_attention(q, k, v, past_key, past_value, seqlens_k, total_length, cos, sin, rows, sinks,
                                     n_head: int, kv_heads: int, scale: float, window: int):
    # do_rotary turns the new queries and keys by cos_cache/sin_cache[position_ids] (halves, rotary_interleaved=0,
    # gptzoo.zoo.oss.rope's layout) before attending and before writing the keys to the cache. The tables hold only
    # the call's positions (gptzoo.zoo.oss_step.rotary_tables), so any position works, past block_size included.
    return _GQA(q, k, v, past_key, past_value, seqlens_k, total_length, cos, sin, rows, None, sinks,
                num_heads=n_head, kv_num_heads=kv_heads, scale=scale, local_window_size=window if window > 0 else -1,
                do_rotary=1)


def translation_table() -> dict:
    """torch.onnx.export's custom_translation_table for the zoo's models."""
    import torch

    import gptzoo.zoo.model  # noqa: F401  registers torch.ops.gptzoo.cached_attention
    import gptzoo.zoo.oss_step  # noqa: F401  registers torch.ops.gptzoo.oss_cached_attention and oss_rotary_attention

    return {torch.ops.gptzoo.cached_attention.default: group_query_attention,
            torch.ops.gptzoo.oss_cached_attention.default: oss_group_query_attention,
            torch.ops.gptzoo.oss_rotary_attention.default: oss_rotary_group_query_attention}
