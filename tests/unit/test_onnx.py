"""ONNX export on the tiny model: every variant builds, loads in plain onnxruntime and matches transformers; KV-cache
generation equals full-sequence greedy; the write is atomic; the fp32 gate raises on a broken model."""
import json
import shutil

import numpy as np
import onnxruntime  # noqa: F401  (hard dependencies: a missing one fails the run, never skips it)
import onnxruntime_genai  # noqa: F401
import pytest

from shared_data import write_chat_jsonl
from edgetune import config as C
from edgetune.errors import ExportError
from edgetune.export import onnx_export
from edgetune.export.onnx_export import VARIANTS, export_onnx
from edgetune.export.onnx_runtime import OnnxBackend, OnnxModel, onnx_model_dirs

IDS = [5, 17, 42, 99, 7, 300, 12, 64, 128, 3, 250, 11]


def make_run(root, model_dir):
    """A run dir without training: config.toml + merged/ (export needs nothing else)."""
    data = write_chat_jsonl(root)
    run = root / "run"
    cfg = C.resolve(None, {"model": {"ref": str(model_dir), "load_in_4bit": False}, "data": {"path": str(data)},
                           "run_dir": str(run), "name": "tiny"}, profile="cpu")
    run.mkdir()
    cfg.save(run / "config.toml")
    shutil.copytree(model_dir, run / "merged")
    return run


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    run = make_run(tmp_path_factory.mktemp("onnx_run"), tiny_model_dir)
    return run, export_onnx(run, list(VARIANTS))


@pytest.fixture(scope="module")
def hf_logits(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0].numpy()


def test_every_variant_written_with_tokenizer_and_reported(exported):
    run, results = exported
    assert [r["type"] for r in results] == list(VARIANTS)
    for v in VARIANTS:
        folder = run / "onnx" / v
        for name in ("model.onnx", "genai_config.json", "tokenizer.json", "tokenizer_config.json"):
            assert (folder / name).is_file(), f"{v}: {name}"
    assert [d.name for d in onnx_model_dirs(run)] == list(VARIANTS)
    assert not list((run / "onnx").glob(".*"))  # no temp folders left behind
    report = json.loads((run / "report.json").read_text())
    fp32 = next(r for r in report["onnx"]["variants"] if r["type"] == "fp32")
    assert fp32["top1"] >= 0.999 and fp32["token_ids_identical"] and not fp32["fidelity_failures"]
    assert fp32["stops_at_eos"] is False  # a random model never ends its turn: reported, not raised
    assert report["onnx"]["exporter"]["onnxruntime"]


@pytest.mark.parametrize("variant,atol", [("fp32", 1e-4), ("fp16", 2e-2), ("int8", 0.05), ("int4", 0.2)])
def test_logits_match_transformers(exported, hf_logits, variant, atol):
    run, _ = exported
    ours = OnnxModel(run / "onnx" / variant).logits(IDS)
    assert ours.shape == hf_logits.shape
    assert np.abs(ours - hf_logits).max() < atol
    if variant in ("fp32", "fp16"):
        assert (ours.argmax(-1) == hf_logits.argmax(-1)).all()


@pytest.mark.parametrize("variant", ["fp32", "int4"])
def test_kv_cache_generation_equals_full_sequence_greedy(exported, variant):
    run, _ = exported
    model = OnnxModel(run / "onnx" / variant)
    prompt = IDS[:5]
    new = list(model.generate(prompt, 8, temperature=0.0, repeat_penalty=1.0, eos_ids=set()))
    ids = list(prompt)
    for _ in range(8):  # no cache: re-run the whole sequence for every token
        ids.append(int(model.logits(ids)[-1].argmax()))
    assert new == ids[len(prompt):]
    cached = model.forward(prompt[:3], model.empty_cache())[1]
    step = model.forward(prompt[3:], cached)[0]
    assert np.abs(step - model.logits(prompt)[3:]).max() < (1e-4 if variant == "fp32" else 0.2)


def test_backend_chats_with_the_saved_template(exported):
    run, _ = exported
    backend = OnnxBackend(run / "onnx" / "fp32")
    text = "".join(backend.stream([{"role": "user", "content": "Hi"}], 5, 0.0))
    assert backend.finish_reason == "length" and isinstance(text, str)
    assert backend.prompt_ids([{"role": "user", "content": "Hi"}])[-1] != backend.tokenizer.eos_token_id


def test_failed_build_leaves_nothing_at_the_final_path(tmp_path, tiny_model_dir, monkeypatch):
    import subprocess

    def broken(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, "", "simulated builder crash")

    monkeypatch.setattr(onnx_export.subprocess, "run", broken)
    final = tmp_path / "onnx" / "fp32"
    with pytest.raises(ExportError, match="simulated builder crash"):
        onnx_export.build_variant(tiny_model_dir, final, "fp32")
    assert not final.exists() and not list((tmp_path / "onnx").iterdir())


def test_interrupt_leaves_nothing_at_the_final_path(tmp_path, tiny_model_dir, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export.subprocess, "run", interrupted)
    final = tmp_path / "onnx" / "int4"
    with pytest.raises(KeyboardInterrupt):
        onnx_export.build_variant(tiny_model_dir, final, "int4")
    assert not final.exists() and not list((tmp_path / "onnx").iterdir())


def test_fp32_gate_raises_on_a_model_that_differs(exported, tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgetune.export.onnx_verify import check_onnx_gate, fidelity_failures, verify_variants
    from edgetune.export.verify import GENERIC_TEXTS, HFReference

    run, _ = exported
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():  # permuted (tied) embeddings: what a wrong vocab mapping in an export would look like
        emb = model.get_input_embeddings().weight
        emb.copy_(emb[torch.randperm(emb.shape[0], generator=torch.Generator().manual_seed(0))])
    other = tmp_path / "other"
    model.save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(other)
    [result] = verify_variants(None, {"fp32": run / "onnx" / "fp32"}, ref=HFReference(other),
                               texts=GENERIC_TEXTS[:2], chat_prompts=[])
    # a random model's argmax is nearly constant, so top-1 barely moves; the distributions do, and the gate sees it
    assert result["mean_kld"] > 1e-3 and result["fidelity_failures"] == fidelity_failures(result)
    with pytest.raises(ExportError, match="mean KL divergence"):
        check_onnx_gate(result)


def test_unknown_variant_is_a_user_error():
    with pytest.raises(ExportError, match="unknown ONNX variant 'int2'"):
        onnx_export.normalise_variants(["int2"])


def test_reexport_replaces_one_variant_and_keeps_the_others_in_the_report(exported):
    run, _ = exported
    before = (run / "onnx" / "int8" / "model.onnx").stat().st_mtime_ns
    [result] = export_onnx(run, ["int8"], verify=False)
    assert result["type"] == "int8" and "top1" not in result
    assert (run / "onnx" / "int8" / "model.onnx").stat().st_mtime_ns != before
    report = json.loads((run / "report.json").read_text())
    assert [r["type"] for r in report["onnx"]["variants"]] == list(VARIANTS)
    assert "top1" in next(r for r in report["onnx"]["variants"] if r["type"] == "fp32")


def test_chat_runs_without_pytorch(exported):
    import subprocess
    import sys

    run, _ = exported
    code = ("import sys; sys.modules['torch'] = None\n"  # any torch import now fails
            "from edgetune.export.onnx_runtime import OnnxBackend\n"
            f"b = OnnxBackend({str(run / 'onnx' / 'int4')!r})\n"
            "print(repr(''.join(b.stream([{'role': 'user', 'content': 'Hi'}], 4, 0.0))), b.finish_reason)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("length")
