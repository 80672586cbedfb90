"""llama.cpp's view of an exported GGUF: start `llama-server` on it (loopback, a free port), ask for greedy tokens at
temperature 0 from a prompt of token ids, and compare them with the zoo's torch model from the same prompt.

The binary: $GPTZOO_LLAMA_SERVER, else `llama-server` on PATH, else the newest one scripts/build-llama-server.sh left
in ~/.cache/gptzoo/llama.cpp/<version>/bin. None found: the check is skipped and says why. Figures, not a gate:
llama.cpp's GELU is the tanh form, so a model trained with exact GELU may part from the zoo's tokens somewhere.

`--no-repack`: on a CPU reporting AMX (this machine's Xeon does), llama.cpp 0.3.36 repacks Q8_0 weights for its AMX
matmul, which dies with SIGSEGV on a tile instruction (`ldtilecfg` in ggml_backend_amx_mul_mat, seen in gdb);
without the repack it runs the ordinary Q8_0 kernels. F32 weights are never repacked, so the flag changes nothing
for them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import torch

CACHE = Path.home() / ".cache" / "gptzoo" / "llama.cpp"


def find_llama_server() -> Path | None:
    env = os.environ.get("GPTZOO_LLAMA_SERVER")
    if env:
        return Path(env) if Path(env).is_file() else None
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    built = sorted(CACHE.glob("*/bin/llama-server"), key=lambda p: p.stat().st_mtime)
    return built[-1] if built else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def llama_greedy(binary: Path, gguf: Path, prompt: list[int], n: int, n_ctx: int, timeout: float = 300) -> list[int]:
    """`n` greedy token ids from llama-server (temperature 0, EOS ignored) after `prompt`."""
    port = _free_port()
    proc = subprocess.Popen([str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-c",
                             str(n_ctx), "-np", "1", "-t", "1", "--no-warmup", "--no-repack"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {proc.returncode} on {gguf.name}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama-server did not become ready")
            time.sleep(0.5)
        out = _post(base + "/completion", {"prompt": prompt, "n_predict": n, "temperature": 0, "top_k": 1,
                                           "ignore_eos": True, "return_tokens": True, "cache_prompt": False,
                                           "samplers": ["top_k", "temperature"]}, timeout)
        return list(out["tokens"])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def zoo_greedy(model, prompt: list[int], n: int) -> list[int]:
    with torch.no_grad():
        x = torch.tensor([prompt])
        for _ in range(n):
            nxt = model(x[:, -model.config.block_size:])[0][:, -1].argmax(-1, keepdim=True)
            x = torch.cat([x, nxt], 1)
    return x[0, len(prompt):].tolist()


def agreement(ours: list[int], theirs: list[int]) -> dict:
    prefix = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours),
                                                                                                  len(theirs)))
    same = sum(a == b for a, b in zip(ours, theirs, strict=False))
    return {"tokens": len(ours), "identical_prefix": prefix, "per_token_agreement": same / max(1, len(ours))}


def check(model, gguf: Path, prompt: list[int], n: int = 100) -> dict:
    """Greedy agreement of llama.cpp on `gguf` and the zoo's torch model, or {"skipped": why}."""
    binary = find_llama_server()
    if binary is None:
        return {"skipped": "no llama-server found (scripts/build-llama-server.sh builds one)"}
    n = min(n, model.config.block_size - len(prompt))  # llama.cpp stops at its context; the zoo's crop does not
    try:
        theirs = llama_greedy(binary, gguf, prompt, n, model.config.block_size)
    except (RuntimeError, OSError, KeyError, ValueError) as e:  # llama.cpp's failure is a finding, not the export's
        return {"llama_server": str(binary), "failed": str(e)}
    return {"llama_server": str(binary), **agreement(zoo_greedy(model, prompt, n), theirs)}
