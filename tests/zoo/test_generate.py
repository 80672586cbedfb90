"""The generation engine on a real exported tiny model (block_size 32, char vocabulary)."""

import numpy as np
import pytest
import torch

from gptzoo.zoo.checkpoint import load_variant
from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.generate import Batch, generate
from gptzoo.zoo.kv_step import TorchModel
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams, logits_to_probs, sample, sample_rows
from gptzoo.zoo.step_contract import StepRunner
from gptzoo.zoo.store import Store
from gptzoo.zoo.tokenizers import from_spec


@pytest.fixture(scope="module")
def engine(exported_store):
    v = Store(exported_store).load("shakespeare-char-2l")
    return OnnxModel(v.path("model.onnx"), device="cpu"), from_spec(v.card.tokenizer), load_variant(v)[1]


def greedy(n, stop=()):
    return SamplingParams(max_tokens=n, temperature=0.0, stop=list(stop))


def test_exact_policy_matches_nanogpt_generate_past_the_window(engine):
    onnx, tok, model = engine
    prompt = "ROMEO:\nWhat light"
    (res,) = generate(onnx, tok, [prompt], greedy(80), policy="exact")
    ids = torch.tensor([tok.encode(prompt)])
    ref = model.generate(ids, 80, temperature=1.0, top_k=1)[0, ids.shape[1]:].tolist()
    assert res.tokens == ref and res.finish_reason == "length" and len(ref) + len(prompt) > 2 * 32


def test_torch_backend_equals_onnx_backend(engine):
    onnx, tok, model = engine
    torch_model = TorchModel(model)
    assert isinstance(onnx, StepRunner) and isinstance(torch_model, StepRunner)
    assert torch_model.shape == onnx.shape  # the same step contract, read from a config and from a graph
    a = generate(onnx, tok, ["KING:"], greedy(60), policy="half")[0]
    b = generate(torch_model, tok, ["KING:"], greedy(60), policy="half")[0]
    assert a.tokens == b.tokens


def test_half_policy_recomputes_once_per_half_window(engine):
    onnx, tok, _ = engine
    batch = Batch(onnx, tok, policy="half")
    row = batch.new_row(tok.encode("A"), greedy(100))
    batch.add([row])
    refills = -1  # the prompt's prefill is not one
    while not row.done:
        batch.step()
        refills += batch.stats.prefill_tokens > 0
    assert len(row.generated) == 100
    # one call per token: the prefill, 99 decodes, of which a re-prefill each time the 32-token window fills
    # (every ~16 tokens) replaces the decode
    assert batch.calls == 100 and 4 <= refills <= 7
    exact = Batch(onnx, tok, policy="exact")
    r2 = exact.new_row(tok.encode("A"), greedy(100))
    exact.add([r2])
    while not r2.done:
        exact.step()
    assert r2.generated[:30] == row.generated[:30]  # identical while the window is not full


def test_batch_of_different_lengths_equals_one_by_one(engine):
    onnx, tok, _ = engine
    prompts = ["ROMEO:", "First Citizen:\nBefore we proceed", "O"]
    params = [SamplingParams(max_tokens=50, temperature=0.9, top_k=20, seed=s) for s in (1, 2, 3)]
    together = generate(onnx, tok, prompts, params)
    alone = [generate(onnx, tok, [p], [sp])[0] for p, sp in zip(prompts, params, strict=True)]
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    assert len({tuple(r.tokens) for r in together}) == 3


def test_rows_join_and_leave_mid_batch(engine):
    onnx, tok, _ = engine
    solo = {s: generate(onnx, tok, [p], [SamplingParams(max_tokens=n, seed=s)])[0].tokens
            for p, n, s in [("ROMEO:", 40, 7), ("JULIET:", 10, 8), ("Nurse", 30, 9)]}
    batch = Batch(onnx, tok)
    a = batch.new_row(tok.encode("ROMEO:"), SamplingParams(max_tokens=40, seed=7))
    batch.add([a])
    for _ in range(5):
        batch.step()
    b = batch.new_row(tok.encode("JULIET:"), SamplingParams(max_tokens=10, seed=8))
    batch.add([b])  # joins while a is mid-generation
    c = None
    while batch.rows:
        finished = batch.step()
        batch.remove(finished)
        if b.done and c is None:
            c = batch.new_row(tok.encode("Nurse"), SamplingParams(max_tokens=30, seed=9))
            batch.add([c])
    assert a.generated == solo[7] and b.generated == solo[8] and c.generated == solo[9]


def test_same_seed_same_text_and_stop_sequences(engine):
    onnx, tok, _ = engine
    p = SamplingParams(max_tokens=60, temperature=1.0, seed=42)
    assert generate(onnx, tok, ["To be"], p)[0].text == generate(onnx, tok, ["To be"], p)[0].text
    full = generate(onnx, tok, ["To be"], greedy(60))[0].text
    stop = full[10:12]
    res = generate(onnx, tok, ["To be"], greedy(60, stop=[stop]))[0]
    assert res.finish_reason == "stop" and res.text == full[: full.index(stop)]


