"""int8 vs fp32 decode speed on random-weight 384-wide models (quality is measured on trained variants by
`gptzoo export --quantize int8`, whose card holds the int8 val loss), plus this machine's memory read bandwidth,
which sets the weight-streaming floor of a decode step.

    python benchmarks/int8_speed.py --layers 1 12
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic

from gptzoo.measure.bench import any_vocabulary, decode_run, export_random, random_models, read_bandwidth_gbs
from gptzoo.zoo.runtime import OnnxModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 12])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    bw = read_bandwidth_gbs()
    print(f"memory read bandwidth (1 core): {bw:.1f} GB/s\n")
    print("| model | fp32 MB | fp32 ms/token | floor ms (weights/bandwidth) | ÷ floor | int8 MB | int8 ms/token | "
          "int8 speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    tmp = Path(tempfile.mkdtemp())
    tok = any_vocabulary(65)
    for name, model in random_models(tuple(args.layers)):
        fp32 = export_random(model, tmp)
        int8 = tmp / f"{fp32.stem}-int8.onnx"
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
        import onnx

        m = onnx.load(str(fp32))
        q = onnx.load(str(int8))
        del q.metadata_props[:]
        q.metadata_props.extend(m.metadata_props)
        onnx.save(q, str(int8))
        ms = {}
        for kind, path in (("fp32", fp32), ("int8", int8)):
            runner = OnnxModel(path, threads=1)
            decode_run(runner, tok, 1, 8, 128)
            ms[kind] = statistics.median(1000 / decode_run(runner, tok, 1, 127, 128)[1] for _ in range(args.repeats))
        weights_mb = sum(p.numel() for p in model.parameters()) * 4 / 1e6
        floor = weights_mb / 1e3 / bw * 1000
        print(f"| {name} | {fp32.stat().st_size / 1e6:.1f} | {ms['fp32']:.3f} | {floor:.3f} | "
              f"{ms['fp32'] / floor:.2f} | {int8.stat().st_size / 1e6:.1f} | {ms['int8']:.3f} | "
              f"{ms['fp32'] / ms['int8']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
