"""An exported variant on onnxruntime: session creation (provider choice, threads), the slot cache, one cached step.

The graph's contract is gptzoo.zoo.step_contract; this module checks a file against it and runs it with IO binding:
the cache lives in OrtValues on the session's device, a call binds its slots (a pointer into the buffer, no copy) as
both the `past_*` input and the `present_*` output, so the graph's index write updates the cache in place. Only
token ids, positions, the rows' cache lengths (`seqlens_k`) and the wanted logits cross between numpy and the
device.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gptzoo.zoo import step_contract as contract
from gptzoo.zoo.errors import BadValue, GptzooError, first_line
from gptzoo.zoo.step_contract import GraphShape

MIN_ONNXRUNTIME = (1, 20)
SHORT = 17  # longest feed `extend` binds once: a verification of MAX_DRAFT_TOKENS proposals and the newest token


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

    def __init__(self, path: Path | str, device: str = "auto", threads: int | None = None,
                 profile_prefix: str | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise OnnxLoadError(f"no ONNX file at {path}")
        if tuple(int(x) for x in ort.__version__.split(".")[:2]) < MIN_ONNXRUNTIME:
            # older GroupQueryAttention kernels mix up the lengths of rows decoded together: wrong text, no error
            raise OnnxLoadError(f"onnxruntime {ort.__version__} is too old for gptzoo's graphs: install "
                                f"onnxruntime>={'.'.join(map(str, MIN_ONNXRUNTIME))}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = threads or int(os.environ.get("GPTZOO_THREADS", "0"))
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if profile_prefix:  # onnxruntime's per-operator profile (benchmarks/profile_decode.py)
            opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=choose_providers(device))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise OnnxLoadError(f"cannot load {path}: {first_line(e)}") from e
        self.provider = self.session.get_providers()[0]
        self.device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"
        self.meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.shape = _graph_shape(self.session, self.meta, path)
        n = self.shape.n_layer
        self._past, self._present = contract.past_names(n), contract.present_names(n)

    def new_cache(self, slots: int, length: int | None = None) -> SlotCache:
        need, free = self.shape.cache_bytes(slots, length), available_memory()
        if self.device == "cpu" and free is not None and need > free:  # refused, rather than swapped or OOM-killed
            raise OnnxLoadError(f"a KV cache of {slots} slots needs {need / 1e9:.2f} GB and {free / 1e9:.2f} GB of "
                                "memory is free: serve fewer rows at once (--max-batch-size)")
        return SlotCache(self.shape.slot_shape(slots, length), self.shape.cache_tensors, self.device)

    def run(self, cache: SlotCache, call: contract.Call) -> np.ndarray:
        """Logits [B, K, V]; the call's keys/values are written into its slots of `cache` in place."""
        io = cache.bindings.get((self, call.first, call.rows))
        if io is None:  # the slots' bindings, made once per slot range (binding costs more than a small step)
            io = self.bind_slots(cache, call.first, call.rows)
            cache.bindings[self, call.first, call.rows] = io
        for name, a in ((contract.INPUT_IDS, call.ids), (contract.POSITION_IDS, call.positions),
                        (contract.SEQLENS_K, call.seqlens_k), (contract.TOTAL_LENGTH, call.total_length),
                        (contract.LOGITS_INDEX, call.logits_index)):
            io.bind_cpu_input(name, a)
        # a new array every call (a kept one would take the next call's logits under the caller's feet), written by
        # onnxruntime directly: no output objects to wrap and copy
        logits = np.empty((call.rows, call.logits_index.shape[1], self.shape.vocab_size), np.float32)
        io.bind_output(contract.LOGITS, "cpu", 0, np.float32, logits.shape, logits.ctypes.data)
        self.session.run_with_iobinding(io)
        return logits

    def bind_slots(self, cache: SlotCache, first: int, rows: int):
        """A new IO binding whose past and present of every layer are the same slots of `cache`: onnxruntime writes
        the new keys and values in place, no copy."""
        io = self.session.io_binding()
        for i, (past, present) in enumerate(zip(self._past, self._present, strict=True)):
            at, shape = cache.pointer(i, first, rows), (rows, *cache.shape[1:])
            io.bind_input(past, self.device, 0, np.float32, shape, at)
            io.bind_output(present, self.device, 0, np.float32, shape, at)
        return io

    def decode(self, cache: SlotCache, first: int, tokens: Sequence[int], starts: Sequence[int],
               offsets: Sequence[int] | None = None) -> np.ndarray:
        """Logits [B, V] of one new token per slot first .. first + B - 1, as `run` with `Call.decode` (rows with
        nothing to feed feed token 0 at their own length), without building or binding anything: the inputs and the
        logits of these slots are bound once, to arrays rewritten in place. The logits are a view of that output,
        valid until the next `decode` of the same slots."""
        return self._bound(cache, first, len(tokens), 1, 1).decode(tokens, starts, offsets)

    def extend(self, cache: SlotCache, slot: int, tokens: list[int], start: int, wanted: int,
               offset: int = 0) -> np.ndarray:
        """Logits [wanted, V] of the last `wanted` of `tokens`, fed to one slot from column `start` (position
        `start + offset`): `run` with `Call.fill` for the short feeds of speculative decoding (a verification, a draft
        catching up), bound once per length as `decode` is; longer feeds go through `run`. A view, valid until the
        next such call."""
        if len(tokens) > SHORT:  # a window re-prefilled or a prompt's end: rare, and many lengths
            call = contract.Call.fill(slot, [tokens], [start], wanted=list(range(len(tokens) - wanted, len(tokens))),
                                      offsets=[offset])
            return self.run(cache, call)[0]
        return self._bound(cache, slot, 1, len(tokens), wanted).extend(tokens, start, offset)

    def move(self, cache: SlotCache, slot: int, src: int, n: int) -> None:
        """Columns src .. src + n - 1 of `slot` to columns 0 .. n - 1 in every layer's keys and values (the `slide`
        policy). On the CPU a memmove in the numpy buffers the session reads in place (numpy copies overlapping
        ranges as if through a temporary); on a GPU each tensor goes to the host and back (correct, not fast)."""
        for i, value in enumerate(cache.values):
            a = cache.arrays[i] if cache.arrays else value.numpy()
            a[slot, :, :n] = a[slot, :, src : src + n]
            if not cache.arrays:
                value.update_inplace(a)

    def _bound(self, cache: SlotCache, first: int, rows: int, new: int, wanted: int) -> _Bound:
        key = (self, first, rows, new, wanted)
        b = cache.bound.get(key)
        if b is None:
            b = cache.bound[key] = _Bound(self, cache, first, rows, new, wanted)
        return b