def test_streamed_deltas_add_up_to_the_text(engine):
    onnx, tok, _ = engine
    sp = dict(max_tokens=50, temperature=1.0, seed=5)
    full = generate(onnx, tok, ["HAMLET:"], SamplingParams(**sp))[0].text
    stop = full[30:33]
    deltas = []
    res = generate(onnx, tok, ["HAMLET:"], SamplingParams(**sp, stop=[stop]), on_text=lambda i, d: deltas.append(d))[0]
    assert "".join(deltas) == res.text == full[: full.index(stop)]
    assert len(deltas) >= len(res.text) - 2  # streamed token by token, holding back at most len(stop) - 1


def test_prompt_longer_than_window_is_cropped(engine):
    onnx, tok, _ = engine
    long = "abc " * 40
    res = generate(onnx, tok, [long], greedy(5))[0]
    assert res.prompt_tokens == 32 and len(res.tokens) == 5


def test_sampling_filters():
    logits = np.array([1.0, 3.0, 2.0, 0.5])
    assert logits_to_probs(logits, 1.0, 1, None).tolist() == [0, 1, 0, 0]
    p = logits_to_probs(logits, 1.0, None, 0.7)
    assert p[0] == p[3] == 0 and p[1] > p[2] > 0 and abs(p.sum() - 1) < 1e-12
    rng = np.random.default_rng(0)
    draws = {sample(logits, SamplingParams(top_k=2), rng) for _ in range(200)}
    assert draws == {1, 2}
    assert sample(logits, SamplingParams(temperature=0), rng) == 1


@pytest.mark.parametrize("t", [1e-308, 5e-324, 1e-6])
def test_near_zero_temperature_is_greedy_never_nan(t):
    logits = np.array([1.0, 3.0, 2.0, 0.5])
    assert SamplingParams(temperature=t).temperature == 0.0
    rng = np.random.default_rng(0)
    assert {sample(logits, SamplingParams(temperature=t), rng) for _ in range(20)} == {1}  # was always token 0
    p = logits_to_probs(logits, 1e-4, None, None)  # the smallest temperature that still samples stays finite
    assert np.isfinite(p).all() and p.argmax() == 1


@pytest.mark.parametrize("kw", [dict(max_tokens=0), dict(temperature=-1), dict(temperature=float("nan")),
                                dict(temperature=float("inf")), dict(top_k=0), dict(top_p=1.5), dict(stop=[""])])
def test_bad_sampling_params(kw):
    with pytest.raises(ValueError):
        SamplingParams(**kw)


def test_empty_prompt(engine):
    onnx, tok, _ = engine
    with pytest.raises(ValueError, match="empty"):
        Batch(onnx, tok).new_row([], greedy(3))


def test_policy_nll_equals_plain_loss_inside_the_window_and_differs_past_it(engine, data_dir):
    from gptzoo.zoo.datasets import load
    from gptzoo.zoo.evaluate import policy_nll

    onnx, _, model = engine
    val = np.asarray(load("shakespeare_char", data_dir).val[:2 * 100]).astype(np.int64).reshape(2, 100)
    inside = val[:, :32]
    with torch.no_grad():
        x, y = (torch.from_numpy(np.ascontiguousarray(a)) for a in (inside[:, :-1], inside[:, 1:]))
        _, ref = model(x, y)
    assert abs(policy_nll(onnx, inside, "exact") - ref.item()) < 1e-4
    assert abs(policy_nll(onnx, inside, "half") - ref.item()) < 1e-4
    assert policy_nll(onnx, val, "exact") != policy_nll(onnx, val, "half")


def test_stop_text_holds_back_split_utf8_and_partial_stops():
    from gptzoo.zoo.detok import StopText
    from gptzoo.zoo.tokenizers import GPT2Tokenizer

    tok = GPT2Tokenizer()
    ids = tok.encode("héllo ✓ wörld END more")
    st = StopText(tok, ["END"])
    out = "".join(st.push(i) for i in ids if not st.stopped)
    assert st.stopped and out == st.text == "héllo ✓ wörld " and "\ufffd" not in out
    # a character split across tokens never surfaces half-decoded
    st = StopText(tok, [])
    pieces = [st.push(i) for i in tok.encode("✓✓✓")] + [st.finish()]
    assert "".join(pieces) == "✓✓✓" and all("\ufffd" not in p for p in pieces)


