"""Both block families through the CLI (issue 25): `zoo list` shows each variant's family and its settings,
`generate --draft` takes a draft of either family and keeps the target's greedy text, `bench` measures a store holding
both, and an oss variant exports to int8, loads and scores close to its fp32 figure. Tiny real models:
tests/conftest.py `families_store` (gpt2 and oss, 1 and 2 layers each)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from gptzoo.cli.main import app
from gptzoo.zoo.store import Store

GPT2_2L, GPT2_1L, OSS_2L, OSS_1L = ("shakespeare-char-2l", "shakespeare-char-1l", "shakespeare-char-2l-oss",
                                    "shakespeare-char-1l-oss")


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_zoo_list_shows_the_block_family_and_its_settings(families_store):
    r = run("zoo", "list", "--store", families_store)
    assert r.exit_code == 0, r.output
    rows = {line.split()[1]: line for line in r.stdout.splitlines() if "shakespeare-char-" in line}
    assert set(rows) == {GPT2_2L, GPT2_1L, OSS_2L, OSS_1L}
    assert "oss kv1 w8" in rows[OSS_2L] and "oss kv1 w8" in rows[OSS_1L]
    assert "gpt2" in rows[GPT2_2L] and "oss" not in rows[GPT2_2L].replace(GPT2_2L, "")
    listed = {c["id"]: c for c in json.loads(run("zoo", "list", "--json", "--store", families_store).stdout)}
    assert {i: (c["arch"], c["family"]) for i, c in listed.items()} == {
        GPT2_2L: ("gpt2", "shakespeare-char"), GPT2_1L: ("gpt2", "shakespeare-char"),
        OSS_2L: ("oss", "shakespeare-char-oss"), OSS_1L: ("oss", "shakespeare-char-oss")}
    assert listed[OSS_2L]["arch_args"]["window"] == 8 and "arch_args" not in listed[GPT2_2L]


def _generate(store, model: str, *extra: str) -> str:
    r = run("generate", "--model", model, "--store", store, "-p", "ROMEO:", "-n", 80, "--temperature", 0,
            "--threads", 1, *extra)
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.mark.parametrize("target,draft", [(OSS_2L, GPT2_1L), (GPT2_2L, OSS_1L), (OSS_2L, OSS_1L)],
                         ids=["gpt2-drafts-oss", "oss-drafts-gpt2", "oss-drafts-oss"])
def test_generate_with_a_draft_of_either_family_prints_the_targets_greedy_text(families_store, target, draft):
    want = _generate(families_store, target)
    assert len(set(want)) > 3  # varied text, or any draft would agree
    r = run("generate", "--model", target, "--store", families_store, "-p", "ROMEO:", "-n", 80, "--temperature", 0,
            "--threads", 1, "--draft", draft)
    assert r.exit_code == 0, r.output
    assert r.stdout == want
    assert f"drafted by {draft}" in r.stderr


@pytest.mark.slow
def test_bench_measures_a_store_holding_both_families(families_store):
    r = run("bench", "--quick", "--repeats", 1, "--depths", "", "--json", "--store", families_store)
    assert r.exit_code == 0, r.output
    rows = {row["model"]: row for row in json.loads(r.stdout)}
    assert {m: row["arch"] for m, row in rows.items()} == {GPT2_2L: "gpt2", GPT2_1L: "gpt2", OSS_2L: "oss",
                                                           OSS_1L: "oss"}
    for row in rows.values():
        for key in ("nanogpt_tok_s", "torch_kv_tok_s", "onnx_tok_s", "batch8_tok_s", "batch32_tok_s", "ttft_ms",
                    "prefill_tok_s"):
            assert row[key] > 0, (row["model"], key)
    table = run("bench", "--quick", "--repeats", 1, "--depths", "", "--store", families_store)
    assert table.exit_code == 0 and "oss" in table.stdout
    # speculative pairs across the families: every shallower draft of the same tokenizer, the text unchanged
    spec = run("bench", "--speculative", "--quick", "--repeats", 1, "--json", "--threads", 1, "--store",
               families_store)
    assert spec.exit_code == 0, spec.output
    pairs = {(row["target"], row["draft"]): row for row in json.loads(spec.stdout)}
    assert {(OSS_2L, GPT2_1L), (GPT2_2L, OSS_1L), (OSS_2L, OSS_1L)} <= set(pairs)
    assert all(row["identical"] for row in pairs.values())


def test_an_oss_variant_exports_to_int8_loads_and_scores_near_fp32(tmp_path, families_store, data_dir):
    from gptzoo.zoo.runtime import OnnxModel

    store = tmp_path / "store"
    shutil.copytree(families_store / OSS_2L, store / OSS_2L)
    r = run("export", "--model", OSS_2L, "--quantize", "int8", "--store", store, "--data-dir", data_dir)
    assert r.exit_code == 0, r.output
    fp32, q = Store(store).load(OSS_2L), Store(store).load(f"{OSS_2L}-int8")
    assert (q.card.quantization, q.card.arch, q.card.source_variant) == ("int8-dynamic", "oss", OSS_2L)
    assert q.card.arch_args == fp32.card.arch_args
    assert q.card.val_loss != fp32.card.val_loss and abs(q.card.val_loss - fp32.card.val_loss) < 0.1
    assert q.card.onnx.bytes < fp32.card.onnx.bytes
    assert OnnxModel(q.path("model.onnx")).shape.kv_heads == 1  # grouped-query attention kept
    # it serves as a variant of its own in the oss family
    text = _generate(store, f"{OSS_2L}-int8")
    assert len(text) >= 80
