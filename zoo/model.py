"""The GPT of the zoo: nanoGPT's architecture, one readable file.

Learned positions, pre-LayerNorm blocks, causal self-attention, a GELU MLP and an output head tied to the token
embedding. Parameter names match nanoGPT's, so its checkpoints load unchanged.

There is one transformer forward, `GPT.hidden_states`: training (`forward`) calls it with no cache, and then attention
is plain causal through the fused `scaled_dot_product_attention(is_causal=True)`; a cached step (the module exported to
ONNX and the torch generation backend, gptzoo.zoo.kv_step) calls it with explicit positions, every layer's slot cache,
where in it the new tokens' keys/values go (`cache_index`) and an additive attention bias over the whole slot; it
gets the written cache back. So the exported graph is the code that was trained, and the export's parity check
compares the two.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

# One layer's slot cache: keys [rows, n_head, head_dim, cache_length] (transposed) and values [rows, n_head,
# cache_length, head_dim]; row b's tokens sit at the positions they were written to (gptzoo.zoo.step_contract).
KVCache = tuple[torch.Tensor, torch.Tensor]


@dataclass
class GPTConfig:
    block_size: int = 256  # longest context the model sees (learned position embeddings stop here)
    vocab_size: int = 65  # token ids are in [0, vocab_size); 65 for tiny-Shakespeare chars, 50257 for GPT-2 BPE
    n_layer: int = 6  # depth: the one knob the zoo varies
    n_head: int = 6  # attention heads per layer; must divide n_embd
    n_embd: int = 384  # width of the residual stream
    dropout: float = 0.0  # dropout on attention weights and residual branches while training
    bias: bool = False  # biases in Linear and LayerNorm layers (GPT-2 has them; without is slightly better and faster)

    def __post_init__(self) -> None:
        if self.n_layer < 1:
            raise ValueError(f"n_layer must be at least 1, got {self.n_layer}")
        if self.n_head < 1 or self.n_embd < 1 or self.block_size < 1 or self.vocab_size < 1:
            raise ValueError("n_head, n_embd, block_size and vocab_size must all be positive")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

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
        self,
        x: torch.Tensor,
        attn_bias: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cache_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVCache | None]:
        """Attention output and, with a cache, this layer's cache with the new tokens' keys/values written in."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for z in (q, k, v))  # [B, nh, T, hd]
        drop = self.dropout if self.training else 0.0
        if cache is None:
            # Training: every token sees itself and the tokens before it. is_causal lets torch pick its fused
            # (flash) kernel, the fast path; it means "causal from the first key", so it cannot serve a cache.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
            present = None
        else:
            # A cached step: write the new keys/values into each row's slot at `cache_index` [B, T] (an index
            # write, which onnxruntime does in place when the output is bound to the input's buffer, so no step
            # copies the cache), then attend over the whole slot; the caller's bias [B, 1, T, cache_length] says
            # which positions each query sees. Keys are kept transposed, [B, nh, hd, length], so a query's scores are
            # a plain matrix product (onnxruntime's transposed-operand product was 3.5x slower on the cache).
            # Written out because it exports to a smaller graph than scaled_dot_product_attention with a mask.
            rows, heads = torch.arange(B).view(B, 1, 1), torch.arange(self.n_head).view(1, -1, 1)
            dims = torch.arange(C // self.n_head).view(1, 1, -1, 1)
            at = cache_index.view(B, 1, 1, T)
            k = cache[0].index_put((rows.unsqueeze(-1), heads.unsqueeze(-1), dims, at), k.transpose(-2, -1))
            v = cache[1].index_put((rows, heads, at.view(B, 1, T)), v)
            att = torch.softmax((q @ k) * self.scale + attn_bias, dim=-1)
            y = F.dropout(att, drop) @ v if drop else att @ v
            present = (k, v)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y)), present


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
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
        self,
        x: torch.Tensor,
        attn_bias: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cache_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVCache | None]:
        a, present = self.attn(self.ln_1(x), attn_bias, cache, cache_index)
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
        attn_bias: torch.Tensor | None = None,
        cache: list[KVCache] | None = None,
        cache_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[KVCache | None]]:
        """The transformer, embeddings to final LayerNorm: hidden states [B, T, n_embd] of tokens `idx` [B, T] at
        `positions` (broadcastable to [B, T]) and every layer's cache with the new keys/values written in.

        Without a cache attention is causal over `idx` (training). A cached step passes every layer's slot cache,
        where the new tokens go in it (`cache_index` [B, T]) and the additive bias [B, 1, T, cache_length] that says
        which cached positions each query may see."""
        if (cache is None) != (cache_index is None) or (cache is not None and attn_bias is None):
            raise ValueError("a cached step needs the cache, cache_index and attn_bias (gptzoo.zoo.step_contract)")
        t = self.transformer
        x = t.drop(t.wte(idx) + t.wpe(positions))
        presents = []
        for block, layer_cache in zip(t.h, cache or [None] * len(t.h), strict=True):
            x, present = block(x, attn_bias, layer_cache, cache_index)
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
