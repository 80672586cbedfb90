"""How the exporter writes gptzoo.zoo.model.cached_attention (gpt2 block) and gptzoo.zoo.oss_step.oss_cached_attention
and oss_rotary_attention (oss block): as onnxruntime's GroupQueryAttention contrib op; and oss_step.moe_swiglu (a
mixture of experts, exported with moe_op) as its MoE contrib op.

onnxscript knows only the schemas of the standard ONNX domains, so each contrib op's schema (the inputs, outputs and
attributes gptzoo uses; the op has more, optional ones) is declared here. The op reads each row's own length and, with
`present_*` bound to the `past_*` buffers, writes the new keys/values in place (gptzoo.zoo.step_contract).
"""

from __future__ import annotations

import onnxscript
from onnx.defs import OpSchema

_P = OpSchema.FormalParameter
_SCHEMA = OpSchema(
    "GroupQueryAttention", "com.microsoft", 1,
    inputs=[_P("query", "T"), *(_P(name, "T", param_option=OpSchema.FormalParameterOption.Optional)
                                for name in ("key", "value")), _P("past_key", "T"), _P("past_value", "T"),
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


def oss_rotary_group_query_attention(qkv, past_key, past_value, seqlens_k, total_length, cos, sin, rows, sinks,
                                     n_head: int, kv_heads: int, scale: float, window: int):
    # do_rotary turns the new queries and keys by cos_cache/sin_cache[position_ids] (halves, rotary_interleaved=0,
    # gptzoo.zoo.oss.rope's layout) before attending and before writing the keys to the cache. The tables hold only
    # the call's positions (gptzoo.zoo.oss_step.rotary_tables), so any position works, past block_size included.
    # key and value omitted: the query input is q, k and v packed ([B, T, (n_head + 2 kv_heads) * head_dim]).
    return _GQA(qkv, None, None, past_key, past_value, seqlens_k, total_length, cos, sin, rows, None, sinks,
                num_heads=n_head, kv_num_heads=kv_heads, scale=scale, local_window_size=window if window > 0 else -1,
                do_rotary=1)


_MOE_SCHEMA = OpSchema(
    "MoE", "com.microsoft", 1,
    inputs=[_P("input", "T"), _P("router_probs", "T"), _P("fc1_experts_weights", "T"),
            _P("fc1_experts_bias", "T", param_option=OpSchema.FormalParameterOption.Optional),
            _P("fc2_experts_weights", "T"),
            _P("fc2_experts_bias", "T", param_option=OpSchema.FormalParameterOption.Optional)],
    outputs=[_P("output", "T")],
    type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "")],
    attributes=[OpSchema.Attribute(name, kind, "") for name, kind in (
        ("k", OpSchema.AttrType.INT), ("normalize_routing_weights", OpSchema.AttrType.INT),
        ("activation_type", OpSchema.AttrType.STRING), ("swiglu_fusion", OpSchema.AttrType.INT),
        ("swiglu_limit", OpSchema.AttrType.FLOAT), ("activation_alpha", OpSchema.AttrType.FLOAT),
        ("activation_beta", OpSchema.AttrType.FLOAT))],
)
_MOE = onnxscript.values.Op(onnxscript.values.Opset("com.microsoft", 1), "MoE", _MOE_SCHEMA)


def moe_swiglu(x, logits, fc1, fc1_bias, fc2, fc2_bias, k: int):
    # onnxruntime's SwiGLU is G·σ(alpha·G)·(L + beta) with G = min(g, limit), L = clamp(l, ±limit): gpt-oss's, so
    # alpha 1.702, beta 1 (the `+1`) and limit 7 give gptzoo.zoo.oss.swiglu exactly. normalize_routing_weights
    # divides the chosen experts' full-softmax probabilities by their sum: the softmax over the k chosen logits.
    # The CPU kernel takes only swiglu_fusion=1 (gate and linear rows interleaved in fc1).
    from gptzoo.zoo.oss import SWIGLU_ALPHA, SWIGLU_LIMIT

    return _MOE(x, logits, fc1, fc1_bias, fc2, fc2_bias, k=k, normalize_routing_weights=1, activation_type="swiglu",
                swiglu_fusion=1, swiglu_limit=SWIGLU_LIMIT, activation_alpha=SWIGLU_ALPHA, activation_beta=1.0)


def translation_table() -> dict:
    """torch.onnx.export's custom_translation_table for the zoo's models."""
    import torch

    import gptzoo.zoo.model  # noqa: F401  registers torch.ops.gptzoo.cached_attention
    import gptzoo.zoo.oss_step  # noqa: F401  registers torch.ops.gptzoo.oss_cached_attention and oss_rotary_attention

    return {torch.ops.gptzoo.cached_attention.default: group_query_attention,
            torch.ops.gptzoo.oss_cached_attention.default: oss_group_query_attention,
            torch.ops.gptzoo.oss_rotary_attention.default: oss_rotary_group_query_attention,
            torch.ops.gptzoo.moe_swiglu.default: moe_swiglu}
