"""The Unsloth path, checked on a CPU: import order, the labels the trainer sees, one tokenizer, continued adapters
through Unsloth's LoRA, and the exact base weights recorded for merge and export.

The real unsloth cannot be imported without a GPU, so tests/standins/unsloth stands in for it: it records what was
imported before it and every call, and loads with transformers + PEFT. The GPU run is benchmarks/gpu_check.py.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgetune import config as C
from edgetune import train as T
from edgetune.errors import RunDirError

STANDINS = Path(__file__).resolve().parents[1] / "standins"
REPO = Path(__file__).resolve().parents[2]

# The one thing a CPU machine lacks is CUDA: say there is one to the import decision only; everything after it is
# the real CLI (which then refuses the Unsloth engine without a GPU, with a clear error).
DRIVER = """
import sys
import edgetune.engines.choose as choose
choose.cuda_available = lambda: True
from edgetune.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_cli(args, tmp_path):
    record = tmp_path / "unsloth-record.jsonl"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(STANDINS), os.environ.get("PYTHONPATH", "")]),
               UNSLOTH_STANDIN_RECORD=str(record))
    proc = subprocess.run([sys.executable, "-c", DRIVER, *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    events = [json.loads(line) for line in record.read_text().splitlines()] if record.is_file() else []
    return proc, events


@pytest.mark.parametrize("how", ["flag", "config", "resume"])
def test_train_imports_unsloth_before_transformers_trl_peft(how, tiny_model_dir, chat_jsonl, tmp_path):
    run = tmp_path / "run"
    base = ["train", "--model", str(tiny_model_dir), "--data", str(chat_jsonl), "--max-steps", "1"]
    if how == "flag":
        args = base + ["--engine", "unsloth", "--run-dir", str(run)]
    else:
        cfg = tmp_path / "c.toml" if how == "config" else run / "config.toml"
        cfg.parent.mkdir(exist_ok=True)
        cfg.write_text('[train]\nengine = "unsloth"\n')
        args = base + (["-c", str(cfg), "--run-dir", str(run)] if how == "config" else ["--resume", "--run-dir", str(run)])
    proc, events = run_cli(args, tmp_path)
    assert events and events[0]["event"] == "import", proc.stderr
    assert events[0]["already_imported"] == [], f"imported before unsloth: {events[0]['already_imported']}"
    # no CUDA here: refused with a clear error, not a traceback (a resume without checkpoints stops before that)
    assert proc.returncode == 1 and ("needs an NVIDIA GPU" in proc.stderr or how == "resume"), proc.stderr


def test_hf_engine_does_not_import_unsloth(tiny_model_dir, chat_jsonl, tmp_path):
    proc, events = run_cli(["train", "--engine", "hf", "--model", str(tiny_model_dir), "--data", str(chat_jsonl),
                            "--max-steps", "1", "--run-dir", str(tmp_path / "run"), "--no-4bit"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert events == []


# --- the batch the trainer sees, per method and engine ----------------------------------------------------------
def rows(tmp_path, method, chat_jsonl):
    def write(name, items):
        path = tmp_path / name
        path.write_text("\n".join(json.dumps(r) for r in items) + "\n")
        return path

    if method == "sft":
        return chat_jsonl, {}
    if method == "dpo":
        return write("p.jsonl", [{"prompt": f"Say {i}", "chosen": f"Arr! {i}", "rejected": f"No {i}."}
                                 for i in range(16)]), {}
    if method == "kto":
        return write("k.jsonl", [{"prompt": f"Say {i}", "completion": ("Arr! " if i % 2 else "No ") + str(i),
                                  "label": bool(i % 2)} for i in range(16)]), {}
    return write("g.jsonl", [{"prompt": f"Say {i}", "answer": str(i)} for i in range(8)]), dict(
        rewards=["answer_match"], num_generations=2, max_completion_length=6)


@pytest.fixture
def standin_unsloth(monkeypatch):
    """The Unsloth engine on this CPU, over the recording stand-in."""
    monkeypatch.syspath_prepend(str(STANDINS))
    sys.modules.pop("unsloth", None)
    from edgetune import engines
    from edgetune.engines.unsloth import UnslothEngine

    made = []

    def select(name, hw, cfg):
        made.append(UnslothEngine())
        return made[-1]

    monkeypatch.setattr(engines, "select", select)
    yield made
    sys.modules.pop("unsloth", None)


def capture_batches(monkeypatch):
    seen = {}
    real = T.build_trainer

    def build(model, tokenizer, *args, **kwargs):
        trainer = real(model, tokenizer, *args, **kwargs)
        compute_loss = trainer.compute_loss

        def recording(model, inputs, *a, **k):
            seen.setdefault("inputs", inputs)
            return compute_loss(model, inputs, *a, **k)

        trainer.compute_loss = recording
        seen["tokenizer"] = tokenizer
        return trainer

    monkeypatch.setattr(T, "build_trainer", build)
    return seen


@pytest.mark.parametrize("engine", ["hf", "unsloth"])
@pytest.mark.parametrize("method", ["sft", "dpo", "kto", "grpo"])
def test_trainer_sees_loss_only_on_replies(method, engine, tiny_model_dir, chat_jsonl, tmp_path, monkeypatch,
                                           request):
    """The tokens that carry loss in the batch handed to compute_loss are reply tokens: never the user's prompt."""
    made = request.getfixturevalue("standin_unsloth") if engine == "unsloth" else None
    seen = capture_batches(monkeypatch)
    data, method_kw = rows(tmp_path, method, chat_jsonl)
    cfg = C.resolve(None, {"model": {"ref": str(tiny_model_dir), "load_in_4bit": False}, "data": {"path": str(data)},
                           "run_dir": str(tmp_path / "run"), "method": {"name": method, **method_kw},
                           "train": {"max_steps": 1, "batch_size": 4}}, profile="cpu")
    T.train(cfg)
    tok, inputs = seen["tokenizer"], seen["inputs"]
    if made:
        assert tok is made[0].load_tokenizer(None, cfg), "the trainer must use the tokenizer that tokenized the data"
    if method == "grpo":  # prompt and completion come apart; the loss mask covers the completion up to its EOS
        assert all("Say" in t for t in tok.batch_decode(inputs["prompt_ids"]))
        mask, ids = inputs["completion_mask"], inputs["completion_ids"]
        for m, i in zip(mask.tolist(), ids.tolist()):
            ends = [n for n, t in enumerate(i) if t == tok.eos_token_id]
            assert m == [1] * len(m) if not ends else m == [1] * (ends[0] + 1) + [0] * (len(m) - ends[0] - 1)
        return
    ids = inputs["input_ids"]
    trained = (inputs["labels"] != -100) if method == "sft" else inputs["completion_mask"].bool()
    texts = [tok.decode(row[keep]) for row, keep in zip(ids, trained)]
    untrained = [tok.decode(row[~keep & (row != tok.pad_token_id)]) for row, keep in zip(ids, trained)]
    reply = ("Arr! Word",) if method == "sft" else ("Arr!", "No")
    for text, rest in zip(texts, untrained):
        assert text.strip() and any(r in text for r in reply), text
        assert "Say" not in text and ("Say" in rest), (text, rest)


# --- continuing an adapter, one tokenizer -------------------------------------------------------------------------
def test_later_stage_continues_through_unsloths_lora(standin_unsloth, tiny_model_dir, chat_jsonl, tmp_path):
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    import unsloth
    from edgetune import engines, hardware, models

    cfg = C.resolve(None, {"model": {"ref": str(tiny_model_dir), "load_in_4bit": False},
                           "data": {"path": str(chat_jsonl)}, "run_dir": str(tmp_path / "run"),
                           "lora": {"r": 4, "alpha": 8}, "train": {"max_steps": 2, "batch_size": 4}}, profile="cpu")
    first = T.train(cfg).adapter_dir
    engine = engines.select("unsloth", hardware.detect(), cfg)
    cfg.lora.r = 16  # a later stage's config cannot change the adapter it continues
    cfg.train.gradient_checkpointing = True  # the GPU profiles' setting: Unsloth's own checkpointing
    model, tok = engine.load_for_training(models.resolve(str(tiny_model_dir)), cfg, engines.Precision("fp32", "cpu"),
                                          init_adapter=first)
    calls = [c for c in unsloth.CALLS if c["event"] == "get_peft_model"]
    assert calls[-1]["r"] == 4 and calls[-1]["use_gradient_checkpointing"] == "unsloth"
    saved = load_file(first / "adapter_model.safetensors")
    loaded = get_peft_model_state_dict(model)
    assert set(saved) == set(loaded)
    assert all(torch.equal(saved[k], loaded[k].cpu()) for k in saved)
    assert tok is engine.load_tokenizer(None, cfg)
    assert all(c["model_name"] == str(tiny_model_dir) for c in unsloth.CALLS if c["event"] == "from_pretrained")


def test_unsloth_tokenizer_with_another_vocabulary_stops_before_training(tiny_model_dir):
    from transformers import AutoTokenizer

    from edgetune.engines.unsloth import one_tokenizer
    from edgetune.errors import TrainError

    ours, theirs = AutoTokenizer.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    theirs.add_special_tokens({"pad_token": "<|PAD_TOKEN|>"})
    with pytest.raises(TrainError, match="different vocabulary"):
        one_tokenizer(ours, theirs, "tiny")
    theirs = AutoTokenizer.from_pretrained(tiny_model_dir)
    theirs.pad_token = theirs.eos_token
    assert one_tokenizer(ours, theirs, "tiny") is ours and ours.pad_token == theirs.eos_token


# --- the exact base -----------------------------------------------------------------------------------------------
def test_run_records_base_and_merge_refuses_changed_weights(tiny_model_dir, chat_jsonl, tmp_path):
    import shutil

    from edgetune.merge import merge

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    cfg = C.resolve(None, {"model": {"ref": str(base), "load_in_4bit": False}, "data": {"path": str(chat_jsonl)},
                           "run_dir": str(tmp_path / "run"), "train": {"max_steps": 1, "batch_size": 4}}, profile="cpu")
    T.train(cfg)
    record = json.loads((tmp_path / "run" / "base.json").read_text())
    assert record["kind"] == "local" and record["path"] == str(base) and len(record["sha256"]) == 64
    weights = base / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4:] = bytes(4)  # one weight changed: same shapes, other model
    weights.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match="changed since"):
        merge(tmp_path / "run")
    shutil.copy2(tiny_model_dir / "model.safetensors", weights)
    assert merge(tmp_path / "run").max_logit_diff < 1e-3


def test_hub_base_is_pinned_to_its_commit(tiny_model_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    from edgetune import base_identity, models

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--edgetune--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    import shutil

    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    identity = base_identity.identify(models.resolve("edgetune/tiny"))
    assert identity.kind == "hub" and identity.revision == commit
    assert identity.path == str(repo / "snapshots" / commit)
