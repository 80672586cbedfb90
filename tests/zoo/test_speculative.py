"""Speculative decoding: the target's greedy text exactly, its sampling distribution exactly (a statistical test),
rollback and the window, refusals; rows drafting in a batch beside rows that do not; how much rows draft. The tiny
exported model is the target; drafts are the same model on onnxruntime (agrees on everything) and a random 1-layer
model on the torch backend (agrees on little)."""

import math
from collections import Counter

import pytest
import torch

from gptzoo.zoo import speculative
from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.generate import Batch, generate, generate_drafted
from gptzoo.zoo.kv_step import TorchModel
from gptzoo.zoo.model import GPT, GPTConfig
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.speculative import Draft
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


def greedy(n):
    return SamplingParams(max_tokens=n, temperature=0.0)


@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("drafter", ["itself", "stranger"])
def test_greedy_text_is_the_targets_own_past_the_window(zoo, k, drafter):
    target, stranger, tok = zoo
    draft = Draft(target if drafter == "itself" else stranger, k, adaptive=False)  # k every round
    (plain,) = generate(target, tok, ["ROMEO:"], greedy(90))
    got, stats = generate_drafted(target, draft, tok, "ROMEO:", greedy(90))
    assert got.tokens == plain.tokens and got.text == plain.text  # 90 tokens: past the 32-token window twice
    assert stats.drafted > 0
    if drafter == "itself":  # a draft that is the target is always right: one target call per k + 1 tokens
        assert stats.acceptance == 1.0 and stats.target_calls < 90 / (k + 1) + 10
    else:
        assert stats.accepted < stats.drafted


@pytest.mark.parametrize("drafter", ["itself", "stranger"])
def test_adaptive_drafting_keeps_the_text(zoo, drafter):
    target, stranger, tok = zoo
    draft = Draft(target if drafter == "itself" else stranger, 6, step_cost=0.05)
    (plain,) = generate(target, tok, ["KING:"], greedy(90))
    got, stats = generate_drafted(target, draft, tok, "KING:", greedy(90))
    assert got.tokens == plain.tokens and stats.drafted > 0


