"""The onnxruntime backend: the slot cache is written in place through IO binding, calls touch only their slots,
and files of the earlier (growing-cache) format are refused with what to do."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as h

from gptzoo.zoo.runtime import OnnxLoadError, OnnxModel
from gptzoo.zoo.step_contract import Call, logits_without_cache
from gptzoo.zoo.store import Store


@pytest.fixture(scope="module")
def onnx_model(exported_store):
    return OnnxModel(Store(exported_store).load("shakespeare-char-2l").path("model.onnx"), device="cpu")


def test_a_call_writes_its_slots_in_place_and_nothing_else(onnx_model):
    cache = onnx_model.new_cache(4)
    pointers = [v.data_ptr() for v in cache.values]
    before = [a.copy() for a in cache.arrays]
    assert all(not a.any() for a in before)  # zeroed
    onnx_model.run(cache, Call.fill(1, [[5, 6, 7], [8, 9, 10]], [0, 0]))
    assert [v.data_ptr() for v in cache.values] == pointers  # the same buffers: no copy came back
    for a in cache.arrays:  # the numpy memory behind the OrtValues holds the new keys/values
        assert not a[0].any() and not a[3].any()  # slots outside the call untouched
        assert np.abs(a[1:3, :, :3]).max(axis=-1).all() and not a[1:3, :, 3:].any()  # 3 positions, no more


def test_the_step_equals_a_plain_causal_pass_whatever_the_slot_held(onnx_model):
    ids = np.random.default_rng(0).integers(0, onnx_model.shape.vocab_size, (2, 20))
    full = logits_without_cache(onnx_model, ids)
    cache = onnx_model.new_cache(3)
    for a in cache.arrays:
        a[:] = np.random.default_rng(1).normal(size=a.shape)  # an earlier owner's keys and values
    got = [onnx_model.run(cache, Call.fill(1, ids[:, :12], [0, 0]))[:, 0]]
    for i in range(12, 20):
        got.append(onnx_model.run(cache, Call.decode(1, ids[:, i], np.full(2, i), np.ones(2, bool)))[:, 0])
    np.testing.assert_allclose(np.stack(got, 1), full[:, 11:], atol=1e-5)


def test_a_call_outside_the_cache_is_refused(onnx_model):
    cache = onnx_model.new_cache(2)
    with pytest.raises(IndexError, match="outside a cache of 2"):
        onnx_model.run(cache, Call.fill(1, [[1], [2]], [0, 0]))


def test_a_file_of_the_earlier_cache_format_says_export_again(tmp_path):
    f = TensorProto.FLOAT
    inputs = [h.make_tensor_value_info(n, TensorProto.INT64, ["batch", "new_tokens"])
              for n in ("input_ids", "position_ids")]
    inputs += [h.make_tensor_value_info("attn_bias", f, ["batch", 1, "new_tokens", "total_length"])]
    inputs += [h.make_tensor_value_info(n, f, ["batch", 2, "past_length", 16]) for n in ("past_key_0", "past_value_0")]
    out = h.make_tensor_value_info("logits", f, None)
    graph = h.make_graph([h.make_node("Identity", ["attn_bias"], ["logits"])], "old", inputs, [out])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "model.onnx")
    with pytest.raises(OnnxLoadError, match="earlier gptzoo .* export it again"):
        OnnxModel(tmp_path / "model.onnx", device="cpu")


def test_an_onnxruntime_too_old_for_the_attention_op_is_refused(exported_store, monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "__version__", "1.19.2")  # its GroupQueryAttention mixes up row lengths
    with pytest.raises(OnnxLoadError, match=r"too old .* install onnxruntime>=1.20"):
        OnnxModel(Store(exported_store).load("shakespeare-char-2l").path("model.onnx"), device="cpu")


def test_a_cache_that_does_not_fit_in_free_memory_is_refused(onnx_model, monkeypatch):
    from gptzoo.zoo import runtime

    monkeypatch.setattr(runtime, "available_memory", lambda: 1000)
    with pytest.raises(OnnxLoadError, match=r"KV cache of 4 slots needs .* GB .*--max-batch-size"):
        onnx_model.new_cache(4)
    monkeypatch.setattr(runtime, "available_memory", lambda: None)  # an OS that does not say: no check
    assert onnx_model.new_cache(4).slots == 4
