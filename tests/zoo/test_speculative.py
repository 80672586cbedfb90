"""Speculative decoding: the target's greedy text exactly, its sampling distribution exactly (a statistical test),
rollback and the window, refusals. The tiny exported model is the target; drafts are the same model (agrees on
everything) and a random 1-layer model on the torch backend (agrees on little)."""

import math
from collections import Counter

import pytest
import torch

from gptzoo.zoo import speculative
from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.generate import generate
from gptzoo.zoo.kv_step import TorchModel
from gptzoo.zoo.model import GPT, GPTConfig
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.store import Store
from gptzoo.zoo.tokenizers import from_spec


@pytest.fixture(scope="module")
def zoo(exported_store):
    v = Store(exported_store).load("shakespeare-char-2l")
    target = OnnxModel(v.path("model.onnx"), device="cpu", threads=1)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    s = target.shape
    stranger = TorchModel(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=s.block_size,
                                        vocab_size=s.vocab_size, dropout=0.0, bias=False)).eval())
    return target, stranger, from_spec(v.card.tokenizer)


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("drafter", ["itself", "stranger"])
def test_greedy_text_is_the_targets_own_past_the_window(zoo, k, drafter):
    target, stranger, tok = zoo
    draft = target if drafter == "itself" else stranger
    params = SamplingParams(max_tokens=90, temperature=0.0)
    (plain,) = generate(target, tok, ["ROMEO:"], params)
    got, stats = speculative.generate(target, draft, tok, "ROMEO:", params, k=k)
    assert got.tokens == plain.tokens and got.text == plain.text  # 90 tokens: past the 32-token window twice
    assert stats.drafted > 0
    if drafter == "itself":  # a draft that is the target is always right: one target call per k + 1 tokens
        assert stats.acceptance == 1.0 and stats.target_calls < 90 / (k + 1) + 10
    else:
        assert stats.accepted < stats.drafted


def test_a_seed_gives_the_same_text_every_run_and_stops_work(zoo):
    target, stranger, tok = zoo
    params = SamplingParams(max_tokens=60, temperature=0.9, seed=11)
    a, _ = speculative.generate(target, stranger, tok, "KING:", params, k=4)
    b, _ = speculative.generate(target, stranger, tok, "KING:", params, k=4)
    assert a.tokens == b.tokens and len(a.tokens) == 60
    stop = a.text[20:22]
    c, _ = speculative.generate(target, stranger, tok, "KING:", SamplingParams(max_tokens=60, temperature=0.9,
                                                                               seed=11, stop=[stop]), k=4)
    assert c.finish_reason == "stop" and c.text == a.text[: a.text.index(stop)]


def chi_square_critical(dof: int, alpha_z: float = 3.09) -> float:
    """Wilson-Hilferty: the chi-square quantile with `dof` degrees of freedom at the normal quantile alpha_z (3.09:
    a 0.1% false alarm rate)."""
    return dof * (1 - 2 / (9 * dof) + alpha_z * math.sqrt(2 / (9 * dof))) ** 3


def homogeneous(a: Counter, b: Counter, min_expected: float = 5.0) -> tuple[float, float]:
    """Two-sample chi-square statistic and its critical value (categories too rare to test pooled into one)."""
    na, nb = sum(a.values()), sum(b.values())
    cats, rare = [], [0, 0]
    for c in set(a) | set(b):
        if (a[c] + b[c]) * min(na, nb) / (na + nb) >= min_expected:
            cats.append((a[c], b[c]))
        else:
            rare[0], rare[1] = rare[0] + a[c], rare[1] + b[c]
    if sum(rare) >= min_expected * 2:
        cats.append(tuple(rare))
    stat = 0.0
    for x, y in cats:
        for observed, n in ((x, na), (y, nb)):
            expected = (x + y) * n / (na + nb)
            stat += (observed - expected) ** 2 / expected
    return stat, chi_square_critical(len(cats) - 1)


def test_sampling_with_a_draft_keeps_the_targets_distribution(zoo):
    """At temperature 0.8 with top-k and top-p, the next token after a fixed context is distributed as without a
    draft: 3,000 seeded samples each (max_tokens=1: the token is drafted and verified, or corrected), a two-sample
    chi-square test at a 0.1% false alarm rate. The verdict is fixed by the seeds; the same test rejects, by a wide
    margin, a broken acceptance rule that keeps every proposal."""
    target, stranger, tok = zoo

    def params(seed):
        return SamplingParams(max_tokens=1, temperature=0.8, top_k=20, top_p=0.95, seed=seed)

    def drafted(seeds):
        return Counter(speculative.generate(target, stranger, tok, "ROMEO:", params(s), k=1)[0].tokens[0]
                       for s in seeds)

    n = 3000
    plain = Counter(generate(target, tok, ["ROMEO:"], params(s))[0].tokens[0] for s in range(n))
    stat, critical = homogeneous(plain, drafted(range(n, 2 * n)))
    assert stat < critical, (stat, critical)
    rule = speculative._verify

    def keep_everything(logits, proposals, qs, p, rng):
        return list(proposals), rule(logits[len(proposals) :], [], [], p, rng)[1]

    speculative._verify = keep_everything
    try:
        wrong = drafted(range(2 * n, 3 * n))
    finally:
        speculative._verify = rule
    stat_wrong, critical_wrong = homogeneous(plain, wrong)
    assert stat_wrong > 10 * critical_wrong, (stat_wrong, critical_wrong)


@pytest.mark.parametrize(("k", "match"), [(0, "within 1..16"), (17, "within 1..16")])
def test_draft_tokens_outside_the_range_are_refused(zoo, k, match):
    target, _, tok = zoo
    with pytest.raises(BadValue, match=match):
        speculative.generate(target, target, tok, "A", SamplingParams(max_tokens=2), k=k)


def test_a_draft_with_another_vocabulary_or_a_shorter_window_is_refused(zoo):
    target, _, tok = zoo
    s = target.shape
    other = TorchModel(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=s.block_size, vocab_size=99)))
    with pytest.raises(BadValue, match="vocabulary"):
        speculative.generate(target, other, tok, "A", SamplingParams(max_tokens=2))
    short = TorchModel(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=s.vocab_size)))
    with pytest.raises(BadValue, match="window"):
        speculative.generate(target, short, tok, "A", SamplingParams(max_tokens=2))
