"""Which linear of a run's merged model hurts most at 4 bits: KLD from the fp32 model when only that one weight is
quantized with onnx_iquant's offset layout (q41_32's body quantizer), per byte an 8-bit upgrade of it would cost.

    python benchmarks/int4_sensitivity.py RUN_DIR [--rows 8] [--tokens 128] [--json out.json]

Importance (mean square of each input column) from the run's 32 calibration rows, as the recipes use; the KLD is
measured on the first `rows` calibration rows (not the held-out texts benchmarks/onnx_int4.py scores on). Prints one
line per linear, then the sums per projection type and the ranking by KLD per upgrade byte (8.5 - 4.75 bits a
weight). Used to choose onnx_mixed.py's rules; fp32 transformers on CPU, a few minutes for SmolLM2-135M.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch
    from edgetune.export import onnx_iquant
    from transformers import AutoModelForCausalLM

    from edgetune.tokenizer import load_tokenizer

    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_int4 import calibration_rows

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    merged = args.run_dir / "merged"
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    rows = calibration_rows(args.run_dir, load_tokenizer(merged), n=32)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n}
    sums = {n: torch.zeros(m.in_features, dtype=torch.float64) for n, m in linears.items()}
    count = [0]

    def hook(name):
        def fn(_mod, inputs, _out):
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
            sums[name] += (x * x).sum(0)
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in linears.items()]
    with torch.no_grad():
        for ids in rows:
            model(torch.tensor([ids]))
            count[0] += len(ids)
    for h in handles:
        h.remove()
    importance = {n: (s / count[0]).numpy() for n, s in sums.items()}
    evals = [torch.tensor([ids[: args.tokens]]) for ids in rows[: args.rows]]
    with torch.no_grad():
        ref = [torch.log_softmax(model(x).logits[0].double(), -1) for x in evals]

    def kld() -> float:
        with torch.no_grad():
            out = [torch.log_softmax(model(x).logits[0].double(), -1) for x in evals]
        per = torch.cat([(r.exp() * (r - o)).sum(-1) for r, o in zip(ref, out)])
        return float(per.mean())

    results = []
    for name, lin in linears.items():
        w = lin.weight.data.clone()
        b = w.T.numpy().astype(np.float32)  # MatMul's [K, N]
        levels, scales, offsets = onnx_iquant.quantize_blocks_offset(b, importance[name], 32)
        lin.weight.data.copy_(torch.from_numpy(onnx_iquant.dequantize_offset(levels, scales, offsets).T.copy()))
        value = kld()
        lin.weight.data.copy_(w)
        cost = w.numel() * (8.5 - 4.75) / 8
        results.append({"name": name, "kld": value, "upgrade_bytes": cost, "kld_per_mb": value / cost * 1e6})
        print(f"{name:40} kld {value:.5f}  upgrade {cost / 1e6:.3f} MB", flush=True)
    kinds: dict[str, float] = {}
    for r in results:
        kind = r["name"].rsplit(".", 1)[-1]
        kinds[kind] = kinds.get(kind, 0.0) + r["kld"]
    print("\nsum of single-tensor KLD per type:", {k: round(v, 4) for k, v in kinds.items()})
    print("ranking by KLD per upgrade MB:")
    for r in sorted(results, key=lambda r: -r["kld_per_mb"])[:40]:
        print(f"  {r['name']:40} {r['kld_per_mb']:.4f}  (kld {r['kld']:.5f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
