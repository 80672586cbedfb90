"""The zoo's second block family, GPT-OSS-style (docs/oss.md), beside nanoGPT's GPT in gptzoo.zoo.model.

Per block: RMSNorm pre-norm, rotary positions (RoPE) instead of learned ones, grouped-query attention with biases on
q/k/v, attention sinks (one learned logit per head that joins the softmax and is then dropped, so a head may attend
"nowhere"), layers alternating a sliding window and full attention, and a SwiGLU MLP (gpt-oss's: clamped, alpha
1.702, +1 on the linear half), optionally a mixture of experts with a load-balancing loss.

Positions enter only through RoPE, which is relative, so the model has no learned table that ends at block_size.
This module is the torch model (training and the reference forward); the slot-cache step that the ONNX export runs
is gptzoo.zoo.oss_step.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.model import GPT

SWIGLU_ALPHA = 1.702  # gpt-oss's sigmoid sharpness: x * sigmoid(1.702 x) approximates GELU
SWIGLU_LIMIT = 7.0  # gpt-oss clamps both halves to +-7 so a single large activation cannot blow up the product


@dataclass
class OSSConfig:
    block_size: int = 256  # training context; inference may run past it (positions are relative)
    vocab_size: int = 65
    n_layer: int = 6
    n_head: int = 6  # query heads
    n_embd: int = 384
    dropout: float = 0.0  # on the residual branches while training
    bias: bool = False  # biases on the output projection and MLP (q/k/v always have biases, as gpt-oss)
    arch: str = "oss"
    kv_heads: int = 0  # key/value heads (grouped-query attention); 0 = one per query head; must divide n_head
    window: int = 64  # even layers see only the last `window` keys (themselves included); odd layers see all
    rope_theta: float = 10000.0  # RoPE base: the longest wavelength grows with it
    experts: int = 0  # MLP experts per layer; 0 = a dense SwiGLU MLP
    experts_per_token: int = 2  # k: experts each token is routed to
    balance_coef: float = 0.01  # weight of the MoE load-balancing loss added to the training loss
    # The last layer attends fully even where the alternation would slide (only odd depths differ), so a 1-layer
    # model sees its whole context. Training sets it (TrainConfig); False keeps older checkpoints' layer pattern.
    last_full: bool = False

    def __post_init__(self) -> None:
        if self.n_layer < 1 or self.n_head < 1 or self.n_embd < 1 or self.block_size < 1 or self.vocab_size < 1:
            raise BadValue("n_layer, n_head, n_embd, block_size and vocab_size must all be positive")
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise BadValue(f"n_embd ({self.n_embd}) must split into n_head ({self.n_head}) heads of even width")
        if self.kv_heads == 0:
            self.kv_heads = self.n_head
        if self.kv_heads < 1 or self.n_head % self.kv_heads:
            raise BadValue(f"kv_heads ({self.kv_heads}) must divide n_head ({self.n_head})")
        if self.window < 1:
            raise BadValue(f"window must be at least 1, got {self.window}")
        if self.experts < 0 or (self.experts and not 1 <= self.experts_per_token <= self.experts):
            raise BadValue(f"experts_per_token must be in [1, experts]; got {self.experts_per_token} of "
                             f"{self.experts}")
        if not 0.0 <= self.dropout < 1.0:
            raise BadValue(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_hidden(self) -> int:
        # 8/3 of the width (rounded up to 16): SwiGLU's three matrices then hold what GPT-2's two 4x matrices do,
        # so a dense oss block costs the same parameters as a gpt2 block.
        return -(-8 * self.n_embd // 3 // 16) * 16

    def sliding(self, layer: int) -> bool:
        """Whether `layer` attends through the sliding window: even layers, as gpt-oss starts with a sliding one,
        except a last layer with `last_full`."""
        return layer % 2 == 0 and not (self.last_full and layer == self.n_layer - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> OSSConfig:
        names = {f for f in inspect.signature(cls).parameters}
        return cls(**{k: v for k, v in d.items() if k in names})


def rope_table(positions: torch.Tensor, hd: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE's cos and sin [B or 1, 1, T, hd/2] at positions [B or 1, T]: the two halves of each head (not
    interleaved pairs, onnxruntime's rotary_interleaved=0) are one complex number turned by position *
    theta^(-2i/hd). Computed once per forward and shared by every layer, for queries and keys alike."""
    inv = theta ** (-torch.arange(0, hd, 2, dtype=torch.float32, device=positions.device) / hd)  # [hd/2]
    ang = positions.to(torch.float32).unsqueeze(-1) * inv  # [B, T, hd/2]
    return ang.cos().unsqueeze(1).to(dtype), ang.sin().unsqueeze(1).to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, T, hd] turned by a rope_table."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate x [B, heads, T, hd] by its positions [B or 1, T] (rope_table, then rotate)."""
    return rotate(x, *rope_table(positions, x.size(-1), theta, x.dtype))


