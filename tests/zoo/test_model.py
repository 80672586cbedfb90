import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gptzoo.zoo.kv_step import CachedStep
from gptzoo.zoo.model import GPT, GPTConfig
from gptzoo.zoo.step_contract import attention_bias

TINY = GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True)


def reference_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The same network written out with explicit softmax attention and a triangular mask."""
    t = model.transformer
    B, T = idx.shape
    x = t.wte(idx) + t.wpe(torch.arange(T))
    nh = model.config.n_head
    for block in t.h:
        h = block.ln_1(x)
        q, k, v = block.attn.c_attn(h).split(model.config.n_embd, dim=2)
        q, k, v = (z.view(B, T, nh, -1).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
        att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + block.attn.c_proj(y)
        h = block.ln_2(x)
        x = x + block.mlp.c_proj(F.gelu(block.mlp.c_fc(h)))
    return model.lm_head(t.ln_f(x))


def test_forward_matches_manual_attention_reference():
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (3, TINY.block_size))
    targets = torch.randint(0, TINY.vocab_size, (3, TINY.block_size))
    logits, loss = model(idx, targets)
    ref = reference_logits(model, idx)
    assert logits.shape == (3, TINY.block_size, TINY.vocab_size)
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    ref_loss = F.cross_entropy(ref.view(-1, TINY.vocab_size), targets.view(-1))
    assert abs(loss.item() - ref_loss.item()) < 1e-5
    # an untrained model is close to uniform: loss near ln(vocab)
    assert abs(loss.item() - math.log(TINY.vocab_size)) < 0.5


def test_inference_forward_returns_last_position_only():
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, 5))
    logits, loss = model(idx)
    assert loss is None and logits.shape == (2, 1, TINY.vocab_size)
    torch.testing.assert_close(logits[:, 0], reference_logits(model, idx)[:, -1], atol=1e-5, rtol=1e-5)


def cached_step(step: CachedStep, idx: torch.Tensor, past: list[torch.Tensor], pads=None):
    """One call of the exported module, positions and bias built as the generation loop builds them."""
    B, T = idx.shape
    pads = np.zeros(B, int) if pads is None else np.asarray(pads)
    P = past[0].size(2)
    pos = torch.from_numpy(np.maximum(P + np.arange(T)[None] - pads[:, None], 0))
    out = step(idx, pos, torch.from_numpy(attention_bias(pads, P, T)), *past)
    return out[0], list(out[1:])


def test_exported_step_with_a_cache_equals_the_training_forward():
    """The exported module is the trained forward: a prefill plus cached single-token steps give the logits of one
    plain causal pass (the training path, scaled_dot_product_attention(is_causal=True))."""
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, 12))
    with torch.no_grad():
        full, _ = model(idx, idx)
        step = CachedStep(model)
        empty = [torch.zeros(2, TINY.n_head, 0, TINY.head_dim)] * (2 * TINY.n_layer)
        prefill, cache = cached_step(step, idx[:, :7], empty)
        steps = [prefill]
        for i in range(7, 12):
            logits, cache = cached_step(step, idx[:, i : i + 1], cache)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert len(cache) == 2 * TINY.n_layer and cache[0].shape == (2, TINY.n_head, 12, TINY.head_dim)


def test_left_padding_is_invisible_through_the_bias():
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (1, 6))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), idx], 1)
    empty = [torch.zeros(1, TINY.n_head, 0, TINY.head_dim)] * (2 * TINY.n_layer)
    with torch.no_grad():
        alone, _ = cached_step(CachedStep(model), idx, empty)
        behind_pads, _ = cached_step(CachedStep(model), padded, empty, pads=[3])
    torch.testing.assert_close(behind_pads[:, 3:], alone, atol=1e-5, rtol=1e-5)


def test_exported_module_is_only_an_adapter():
    model = GPT(TINY)
    step = CachedStep(model)
    assert [name for name, _ in step.named_children()] == ["gpt"] and step.gpt is model
    assert list(step.state_dict()) == [f"gpt.{k}" for k in model.state_dict()]


def test_training_attention_is_the_fused_causal_kernel(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    model = GPT(TINY).train()
    idx = torch.randint(0, TINY.vocab_size, (2, 8))
    model(idx, idx)[1].backward()
    assert len(calls) == TINY.n_layer and all(c.get("is_causal") and "attn_mask" not in c for c in calls)


def test_attention_over_a_past_needs_a_bias():
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (1, 4))
    _, cache = model.hidden_states(idx, torch.arange(4))
    with pytest.raises(ValueError, match="needs an attn_bias"):
        model.hidden_states(idx[:, :1], torch.tensor([4]), past=cache)


def test_tied_embedding_and_param_count():
    model = GPT(TINY)
    assert model.lm_head.weight is model.transformer.wte.weight
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_params() == sum(unique.values())


def test_position_beyond_block_size_is_refused():
    model = GPT(TINY)
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(torch.zeros(1, TINY.block_size + 1, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(n_layer=0), "n_layer must be at least 1"), (dict(n_embd=30, n_head=4), "divisible")],
)
def test_config_rejects_bad_shapes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**kwargs)


def test_optimizer_decays_only_matrices():
    model = GPT(TINY)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