def mixed_params(n: int, seed: int, vocab: int, max_tokens: int = 256) -> list[SamplingParams]:
    """Rows with their own temperature, top_k and top_p (greedy ones included), as a server batch has them."""
    rs = np.random.default_rng(seed)
    return [SamplingParams(max_tokens=max_tokens, temperature=float(rs.choice([0.0, 0.5, 1.0, 1.7])),
                           top_k=None if rs.random() < 0.4 else int(rs.integers(1, vocab + 2)),
                           top_p=None if rs.random() < 0.4 else float(rs.choice([0.3, 0.9, 0.999, 1.0])),
                           seed=int(rs.integers(0, 2**31)))
            for _ in range(n)]


@pytest.mark.parametrize("vocab", [2, 65, 2000, 50257])  # 2000: more rows than one cache-sized block holds
def test_vectorized_sampling_draws_exactly_the_tokens_of_the_per_row_reference(vocab):
    rs = np.random.default_rng(vocab)
    for trial in range(4 if vocab > 10_000 else 25):
        n = int(rs.integers(1, 33))
        logits = (rs.standard_normal((n, vocab)) * rs.choice([0.1, 1.0, 8.0])).astype(np.float32)
        if trial % 3 == 0:
            logits = np.round(logits)  # ties, which argmax, partition and the stable sort must break the same way
        params = mixed_params(n, trial, vocab)
        ref_rngs = [np.random.default_rng(p.seed) for p in params]
        rngs = [np.random.default_rng(p.seed) for p in params]
        for _ in range(3):  # the streams stay in step: one draw per sampled row and token, none for greedy rows
            expected = [sample(logits[i], params[i], ref_rngs[i]) for i in range(n)]
            assert sample_rows(logits, params, rngs) == expected
        assert [r.random() for r in rngs] == [r.random() for r in ref_rngs]


def test_batch_samples_as_the_per_row_reference_did(engine, monkeypatch):
    """The batch's one sampling call per step gives every row the tokens that sampling row by row gave."""
    onnx, tok, _ = engine
    prompts = ["ROMEO:", "First Citizen:\nBefore", "O", "KING HENRY", "a", "To be, or not"]
    params = mixed_params(len(prompts), 1, onnx.shape.vocab_size, max_tokens=70)
    vectorized = generate(onnx, tok, prompts, params)

    def per_row(logits, params, rngs):
        return [sample(x, p, r) for x, p, r in zip(logits, params, rngs, strict=True)]

    monkeypatch.setattr("gptzoo.zoo.generate.sample_rows", per_row)
    assert [r.tokens for r in vectorized] == [r.tokens for r in generate(onnx, tok, prompts, params)]


@pytest.mark.parametrize("policy", ["half", "exact"])
def test_seeded_row_gives_the_same_text_alone_and_in_any_batch(engine, policy):
    """Past the window too: rows whose windows fill in the same step are re-prefilled in one call (half), or each
    recomputed alone (exact); either way a row's text depends on its seed, not on its neighbours."""
    onnx, tok, _ = engine
    row = SamplingParams(max_tokens=60, temperature=1.0, top_k=30, top_p=0.95, seed=1234)
    alone = generate(onnx, tok, ["Nurse:"], row, policy=policy)[0]
    for others in (["ROMEO:"] * 5, ["A", "First Citizen:\nWe are", "Whe"]):  # in step with it, or not
        params = [row] + mixed_params(len(others), len(others), onnx.shape.vocab_size, max_tokens=60)
        inside = generate(onnx, tok, ["Nurse:", *others], params, policy=policy)[0]
        assert (inside.text, inside.tokens) == (alone.text, alone.tokens)
    assert len(alone.tokens) + 6 > 2 * 32  # well past the 32-token window


def test_half_policy_reprefills_rows_that_fill_together_in_one_call(engine):
    onnx, tok, _ = engine
    one, four = Batch(onnx, tok), Batch(onnx, tok)
    one.add([one.new_row(tok.encode("ROMEO"), greedy(40))])
    four.add([four.new_row(tok.encode(p), greedy(40)) for p in ("ROMEO", "KING:", "Nurse", "What?")])
    while one.rows or four.rows:
        one.remove(one.step())
        four.remove(four.step())
    assert four.calls == one.calls  # same prompt lengths: the windows fill in the same steps, one call each time


def test_stop_text_is_incremental_and_stops_at_the_earliest_match():
    from gptzoo.zoo.detok import StopText
    from gptzoo.zoo.tokenizers import CharTokenizer

    tok = CharTokenizer("abcdxyz")
    st = StopText(tok, ["bcd", "zz"])
    text = "abcxyz" * 500
    out, held = [], []
    for c in text:
        out.append(st.push(tok.encode(c)[0]))
        held.append(len(st._pending))
    # what is held back never grows: each token searches and copies a bounded string, however long the text
    assert not st.stopped and max(held) <= 2 and "".join(out) + st.finish() == st.text == text
    # both complete on the last character; the one that starts first wins, whichever the list names first
    for stop in (["yd", "xyd"], ["xyd", "yd"]):
        st = StopText(tok, stop)
        assert "".join(st.push(tok.encode(c)[0]) for c in "abxyd") == st.text == "ab" and st.stopped


