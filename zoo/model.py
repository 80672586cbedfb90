"""The GPT of the zoo: nanoGPT's architecture, one readable file.

Learned positions, pre-LayerNorm blocks, causal self-attention, a GELU MLP and an output head tied to the token
embedding. Parameter names match nanoGPT's, so its checkpoints load unchanged.

There is one transformer forward, `GPT.hidden_states`: training (`forward`) calls it with no cache, and then attention
is plain causal through the fused `scaled_dot_product_attention(is_causal=True)`; a cached step (the module exported to
ONNX and the torch generation backend, gptzoo.zoo.kv_step) calls it with explicit positions, every layer's slot cache
and each row's length, and gets the written cache back; its attention is `cached_attention`, whose export is
onnxruntime's fused GroupQueryAttention. So the exported graph is the code that was trained, and the export's parity
check compares the two.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from gptzoo.zoo.errors import BadValue

# One layer's slot cache: keys and values, each [rows, n_head, cache_length, head_dim]; row b's tokens sit at the
# positions they were written to (gptzoo.zoo.step_contract).
KVCache = tuple[torch.Tensor, torch.Tensor]
# A cached step's row lengths: seqlens_k [B] (int32, each row's length after the step, minus one) and total_length
# (int32 scalar, the longest row's length): onnxruntime GroupQueryAttention's own inputs.
Lengths = tuple[torch.Tensor, torch.Tensor]


@dataclass
class GPTConfig:
    block_size: int = 256  # longest context the model sees (learned position embeddings stop here)
    vocab_size: int = 65  # token ids are in [0, vocab_size); 65 for tiny-Shakespeare chars, 50257 for GPT-2 BPE
    n_layer: int = 6  # depth: the one knob the zoo varies
    n_head: int = 6  # attention heads per layer; must divide n_embd
    n_embd: int = 384  # width of the residual stream
    dropout: float = 0.0  # dropout on attention weights and residual branches while training
    bias: bool = False  # biases in Linear and LayerNorm layers (GPT-2 has them; without is slightly better and faster)
    # Imported GPT-2 folders (gptzoo.zoo.hf_import): OpenAI's GPT-2 used GELU's tanh form, and some heads are untied.
    gelu: str = "none"  # torch's GELU `approximate`: none (exact, nanoGPT) or tanh
    tied_head: bool = True  # lm_head shares the token embedding's weights (nanoGPT always)

    def __post_init__(self) -> None:
        if self.n_layer < 1:
            raise BadValue(f"n_layer must be at least 1, got {self.n_layer}")
        if self.n_head < 1 or self.n_embd < 1 or self.block_size < 1 or self.vocab_size < 1:
            raise BadValue("n_head, n_embd, block_size and vocab_size must all be positive")
        if self.n_embd % self.n_head:
            raise BadValue(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.gelu not in ("none", "tanh"):
            raise BadValue(f"gelu must be none or tanh, got {self.gelu!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise BadValue(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        # Ignore extra keys so nanoGPT's `model_args` (and future fields) load.
        names = {f for f in inspect.signature(cls).parameters}
        return cls(**{k: v for k, v in d.items() if k in names})


def write_slots(past_key: torch.Tensor, past_value: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                seqlens_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both caches [B, heads, length, hd] with T new tokens' keys/values [B, heads, T, hd] written into row b's slot
    at positions seqlens_k[b] + 1 - T .. seqlens_k[b], and those positions [B, T]: the cache write of every block
    family's cached attention."""
    B, H, T, _ = k.shape
    at = seqlens_k.long().view(B, 1) + 1 - T + torch.arange(T).view(1, T)  # [B, T] where each token goes
    rows, heads, where = torch.arange(B).view(B, 1, 1), torch.arange(H).view(1, H, 1), at.view(B, 1, T)
    return past_key.index_put((rows, heads, where), k), past_value.index_put((rows, heads, where), v), at


