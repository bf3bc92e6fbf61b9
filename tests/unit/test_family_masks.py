"""The assistant-only loss with each family's real chat template (tests/families.py): on a multi-turn conversation
with a system prompt, the labels are exactly each reply plus the family's end-of-turn token, as the model sees the
conversation at inference; system and user text never is; and TRL's collator keeps it that way in a batch."""
from __future__ import annotations

import pytest

from edgetune.config import DataConfig
from edgetune.data import build_dataset, ensure_chat_template
from edgetune.data.template import encode_all, render, training_texts
from edgetune.tokenizer import load_tokenizer
from families import FAMILIES, build_family, build_family_tokenizer
from shared_data import write_rows

CONV = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello friend!"},
        {"role": "user", "content": "Bye now"}, {"role": "assistant", "content": "Goodbye friend!"}]
# What each family's template makes the model write before the reply (Qwen3: an empty think block; Mistral v0.3:
# a space) and after the end-of-turn token (a newline where the template puts one).
BEFORE = {"qwen3": "<think>\n\n</think>\n\n", "mistral": " "}
AFTER = {"qwen3": "\n", "gemma3": "\n", "smollm3": "\n", "qwen2": "\n"}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_tokenizer(request, tmp_path_factory):
    name = request.param
    tok = load_tokenizer(build_family_tokenizer(FAMILIES[name], tmp_path_factory.mktemp(name)))
    return name, tok


def trained_runs(tok, ids, mask) -> list[str]:
    runs, current = [], []
    for token, bit in zip(ids, mask):
        if bit:
            current.append(token)
        elif current:
            runs.append(tok.decode(current))
            current = []
    return runs + ([tok.decode(current)] if current else [])


def test_labels_are_each_reply_and_its_end_of_turn_token(family_tokenizer):
    name, tok = family_tokenizer
    fmt = ensure_chat_template(tok)
    sequences = encode_all(tok, CONV)
    runs = [run for ids, mask in sequences for run in trained_runs(tok, ids, mask)]
    eot = FAMILIES[name].end_of_turn
    assert runs == [f"{BEFORE.get(name, '')}{reply}{eot}{AFTER.get(name, '')}" for reply in ("Hello friend!",
                                                                                             "Goodbye friend!")]
    for ids, mask in sequences:  # the end-of-turn token itself is trained: the model learns to stop
        assert tok.convert_tokens_to_ids(eot) in [t for t, m in zip(ids, mask) if m]
    assert fmt.method == "turns"
    # Each reply follows exactly the context the model is given before generating it: as text, and as token ids.
    spans = [(text, start) for text, sp in training_texts(tok, CONV) for start, _ in sp]
    assert [text[:start] for text, start in spans] == [render(tok, CONV[:i], True) for i in (2, 4)]
    contexts = [ids[:i] for ids, mask in sequences for i, m in enumerate(mask) if m and not mask[i - 1]]
    assert contexts == [tok(render(tok, CONV[:i], True), add_special_tokens=False)["input_ids"] for i in (2, 4)]


def test_a_batch_keeps_the_mask(family_tokenizer, tmp_path):
    """The dataset carries labels (-100 outside replies) and TRL's collator pads them with -100: no trainer-side
    masking (which Unsloth would replace) is involved."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    name, tok = family_tokenizer
    ensure_chat_template(tok)
    data = write_rows(tmp_path / "chat.jsonl", [{"messages": CONV}, {"messages": CONV[:3]}])
    dataset, report = build_dataset(tok, DataConfig(path=str(data)), 4096)
    assert dataset.column_names == ["input_ids", "labels"] and report.n_valid == 2
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id or 0)(dataset.to_list())
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        trained = tok.decode([t for t in labels if t != -100])
        assert "friend!" in trained and "Hi there" not in trained and "Be brief." not in trained
        assert all(label in (-100, token) for label, token in zip(labels, ids))


def test_the_loss_over_a_padded_batch_is_the_loss_over_the_replies(tmp_path):
    """TRL's collator pads labels with -100, so the model's loss on a padded batch is exactly the cross-entropy over
    the reply tokens (replies + end-of-turn) of each conversation, computed one conversation at a time, unpadded."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model_dir = build_family("llama3_2", tmp_path / "model")
    tok = load_tokenizer(model_dir)
    ensure_chat_template(tok)
    data = write_rows(tmp_path / "chat.jsonl", [{"messages": CONV}, {"messages": CONV[:3]}])
    dataset, _ = build_dataset(tok, DataConfig(path=str(data)), 4096)
    rows = dataset.to_list()
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    short = min(range(len(rows)), key=lambda r: len(rows[r]["input_ids"]))
    n = len(rows[short]["input_ids"])
    assert n < batch["labels"].shape[1] and torch.all(batch["labels"][short, n:] == -100)  # padding is not trained
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        loss = model(**batch).loss
        total, count = 0.0, 0
        for row in rows:  # next-token cross-entropy on the trained positions only, no padding anywhere
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor(row["labels"])
            logits = model(input_ids=ids).logits[0, :-1]
            targets = labels[1:]
            keep = targets != -100
            total += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
            count += int(keep.sum())
    assert count == sum(t != -100 for row in rows for t in row["labels"][1:])
    assert abs(loss.item() - total / count) < 1e-5


def test_the_loss_is_the_mean_over_reply_tokens(tmp_path):
    """What the trainer optimises: the model's loss on a collated, padded batch equals the mean cross-entropy over
    the reply tokens alone (positions taken from the mask, not from the labels), padding and prompts excluded."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from families import build_family

    model_dir = build_family("qwen3", tmp_path / "qwen3")
    tok = load_tokenizer(model_dir)
    ensure_chat_template(tok)
    data = write_rows(tmp_path / "chat.jsonl", [{"messages": CONV}, {"messages": CONV[:3]}])
    dataset, _ = build_dataset(tok, DataConfig(path=str(data)), 4096)
    encoded = encode_all(tok, CONV) + encode_all(tok, CONV[:3])
    assert dataset["input_ids"] == [ids for ids, _ in encoded] and len(encoded) == 3  # Qwen3: one turn, one sequence
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(dataset.to_list())
    assert len({len(ids) for ids, _ in encoded}) > 1  # rows of different lengths: the batch is padded
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    logits = out.logits.float()
    per_token = [torch.nn.functional.cross_entropy(logits[row, i - 1], torch.tensor(ids[i]))
                 for row, (ids, mask) in enumerate(encoded) for i in range(1, len(ids)) if mask[i]]
    assert torch.allclose(out.loss, torch.stack(per_token).mean(), rtol=1e-5, atol=1e-6)