def visible(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """[.., Tq, Tk] True where a query at q_pos may see a key at k_pos: causal, and within the last `window`
    positions (the query's own included) when `window` is set."""
    d = q_pos.unsqueeze(-1) - k_pos.unsqueeze(-2)
    ok = d >= 0
    return ok & (d < window) if window is not None else ok


def sink_mask(positions: torch.Tensor, window: int | None) -> torch.Tensor:
    """The additive attention mask [B or 1, 1, T, 1 + T] of queries and keys at positions [B or 1, T]: 0 where a
    key is visible, -inf elsewhere, and a first column of 0 for the sink key (sink_attention)."""
    ok = visible(positions, positions, window)
    mask = torch.zeros(ok.shape, dtype=torch.float32, device=positions.device).masked_fill_(~ok, float("-inf"))
    return F.pad(mask, (1, 0)).unsqueeze(1)


def sink_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, mask: torch.Tensor,
                   scale: float) -> torch.Tensor:
    """Attention of q [B, n_head, T, hd] over k, v [B, kv_heads, T, hd] with one sink logit per head that joins
    the softmax and is dropped, through torch's fused scaled_dot_product_attention (no [T, T] matrices kept for
    the backward pass).

    The sink is one extra key of score 0 whose mask entry is the head's logit, so its share of the softmax is
    exactly exp(sink) / (exp(sink) + sum exp(scores)). Its value is a unit vector in one extra coordinate that real
    values leave at 0: that coordinate of the output is the sink's probability p. The mask is a constant to the
    fused op, so the sinks' gradient, -sum over queries of p * (dL/dy . y), enters through a term that is zero in
    value: y - p * (sinks - sinks.detach()) * y."""
    B, nh, T, hd = q.shape
    mask = mask.expand(-1, nh, -1, -1).clone()
    mask[..., 0] = sinks.detach().to(mask.dtype).view(1, nh, 1)
    pad = F.pad
    k1 = pad(pad(k, (0, 1)), (0, 0, 1, 0))  # the sink key: all zeros, first
    v1 = pad(v, (0, 1, 1, 0))  # real values carry 0 in the extra coordinate ...
    v1[:, :, 0, -1] = 1.0  # ... the sink's value is 1 there and 0 elsewhere
    out = F.scaled_dot_product_attention(pad(q, (0, 1)), k1, v1, attn_mask=mask, scale=scale,
                                         enable_gqa=nh != k.size(1))
    y, p = out[..., :hd], out[..., hd:]
    return y - p * (sinks - sinks.detach()).view(1, nh, 1, 1) * y


class OSSAttention(nn.Module):
    def __init__(self, config: OSSConfig, layer: int):
        super().__init__()
        self.n_head, self.kv_heads, self.hd = config.n_head, config.kv_heads, config.head_dim
        kv = self.kv_heads * self.hd
        self.qkv = nn.Linear(config.n_embd, config.n_embd + 2 * kv, bias=True)
        self.o_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        # One logit per head for "attend nowhere". Zero at init: the sink then weighs like one key of score 0, a
        # mild outlet that training can grow or shrink; a large start would starve the heads' gradients.
        self.sinks = nn.Parameter(torch.zeros(config.n_head))
        self.window = config.window if config.sliding(layer) else None
        self.theta = config.rope_theta
        self.scale = 1.0 / math.sqrt(self.hd)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, table=None, mask=None) -> torch.Tensor:
        """x [B, T, C] at positions [B or 1, T]; OSS.hidden_states passes the rope table and this layer's mask,
        computed once per forward."""
        B, T, C = x.shape
        H = self.n_head + self.kv_heads
        qkv = self.qkv(x).view(B, T, H + self.kv_heads, self.hd).transpose(1, 2)
        table = table if table is not None else rope_table(positions, self.hd, self.theta, x.dtype)
        qk = rotate(qkv[:, :H], *table)  # queries and keys turned in one go
        mask = mask if mask is not None else sink_mask(positions, self.window)
        # Query heads g*group .. (g+1)*group-1 share kv head g (onnxruntime GroupQueryAttention's mapping, and
        # scaled_dot_product_attention's enable_gqa).
        y = sink_attention(qk[:, : self.n_head], qk[:, self.n_head :], qkv[:, H:], self.sinks, mask, self.scale)
        return self.drop(self.o_proj(y.transpose(1, 2).reshape(B, T, C)))


def swiglu(h: torch.Tensor) -> torch.Tensor:
    """gpt-oss's gated unit on h [.., 2H]: first half gates (clamped above), second half is linear (clamped both
    ways) plus one, so a zero-initialised linear half still passes the gate through."""
    glu, lin = h.chunk(2, dim=-1)
    glu = glu.clamp(max=SWIGLU_LIMIT)
    lin = lin.clamp(-SWIGLU_LIMIT, SWIGLU_LIMIT)
    return glu * torch.sigmoid(SWIGLU_ALPHA * glu) * (lin + 1)


