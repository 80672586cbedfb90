"""The oss block's cached step: the same slot-cache contract as the gpt2 block (gptzoo.zoo.step_contract), run by the
trained modules of gptzoo.zoo.oss.

Each layer's slot holds kv_heads (not n_head) heads of keys, already rotated, so a cached key never needs turning
again. Attention is `oss_cached_attention`, the meaning of onnxruntime's GroupQueryAttention (com.microsoft) with
kv_num_heads, local_window_size and head_sink, which the export maps it to (gptzoo.exports.attention_op). When the
head width is a multiple of 16 (what the op's CPU rotary needs), RoPE goes inside it too (`oss_rotary_attention`,
do_rotary): the step computes the cos/sin of the call's positions once (`rotary_tables`) and every layer's op
rotates its new queries and keys from them. Otherwise RoPE runs in plain ops before the attention.

The norms are written out as x / sqrt(mean(x²) + eps) * w (`rms_norm`): nn.RMSNorm's value, in the form
onnxruntime's graph optimizer fuses into one SimplifiedLayerNormalization.

The MLP of a mixture of experts runs densely here (every expert on every token, weighted by the router's top-k
softmax, zero elsewhere): the same function as gptzoo.zoo.oss.MoE, with no data-dependent shapes, so it exports
to plain ONNX ops; within moe_as_op() it is `moe_swiglu`, which the export writes as onnxruntime's MoE op
(only the chosen experts run).
"""

from __future__ import annotations

import contextlib

import torch

from gptzoo.zoo.model import KVCache, Lengths, write_slots
from gptzoo.zoo.oss import OSS, MoE, OSSAttention, OSSBlock, rope_table, rotate, swiglu


@torch.library.custom_op("gptzoo::oss_cached_attention", mutates_args=())
def oss_cached_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    past_key: torch.Tensor,
    past_value: torch.Tensor,
    seqlens_k: torch.Tensor,
    total_length: torch.Tensor,
    sinks: torch.Tensor,
    n_head: int,
    kv_heads: int,
    scale: float,
    window: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """gptzoo.zoo.model.cached_attention with grouped-query heads, a window and sinks: q [B, T, n_head*hd], k and v
    [B, T, kv_heads*hd] (q and k already rotated), caches [B, kv_heads, length, hd]. Query head h reads kv head
    h // (n_head/kv_heads); query j of row b sees columns at-window < c <= at (window <= 0: all columns <= at),
    where at = seqlens_k[b] + 1 - T + j; sinks [n_head] is one extra logit per head in the softmax, then dropped."""
    B, T, C = q.shape
    hd, L = C // n_head, past_key.shape[2]
    q = q.view(B, T, n_head, hd).transpose(1, 2)
    k, v = (z.view(B, T, kv_heads, hd).transpose(1, 2) for z in (k, v))
    keys, values, at = write_slots(past_key, past_value, k, v, seqlens_k)
    group = n_head // kv_heads
    col, now = torch.arange(L).view(1, 1, L), at.view(B, T, 1)
    seen = (col <= now) & (col > now - window) if window > 0 else col <= now  # [B, T, L]
    att = (q @ keys.repeat_interleave(group, dim=1).transpose(-2, -1)) * scale
    att = att.masked_fill(~seen.unsqueeze(1), float("-inf"))
    att = torch.cat((att, sinks.view(1, n_head, 1, 1).expand(B, n_head, T, 1).to(att.dtype)), -1).softmax(-1)
    y = att[..., :-1] @ values.repeat_interleave(group, dim=1)
    return y.transpose(1, 2).reshape(B, T, C), keys, values


@oss_cached_attention.register_fake
def _(q, k, v, past_key, past_value, seqlens_k, total_length, sinks, n_head, kv_heads, scale, window):
    return torch.empty_like(q), torch.empty_like(past_key), torch.empty_like(past_value)


