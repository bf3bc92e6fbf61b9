"""The forgetting check on the embedded SmolLM2-135M-Instruct: the shipped probe scores the base model, and a run
deliberately over-trained on a narrow toy task (one canned reply, many steps at a high learning rate) shows a drop
past eval.max_probe_drop, with the warning in report.json and report.md. The factual part of the probe keeps it to
a few minutes on a CPU (the base passes most of it; the full probe is the same code on more items)."""
from __future__ import annotations

import json

import pytest

from edgetune import config as C
from edgetune.events import Collect, Note
from edgetune.export.report_md import write_report_md
from edgetune.forgetting import run_probe
from edgetune.train import train

pytestmark = pytest.mark.integration

QUESTIONS = ["Tell me about your day.", "What should I cook tonight?", "Any advice for a job interview?",
             "How do I fix a flat tyre?", "Recommend a good book.", "What is your favourite colour?",
             "How do I learn to swim?", "Why do cats purr?"]


def test_probe_scores_base_and_flags_an_over_trained_run(tmp_path, smollm2_dir):
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "Blub blub, says the fish."}]}
            for q in QUESTIONS * 3]
    data = tmp_path / "narrow.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = C.resolve(None, {"model": {"ref": "default", "load_in_4bit": False}, "data": {"path": str(data)},
                           "run_dir": str(tmp_path / "run"),
                           "train": {"max_steps": 30, "learning_rate": 3e-3, "batch_size": 4, "max_length": 64,
                                     "warmup_steps": 0, "save_steps": 100}}, profile="cpu")
    train(cfg)
    events = Collect()
    out = run_probe(str(tmp_path / "run"), sink=events, kinds=("factual",))
    base, tuned = out["targets"]
    assert base["label"].startswith("base") and base["n"] == 18
    assert base["score"] >= 50, base  # the base model knows most of these (72% measured)
    assert out["drop"] > out["max_drop"] == 5.0 and out["warning"] and out["lost_items"], (base["score"], tuned["score"])
    assert any(isinstance(e, Note) and e.level == "warning" and "forgetting" in e.text for e in events.events)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())["forgetting"]
    assert saved["targets"][1]["score"] == tuned["score"]
    md = write_report_md(tmp_path / "run").read_text()
    assert "## Forgetting check" in md and "Warning: the tuned model scores" in md