def test_a_slot_freed_by_a_cancelled_row_serves_the_next_row_unchanged(engine):
    """Joining and leaving copy nothing: a row cancelled mid-generation leaves its keys/values in its slot, and the
    next row that takes the slot must not see them."""
    onnx, tok, _ = engine
    p = SamplingParams(max_tokens=40, temperature=0.8, seed=5)
    alone = generate(onnx, tok, ["JULIET:"], p)[0].tokens
    batch = Batch(onnx, tok, slots=2)
    gone = batch.new_row(tok.encode("ROMEO: O, she doth"), greedy(60))
    other = batch.new_row(tok.encode("A"), greedy(60))
    batch.add([gone, other])
    for _ in range(20):
        batch.step()
    batch.remove([gone])  # the client left
    late = batch.new_row(tok.encode("JULIET:"), p)
    batch.add([late])
    assert late.slot == 0 and batch.free_slots == 0
    while not late.done:
        batch.step()
    assert late.generated == alone


@pytest.mark.parametrize("policy", ["half", "exact"])
@pytest.mark.parametrize("length", [31, 32])
def test_a_row_at_the_window_edge(engine, policy, length):
    """A prompt that fills the 32-token window (or all but one position): its first tokens go straight into the
    re-prefill (half) or the sliding window (exact); greedy tokens equal the torch backend, and nanoGPT's for exact."""
    onnx, tok, model = engine
    prompt = tok.encode("First Citizen:\nBefore we proceed any further, hear me speak.")[:length]
    (got,) = generate(onnx, tok, [tok.decode(prompt)], greedy(20), policy=policy)
    (ref,) = generate(TorchModel(model), tok, [tok.decode(prompt)], greedy(20), policy=policy)
    assert got.tokens == ref.tokens and got.prompt_tokens == length
    if policy == "exact":
        ids = torch.tensor([prompt])
        assert got.tokens == model.generate(ids, 20, temperature=1.0, top_k=1)[0, length:].tolist()


def test_chunked_prefill_keeps_decoding_rows_moving_and_changes_no_token(engine):
    onnx, tok, _ = engine
    long = tok.encode("First Citizen:\nBefore we proceed any")[:30]  # fed 4 per step
    whole = generate(onnx, tok, [tok.decode(long)], greedy(10))[0].tokens
    batch = Batch(onnx, tok, slots=2, prefill_chunk=4)
    busy = batch.new_row(tok.encode("A"), greedy(40))
    batch.add([busy])
    batch.step()
    late = batch.new_row(long, greedy(10))
    batch.add([late])
    steps = 0
    while not late.generated:
        n = len(busy.generated)
        batch.step()
        steps += 1
        assert len(busy.generated) == n + 1  # the decoding row never waits for the prompt
        assert batch.stats.prefill_tokens <= 4
    assert steps == -(-len(long) // 4)  # the first token comes in the step that feeds the prompt's end
    while not late.done:
        batch.step()
    assert late.generated == whole


def test_first_tokens_are_sampled_before_the_others_decode_and_change_no_token(engine):
    onnx, tok, _ = engine
    params = [SamplingParams(max_tokens=12, seed=s, temperature=1.0) for s in (1, 2, 3)]
    prompts = [tok.encode("A"), tok.encode("ROMEO:"), tok.encode("JULIET:")]
    alone = [generate(onnx, tok, [tok.decode(p)], sp)[0].tokens for p, sp in zip(prompts, params, strict=True)]
    batch = Batch(onnx, tok, slots=3)
    busy = batch.new_row(prompts[0], params[0])
    batch.add([busy])
    batch.step()
    new = [batch.new_row(p, sp) for p, sp in zip(prompts[1:], params[1:], strict=True)]
    batch.add(new)
    seen = []

    def filled():  # the new rows have their first token; the busy row has not decoded yet in this step
        seen.append(([len(r.generated) for r in new], len(busy.generated)))

    batch.step(filled)
    assert seen == [([1, 1], 1)] and len(busy.generated) == 2
    while batch.rows and not all(r.done for r in batch.rows):
        batch.step(filled)
    assert len(seen) == 1  # later steps feed no prompt: no call
    assert [busy.generated, *(r.generated for r in new)] == alone


def test_more_rows_than_slots_are_refused(engine):
    onnx, tok, _ = engine
    batch = Batch(onnx, tok, slots=1)
    batch.add([batch.new_row([1], greedy(2))])
    with pytest.raises(BadValue, match="0 of 1 cache slots are free"):
        batch.add([batch.new_row([1], greedy(2))])
