"""An exported variant on onnxruntime: session creation (provider choice, threads) and one cached step.

The graph's contract is gptzoo.zoo.step_contract; this module checks a file against it and feeds it numpy arrays.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gptzoo.zoo import step_contract as contract
from gptzoo.zoo.errors import BadValue, GptzooError, first_line
from gptzoo.zoo.step_contract import GraphShape


class OnnxLoadError(GptzooError):
    """The ONNX file cannot be loaded or does not fit the zoo's graph contract."""


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def choose_providers(device: str = "auto") -> list[str]:
    """CUDA first when onnxruntime-gpu is installed and sees a GPU (device auto/cuda), else CPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise BadValue(f"unknown device {device!r}; use auto, cpu or cuda")
    have = available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in have:
        raise BadValue("device cuda asked for, but onnxruntime has no CUDAExecutionProvider (needs onnxruntime-gpu)")
    if device != "cpu" and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxModel:
    """One InferenceSession over a zoo ONNX file, a gptzoo.zoo.step_contract.StepRunner. `provider` says where it
    really runs: with the CPU-only wheel, asking for CUDA silently falls back, so the session is asked, not assumed."""

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
        self.input_names = contract.input_names(self.shape.n_layer)
        self.dtype = np.float32

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return self.shape.empty_past(batch, self.dtype)

    def step(
        self, ids: np.ndarray, positions: np.ndarray, bias: np.ndarray, past: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits [B, T, V] for new tokens `ids` [B, T] and the grown cache (every layer's keys and values)."""
        out = self.session.run(None, dict(zip(self.input_names, (ids, positions, bias, *past), strict=True)))
        return out[0], out[1:]


def _graph_shape(session, meta: dict, path: Path) -> GraphShape:
    names = [i.name for i in session.get_inputs()]
    n_layer = (len(names) - 3) // 2
    outputs = [o.name for o in session.get_outputs()]
    if n_layer < 1 or names != contract.input_names(n_layer) or outputs != contract.output_names(n_layer):
        raise OnnxLoadError(f"{path} is not a gptzoo KV-cache graph (inputs: {', '.join(names[:6])}…)")
    past = session.get_inputs()[3].shape  # [batch, n_head, past, head_dim]
    try:
        block_size, vocab_size = (int(meta[k]) for k in contract.RUNTIME_METADATA_KEYS)
        return GraphShape(n_layer=n_layer, n_head=int(past[1]), head_dim=int(past[3]), block_size=block_size,
                          vocab_size=vocab_size)
    except (KeyError, ValueError, TypeError) as e:
        raise OnnxLoadError(f"{path} lacks gptzoo metadata ({e})") from e


def open_variant(variant, device: str = "auto", threads: int | None = None, verify_sha: bool = True) -> OnnxModel:
    """The exported model of a store variant, refused when the file is not the one its card describes (replaced,
    corrupted, or exported from another variant)."""
    from gptzoo.zoo.sources import sha256_file

    facts = variant.card.onnx
    path = variant.path(facts.file if facts else "model.onnx")
    if not path.is_file():
        raise OnnxLoadError(f"{variant.id} is not exported (no {path.name}); run `gptzoo export --model {variant.id}`")
    if verify_sha and facts and facts.sha256 and sha256_file(path) != facts.sha256:
        raise OnnxLoadError(f"{path} does not match its card (sha256 differs): export it again")
    model = OnnxModel(path, device=device, threads=threads)
    card = variant.card
    got = {"n_layer": model.shape.n_layer, "block_size": model.shape.block_size, "vocab_size": model.shape.vocab_size}
    diff = {k: v for k, v in got.items() if getattr(card, k) != v}
    if diff:
        shown = ", ".join(f"{k} {v} vs card {getattr(card, k)}" for k, v in diff.items())
        raise OnnxLoadError(f"{path} does not fit variant {variant.id}: {shown}")
    return model
