"""How often exported GGUF files fail to stop at EOS, with and without a repetition penalty, side by side.

    python benchmarks/stop_rate.py RUN_DIR [--max-tokens 96]

Greedy chat replies through llama.cpp to the verification prompts plus the shipped held-out demo prompts; prints,
per file and repeat penalty, how many replies hit max_tokens instead of ending at EOS. This is the measurement
behind edgetune.sampling.REPEAT_PENALTY (the value the Modelfile, `edgetune chat` and the export check use).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

PENALTIES = (1.0, 1.1)


def prompts() -> list[str]:
    from edgetune.export.verify import DEFAULT_CHAT_PROMPTS

    eval_rows = Path(__file__).resolve().parents[1] / "edgetune" / "sample_data" / "pirate_eval.jsonl"
    return list(DEFAULT_CHAT_PROMPTS) + [json.loads(x)["prompt"] for x in eval_rows.read_text().splitlines() if x.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--max-tokens", type=int, default=96)
    args = p.parse_args()
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    from llama_cpp import Llama

    asked = prompts()
    results = {}
    for path in sorted((args.run_dir / "gguf").glob("*.gguf")):
        llm = Llama(model_path=str(path), n_ctx=1024, verbose=False)
        for penalty in PENALTIES:
            never = 0
            for text in asked:
                llm.reset()
                out = llm.create_chat_completion([{"role": "user", "content": text}], max_tokens=args.max_tokens,
                                                 temperature=0.0, seed=0, repeat_penalty=penalty)
                never += out["choices"][0]["finish_reason"] != "stop"
            results[f"{path.name} @ {penalty}"] = never
            print(f"{path.name:28s} repeat_penalty {penalty}: {never} of {len(asked)} replies did not stop", flush=True)
        llm.close()
    print(json.dumps({"benchmark": "stop_rate", "prompts": len(asked), "max_tokens": args.max_tokens,
                      "never_stopped": results}))


if __name__ == "__main__":
    main()