def available_memory() -> int | None:
    """Bytes of physical memory free now (Linux; None where the OS does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class SlotCache:
    """Every layer's keys and values for a number of slots: `tensors` OrtValues of one `shape` (gptzoo.zoo.
    step_contract.GraphShape.slot_shape) on the session's device, zeroed."""

    def __init__(self, shape: tuple[int, int, int, int], tensors: int, device: str):
        import onnxruntime as ort

        self.shape, self.device = shape, device
        zeros = [np.zeros(shape, np.float32) for _ in range(tensors)]
        # On the CPU an OrtValue wraps its numpy buffer (keep the arrays: they own the memory); on a GPU the zeros
        # are copied to the device once.
        self.arrays = zeros if device == "cpu" else []
        self.values = [ort.OrtValue.ortvalue_from_numpy(z, device, 0) for z in zeros]
        self.slot_bytes = math.prod(shape[1:]) * 4
        self.bindings: dict = {}  # (model, first slot, rows) -> the onnxruntime IO binding of those slots
        self.bound: dict = {}  # (model, first slot, rows, new tokens, wanted) -> a _Bound call of those slots

    @property
    def slots(self) -> int:
        return self.shape[0]

    def pointer(self, tensor: int, first: int, rows: int) -> int:
        """Where slot `first` of one cache tensor starts: a call binds its slots by address, without a copy."""
        if first < 0 or first + rows > self.slots:
            raise IndexError(f"slots {first}..{first + rows - 1} outside a cache of {self.slots}")
        return self.values[tensor].data_ptr() + first * self.slot_bytes


