"""The oss block's cached step: the same slot-cache contract as the gpt2 block (gptzoo.zoo.step_contract), run by the
trained modules of gptzoo.zoo.oss.

Each layer's slot holds kv_heads (not n_head) heads of keys, already rotated: RoPE is applied to the new tokens'
queries and keys in plain ops from `position_ids` before attention, so a cached key never needs turning again.
Attention is `oss_cached_attention`, the meaning of onnxruntime's GroupQueryAttention (com.microsoft) with
kv_num_heads, local_window_size and head_sink, which the export maps it to (gptzoo.exports.attention_op).

The MLP of a mixture of experts runs densely here (every expert on every token, weighted by the router's top-k
softmax, zero elsewhere): the same function as gptzoo.zoo.oss.MoE, with no data-dependent shapes, so it exports
to plain ONNX ops.
"""

from __future__ import annotations

import torch

from gptzoo.zoo.model import KVCache, Lengths, write_slots
from gptzoo.zoo.oss import OSS, MoE, OSSAttention, OSSBlock, rope


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


def _attention(attn: OSSAttention, x: torch.Tensor, positions: torch.Tensor, cache: KVCache,
               lengths: Lengths) -> tuple[torch.Tensor, KVCache]:
    B, T, C = x.shape
    kv = attn.kv_heads * attn.hd
    q, k, v = attn.qkv(x).split([C, kv, kv], dim=2)
    # RoPE on [B, heads, T, hd], then heads side by side again, as GroupQueryAttention takes them
    q = rope(q.view(B, T, attn.n_head, attn.hd).transpose(1, 2), positions, attn.theta).transpose(1, 2).reshape(B, T, C)
    k = rope(k.view(B, T, attn.kv_heads, attn.hd).transpose(1, 2), positions, attn.theta).transpose(1, 2).reshape(
        B, T, kv)
    y, keys, values = torch.ops.gptzoo.oss_cached_attention(
        q, k, v, cache[0], cache[1], *lengths, attn.sinks, attn.n_head, attn.kv_heads, attn.scale,
        attn.window or 0)
    return attn.o_proj(y), (keys, values)


def dense_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """MoE.forward's output, every expert run on every token: weights [N, E] are the top-k softmax at the chosen
    experts and 0 elsewhere."""
    flat = x.reshape(-1, x.size(-1))
    logits = moe.router(flat)
    top, chosen = logits.topk(moe.k, dim=-1)
    weights = torch.zeros_like(logits).scatter(1, chosen, top.softmax(-1))
    out = torch.stack([expert(flat) for expert in moe.experts], dim=1)  # [N, E, C]
    return (weights.unsqueeze(-1) * out).sum(1).view(x.shape)


def _block(block: OSSBlock, x, positions, cache, lengths) -> tuple[torch.Tensor, KVCache]:
    a, present = _attention(block.attn, block.norm_1(x), positions, cache, lengths)
    x = x + a
    h = block.norm_2(x)
    return x + (dense_moe(block.mlp, h) if isinstance(block.mlp, MoE) else block.mlp(h)), present


def cached_hidden_states(model: OSS, idx: torch.Tensor, positions: torch.Tensor, cache: list[KVCache],
                         lengths: Lengths) -> tuple[torch.Tensor, list[KVCache]]:
    """GPT.hidden_states' cached step for the oss block: final-normed hidden states [B, T, n_embd] of idx at
    positions [B, T], and every layer's slot cache with the new (rotated) keys and values written in."""
    x = model.wte(idx)
    presents = []
    for block, layer_cache in zip(model.h, cache, strict=True):
        x, present = _block(block, x, positions, layer_cache, lengths)
        presents.append(present)
    return model.norm_f(x), presents
