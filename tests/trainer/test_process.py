"""Training as users run it, in real processes: Ctrl-C mid-run, then --resume; and DDP under torchrun."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gptzoo.zoo import checkpoint
from gptzoo.zoo.store import CKPT_LAST
from tests.conftest import TINY

TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]


def gptzoo(*args: str) -> list[str]:
    return [sys.executable, "-m", "gptzoo.cli.main", *args]


@pytest.mark.slow
def test_ctrl_c_saves_then_resume_finishes(tmp_path, data_dir):
    args = ["train", "--layers", "2", "--preset", "cpu", *TINY_FLAGS, "--max-iters", "100000", "--eval-interval",
            "20", "--store", str(tmp_path), "--data-dir", str(data_dir), "--quiet"]
    proc = subprocess.Popen(gptzoo(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "shakespeare-char-2l" / "train-log.jsonl"

    def iters_logged() -> list[int]:
        text = log.read_text() if log.exists() else ""
        return [json.loads(line)["iter"] for line in text.split("\n")[:-1]]  # whole lines only

    # Interrupt once the evaluation at iter 20 is logged: the run is then past its first steps whatever the load
    # (a fixed sleep after the first record could end, on a busy machine, before a single step)
    deadline = time.monotonic() + 120
    while 20 not in iters_logged():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no evaluation at iter 20 after 120 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at iter" in err and "--resume" in err and "Traceback" not in err
    saved = checkpoint.load(tmp_path / "shakespeare-char-2l" / CKPT_LAST)
    stopped_at = saved["iter_num"]
    assert stopped_at >= 20
    resumed = subprocess.run(gptzoo(*args[:-1], "--resume", "--max-iters", str(stopped_at + 20)),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    card = json.loads((tmp_path / "shakespeare-char-2l" / "card.json").read_text())
    assert card["iterations"] == stopped_at + 20


@pytest.mark.slow
@pytest.mark.parametrize("arch", [[], ["--arch", "oss", "--name", "shakespeare-char-2l"]], ids=["gpt2", "oss"])
def test_ddp_two_gloo_processes_write_one_checkpoint(tmp_path, data_dir, arch):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "gptzoo.cli.main", "train", "--layers", "2", "--preset", "cpu", *TINY_FLAGS, "--max-iters", "10",
           "--store", str(tmp_path), "--data-dir", str(data_dir), "--quiet", "--device", "cpu", *arch]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    variants = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]  # .locks: the store's
    assert [p.name for p in variants] == ["shakespeare-char-2l"]
    files = sorted(p.name for p in variants[0].iterdir())
    assert files == ["card.json", "ckpt-best.pt", "ckpt-last.pt", "train-log.jsonl"]  # no temp files, one writer
    card = json.loads((variants[0] / "card.json").read_text())
    assert card["iterations"] == 10 and card.get("arch", "gpt2") == (arch[1] if arch else "gpt2")
    assert card["tokens_seen"] == 10 * 2 * TINY["batch_size"] * TINY["block_size"]  # both ranks' batches
    assert r.stdout.count("shakespeare-char-2l: val loss") == 1  # only rank 0 reports
