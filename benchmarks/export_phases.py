"""Peak anonymous and file-mapped memory of each export phase, in one process, on a run that has merged/:

    convert F16 -> importance matrix -> quantize Q4_K_M -> reference log-probs -> verify F16 (whole file, then
    layer slice + byte check: export/gguf_slice.py) -> verify Q4_K_M

Anonymous memory is what must fit in RAM; file-mapped pages are the GGUF llama.cpp maps, which the kernel can drop.
Sampled from /proc/self/status every 20 ms. Make a run with `python benchmarks/scale.py 1b --keep DIR`.

    python benchmarks/export_phases.py RUN_DIR [--out DIR]
"""
from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from pathlib import Path

PEAK = {"anon": 0, "file": 0}


def _sample() -> None:
    while True:
        kb = dict(re.findall(r"^(RssAnon|RssFile):\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M))
        PEAK["anon"] = max(PEAK["anon"], int(kb["RssAnon"]) * 1024)
        PEAK["file"] = max(PEAK["file"], int(kb["RssFile"]) * 1024)
        time.sleep(0.02)


def phase(name: str, fn):
    PEAK["anon"] = PEAK["file"] = 0
    t0 = time.time()
    result = fn()
    print(f"{name:18} {time.time() - t0:6.0f} s   peak anon {PEAK['anon'] / 1e9:5.2f} GB   "
          f"peak mapped file {PEAK['file'] / 1e9:5.2f} GB", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, help="where the files go (default: a temp folder beside the run)")
    args = ap.parse_args()
    threading.Thread(target=_sample, daemon=True).start()
    from edgetune.export import verify
    from edgetune.export.gguf_convert import convert
    from edgetune.export.gguf_export import calibration_texts
    from edgetune.export.gguf_slice import verify_f16_sliced
    from edgetune.export.quantize import compute_imatrix, quantize
    from edgetune.tokenizer import load_tokenizer

    merged = args.run_dir / "merged"
    out = args.out or Path(tempfile.mkdtemp(prefix=".phases-", dir=args.run_dir))
    out.mkdir(parents=True, exist_ok=True)
    f16 = phase("convert F16", lambda: convert(merged, out / "m.F16.gguf", "f16"))
    texts = calibration_texts(args.run_dir, load_tokenizer(merged))
    imatrix = phase("importance matrix", lambda: compute_imatrix(merged, texts, out / "m.imatrix"))
    q4 = phase("quantize Q4_K_M", lambda: quantize(f16, out / "m.Q4_K_M.gguf", "q4_k_m", imatrix=imatrix))
    ref = verify.HFReference(merged, cache_dir=out)
    held = verify.heldout_texts(args.run_dir, ref.tokenizer)
    phase("reference log-probs", lambda: ref.prepare(held))
    phase("verify F16", lambda: verify.verify_gguf(f16, ref, held, verify.DEFAULT_CHAT_PROMPTS, "f16"))
    phase("verify F16 sliced", lambda: verify_f16_sliced(f16, merged, held, out))
    phase("verify Q4_K_M", lambda: verify.verify_gguf(q4, ref, held, verify.DEFAULT_CHAT_PROMPTS, "q4_k_m"))


if __name__ == "__main__":
    main()