class SwiGLU(nn.Module):
    def __init__(self, config: OSSConfig):
        super().__init__()
        self.up = nn.Linear(config.n_embd, 2 * config.mlp_hidden, bias=config.bias)
        self.down = nn.Linear(config.mlp_hidden, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(swiglu(self.up(x)))


class MoE(nn.Module):
    """E SwiGLU experts; each token goes to the k with the highest router logits, weighted by a softmax over those
    k logits only (gpt-oss). `balance` holds the last forward's load-balancing loss (Switch Transformer's
    E * sum_e f_e * P_e: f_e the share of routed slots that chose e, P_e the mean full-softmax probability of e),
    which is 1 when routing is uniform and grows as experts are favoured."""

    def __init__(self, config: OSSConfig):
        super().__init__()
        self.k = config.experts_per_token
        self.router = nn.Linear(config.n_embd, config.experts, bias=True)
        self.experts = nn.ModuleList([SwiGLU(config) for _ in range(config.experts)])
        self.balance = torch.zeros(())

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Chosen experts [N, k], their weights [N, k] and the full router probabilities [N, E] of tokens x [N, C]."""
        logits = self.router(x)
        top, chosen = logits.topk(self.k, dim=-1)
        return chosen, top.softmax(-1), logits.softmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, flat = x.shape, x.reshape(-1, x.size(-1))
        chosen, weight, probs = self.route(flat)
        E = len(self.experts)
        share = F.one_hot(chosen, E).sum(1).float().mean(0) / self.k  # f_e, sums to 1
        self.balance = E * (share * probs.mean(0)).sum()
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):  # only the tokens routed to e pass through it
            tok, slot = (chosen == e).nonzero(as_tuple=True)
            if tok.numel():
                out.index_add_(0, tok, expert(flat[tok]) * weight[tok, slot].unsqueeze(-1))
        return out.view(shape)


class OSSBlock(nn.Module):
    def __init__(self, config: OSSConfig, layer: int):
        super().__init__()
        self.norm_1 = nn.RMSNorm(config.n_embd, eps=1e-5)
        self.attn = OSSAttention(config, layer)
        self.norm_2 = nn.RMSNorm(config.n_embd, eps=1e-5)
        self.mlp = MoE(config) if config.experts else SwiGLU(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, table=None, mask=None) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x), positions, table, mask)
        return x + self.drop(self.mlp(self.norm_2(x)))


class OSS(nn.Module):
    def __init__(self, config: OSSConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([OSSBlock(config, i) for i in range(config.n_layer)])
        self.norm_f = nn.RMSNorm(config.n_embd, eps=1e-5)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Tied as in the gpt2 family (gpt-oss unties): at the zoo's widths the embedding is a large share of the
        # parameters, and tying keeps the two families' sizes comparable.
        self.wte.weight = self.lm_head.weight
        self.apply(GPT._init_weights)
        # Residual scaling as GPT-2: each block adds two branches to the stream, so the last matrix of each branch
        # starts at std 0.02/sqrt(2L) and the stream's variance stays flat with depth. Pre-norm (RMSNorm) then keeps
        # every branch's input at unit scale whatever the stream's size.
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        self.balance_loss = torch.zeros(())  # the last forward's mean MoE balance loss over layers (0 when dense)

    num_params = GPT.num_params
    configure_optimizers = GPT.configure_optimizers
    generate = GPT.generate

    def hidden_states(self, idx: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Final-normed hidden states [B, T, n_embd] of tokens idx [B, T] at positions [B or 1, T]; attention is
        causal over idx (plus each sliding layer's window). Positions may exceed block_size: only differences
        between them matter."""
        positions = positions.view(-1, idx.size(1))
        x = self.drop(self.wte(idx))
        c = self.config
        table = rope_table(positions, c.head_dim, c.rope_theta, x.dtype)
        masks = {w: sink_mask(positions, w) for w in {c.window if c.sliding(i) else None for i in range(c.n_layer)}}
        for block in self.h:
            x = block(x, positions, table, masks[block.attn.window])
        if self.config.experts:
            self.balance_loss = torch.stack([b.mlp.balance for b in self.h]).mean()
        return self.norm_f(x)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As GPT.forward. While training with targets and experts, the loss includes balance_coef * the balance loss
        (`balance_loss` keeps its value for logging)."""
        x = self.hidden_states(idx, torch.arange(idx.size(1), device=idx.device).view(1, -1))
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        if self.config.experts and self.training:  # evaluation losses stay plain cross-entropy, comparable to gpt2's
            loss = loss + self.config.balance_coef * self.balance_loss
        return logits, loss
