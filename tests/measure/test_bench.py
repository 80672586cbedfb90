"""`gptzoo bench` runs end to end and reports every figure it promises (values are measured, never asserted)."""

import json

import pytest
from typer.testing import CliRunner

from gptzoo.cli.main import app


@pytest.mark.slow
def test_bench_quick_json(exported_store):
    r = CliRunner().invoke(app, ["bench", "--quick", "--repeats", "1", "--depths", "1", "--json",
                                 "--store", str(exported_store)])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["model"] for row in rows] == ["shakespeare-char-2l", "random-1l-384"]
    for row in rows:
        for key in ("nanogpt_tok_s", "torch_kv_tok_s", "onnx_tok_s", "batch8_tok_s", "batch32_tok_s", "ttft_ms",
                    "prefill_tok_s"):
            assert row[key] > 0, key
        assert row["provider"] == "CPUExecutionProvider"
    assert rows[1]["n_embd"] == 384 and rows[1]["n_layer"] == 1