class _Bound:
    """Calls of one shape (rows, new tokens per row, logits wanted per row) over fixed slots, every input bound once:
    numpy arrays wrapped by OrtValues (on the CPU without a copy) and rewritten in place per call. Building a Call
    and binding five inputs and the output anew costs a third of a 1-layer model's step."""

    def __init__(self, model: OnnxModel, cache: SlotCache, first: int, rows: int, new: int, wanted: int):
        import onnxruntime as ort

        self.session, self.last = model.session, model.shape.block_size - 1
        self.io = io = model.bind_slots(cache, first, rows)
        self.ids, self.positions = np.zeros((rows, new), np.int64), np.zeros((rows, new), np.int64)
        self.seqlens, self.total = np.zeros(rows, np.int32), np.zeros((), np.int32)
        self.steps = np.arange(new, dtype=np.int64)
        inputs = {contract.INPUT_IDS: self.ids, contract.POSITION_IDS: self.positions,
                  contract.SEQLENS_K: self.seqlens, contract.TOTAL_LENGTH: self.total,
                  contract.LOGITS_INDEX: np.tile(np.arange(new - wanted, new, dtype=np.int64), (rows, 1))}
        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in inputs.values()]  # kept: they wrap the arrays
        for name, value in zip(inputs, self.values, strict=True):
            io.bind_ortvalue_input(name, value)
        self.logits = np.zeros((rows, wanted, model.shape.vocab_size), np.float32)
        io.bind_output(contract.LOGITS, "cpu", 0, np.float32, self.logits.shape, self.logits.ctypes.data)

    def decode(self, tokens: Sequence[int], starts: Sequence[int], offsets: Sequence[int] | None) -> np.ndarray:
        if len(tokens) == 1:  # one stream: scalar writes, cheaper than numpy operations
            self.ids[0, 0], self.positions[0, 0] = tokens[0], starts[0] + (offsets[0] if offsets else 0)
            self.seqlens[0], self.total[...] = starts[0], starts[0] + 1
        else:
            starts = np.asarray(starts)
            self.ids[:, 0] = tokens
            # a full slot's idle row feeds at its length, block_size: past the position table, so clamped
            np.minimum(starts, self.last, out=self.positions[:, 0])
            if offsets is not None:  # relative positions (oss): no table, so the offset may take them past it
                self.positions[:, 0] += offsets
            self.seqlens[:] = starts
            self.total[...] = starts.max() + 1
        self.session.run_with_iobinding(self.io)
        return self.logits[:, 0]

    def extend(self, tokens: list[int], start: int, offset: int = 0) -> np.ndarray:
        self.ids[0] = tokens
        np.add(self.steps, start + offset, out=self.positions[0])
        self.seqlens[0], self.total[...] = start + len(tokens) - 1, start + len(tokens)
        self.session.run_with_iobinding(self.io)
        return self.logits[0]


def _graph_shape(session, meta: dict, path: Path) -> GraphShape:
    names = [i.name for i in session.get_inputs()]
    n_layer = (len(names) - 5) // 2
    outputs = [o.name for o in session.get_outputs()]
    if names[:3] == [contract.INPUT_IDS, contract.POSITION_IDS, "attn_bias"]:
        raise OnnxLoadError(f"{path} was exported by an earlier gptzoo (a growing cache, not slots): export it again "
                            "with `gptzoo export`")
    if n_layer < 1 or names != contract.input_names(n_layer) or outputs != contract.output_names(n_layer):
        raise OnnxLoadError(f"{path} is not a gptzoo KV-cache graph (inputs: {', '.join(names[:6])}…)")
    past = session.get_inputs()[6].shape  # past_value_0: [batch, kv_heads, cache_length, head_dim]
    try:
        block_size, vocab_size = (int(meta[k]) for k in contract.RUNTIME_METADATA_KEYS)
        # query heads from the metadata (more than the slot's with grouped-query attention, the oss block)
        return GraphShape(n_layer=n_layer, n_head=int(meta.get("n_head", past[1])), head_dim=int(past[3]),
                          block_size=block_size, vocab_size=vocab_size, kv_heads=int(past[1]),
                          arch=meta.get("arch", "gpt2"))  # graphs exported before the oss block are gpt2
    except (KeyError, ValueError, TypeError) as e:
        raise OnnxLoadError(f"{path} lacks gptzoo metadata ({e})") from e


def open_variant(variant, device: str = "auto", threads: int | None = None, verify_sha: bool = True) -> OnnxModel:
    """The exported model of a store variant, refused when the file is not the one its card describes (replaced,
    corrupted, or exported from another variant)."""
    from gptzoo.zoo.sources import sha256_file

    facts, path = variant.card.onnx, variant.onnx_path
    if not path.is_file():
        raise OnnxLoadError(f"{variant.id} is not exported (no {path.name}); run `gptzoo export --model {variant.id}`")
    checked = verify_sha and facts and facts.sha256
    if checked and facts.bytes is not None and (size := path.stat().st_size) != facts.bytes:
        # the hash check's fast path: a wrong file of gigabytes is refused at once instead of after reading all of it
        raise OnnxLoadError(f"{path} does not match its card (sha256 differs): its size is {size:,} bytes, the card "
                            f"says {facts.bytes:,}; export it again")
    if checked and sha256_file(path) != facts.sha256:
        raise OnnxLoadError(f"{path} does not match its card (sha256 differs): export it again")
    model = OnnxModel(path, device=device, threads=threads)
    card = variant.card
    got = {"n_layer": model.shape.n_layer, "block_size": model.shape.block_size, "vocab_size": model.shape.vocab_size}
    diff = {k: v for k, v in got.items() if getattr(card, k) != v}
    if diff:
        shown = ", ".join(f"{k} {v} vs card {getattr(card, k)}" for k, v in diff.items())
        raise OnnxLoadError(f"{path} does not fit variant {variant.id}: {shown}")
    return model
