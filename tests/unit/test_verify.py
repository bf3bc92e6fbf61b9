"""The GGUF verification gate on the tiny random model and report.md."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgetune.errors import ExportError
from edgetune.events import Collect, Note
from edgetune.export import verify
from edgetune.export.gguf_convert import convert
from edgetune.export.quantize import quantize
from edgetune.export.report_md import write_report_md

CHAT = ["Hello!", "What is the capital of France?"]


@pytest.fixture(scope="module")
def ref(tiny_model_dir):
    return verify.HFReference(tiny_model_dir)


@pytest.fixture(scope="module")
def texts(ref):
    return verify.heldout_texts(None, ref.tokenizer)


@pytest.fixture(scope="module")
def ggufs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf")
    f16 = convert(tiny_model_dir, out / "tiny.F16.gguf", "f16")
    return {"f16": f16, "q8_0": quantize(f16, out / "tiny.Q8_0.gguf", "q8_0")}


@pytest.fixture(scope="module")
def results(ggufs, ref, texts) -> dict[str, dict]:
    return {q: verify.verify_gguf(path, ref, texts, CHAT, q) for q, path in ggufs.items()}


def test_f16_passes_the_gate(results):
    r = results["f16"]
    assert r["token_ids_identical"], r["token_mismatches"]
    assert r["mean_kld"] <= verify.MAX_MEAN_KLD["f16"] and r["max_kld"] <= verify.MAX_POSITION_KLD["f16"]
    assert r["max_kld"] >= r["mean_kld"] and r["top1"] >= 0.99 and r["positions"] > 300
    assert r["vocab_size_ok"] and r["chat_template_present"] and r["end_of_turn_stops"]
    assert r["fidelity_failures"] == []
    verify.check_gate(r)  # no raise
    json.dumps(r)  # JSON-able as it is


def test_random_model_never_stopping_is_reported(results):
    r = results["f16"]  # a random model never emits <|im_end|> on purpose within 96 tokens
    assert r["stops_at_eos"] is False and "length" in r["finish_reasons"]
    assert not r["passed"] and any("did not stop" in f for f in r["failures"])
    assert len(r["replies"]) == len(CHAT) and all(len(x) <= 200 for x in r["replies"])


def test_quantized_reports_numbers_and_never_raises(results, ggufs):
    r = results["q8_0"]
    assert r["type"] == "q8_0" and r["size_bytes"] == ggufs["q8_0"].stat().st_size
    # 8-bit weights drift more than F16 from the same model, and the numbers say so
    assert r["mean_kld"] > results["f16"]["mean_kld"] and r["top1"] <= results["f16"]["top1"]
    assert r["token_ids_identical"] and r["fidelity_failures"] == []
    bad = {**r, "mean_kld": 2.0, "max_kld": 9.0, "fidelity_failures": ["made up"]}
    verify.check_gate(bad)  # quantized: reported, not raised


@pytest.mark.parametrize("mean, worst, fails", [(5e-5, 5e-3, False), (2e-4, 5e-3, True), (5e-5, 0.03, True)])
def test_gate_judges_the_distribution_not_the_argmax(results, mean, worst, fails):
    """A file whose top-1 flips on near-ties but whose distributions match passes; one that drifts fails."""
    r = {**results["f16"], "top1": 0.95, "top1_ties_ok": 0.96, "mean_kld": mean, "max_kld": worst}
    r["fidelity_failures"] = verify._fidelity_failures(r)
    if not fails:
        verify.check_gate(r)
        return
    with pytest.raises(ExportError) as err:
        verify.check_gate(r)
    assert "mean KL divergence" in str(err.value) and "tiny.F16.gguf" in str(err.value) and err.value.hint


def test_gguf_with_a_different_tokenizer_fails_the_gate(tiny_model_dir, ref, texts, tmp_path, monkeypatch):
    # Same weights, but the GGUF's tokenizer lost a merge: ids differ and the check must say so.
    broken = tmp_path / "hf"
    shutil.copytree(tiny_model_dir, broken)
    tok = json.loads((broken / "tokenizer.json").read_text(encoding="utf-8"))
    tok["model"]["merges"] = tok["model"]["merges"][1:]
    (broken / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    path = convert(broken, tmp_path / "broken.F16.gguf", "f16")
    events = Collect()
    r = verify.verify_gguf(path, ref, texts[:2], CHAT[:1], "f16", sink=events)
    assert not r["token_ids_identical"] and r["token_mismatches"]
    first = r["token_mismatches"][0]
    assert first["hf"] != first["gguf"] and first["text"]
    assert len(r["finish_reasons"]) == 1  # one prompt asked
    assert verify.verify_gguf(path, ref, texts[:1], [], "f16")["stops_at_eos"] is None  # no prompts: not checked
    with pytest.raises(ExportError, match="token ids differ"):
        verify.check_gate(r)
    assert any(isinstance(e, Note) and e.level == "warning" for e in events.events)


def test_missing_chat_template_fails_the_gate(results):
    r = {**results["f16"], "chat_template_present": False}
    r["fidelity_failures"] = verify._fidelity_failures(r)
    with pytest.raises(ExportError, match="chat_template"):
        verify.check_gate(r)


def test_fixed_tokenizer_texts_cover_the_hard_cases():
    joined = "".join(verify.FIXED_TOKENIZER_TEXTS)
    for needle in ("ü", "你好", "こんにちは", "مرحبا", "Привет", "\u200d", "\t", "<|im_start|>", '{"', "12345"):
        assert needle in joined, needle
    assert any(t != t.strip() for t in verify.FIXED_TOKENIZER_TEXTS)


def test_heldout_texts_from_a_run_dir(tmp_path, ref, chat_jsonl):
    from edgetune.config import RunConfig

    cfg = RunConfig()
    cfg.data.path, cfg.data.eval_fraction, cfg.run_dir = str(chat_jsonl), 0.25, str(tmp_path)
    cfg.save(tmp_path / "config.toml")
    texts = verify.heldout_texts(tmp_path, ref.tokenizer, n=3)
    rendered = texts[:3]
    assert len(texts) == 3 + len(verify.GENERIC_TEXTS)
    assert all(t.startswith("<|im_start|>system") and "Arr! Word" in t for t in rendered)
    from datasets import Dataset  # the rows train.prepare_data held out with the same seed

    held = Dataset.from_dict({"i": list(range(24))}).train_test_split(test_size=0.25, seed=cfg.train.seed)["test"]["i"]
    assert f"Say the word number {held[0] % 6}." in rendered[0]
    # a data file works too, and a missing one falls back to the generic texts with a warning
    assert len(verify.heldout_texts(chat_jsonl, ref.tokenizer, n=2)) == 2 + len(verify.GENERIC_TEXTS)
    events = Collect()
    assert verify.heldout_texts(tmp_path / "gone.jsonl", ref.tokenizer, sink=events) == verify.GENERIC_TEXTS
    assert events.of(Note)[0].level == "warning"


def test_report_md(results, tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({
        "merge": {"merged_dir": "runs/x/merged", "dtype": "fp16", "max_logit_diff": 0.0013, "seconds": 4.2},
        "export": {"files": [results["f16"], {**results["q8_0"], "kept": False}], "modelfile": "gguf/Modelfile",
                   "auto": {"max_kld": 0.05, "chosen": "q8_0"}},
        "eval": {"accuracy": 0.75}}), encoding="utf-8")
    md = write_report_md(tmp_path).read_text(encoding="utf-8")
    assert "| file | type | size MB | top-1 | KLD | token ids | stops at EOS | passed |" in md
    row = next(line for line in md.splitlines() if line.startswith("| `tiny.F16.gguf`"))
    assert "| F16 |" in row and "identical" in row and "**no**" in row  # never stops -> not passed
    assert "did not stop" in md and "accuracy: 0.75" in md and "largest logit difference" in md
    assert "(not kept)" in md and "`gguf/Modelfile`" in md and "kept Q8_0" in md
    assert write_report_md(tmp_path).read_text(encoding="utf-8") == md  # same input, same page