def test_a_seed_gives_the_same_text_every_run_and_stops_work(zoo):
    target, stranger, tok = zoo
    draft = Draft(stranger, 4, adaptive=False)
    params = SamplingParams(max_tokens=60, temperature=0.9, seed=11)
    a, _ = generate_drafted(target, draft, tok, "KING:", params)
    b, _ = generate_drafted(target, draft, tok, "KING:", params)
    assert a.tokens == b.tokens and len(a.tokens) == 60
    stop = a.text[20:22]
    c, _ = generate_drafted(target, draft, tok, "KING:", SamplingParams(max_tokens=60, temperature=0.9,
                                                                            seed=11, stop=[stop]))
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
    draft: 3,000 seeded samples each (max_tokens=1: the draft proposes the first token, verified with the prompt's
    prefill, kept or corrected), a two-sample chi-square test at a 0.1% false alarm rate. The verdict is fixed by
    the seeds; the same test rejects, by a wide margin, a broken acceptance rule that keeps every proposal."""
    target, stranger, tok = zoo

    def params(seed):
        return SamplingParams(max_tokens=1, temperature=0.8, top_k=20, top_p=0.95, seed=seed)

    def drafted(seeds):
        draft = Draft(stranger, 1, adaptive=False)
        return Counter(generate_drafted(target, draft, tok, "ROMEO:", params(s))[0].tokens[0] for s in seeds)

    n = 3000
    plain = Counter(generate(target, tok, ["ROMEO:"], params(s))[0].tokens[0] for s in range(n))
    stat, critical = homogeneous(plain, drafted(range(n, 2 * n)))
    assert stat < critical, (stat, critical)
    rule = speculative.accept

    def keep_everything(logits, proposals, qs, p, rng):
        return list(proposals), rule(logits[len(proposals) :], [], [], p, rng)[1]

    speculative.accept = keep_everything
    try:
        wrong = drafted(range(2 * n, 3 * n))
    finally:
        speculative.accept = rule
    stat_wrong, critical_wrong = homogeneous(plain, wrong)
    assert stat_wrong > 10 * critical_wrong, (stat_wrong, critical_wrong)


@pytest.mark.parametrize(("k", "match"), [(0, "within 1..16"), (17, "within 1..16")])
def test_draft_tokens_outside_the_range_are_refused(zoo, k, match):
    target, _, tok = zoo
    with pytest.raises(BadValue, match=match):
        generate_drafted(target, target, tok, "A", SamplingParams(max_tokens=2), k=k)


def test_a_draft_with_another_vocabulary_or_a_shorter_window_or_no_cache_is_refused(zoo):
    target, _, tok = zoo
    s = target.shape
    other = TorchModel(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=s.block_size, vocab_size=99)))
    with pytest.raises(BadValue, match="vocabulary"):
        generate_drafted(target, other, tok, "A", SamplingParams(max_tokens=2))
    short = TorchModel(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=s.vocab_size)))
    with pytest.raises(BadValue, match="window"):
        Batch(target, tok, draft=Draft(short))
    with pytest.raises(BadValue, match="cached context policy"):
        Batch(target, tok, policy="exact", draft=Draft(target))


# -- in a batch -----------------------------------------------------------------------------------------------------
PROMPTS = ["ROMEO:", "First Citizen:\nBefore we proceed any further", "O", "JULIET:\nAy me", "Nurse"]


def joining_and_leaving(target, tok, draft, params, prefill_chunk=None, opt_out=()):
    """Rows of different prompts and lengths join a 3-slot batch (one every third step while a slot is free) and
    leave when done; the rows, in the order of `params`, and the batch."""
    batch = Batch(target, tok, slots=3, prefill_chunk=prefill_chunk, draft=draft)
    waiting = [batch.new_row(tok.encode(p), sp, draft=i not in opt_out)
               for i, (p, sp) in enumerate(zip(PROMPTS, params, strict=True))]
    rows, steps = list(waiting), 0
    while waiting or batch.rows:
        if waiting and batch.free_slots and steps % 3 == 0:
            batch.add([waiting.pop(0)])
        batch.remove(batch.step())
        steps += 1
    return rows, batch


@pytest.mark.parametrize("drafter", ["itself", "stranger"])
@pytest.mark.parametrize("prefill_chunk", [None, 5])
def test_drafting_rows_in_a_batch_write_the_text_they_write_without_a_draft(zoo, drafter, prefill_chunk):
    """Every row drafts every step it can: rows verify their proposals in calls of their own (with the end of their
    prompt, with a re-prefilled window), the draft decodes them together, while others join, prefill in chunks and
    leave."""
    target, stranger, tok = zoo
    params = [greedy(n) for n in (70, 25, 50, 40, 12)]
    plain, _ = joining_and_leaving(target, tok, None, params, prefill_chunk)
    draft = Draft(target if drafter == "itself" else stranger, 3, adaptive=False)
    rows, batch = joining_and_leaving(target, tok, draft, params, prefill_chunk)
    assert [r.generated for r in rows] == [r.generated for r in plain]
    assert all(r.drafted > 0 for r in rows)
    if drafter == "itself":
        assert all(r.accepted == r.drafted for r in rows) and batch.calls < sum(len(r.generated) for r in rows) / 2


def test_rows_that_opt_out_decode_beside_drafting_rows(zoo):
    target, _, tok = zoo
    params = [greedy(n) for n in (60, 30, 45, 20, 15)]
    plain, _ = joining_and_leaving(target, tok, None, params)
    rows, _ = joining_and_leaving(target, tok, Draft(target, 4, adaptive=False), params, opt_out=(1, 3))
    assert [r.generated for r in rows] == [r.generated for r in plain]
    assert rows[1].drafted == rows[3].drafted == 0 and rows[0].drafted > 0


def test_seeded_rows_in_a_drafting_batch_give_the_same_text_every_run(zoo):
    target, stranger, tok = zoo
    params = [SamplingParams(max_tokens=n, temperature=0.8, top_k=30, seed=s)
              for n, s in ((50, 1), (30, 2), (40, 3), (20, 4), (25, 5))]
    draft = Draft(stranger, 3, adaptive=False)
    a, _ = joining_and_leaving(target, tok, draft, params)
    b, _ = joining_and_leaving(target, tok, draft, params)
    assert [r.generated for r in a] == [r.generated for r in b]
    assert [len(r.generated) for r in a] == [50, 30, 40, 20, 25]


def test_the_counters_add_up(zoo):
    target, stranger, tok = zoo
    batch = Batch(target, tok, slots=2, draft=Draft(stranger, 4, adaptive=False))
    rows = [batch.new_row(tok.encode(p), greedy(40)) for p in ("ROMEO:", "KING:")]
    batch.add(rows)
    drafted = accepted = 0
    while batch.rows:
        batch.remove(batch.step())
        st = batch.stats
        assert 0 <= st.accepted <= st.drafted <= 4 * st.verify_rows
        drafted, accepted = drafted + st.drafted, accepted + st.accepted
    assert drafted == sum(r.drafted for r in rows) > accepted == sum(r.accepted for r in rows)


def test_rounds_stay_within_k_the_window_and_max_tokens(zoo):
    target, _, tok = zoo
    batch = Batch(target, tok, slots=1, draft=Draft(target, 8, adaptive=False))
    row = batch.new_row(tok.encode("A"), greedy(45))
    batch.add([row])
    while not row.done:
        n, cached = len(row.generated), row.cached
        batch.step()
        assert batch.stats.drafted <= 8 and row.cached <= 32 and len(row.generated) <= 45
        assert len(row.generated) - n <= batch.stats.drafted + 1
        if cached == 31:  # the window's last position: a plain step, no room to draft into
            assert batch.stats.verify_rows == 0
    assert len(row.generated) == 45


def test_a_batch_full_enough_does_not_draft_and_a_row_alone_does(zoo):
    """With the default costs (a CPU: each drafting row verified in its own call, one more row in the batched call
    0.4 of a call), four rows decoding together do not draft even with a draft that always agrees and costs little;
    the row left alone does."""
    target, _, tok = zoo
    batch = Batch(target, tok, slots=4, draft=Draft(target, 4, step_cost=0.05))
    rows = [batch.new_row(tok.encode(p), greedy(n)) for p, n in (("ROMEO:", 20), ("KING:", 20), ("A", 20),
                                                                  ("O", 90))]
    batch.add(rows)
    batch.step()  # the prompts, and each row's first token
    while len(batch.rows) == 4:
        batch.remove(batch.step())
        assert batch.stats.verify_rows == 0 and batch.stats.decode_rows == 4
    while batch.rows:
        batch.remove(batch.step())
    assert rows[3].drafted > 0 and all(r.drafted == 0 for r in rows[:3])


def test_a_draft_that_never_agrees_is_mostly_left_alone(zoo):
    """A row stops drafting after a few rejected rounds, and tries one round again after RETRY steps, then after
    twice as many each time."""
    target, _, tok = zoo
    s = target.shape
    mute = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=s.block_size, vocab_size=s.vocab_size))
    with torch.no_grad():
        mute.lm_head.weight.zero_()  # every logit 0: it always proposes token 0, which the target never writes here
    (plain,) = generate(target, tok, ["ROMEO:"], greedy(200))
    assert 0 not in plain.tokens
    batch = Batch(target, tok, slots=1, draft=Draft(TorchModel(mute.eval()), 4, step_cost=0.05))
    row = batch.new_row(tok.encode("ROMEO:"), greedy(200))
    batch.add([row])
    steps = drafting = 0
    while not row.done:
        batch.step()
        steps, drafting = steps + 1, drafting + bool(batch.stats.verify_rows)
    assert row.generated == plain.tokens and row.accepted == 0
    assert 5 <= drafting <= 20 < steps / 8  # a few rounds, then TRIAL rounds after 32, 64 and 128 steps


def test_drafting_rules():
    assert speculative.batch_rate(1, 0.4) == 1.0 and speculative.batch_rate(8, 0.4) == pytest.approx(8 / 3.8)
    assert speculative.round_rate(3, 3, 0.3, 0.35) == pytest.approx(4 / 2.35)
    pace = speculative.Pace(1.25)
    assert pace.drafts(1.0, 1.25) and not pace.drafts(1.5, 1.25)  # alone it drafts; a fuller batch stops it
    pace.observe(0.5)
    assert pace.gain == pytest.approx(0.875)  # the prior counts as one round
    trial = speculative.TRIAL
    assert all(pace.drafts(1.0, 1.25) for _ in range(trial))  # a few rounds before its gain can stop it
    for wait in (speculative.RETRY, 2 * speculative.RETRY):  # then a trial after a wait, twice as long each time
        assert not any(pace.drafts(1.0, 1.25) for _ in range(wait - 1))
        assert all(pace.drafts(1.0, 1.25) for _ in range(trial))
    assert not any(pace.drafts(1.0, 0.9) for _ in range(10 * speculative.RETRY))  # the batch stops it: no tries
    for _ in range(100):
        pace.observe(2.0)
    assert pace.gain == pytest.approx(2.0, abs=0.01) and pace.drafts(1.0, 1.25)
    with pytest.raises(BadValue, match="within 1..16"):
        Draft(None, 17)


@pytest.mark.parametrize(("k", "round_cost", "token_cost"), [(4, 2 / 13, 0.35), (8, 0.3, 1.2), (1, 0.0, 0.2)])
def test_no_row_drafts_in_a_batch_at_or_above_the_gain_ceiling(k, round_cost, token_cost):
    """The ceiling bounds every round's rate and the prior: a batch whose step makes that much asks no row (the
    shortcut in Batch._plan), because every row would answer no and none would change its record."""
    ceiling = speculative.gain_ceiling(k, 1.25, round_cost, token_cost)
    rates = [speculative.round_rate(kept, p, round_cost, token_cost) for p in range(k + 1) for kept in range(p + 1)]
    assert max(rates + [1.25]) == pytest.approx(ceiling)
    pace = speculative.Pace(1.25)
    for rate in sorted(rates):
        pace.observe(rate)
    pace.observe(max(rates))
    before = (pace.gain, pace.trial, pace.waited, pace.patience)
    assert not any(pace.drafts(ceiling, 1.25) for _ in range(3 * speculative.MAX_WAIT))
    assert (pace.gain, pace.trial, pace.waited, pace.patience) == before