@torch.library.custom_op("gptzoo::oss_rotary_attention", mutates_args=())
def oss_rotary_attention(
    qkv: torch.Tensor,
    past_key: torch.Tensor,
    past_value: torch.Tensor,
    seqlens_k: torch.Tensor,
    total_length: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    rows: torch.Tensor,
    sinks: torch.Tensor,
    n_head: int,
    kv_heads: int,
    scale: float,
    window: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """oss_cached_attention of q, k, v packed side by side in qkv [B, T, (n_head + 2 kv_heads) * hd], q and k not
    yet rotated: token t of row b is first turned by the angles of row rows[b, t] of the tables cos and sin
    [N, hd/2] (GroupQueryAttention's packed query with do_rotary and position_ids = rows, the halves of a head
    rotated as gptzoo.zoo.oss.rope)."""
    B, T, _ = qkv.shape
    hd = past_key.shape[-1]
    q, k, v = qkv.split([n_head * hd, kv_heads * hd, kv_heads * hd], dim=-1)
    c, s = cos[rows].unsqueeze(2), sin[rows].unsqueeze(2)  # [B, T, 1, hd/2]

    def turn(x: torch.Tensor, heads: int) -> torch.Tensor:
        return rotate(x.view(B, T, heads, -1), c, s).reshape(B, T, -1)

    return oss_cached_attention(turn(q, n_head), turn(k, kv_heads), v, past_key, past_value, seqlens_k,
                                total_length, sinks, n_head, kv_heads, scale, window)


@oss_rotary_attention.register_fake
def _(qkv, past_key, past_value, seqlens_k, total_length, cos, sin, rows, sinks, n_head, kv_heads, scale, window):
    B, T, _ = qkv.shape
    return qkv.new_empty(B, T, n_head * past_key.shape[-1]), torch.empty_like(past_key), torch.empty_like(past_value)


ROTARY_IN_OP = 16  # onnxruntime 1.32's CPU GroupQueryAttention rotates only heads whose width is a multiple of 16


def rotary_tables(positions: torch.Tensor, hd: int, theta: float, length: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cos and sin [B*T + length, hd/2] of a call's positions [B, T] (row b*T + t: positions[b, t], then `length`
    zero rows) and rows [B, T], the row of each token: what every layer's oss_rotary_attention reads. The zero rows
    are there because GroupQueryAttention wants at least total_sequence_length rows, which the slot length bounds.
    The angles are gptzoo.zoo.oss.rope_table's."""
    B, T = positions.shape
    cos, sin = (t.view(B * T, hd // 2) for t in rope_table(positions.reshape(1, -1), hd, theta, torch.float32))
    pad = cos.new_zeros(length, hd // 2)
    rows = torch.arange(B * T, device=positions.device).view(B, T)
    return torch.cat((cos, pad)), torch.cat((sin, pad)), rows


def rms_norm(norm: torch.nn.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """norm(x), written as the pattern onnxruntime fuses into one SimplifiedLayerNormalization; nn.RMSNorm exports
    its rsqrt as Sqrt, Reciprocal and Mul, which the optimizer leaves as seven ops. (The residual add before it is
    not fused into SkipSimplifiedLayerNormalization: its sum feeds the next residual too.)"""
    eps = torch.finfo(x.dtype).eps if norm.eps is None else norm.eps  # nn.RMSNorm's default
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.weight


def _attention(attn: OSSAttention, x: torch.Tensor, cache: KVCache, lengths: Lengths, tables,
               table) -> tuple[torch.Tensor, KVCache]:
    """`tables`: rotary_tables when the op rotates (heads a multiple of ROTARY_IN_OP wide), else None and `table`
    is the call's rope_table, turned here in plain ops."""
    B, T, C = x.shape
    if tables is not None:  # the op splits q, k and v itself: no Split in the graph
        y, keys, values = torch.ops.gptzoo.oss_rotary_attention(
            attn.qkv(x), cache[0], cache[1], *lengths, *tables, attn.sinks, attn.n_head, attn.kv_heads, attn.scale,
            attn.window or 0)
        return attn.o_proj(y), (keys, values)
    kv = attn.kv_heads * attn.hd
    q, k, v = attn.qkv(x).split([C, kv, kv], dim=2)
    # RoPE on [B, heads, T, hd], then heads side by side again, as GroupQueryAttention takes them
    q = rotate(q.view(B, T, attn.n_head, attn.hd).transpose(1, 2), *table).transpose(1, 2).reshape(B, T, C)
    k = rotate(k.view(B, T, attn.kv_heads, attn.hd).transpose(1, 2), *table).transpose(1, 2).reshape(B, T, kv)
    y, keys, values = torch.ops.gptzoo.oss_cached_attention(
        q, k, v, cache[0], cache[1], *lengths, attn.sinks, attn.n_head, attn.kv_heads, attn.scale,
        attn.window or 0)
    return attn.o_proj(y), (keys, values)


def topk_weights(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Each token's expert weights [N, E] from router logits [N, E]: the softmax over its top-k logits at the chosen
    experts, 0 elsewhere (gptzoo.zoo.oss.MoE's routing, as a dense matrix)."""
    top, chosen = logits.topk(k, dim=-1)
    return torch.zeros_like(logits).scatter(1, chosen, top.softmax(-1))


@torch.library.custom_op("gptzoo::moe_swiglu", mutates_args=())
def moe_swiglu(x: torch.Tensor, logits: torch.Tensor, fc1: torch.Tensor, fc1_bias: torch.Tensor | None,
               fc2: torch.Tensor, fc2_bias: torch.Tensor | None, k: int) -> torch.Tensor:
    """onnxruntime's MoE (com.microsoft) as the oss block uses it: tokens x [.., C], router logits [N, E]; each
    token's top-k experts weighted by the softmax over those k logits (normalize_routing_weights=1); expert e is
    fc2[e] @ swiglu(fc1[e] @ x + fc1_bias[e]) + fc2_bias[e], with fc1's rows gate and linear interleaved
    (swiglu_fusion=1: g0, l0, g1, l1, ...). Run densely here, every expert on every token."""
    flat = x.reshape(-1, x.size(-1))
    weights = topk_weights(logits, k)  # [N, E]
    h = torch.einsum("nc,ehc->neh", flat, fc1) + (0 if fc1_bias is None else fc1_bias)
    gated = swiglu(torch.cat((h[..., 0::2], h[..., 1::2]), dim=-1))  # [N, E, H]
    out = torch.einsum("neh,ech->nec", gated, fc2) + (0 if fc2_bias is None else fc2_bias)
    return (weights.unsqueeze(-1) * out).sum(1).view(x.shape)


@moe_swiglu.register_fake
def _(x, logits, fc1, fc1_bias, fc2, fc2_bias, k):
    return torch.empty_like(x)


_MOE_OP = [False]  # set while moe_as_op() is active: the MoE layers then go through moe_swiglu


@contextlib.contextmanager
def moe_as_op():
    """Within: the step runs each mixture of experts as moe_swiglu, which the export writes as onnxruntime's MoE op
    (gptzoo.exports.onnx_export's moe_op); outside, as plain ops (dense_moe). The two agree within float error."""
    _MOE_OP[0] = True
    try:
        yield
    finally:
        _MOE_OP[0] = False


def _moe_op(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """moe(x) through moe_swiglu: the experts' matrices stacked into the op's layouts (constant in the graph)."""
    E, H = len(moe.experts), moe.experts[0].down.in_features
    up = torch.stack([e.up.weight for e in moe.experts])  # [E, 2H, C], rows: H gate, then H linear
    fc1 = torch.stack((up[:, :H], up[:, H:]), dim=2).reshape(E, 2 * H, -1)  # interleaved g0, l0, g1, l1, ...
    fc1_bias = fc2_bias = None
    if moe.experts[0].up.bias is not None:
        b = torch.stack([e.up.bias for e in moe.experts])
        fc1_bias = torch.stack((b[:, :H], b[:, H:]), dim=2).reshape(E, 2 * H)
        fc2_bias = torch.stack([e.down.bias for e in moe.experts])
    fc2 = torch.stack([e.down.weight for e in moe.experts])  # [E, C, H]
    logits = moe.router(x).reshape(-1, E)
    return torch.ops.gptzoo.moe_swiglu(x, logits, fc1, fc1_bias, fc2, fc2_bias, moe.k)


def dense_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """MoE.forward's output, every expert run on every token: weights [N, E] are the top-k softmax at the chosen
    experts and 0 elsewhere."""
    flat = x.reshape(-1, x.size(-1))
    logits = moe.router(flat)
    weights = topk_weights(logits, moe.k)
    out = torch.stack([expert(flat) for expert in moe.experts], dim=1)  # [N, E, C]
    return (weights.unsqueeze(-1) * out).sum(1).view(x.shape)


def _block(block: OSSBlock, x, cache, lengths, tables, table) -> tuple[torch.Tensor, KVCache]:
    a, present = _attention(block.attn, rms_norm(block.norm_1, x), cache, lengths, tables, table)
    x = x + a
    h = rms_norm(block.norm_2, x)
    if isinstance(block.mlp, MoE):
        return x + (_moe_op if _MOE_OP[0] else dense_moe)(block.mlp, h), present
    return x + block.mlp(h), present


def cached_hidden_states(model: OSS, idx: torch.Tensor, positions: torch.Tensor, cache: list[KVCache],
                         lengths: Lengths) -> tuple[torch.Tensor, list[KVCache]]:
    """GPT.hidden_states' cached step for the oss block: final-normed hidden states [B, T, n_embd] of idx at
    positions [B, T], and every layer's slot cache with the new (rotated) keys and values written in."""
    x = model.wte(idx)
    c = model.config
    tables = table = None  # once per call, shared by every layer
    if c.head_dim % ROTARY_IN_OP == 0:
        tables = rotary_tables(positions, c.head_dim, c.rope_theta, cache[0][0].shape[2])
    else:
        table = rope_table(positions, c.head_dim, c.rope_theta, x.dtype)
    presents = []
    for block, layer_cache in zip(model.h, cache, strict=True):
        x, present = _block(block, x, layer_cache, lengths, tables, table)
        presents.append(present)
    return rms_norm(model.norm_f, x), presents
