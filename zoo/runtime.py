"""An exported variant on onnxruntime: session creation (provider choice, threads) and one cached step.

The graph's contract is in gptzoo.exports.graph; this module only feeds it numpy arrays.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptzoo.zoo.errors import first_line

MASKED = np.float32(np.finfo(np.float32).min)  # additive bias for keys a query must not see


class OnnxLoadError(Exception):
    """The ONNX file cannot be loaded or does not fit the zoo's graph contract."""


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def choose_providers(device: str = "auto") -> list[str]:
    """CUDA first when onnxruntime-gpu is installed and sees a GPU (device auto/cuda), else CPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    have = available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in have:
        raise ValueError("device cuda asked for, but onnxruntime has no CUDAExecutionProvider (needs onnxruntime-gpu)")
    if device != "cpu" and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass(frozen=True)
class GraphShape:
    n_layer: int
    n_head: int
    head_dim: int
    block_size: int
    vocab_size: int


class OnnxModel:
    """One InferenceSession over a zoo ONNX file. `provider` says where it really runs: with the CPU-only wheel,
    asking for CUDA silently falls back, so the session is asked, not assumed."""

    def __init__(self, path: Path | str, device: str = "auto", threads: int | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise OnnxLoadError(f"no ONNX file at {path}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = threads or int(os.environ.get("GPTZOO_THREADS", "0"))
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=choose_providers(device))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise OnnxLoadError(f"cannot load {path}: {first_line(e)}") from e
        self.provider = self.session.get_providers()[0]
        self.meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.shape = _graph_shape(self.session, self.meta, path)
        self.past_names = [i.name for i in self.session.get_inputs()][3:]
        self.dtype = np.float32

    def empty_past(self, batch: int) -> list[np.ndarray]:
        s = self.shape
        z = np.zeros((batch, s.n_head, 0, s.head_dim), dtype=self.dtype)
        return [z] * (2 * s.n_layer)

    def step(
        self, ids: np.ndarray, positions: np.ndarray, bias: np.ndarray, past: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits [B, T, V] for new tokens `ids` [B, T] and the grown cache (every layer's keys and values)."""
        feeds = {"input_ids": ids, "position_ids": positions, "attn_bias": bias}
        feeds.update(zip(self.past_names, past, strict=True))
        out = self.session.run(None, feeds)
        return out[0], out[1:]


def _graph_shape(session, meta: dict, path: Path) -> GraphShape:
    names = [i.name for i in session.get_inputs()]
    if names[:3] != ["input_ids", "position_ids", "attn_bias"] or len(names) < 5 or (len(names) - 3) % 2:
        raise OnnxLoadError(f"{path} is not a gptzoo KV-cache graph (inputs: {', '.join(names[:6])}…)")
    past = session.get_inputs()[3].shape  # [batch, n_head, past, head_dim]
    try:
        return GraphShape(
            n_layer=(len(names) - 3) // 2,
            n_head=int(past[1]),
            head_dim=int(past[3]),
            block_size=int(meta["block_size"]),
            vocab_size=int(meta["vocab_size"]),
        )
    except (KeyError, ValueError, TypeError) as e:
        raise OnnxLoadError(f"{path} lacks gptzoo metadata ({e})") from e


def open_variant(variant, device: str = "auto", threads: int | None = None, verify_sha: bool = True) -> OnnxModel:
    """The exported model of a store variant, refused when the file is not the one its card describes (replaced,
    corrupted, or exported from another variant)."""
    from gptzoo.zoo.sources import sha256_file

    facts = variant.card.get("onnx") or {}
    path = variant.path(facts.get("file", "model.onnx"))
    if not path.is_file():
        raise OnnxLoadError(f"{variant.id} is not exported (no {path.name}); run `gptzoo export --model {variant.id}`")
    if verify_sha and facts.get("sha256") and sha256_file(path) != facts["sha256"]:
        raise OnnxLoadError(f"{path} does not match its card (sha256 differs): export it again")
    model = OnnxModel(path, device=device, threads=threads)
    card = variant.card
    got = {"n_layer": model.shape.n_layer, "block_size": model.shape.block_size, "vocab_size": model.shape.vocab_size}
    diff = {k: v for k, v in got.items() if card.get(k) not in (None, v)}
    if diff:
        shown = ", ".join(f"{k} {v} vs card {card.get(k)}" for k, v in diff.items())
        raise OnnxLoadError(f"{path} does not fit variant {variant.id}: {shown}")
    return model
