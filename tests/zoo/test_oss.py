"""The GPT-OSS-style block family (gptzoo.zoo.oss) on tiny models: each piece against a written-out reference."""

import math

import pytest
import torch
from torch.nn import functional as F

from gptzoo.zoo import checkpoint
from gptzoo.zoo.arch import config_from_dict, make_model
from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.model import GPT
from gptzoo.zoo.oss import OSS, OSSConfig, rope, swiglu, visible

TINY = dict(arch="oss", block_size=16, vocab_size=50, n_layer=2, n_head=4, n_embd=32, kv_heads=2, window=4)


def tiny(**kw) -> OSS:
    torch.manual_seed(0)
    return make_model(dict(TINY, **kw)).eval()


def reference_attention(attn, x, positions):
    """One attention layer written out per query head: its own kv head (h // group), rotary, mask, sink."""
    B, T, C = x.shape
    nh, nkv, hd = attn.n_head, attn.kv_heads, attn.hd
    q, k, v = attn.qkv(x).split([C, nkv * hd, nkv * hd], dim=2)
    out = []
    for h in range(nh):
        g = h // (nh // nkv)
        qh = rope(q[:, :, h * hd:(h + 1) * hd].unsqueeze(1), positions, attn.theta)[:, 0]
        kh = rope(k[:, :, g * hd:(g + 1) * hd].unsqueeze(1), positions, attn.theta)[:, 0]
        s = qh @ kh.transpose(-2, -1) / math.sqrt(hd)
        for i in range(T):
            for j in range(T):
                if j > i or (attn.window is not None and i - j >= attn.window):
                    s[:, i, j] = float("-inf")
        e = torch.exp(s - s.amax(-1, keepdim=True))
        sink = torch.exp(attn.sinks[h] - s.amax(-1, keepdim=True))
        out.append((e / (e.sum(-1, keepdim=True) + sink)) @ v[:, :, g * hd:(g + 1) * hd])
    return attn.o_proj(torch.cat(out, dim=-1))


@pytest.mark.parametrize("layer", [0, 1])  # 0 sliding, 1 full
def test_attention_matches_per_head_reference_with_gqa_window_and_sinks(layer):
    model = tiny()
    attn = model.h[layer].attn
    with torch.no_grad():
        attn.sinks.copy_(torch.tensor([-1.0, 0.0, 0.5, 2.0]))
    x = torch.randn(2, 10, 32)
    pos = torch.arange(10).view(1, -1)
    torch.testing.assert_close(attn(x, pos), reference_attention(attn, x, pos), atol=1e-5, rtol=1e-5)
    assert (attn.window is not None) == (layer == 0)


@pytest.mark.parametrize("layer", [0, 1])
def test_fused_attention_gradients_match_the_reference_including_the_sinks(layer):
    # the sinks reach torch's fused attention as mask entries (constants to it); their gradient comes from a term
    # that is zero in value (gptzoo.zoo.oss.sink_attention), so check it against autograd through the reference
    model = tiny()
    attn = model.h[layer].attn
    with torch.no_grad():
        attn.sinks.copy_(torch.tensor([-1.0, 0.0, 0.5, 2.0]))
    x = torch.randn(2, 9, 32, requires_grad=True)
    pos = torch.arange(9).view(1, -1) + 40
    w = torch.randn(2, 9, 32)
    grads = []
    for fn in (attn, lambda x, pos: reference_attention(attn, x, pos)):
        attn.zero_grad()
        x.grad = None
        (fn(x, pos) * w).sum().backward()
        grads.append([x.grad.clone(), attn.sinks.grad.clone(), attn.qkv.weight.grad.clone()])
    for fused, ref in zip(*grads, strict=True):
        torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-4)
    assert grads[0][1].abs().min() > 0  # every head's sink learns


def test_sink_takes_probability_mass_from_every_key():
    model = tiny()
    attn = model.h[1].attn
    x = torch.randn(1, 6, 32)
    pos = torch.arange(6).view(1, -1)
    with torch.no_grad():
        attn.sinks.fill_(-1e4)  # sink off: a plain softmax over the keys
        off = attn(x, pos)
        attn.sinks.fill_(1e4)  # all mass to the sink: the heads output nothing, only o_proj's bias is left
        on = attn(x, pos)
    assert not torch.allclose(off, on)
    torch.testing.assert_close(on, attn.o_proj.bias.expand_as(on) if attn.o_proj.bias is not None
                               else torch.zeros_like(on))


def test_window_mask_sees_exactly_the_last_w_positions():
    pos = torch.arange(8)
    m = visible(pos, pos, 3)
    assert m[5].tolist() == [False, False, False, True, True, True, False, False]
    assert visible(pos, pos, None)[5].tolist() == [True] * 6 + [False] * 2


