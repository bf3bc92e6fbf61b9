"""A copy of a run whose merged model computes the same function with weights off any quantization grid, so 4-bit
recipes can be compared on weights like a bf16 release's, not only on the embedded default's.

    python benchmarks/offgrid_run.py RUN_DIR OUT_DIR [--spread 0.3] [--seed 0]
    edgetune export OUT_DIR --gguf q4_k_m                      # then, e.g.
    python benchmarks/onnx_int4.py OUT_DIR --recipes q41_32,kq_mixed32,hqq32 --gguf q4_k_m

Why: the embedded SmolLM2-135M-Instruct is dequantized from a Q4_1 GGUF, so its body weights sit on a 4-bit grid of
blocks of 32 (a short fine-tune moves them ~1% of a step). A quantizer with per-block offsets finds that grid again,
which says little about a model trained in bf16. The copy keeps the function exactly (up to fp16 rounding, printed)
and moves every 4-bit block off the grid with rescalings a Llama block allows:
  - each RMSNorm weight times t, the columns of the linears it feeds (q, k, v / gate, up) divided by t;
  - each value row times s, the o_proj columns that read it (every query head of its group) divided by s;
  - each up_proj row times u, the down_proj column that reads it divided by u;
t, s, u = exp(uniform(-spread, spread)) per channel. Column scalings break the blocks along the input dimension,
which is where both GGUF and MatMulNBits put them. The embedding (tied lm_head) is left as it is.
Llama-architecture runs only (SmolLM2; the Llama 3.2 shapes of scale.py).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

SKIP = {"merged", "gguf", "onnx", "onnx-recipes", "checkpoints", "adapter"}


def rescale(model, spread: float, seed: int) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads

    def factors(n: int) -> torch.Tensor:
        return torch.exp((torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * spread)

    with torch.no_grad():
        for layer in model.model.layers:
            a, m = layer.self_attn, layer.mlp
            for norm, linears in ((layer.input_layernorm, (a.q_proj, a.k_proj, a.v_proj)),
                                  (layer.post_attention_layernorm, (m.gate_proj, m.up_proj))):
                t = factors(norm.weight.shape[0])
                norm.weight.copy_((norm.weight.double() * t).to(norm.weight.dtype))
                for lin in linears:
                    lin.weight.copy_((lin.weight.double() / t[None, :]).to(lin.weight.dtype))
            s = factors(kv_heads * head_dim)
            a.v_proj.weight.copy_((a.v_proj.weight.double() * s[:, None]).to(a.v_proj.weight.dtype))
            group = heads // kv_heads  # query head h reads value head h // group
            per_o_column = torch.cat([s[(h // group) * head_dim:(h // group + 1) * head_dim] for h in range(heads)])
            a.o_proj.weight.copy_((a.o_proj.weight.double() / per_o_column[None, :]).to(a.o_proj.weight.dtype))
            u = factors(m.up_proj.weight.shape[0])
            m.up_proj.weight.copy_((m.up_proj.weight.double() * u[:, None]).to(m.up_proj.weight.dtype))
            m.down_proj.weight.copy_((m.down_proj.weight.double() / u[None, :]).to(m.down_proj.weight.dtype))


def main(argv: list[str] | None = None) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--spread", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    src, out = args.run_dir, args.out_dir
    if out.exists():
        print(f"{out} exists: pick a new folder", file=sys.stderr)
        return 2
    out.mkdir(parents=True)
    for item in src.iterdir():
        if item.name not in SKIP and item.is_file():
            shutil.copy2(item, out / item.name)
    merged = src / "merged"
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    ids = torch.arange(5, 133)[None]
    with torch.no_grad():
        before = model(input_ids=ids).logits
    dtype = model.config.dtype
    rescale(model, args.spread, args.seed)
    model.to(dtype)  # saved as the source was (fp16 / bf16): the copy's own rounding, printed below
    model.save_pretrained(out / "merged")
    for f in merged.iterdir():
        if f.is_file() and not (out / "merged" / f.name).exists():
            shutil.copy2(f, out / "merged" / f.name)
    again = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32)
    with torch.no_grad():
        after = again(input_ids=ids).logits
    p, q = torch.log_softmax(before, -1), torch.log_softmax(after, -1)
    kld = (p.exp() * (p - q)).sum(-1).mean().item()
    print(f"{out}: same function as {merged}: largest logit difference {(before - after).abs().max().item():.4f}, "
          f"mean KLD {kld:.2e} over {ids.shape[1]} positions (spread {args.spread}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
