"""The assistant-only loss with each family's real chat template (tests/families.py): on a multi-turn conversation
with a system prompt, the labels are exactly each reply plus the family's end-of-turn token, as the model sees the
conversation at inference; system and user text never is; and TRL's collator keeps it that way in a batch."""
from __future__ import annotations

import pytest

from edgetune.config import DataConfig
from edgetune.data import build_dataset, ensure_chat_template
from edgetune.data.template import encode_all, render
from edgetune.tokenizer import load_tokenizer
from families import FAMILIES, build_family_tokenizer
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
    if fmt.method == "turns":  # and each reply follows exactly the context (token ids) it is generated in
        contexts = [ids[: mask.index(1)] for ids, mask in sequences]
        turns = (2,) if len(sequences) == 1 else (2, 4)
        assert contexts == [tok(render(tok, CONV[:i], True), add_special_tokens=False)["input_ids"] for i in turns]


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
