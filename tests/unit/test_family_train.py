"""Two real training steps per family (transformers + PEFT + TRL on CPU) with the family's own chat template: the
batches the model is given carry labels only on replies and their end-of-turn token, the LoRA adapter moves, the
base does not, and the run records how its template's replies were located."""
from __future__ import annotations

import json

import pytest
import torch

from edgetune import config as C
from edgetune import train as train_module
from families import FAMILIES, build_family
from shared_data import write_rows

CONVS = [[{"role": "system", "content": "Talk like a pirate."},
          {"role": "user", "content": f"Say the number {i}."}, {"role": "assistant", "content": f"Arr! {i} it be."},
          {"role": "user", "content": "And again?"}, {"role": "assistant", "content": f"Arr, {i} again."}]
         for i in range(8)]
PROMPT_TEXT = ("Talk like a pirate", "Say the number", "And again")


def spy_on_trainer(monkeypatch) -> dict:
    """The real trainer train() builds, with a forward pre-hook recording each batch the model is given and a copy
    of every base weight taken before the first step."""
    seen: dict = {"batches": []}
    build = train_module.build_trainer

    def build_and_watch(*args, **kwargs):
        trainer = build(*args, **kwargs)
        seen["trainer"] = trainer
        seen["base"] = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n}
        seen["lora"] = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}

        def record(module, args, kwargs):
            if module.training:
                seen["batches"].append({k: kwargs[k].detach().clone() for k in ("input_ids", "labels",
                                                                                "attention_mask", "position_ids")
                                         if kwargs.get(k) is not None})

        trainer.model.register_forward_pre_hook(record, with_kwargs=True)
        return trainer

    monkeypatch.setattr(train_module, "build_trainer", build_and_watch)
    return seen


def trained_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i, (token, label) in enumerate(zip(ids, labels)):
        if label != -100 and (i == 0 or labels[i - 1] == -100):
            runs.append([])
        if label != -100:
            assert label == token, "a label that is not the input token"
            runs[-1].append(token)
    return runs


def run_two_steps(name, tmp_path, monkeypatch, **train_overrides):
    model = build_family(name, tmp_path / name)
    data = write_rows(tmp_path / "chat.jsonl", [{"messages": c} for c in CONVS])
    cfg = C.resolve(None, {"model": {"ref": str(model), "load_in_4bit": name == "qwen3"},  # one QLoRA (NF4) run
                           "data": {"path": str(data)}, "run_dir": str(tmp_path / "run"),
                           "train": {"max_steps": 2, "batch_size": 2, "learning_rate": 5e-3, "max_length": 1024,
                                     **train_overrides}},
                    profile="cpu")
    seen = spy_on_trainer(monkeypatch)
    result = train_module.train(cfg)
    assert result.steps == 2 and result.final_loss == result.final_loss  # not NaN
    assert len(seen["batches"]) == 2
    return model, seen


def check_batch_labels(model, family, batch) -> None:
    """Labels beside the input ids; every trained run is one reply ending on the family's end-of-turn token (then
    whitespace); no system or user text and no padding is trained."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    eot = tok.convert_tokens_to_ids(family.end_of_turn)
    assert batch["labels"].shape == batch["input_ids"].shape
    if "attention_mask" in batch:
        assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        runs = trained_runs(ids, labels)
        assert runs, "a sequence with nothing in the loss"
        for run in runs:
            text = tok.decode(run)
            assert text.count("Arr") == 1 and not any(p in text for p in PROMPT_TEXT), text
            assert next(t for t in reversed(run) if tok.decode([t]).strip()) == eot, text


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_two_steps_train_the_adapter_only(name, tmp_path, monkeypatch):
    model, seen = run_two_steps(name, tmp_path, monkeypatch)
    for batch in seen["batches"]:
        check_batch_labels(model, FAMILIES[name], batch)

    trained = seen["trainer"].model
    for n, p in trained.named_parameters():
        if "lora_" in n:
            continue
        assert torch.equal(p.detach(), seen["base"][n]), f"base weight {n} changed"
    moved = [n for n, p in trained.named_parameters() if "lora_B" in n and not torch.equal(p.detach(), seen["lora"][n])]
    assert moved and len(moved) == sum("lora_B" in n for n in seen["lora"]), "every LoRA B (zero at start) must move"

    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["n_valid"] == 8 and report["mask_method"] == "turns"
    # Qwen3 drops the think block of earlier turns and Mistral v0.3 moves the system prompt into the last user turn:
    # each reply then trains in its own sequence, in exactly the context it is generated in.
    assert report["n_sequences"] == (16 if name in ("qwen3", "mistral") else 8)


def test_packed_batches_keep_the_mask(tmp_path, monkeypatch):
    """train.packing: TRL packs the pre-tokenized rows (input_ids + labels) into max_length sequences; the labels
    travel with them, so a packed batch trains replies and end-of-turn tokens only."""
    model, seen = run_two_steps("llama3_2", tmp_path, monkeypatch, packing=True, max_length=256)
    for batch in seen["batches"]:  # padding-free: one row, each packed sequence restarting its positions at 0
        starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
        assert batch["input_ids"].shape[0] == 1 and len(starts) > 2, starts  # several conversations per row
        assert all(batch["labels"][0, i] == -100 for i in starts)
        check_batch_labels(model, FAMILIES["llama3_2"], batch)
