"""The eval stage: answer extraction, normalisation, match rules, row loading, and held-out loss that agrees
between transformers and llama.cpp when both are fed the same token ids."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from edgetune.errors import ConfigError, DataError
from edgetune.evaluate import (
    PIRATE_MATCH, EvalRow, extract_answer, is_correct, load_eval_rows, normalize, parse_match)
from edgetune.events import Collect, Note, Progress

SAMPLE_EVAL = Path(__file__).resolve().parents[2] / "edgetune" / "sample_data" / "pirate_eval.jsonl"
ROWS = [EvalRow("What is the capital of France?", "Arr! Paris it be.", 1),
        EvalRow("Say hello.", "Hello! How are you today?", 2)]


# --- extract_answer / normalize -------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, expected", [
    ("Let me think. <answer>42</answer>", "42"),
    ("<answer>1</answer> no wait <ANSWER> 2 </ANSWER>", "2"),  # the last tag, any case
    ("reasoning... <answer>cut off", "cut off"),  # unclosed: the reply hit max_tokens
    ('Sure! {"answer": "Paris", "confidence": 0.9}', "Paris"),
    ('```json\n{"reasoning": "x {y}", "answer": 7}\n```', "7"),
    ('{"note": 1} then {"answer": "b"}', "b"),
    ("Natalia sold 48 clips.\n#### 72", "72"),
    ("#### 1\nmore work\n####  1,000  ", "1,000"),
    ("  just text  ", "just text"),
    ('{"no_answer_key": 1}', '{"no_answer_key": 1}'),
])
def test_extract_answer(reply, expected):
    assert extract_answer(reply) == expected


@pytest.mark.parametrize("text, expected", [
    ("The Answer is: PARIS!", "answer is paris"),
    ("1,000", "1000"),
    ("3.0", "3"),
    ("3.50 dollars", "3.5 dollars"),
    ("$1,234,567.00", "1234567"),
    ("-0.0", "0"),
    ("-5 and 007", "-5 and 7"),
    ("Version 3.5", "version 3.5"),  # a decimal point survives punctuation stripping: 3.5 != 35
    ("It's a well-known fact.", "its well known fact"),
    ("1,2,3", "1 2 3"),  # not thousands grouping
    ("  Café \n\t naïve  ", "café naïve"),
    ("", ""),
])
def test_normalize(text, expected):
    assert normalize(text) == expected


# --- match rules ----------------------------------------------------------------------------------------------

def test_exact_match_uses_extraction_on_both_sides():
    assert is_correct("The total is <answer>1,000</answer>.", "1000")
    assert is_correct("work...\n#### 72", "Natalia sold 48 + 24 = 72 clips.\n#### 72.0")
    assert not is_correct("The answer is 1000", "1000")  # exact: extra words fail
    assert not is_correct("3.5", "35")


def test_prefix_and_contains():
    answer = "Arr! Then hoist the sails on a new hobby, matey!"
    assert is_correct("Arr! Ahoy there, matey.", answer, PIRATE_MATCH)
    assert not is_correct("Sure! Arr, matey.", answer, PIRATE_MATCH)
    assert not is_correct("Arrgh, matey", answer, "prefix:1")  # whole words, not characters
    assert is_correct("Arr! Then hoist the sails on a new hobby, matey! And more.", answer, "prefix")
    assert not is_correct("Arr! Then hoist the mainsail.", answer, "prefix")
    assert is_correct("I think it is Paris, France.", "paris", "contains")
    assert not is_correct("Comparison", "paris", "contains")
    assert is_correct("Well, arr then hoist it", answer, "contains:3")


def test_regex_match_scores_like_the_regex_format_reward():
    from edgetune.methods.rewards import make_regex_format

    rule = r"^Arr! \S+( \S+){3}"
    replies = ["Arr! Rome be the capital, matey.", "Arr!", "Arr! Arr!", "Rome. Arr! it be so"]
    assert [is_correct(r, "unused", f"regex:{rule}") for r in replies] == [True, False, False, False]
    assert make_regex_format(rule)(replies) == [1.0, 0.0, 0.0, 0.0]
    assert parse_match("regex:^A(b)") == ("regex", "^A(b)")  # the pattern keeps its case and colons
    for bad in ("regex:(", "regex:"):
        with pytest.raises(ConfigError, match="regex"):
            parse_match(bad)


@pytest.mark.parametrize("spec, expected", [("exact", ("exact", 0)), ("prefix", ("prefix", 0)),
                                            ("Prefix:2", ("prefix", 2)), ("contains:3", ("contains", 3))])
def test_parse_match(spec, expected):
    assert parse_match(spec) == expected


@pytest.mark.parametrize("spec", ["fuzzy", "prefix:x", "exact:2", ""])
def test_parse_match_rejects(spec):
    with pytest.raises(ConfigError, match="prefix:1"):
        parse_match(spec)


# --- loading rows ---------------------------------------------------------------------------------------------

def test_sample_eval_loads():
    rows = load_eval_rows(SAMPLE_EVAL)
    assert len(rows) == 30 and all(r.answer.startswith("Arr!") for r in rows)
    assert rows[0].line == 1


def test_bad_rows_skipped_with_file_and_line(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join([
        json.dumps({"prompt": "Hi", "answer": "Arr! Hi"}),
        json.dumps({"question": "Hi", "answer": "x"}),
        "{not json",
        "",
        json.dumps({"prompt": "Hi", "answer": ""}),
        json.dumps({"prompt": "Sum?", "answer": 42}),
    ]) + "\n", encoding="utf-8")
    problems = []
    rows = load_eval_rows(path, problems)
    assert [(r.line, r.answer) for r in rows] == [(1, "Arr! Hi"), (6, "42")]
    text = [str(p) for p in problems]
    assert text[0].startswith(f"{path}:2:") and 'rename "question" to "prompt"' in text[0]
    assert text[1].startswith(f"{path}:3:") and "invalid JSON" in text[1]
    assert text[2].startswith(f"{path}:5:") and '"answer" is empty' in text[2]


def test_no_usable_rows_raise_data_error(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n"
                    + json.dumps({"prompt": ["a"], "answer": "b"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_eval_rows(path)
    msg = str(err.value)
    assert f"{path}:1:" in msg and "chat conversation" in msg
    assert f"{path}:2:" in msg and '"prompt" is a JSON list' in msg
    assert err.value.hint


def test_json_file_rows_and_missing_file(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps([{"prompt": "a", "answer": "b"}, "oops"]), encoding="utf-8")
    problems = []
    assert len(load_eval_rows(path, problems)) == 1
    assert str(problems[0]).startswith(f"{path}: row 2:") and '"prompt"' in problems[0].fix
    with pytest.raises(DataError, match="no such file"):
        load_eval_rows(tmp_path / "missing.jsonl")


# --- held-out loss: HF and llama.cpp on the same ids ----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_hf(tiny_model_dir):
    from edgetune.evaluate import load_hf

    return load_hf(str(tiny_model_dir))


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir, tmp_path_factory):
    from edgetune.export.gguf_convert import convert

    return convert(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.F32.gguf", "f32")


def test_hf_heldout_loss_matches_manual_computation(tiny_hf):
    import torch

    from edgetune.data.template import encode
    from edgetune.evaluate import heldout_loss, messages_for

    loss, n = heldout_loss(tiny_hf, ROWS)
    nll, count = 0.0, 0
    for row in ROWS:
        ids, mask = encode(tiny_hf.tokenizer, messages_for(row, with_answer=True))
        with torch.no_grad():
            logp = torch.log_softmax(tiny_hf.model(torch.tensor([ids])).logits[0].double(), -1)
        for j in range(1, len(ids)):
            if mask[j]:
                nll, count = nll - float(logp[j - 1, ids[j]]), count + 1
    assert n == count > 0
    assert loss == pytest.approx(nll / count, abs=1e-6)
    assert 0 < loss < 2 * math.log(len(tiny_hf.tokenizer))  # a random model: near uniform


def test_gguf_heldout_loss_matches_hf(tiny_hf, tiny_gguf, tiny_model_dir):
    from edgetune.evaluate import GGUFBackend, heldout_loss

    hf_loss, hf_n = heldout_loss(tiny_hf, ROWS)
    gguf = GGUFBackend(tiny_gguf, tokenizer_dir=tiny_model_dir)
    try:
        gguf_loss, gguf_n = heldout_loss(gguf, ROWS)
    finally:
        gguf.llm.close()
    assert gguf_n == hf_n
    assert abs(gguf_loss - hf_loss) < 1e-3, (gguf_loss, hf_loss)


def test_evaluate_targets_rows_and_events(tiny_hf, tiny_gguf, tiny_model_dir):
    from edgetune.evaluate import GGUFBackend, evaluate_targets

    events = Collect()
    targets = [("hf", tiny_hf), ("f32", lambda: GGUFBackend(tiny_gguf, tokenizer_dir=tiny_model_dir))]
    results = evaluate_targets(targets, ROWS, max_tokens=4, sink=events, match="contains", n_examples=1)
    assert [r["label"] for r in results] == ["hf", "f32"]
    assert [r["backend"] for r in results] == ["hf", "llamacpp"]
    for r in results:
        # random weights: four tokens of noise contain neither reference answer
        assert r["n"] == 2 and r["task_score"] == 0.0 and r["seconds"] >= 0
        assert len(r["examples"]) == 1 and isinstance(r["examples"][0]["reply"], str)
    assert abs(results[0]["heldout_loss"] - results[1]["heldout_loss"]) < 1e-3
    progress = events.of(Progress)
    assert [p.done for p in progress] == [1, 2, 3, 4] and progress[-1].total == 4
    assert sum("task score" in n.text for n in events.of(Note)) == 2


def test_targets_for_run_dir(tmp_path, tiny_model_dir, tiny_gguf):
    from edgetune.config import RunConfig
    from edgetune.evaluate import targets_for, write_eval_report

    run = tmp_path / "run"
    cfg = RunConfig(name="run", run_dir=str(run))
    cfg.model.ref = str(tiny_model_dir)
    cfg.save(run / "config.toml")
    shutil.copytree(tiny_model_dir, run / "merged")
    (run / "gguf").mkdir()
    shutil.copy(tiny_gguf, run / "gguf" / "run.F32.gguf")
    labels = [label for label, _ in targets_for(str(run))]
    assert labels == [f"base {tiny_model_dir.name}", "merged", "run.F32.gguf"]
    assert [label for label, _ in targets_for(str(tiny_gguf))] == ["tiny.F32.gguf"]
    write_eval_report(run, [{"label": "merged", "task_score": 0.5}], "eval.jsonl")
    report = json.loads((run / "report.json").read_text())
    assert report["eval"]["targets"][0]["task_score"] == 0.5 and report["eval"]["data"] == "eval.jsonl"


def test_models_too_big_for_fp32_are_scored_through_a_temporary_f16_gguf(tmp_path, tiny_model_dir, tiny_hf,
                                                                         monkeypatch):
    """When an fp32 copy would not fit in free RAM, base and merged go through llama.cpp (F16, converted for the
    eval, removed after): the held-out loss is the HF model's within F16 rounding."""
    from edgetune import evaluate
    from edgetune.config import RunConfig

    run = tmp_path / "run"
    cfg = RunConfig(name="run", run_dir=str(run))
    cfg.model.ref = str(tiny_model_dir)
    cfg.save(run / "config.toml")
    shutil.copytree(tiny_model_dir, run / "merged")
    monkeypatch.setattr(evaluate, "FP32_RAM_SHARE", 0.0)
    targets = evaluate.targets_for(str(run))
    assert [label for label, _ in targets] == [f"base {tiny_model_dir.name} (F16 GGUF)", "merged (F16 GGUF)"]
    results = evaluate.evaluate_targets(targets, ROWS, max_tokens=4)
    assert [r["backend"] for r in results] == ["llamacpp", "llamacpp"]
    hf_loss, _ = evaluate.heldout_loss(tiny_hf, ROWS)
    assert all(abs(r["heldout_loss"] - hf_loss) < 2e-3 for r in results), (results, hf_loss)
    assert not list(run.glob(".eval-gguf-*"))  # the temporary GGUF is gone
