import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gptzoo.zoo.kv_step import CachedStep
from gptzoo.zoo.model import GPT, GPTConfig
from gptzoo.zoo.step_contract import Call

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


def cached_step(step: CachedStep, call: Call, cache: list[torch.Tensor]):
    """One call of the exported module on the call's slots of `cache`; the written slots are put back."""
    rows = slice(call.first, call.first + call.rows)
    arrays = (call.ids, call.positions, call.seqlens_k, call.total_length, call.logits_index)
    out = step(*(torch.from_numpy(a) for a in arrays), *(c[rows] for c in cache))
    for c, written in zip(cache, out[1:], strict=True):
        c[rows] = written
    return out[0]


def new_cache(slots: int, length: int = TINY.block_size + 1) -> list[torch.Tensor]:
    return [torch.zeros(slots, TINY.n_head, length, TINY.head_dim) for _ in range(2 * TINY.n_layer)]


def test_exported_step_with_a_cache_equals_the_training_forward():
    """The exported module is the trained forward: a prefill plus cached single-token steps give the logits of one
    plain causal pass (the training path, scaled_dot_product_attention(is_causal=True))."""
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, 12))
    with torch.no_grad():
        full, _ = model(idx, idx)
        step, cache = CachedStep(model), new_cache(3)
        # rows in slots 1 and 2: slot 0 must stay untouched; every prompt position's logits wanted
        steps = [cached_step(step, Call.fill(1, idx[:, :7].numpy(), [0, 0], wanted=list(range(7))), cache)]
        for i in range(7, 12):
            call = Call.decode(1, idx[:, i].numpy(), np.full(2, i), np.ones(2, bool))
            steps.append(cached_step(step, call, cache))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert all(float(c[0].abs().max()) == 0.0 for c in cache)  # the call's slots only
    assert all(float(c[1:, :, :12].abs().amax(dim=-1).min()) > 0 for c in cache)  # 12 positions written
    assert all(float(c[1:, :, 12:].abs().max()) == 0.0 for c in cache)  # and no more


def test_rows_of_different_lengths_and_an_earlier_owner_are_invisible():
    """Rows decode together each at its own length, and what an earlier owner left in a slot (or a neighbour holds)
    never reaches a row: the same logits as each row alone in a clean cache."""
    model = GPT(TINY).eval()
    a, b = torch.randint(0, TINY.vocab_size, (1, 9)), torch.randint(0, TINY.vocab_size, (1, 5))
    with torch.no_grad():
        alone = []
        for ids in (a, b):
            cache, n = new_cache(1), ids.size(1)
            cached_step(CachedStep(model), Call.fill(0, ids[:, :-1].numpy(), [0]), cache)
            alone.append(cached_step(CachedStep(model), Call.decode(0, ids[:, -1].numpy(), np.array([n - 1]),
                                                                    np.ones(1, bool)), cache))
        dirty = new_cache(2)
        for c in dirty:
            c.normal_()  # an earlier owner's keys and values
        cached_step(CachedStep(model), Call.fill(0, a[:, :-1].numpy(), [0]), dirty)
        cached_step(CachedStep(model), Call.fill(1, b[:, :-1].numpy(), [0]), dirty)
        together = cached_step(CachedStep(model), Call.decode(0, np.array([a[0, -1], b[0, -1]]), np.array([8, 4]),
                                                              np.ones(2, bool)), dirty)
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-5)


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


def test_a_cached_step_needs_its_cache_index_and_bias():
    model = GPT(TINY).eval()
    idx = torch.randint(0, TINY.vocab_size, (1, 4))
    cache = list(zip(new_cache(1)[0::2], new_cache(1)[1::2], strict=True))
    with pytest.raises(ValueError, match="needs both the cache and the rows' lengths"):
        model.hidden_states(idx, torch.arange(4), cache=cache)


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