@torch.library.custom_op("gptzoo::cached_attention", mutates_args=())
def cached_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    past_key: torch.Tensor,
    past_value: torch.Tensor,
    seqlens_k: torch.Tensor,
    total_length: torch.Tensor,
    n_head: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention of T new tokens over each row's slot cache: the new tokens' keys/values are written into row b's
    slot at positions seqlens_k[b] + 1 - T .. seqlens_k[b], and query j sees positions 0 .. seqlens_k[b] + 1 - T + j.
    q, k, v: [B, T, C] (heads side by side); caches [B, n_head, length, head_dim]. Returns the output [B, T, C] and
    both caches with the writes. This is the meaning of onnxruntime's GroupQueryAttention (com.microsoft), which the
    export maps it to: there the write happens in place and only each row's own length is read."""
    B, T, C = q.shape
    L = past_key.shape[2]
    q, k, v = (z.view(B, T, n_head, C // n_head).transpose(1, 2) for z in (q, k, v))  # [B, nh, T, hd]
    keys, values, at = write_slots(past_key, past_value, k, v, seqlens_k)
    seen = torch.arange(L).view(1, 1, L) <= at.view(B, T, 1)  # [B, T, L]
    att = ((q @ keys.transpose(-2, -1)) * scale).masked_fill(~seen.unsqueeze(1), float("-inf")).softmax(-1)
    return (att @ values).transpose(1, 2).reshape(B, T, C), keys, values


@cached_attention.register_fake
def _(q, k, v, past_key, past_value, seqlens_k, total_length, n_head, scale):
    return torch.empty_like(q), torch.empty_like(past_key), torch.empty_like(past_value)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.scale = 1.0 / math.sqrt(config.head_dim)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, lengths: Lengths | None = None
    ) -> tuple[torch.Tensor, KVCache | None]:
        """Attention output and, with a cache, this layer's cache with the new tokens' keys/values written in."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        if cache is None:
            # Training: every token sees itself and the tokens before it. is_causal lets torch pick its fused
            # (flash) kernel, the fast path; it means "causal from the first key", so it cannot serve a cache.
            q, k, v = (z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for z in (q, k, v))
            drop = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
            y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
            return self.resid_dropout(self.c_proj(y)), None
        # A cached step (inference only): see cached_attention.
        y, keys, values = torch.ops.gptzoo.cached_attention(q, k, v, cache[0], cache[1], *lengths, self.n_head,
                                                            self.scale)
        return self.c_proj(y), (keys, values)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, lengths: Lengths | None = None
    ) -> tuple[torch.Tensor, KVCache | None]:
        a, present = self.attn(self.ln_1(x), cache, lengths)
        x = x + a
        return x + self.mlp(self.ln_2(x)), present


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tied_head:
            self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections keeps the residual stream's variance flat with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        """All parameters, the tied embedding/head counted once."""
        return sum(p.numel() for p in self.parameters())

    def hidden_states(
        self,
        idx: torch.Tensor,
        positions: torch.Tensor,
        cache: list[KVCache] | None = None,
        lengths: Lengths | None = None,
    ) -> tuple[torch.Tensor, list[KVCache | None]]:
        """The transformer, embeddings to final LayerNorm: hidden states [B, T, n_embd] of tokens `idx` [B, T] at
        `positions` (broadcastable to [B, T]) and every layer's cache with the new keys/values written in.

        Without a cache attention is causal over `idx` (training). A cached step passes every layer's slot cache and
        the rows' `lengths` (seqlens_k [B], total_length: see cached_attention)."""
        if (cache is None) != (lengths is None):
            raise ValueError("a cached step needs both the cache and the rows' lengths (gptzoo.zoo.step_contract)")
        t = self.transformer
        x = t.drop(t.wte(idx) + t.wpe(positions))
        presents = []
        for block, layer_cache in zip(t.h, cache or [None] * len(t.h), strict=True):
            x, present = block(x, layer_cache, lengths)
            presents.append(present)
        return t.ln_f(x), presents

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for every position and the mean cross-entropy when `targets` is given;
        without targets only the last position's logits (as nanoGPT), shape [B, 1, vocab]."""
        t = idx.size(1)
        if t > self.config.block_size:
            raise ValueError(f"sequence of {t} tokens exceeds block_size {self.config.block_size}")
        x, _ = self.hidden_states(idx, torch.arange(t, dtype=torch.long, device=idx.device))
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizers(
        self, weight_decay: float, learning_rate: float, betas: tuple[float, float], device_type: str
    ) -> torch.optim.AdamW:
        # Decay matmul weights and embeddings (>= 2-D); never biases or LayerNorm gains.
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        # The fused kernel is one pass over all parameters; it exists for CPU and CUDA in torch >= 2.4.
        fused = "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type in ("cpu", "cuda")
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)

    @torch.no_grad()
    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None
    ) -> torch.Tensor:
        """nanoGPT's generate: no cache, re-run the context cropped to block_size for every new token.
        Kept as the reference the faster engines are checked and measured against."""
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size :]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("Inf")
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx
