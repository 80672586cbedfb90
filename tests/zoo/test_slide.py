"""The `slide` context policy (issue 25, gptzoo.zoo.context): an oss row past its window keeps decoding from its cache
(its last entries moved to the slot's front, true positions fed), on both backends, alone, batched and drafted,
against a written-out reference of what each layer sees; and its refusal for the gpt2 block."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gptzoo.cli.main import app
from gptzoo.exports.onnx_export import export_model
from gptzoo.zoo.context import default_policy, slide_keep
from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.evaluate import policy_nll
from gptzoo.zoo.generate import Batch, generate_drafted
from gptzoo.zoo.kv_step import TorchModel
from gptzoo.zoo.model import GPT, GPTConfig
from gptzoo.zoo.oss import OSS, OSSConfig, rope
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.speculative import Draft

BLOCK, WINDOW = 32, 8


class _NoText:
    def decode_bytes(self, ids: list[int]) -> bytes:
        return b""

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 65 for c in text]


def _oss(layers: int = 2, seed: int = 0) -> OSS:
    """An untrained oss model (2 layers, width 32, 4 heads on 2 kv heads, window 8 on layer 0) with weights wide
    enough that greedy decoding varies, and sinks and q/k/v biases far from their zero init."""
    torch.manual_seed(seed)
    m = OSS(OSSConfig(block_size=BLOCK, vocab_size=65, n_layer=layers, n_head=4, n_embd=32, kv_heads=2,
                      window=WINDOW))
    with torch.no_grad():
        for p in m.h.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.4)
        for b in m.h:
            b.attn.sinks.normal_(0, 1.0)
            b.attn.qkv.bias.normal_(0, 0.1)
        m.wte.weight.normal_(0, 0.5)
    return m.eval()


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    m = _oss()
    path = tmp_path_factory.mktemp("slide") / "m.onnx"
    export_model(m, path, "t")
    return m, {"torch": TorchModel(m), "onnx": OnnxModel(path, device="cpu")}


class Reference:
    """The oss model fed one token at a time with no slot cache: each layer's rotated keys and values are kept per
    context index, and a token at index t attends to indices start..t (start: where the policy's window begins,
    moved by block_size - keep each time the window is full), within the layer's window on sliding layers. Written
    from the model's modules, sharing nothing with the cached step, the slots or the move."""

    def __init__(self, model: OSS, keep: int):
        self.m, self.keep, self.start = model, keep, 0
        self.kv: list[tuple[list, list]] = [([], []) for _ in model.h]

    @torch.no_grad()
    def feed(self, token: int) -> torch.Tensor:
        t = len(self.kv[0][0])
        if t - self.start == self.m.config.block_size:  # the window is full: it slides
            self.start += self.m.config.block_size - self.keep
        x, pos = self.m.wte(torch.tensor([[token]])), torch.tensor([[t]])
        for block, (keys, values) in zip(self.m.h, self.kv, strict=True):
            a = block.attn
            q, k, v = a.qkv(block.norm_1(x)).split([a.n_head * a.hd, a.kv_heads * a.hd, a.kv_heads * a.hd], dim=2)
            q = rope(q.view(1, 1, a.n_head, a.hd).transpose(1, 2), pos, a.theta)[0, :, 0]  # [n_head, hd]
            keys.append(rope(k.view(1, 1, a.kv_heads, a.hd).transpose(1, 2), pos, a.theta)[0, :, 0])
            values.append(v.view(a.kv_heads, a.hd))
            first = max(self.start, t - a.window + 1) if a.window else self.start
            K = torch.stack(keys[first:], 1).repeat_interleave(a.n_head // a.kv_heads, 0)  # [n_head, n, hd]
            V = torch.stack(values[first:], 1).repeat_interleave(a.n_head // a.kv_heads, 0)
            scores = torch.cat(((K @ q.unsqueeze(-1)).squeeze(-1) * a.scale, a.sinks.view(-1, 1)), 1)
            y = (scores.softmax(-1)[:, :-1].unsqueeze(1) @ V).reshape(1, 1, -1)
            x = x + a.o_proj(y)
            x = x + block.mlp(block.norm_2(x))
        return self.m.lm_head(self.m.norm_f(x))[0, 0]

    def greedy(self, prompt: list[int], n: int) -> list[int]:
        for token in prompt:
            logits = self.feed(token)
        out = []
        for _ in range(n):
            out.append(int(logits.argmax()))
            if len(out) < n:
                logits = self.feed(out[-1])
        return out


def _run(runner, prompts: list[list[int]], n: int, keep: int | None = None, **kw) -> tuple[list[list[int]], Batch]:
    batch = Batch(runner, _NoText(), slots=len(prompts), keep=keep, **kw)
    rows = [batch.new_row(p, SamplingParams(max_tokens=n, temperature=0.0)) for p in prompts]
    batch.add(rows)
    while not all(r.done for r in rows):
        batch.step()
    return [r.generated for r in rows], batch


PROMPT = [5, 17, 42, 8, 30]


def _moves(fed: int, keep: int) -> int:
    """How often a window slides while `fed` tokens go in, one at a time."""
    start = moves = 0
    for t in range(fed):
        if t - start == BLOCK:
            start, moves = start + BLOCK - keep, moves + 1
    return moves


@pytest.mark.parametrize("keep", [None, 4])  # 3/4 of the window (more than the sliding layer's 8), and fewer
def test_slide_decodes_what_each_layer_would_see_past_the_window_without_recomputing(runners, keep):
    m, backends = runners
    kept = slide_keep(BLOCK) if keep is None else keep
    want = Reference(m, kept).greedy(PROMPT, 330)
    assert len(set(want)) > 10  # a varied sequence, not one token repeated
    for name, runner in backends.items():
        (got,), batch = _run(runner, [PROMPT], 330, keep)
        assert batch.policy == "slide", name
        assert got == want, name
        # one call per token (the prompt's, then one decode each): no window is ever fed again
        assert batch.calls == 330, name
        assert batch.slides == _moves(len(PROMPT) + 330 - 1, kept) > 10, name


def test_rows_sliding_at_different_times_decode_as_each_does_alone(runners):
    m, backends = runners
    long = [(7 * i) % 65 for i in range(45)]  # longer than the window: cropped to its last 32 tokens
    prompts = [PROMPT, [3] * 29, list(range(1, 14)), [60, 2], long]  # their windows fill at different steps
    for name, runner in backends.items():
        alone = [_run(runner, [p], 150)[0][0] for p in prompts]
        assert alone[-1] == Reference(m, slide_keep(BLOCK)).greedy(long[-BLOCK:], 150), name
        together, batch = _run(runner, prompts, 150)
        assert together == alone, name
        chunked, _ = _run(runner, prompts, 150, prefill_chunk=7)  # prompts joining over several steps
        assert chunked == alone, name
        assert batch.slides >= 5 * 12


def test_a_drafted_row_slides_and_keeps_the_targets_greedy_tokens(runners):
    m, backends = runners
    draft = TorchModel(_oss(layers=1, seed=1))
    (plain,), _ = _run(backends["torch"], [PROMPT], 120)
    got, stats = generate_drafted(backends["torch"], draft, _NoText(), "".join(chr(t) for t in PROMPT),
                                  SamplingParams(max_tokens=120, temperature=0.0), k=4)
    assert got.tokens == plain and stats.drafted > 0
    # the target drafting for itself: every proposal kept, so verifications cross the slides too
    (self_drafted,), batch = _run(backends["torch"], [PROMPT], 120, draft=Draft(backends["torch"], k=4,
                                                                                 adaptive=False))
    assert self_drafted == plain and batch.slides > 5 and batch.accepted > 0


def test_policy_nll_under_slide_is_the_references_teacher_forced_loss(runners):
    m, backends = runners
    rng = np.random.default_rng(0)
    streams = rng.integers(0, 65, (2, 90))
    want = 0.0
    for s in streams:
        ref = Reference(m, 20)
        for i in range(89):
            want -= float(torch.log_softmax(ref.feed(int(s[i])), -1)[s[i + 1]])
    want /= 2 * 89
    for name, runner in backends.items():
        assert abs(policy_nll(runner, streams, "slide", keep=20) - want) < 1e-4, name
        assert policy_nll(runner, streams, "slide", keep=20) != policy_nll(runner, streams, "half"), name


def test_slide_is_the_oss_default_and_refused_for_the_gpt2_block(runners):
    _, backends = runners
    gpt2 = TorchModel(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=BLOCK, vocab_size=65)))
    assert default_policy(backends["onnx"].shape) == "slide" and default_policy(gpt2.shape) == "half"
    assert Batch(gpt2, _NoText()).policy == "half"
    with pytest.raises(BadValue, match="relative positions"):
        Batch(gpt2, _NoText(), policy="slide")
    with pytest.raises(BadValue, match="relative positions"):
        policy_nll(gpt2, np.zeros((1, 40), np.int64), "slide")
    with pytest.raises(BadValue, match="keeps 0 to 31"):
        Batch(backends["torch"], _NoText(), keep=BLOCK)


def test_generate_cli_refuses_slide_for_a_gpt2_variant(exported_store):
    r = CliRunner().invoke(app, ["generate", "--model", "shakespeare-char-2l", "--store", str(exported_store),
                                 "-p", "A", "-n", "5", "--policy", "slide"])
    assert r.exit_code == 2 and "relative positions" in r.output and "Traceback" not in r.output


def test_serve_refuses_slide_for_gpt2_variants(exported_store):
    r = CliRunner().invoke(app, ["serve", "--store", str(exported_store), "--policy", "slide"])
    assert r.exit_code == 2 and r.stderr.startswith("error: --policy slide needs relative positions"), r.output
    assert "shakespeare-char-2l" in r.stderr