def test_rope_depends_only_on_position_differences_even_past_block_size():
    """Shifting every position by the same amount (far past block_size) leaves the logits unchanged."""
    model = tiny()
    idx = torch.randint(0, 50, (2, 12))
    base = model.lm_head(model.hidden_states(idx, torch.arange(12).view(1, -1)))
    far = model.lm_head(model.hidden_states(idx, (torch.arange(12) + 1000).view(1, -1)))
    torch.testing.assert_close(base, far, atol=1e-4, rtol=1e-4)
    # and RoPE itself is a rotation: norms are kept, positions 0 is the identity
    x = torch.randn(1, 2, 5, 8)
    torch.testing.assert_close(rope(x, torch.zeros(1, 5), 1e4), x)
    torch.testing.assert_close(rope(x, torch.arange(5).view(1, -1) + 300, 1e4).norm(dim=-1), x.norm(dim=-1))


def test_swiglu_matches_gpt_oss_formula_with_clamps():
    h = torch.tensor([[-9.0, 0.5, 9.0, 2.0, -8.0, 8.0]])  # glu half: -9, .5, 9; linear half: 2, -8, 8
    glu, lin = torch.tensor([-9.0, 0.5, 7.0]), torch.tensor([2.0, -7.0, 7.0])
    torch.testing.assert_close(swiglu(h), (glu * torch.sigmoid(1.702 * glu) * (lin + 1)).view(1, -1))


def test_moe_routes_each_token_to_its_top_k_experts_weighted_by_softmax_over_them():
    model = tiny(experts=4, experts_per_token=2)
    moe = model.h[0].mlp
    x = torch.randn(7, 32)
    logits = moe.router(x)
    expected = torch.zeros_like(x)
    for n in range(7):
        top = logits[n].topk(2)
        w = top.values.softmax(-1)
        for slot, e in enumerate(top.indices.tolist()):
            expected[n] += w[slot] * moe.experts[e](x[n:n + 1])[0]
    torch.testing.assert_close(moe(x), expected, atol=1e-5, rtol=1e-5)


def test_balance_loss_is_one_when_uniform_and_joins_the_training_loss():
    model = tiny(experts=4, experts_per_token=1, balance_coef=0.5)
    moe = model.h[0].mlp
    with torch.no_grad():  # a router that ignores the token: uniform probabilities, whichever expert wins the ties
        moe.router.weight.zero_()
        moe.router.bias.zero_()
    moe(torch.randn(8, 32))
    torch.testing.assert_close(moe.balance, torch.tensor(1.0))  # E * (f_0 = 1) * (P_0 = 1/4)
    with torch.no_grad():  # every token to expert 2 with certainty: the worst imbalance, E * 1 * 1 = E
        moe.router.bias.copy_(torch.tensor([0.0, 0.0, 50.0, 0.0]))
    moe(torch.randn(8, 32))
    torch.testing.assert_close(moe.balance, torch.tensor(4.0))

    idx, targets = torch.randint(0, 50, (2, 8)), torch.randint(0, 50, (2, 8))
    _, eval_loss = model(idx, targets)  # evaluation: cross-entropy only
    logits, loss = model.train()(idx, targets)
    ce = F.cross_entropy(logits.view(-1, 50), targets.view(-1))
    balance = torch.stack([b.mlp.balance for b in model.h]).mean()
    torch.testing.assert_close(model.balance_loss, balance)
    torch.testing.assert_close(loss, ce + 0.5 * balance)
    torch.testing.assert_close(eval_loss, ce)


def test_a_few_training_steps_lower_the_loss_dense_and_moe():
    for kw in (dict(), dict(experts=4, experts_per_token=2)):
        model = tiny(**kw).train()
        opt = model.configure_optimizers(0.0, 3e-3, (0.9, 0.99), "cpu")
        idx = torch.randint(0, 50, (4, 16))
        first = None
        for _ in range(30):
            _, loss = model(idx[:, :-1], idx[:, 1:])
            first = first if first is not None else loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < first - 0.5
        assert model.h[0].attn.sinks.grad is not None and model.h[0].attn.sinks.grad.abs().sum() > 0


def test_factory_keeps_gpt2_default_and_round_trips_oss_checkpoints(tmp_path):
    gpt2 = make_model(dict(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32))
    assert isinstance(gpt2, GPT)  # no `arch`: nanoGPT's model_args stay gpt2
    model = tiny(experts=2, experts_per_token=1)
    args = model.config.to_dict()
    assert config_from_dict(args) == model.config and args["arch"] == "oss"
    loaded = checkpoint.build_model({"model": model.state_dict(), "model_args": args})
    idx = torch.randint(0, 50, (1, 9))
    torch.testing.assert_close(loaded(idx)[0], model(idx)[0])
    with pytest.raises(BadValue, match="unknown arch"):
        make_model(dict(TINY, arch="llama"))
    with pytest.raises(ValueError, match="kv_heads"):
        OSSConfig(n_head=4, n_embd=32, kv_heads=3)
