"""llama.cpp's corpus of real chat templates (models/templates/*.jinja, 71 of them, copied from model repos) and
TRL's shipped templates, as a test suite for the assistant-only loss: each either gives the right mask or is
refused at pre-flight with a clear DataError, never another exception.

The right mask: the trained text of each reply holds the reply and an end-of-turn marker after it, never system
or user text, and (for the "turns" method) follows exactly the context the model sees before generating it.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgetune.data.template import encode_all, ensure_chat_template, render
from edgetune.data.turns import sequences
from edgetune.errors import DataError
from fetched import require_asset

CONV = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello friend!"},
        {"role": "user", "content": "Bye now"}, {"role": "assistant", "content": "Goodbye friend!"}]
REPLIES = ["Hello friend!", "Goodbye friend!"]
PROMPTS = ["Be brief.", "Hi there", "Bye now"]
# Markup the templates write (<|im_end|>, <｜Assistant｜>, <end_of_turn>, [INST], ...): special tokens of the model
MARKUP = re.compile(r"<[|｜][^<>\s]{1,40}?[|｜]>|<[a-z_]{2,30}>|\[/?[A-Z_]{2,20}\]|<[a-z_]+\|>|<\|[a-z_]+>")
MUST_ACCEPT = ["Qwen-Qwen3-0.6B", "Qwen3.5-4B", "Qwen-Qwen2.5-7B-Instruct", "meta-llama-Llama-3.2-3B-Instruct",
               "meta-llama-Llama-3.1-8B-Instruct", "microsoft-Phi-3.5-mini-instruct", "HuggingFaceTB-SmolLM3-3B",
               "google-gemma-2-2b-it", "mistralai-Mistral-Nemo-Instruct-2407", "openai-gpt-oss-120b",
               "ibm-granite-granite-4.0", "LFM2.5-Instruct"]
TRL_TEMPLATES = ["qwen3", "qwen3_5_think", "qwen3_5_nothink", "qwen3_instruct_2507", "phi3", "phi3_5", "gptoss",
                 "deepseek_r1_distill", "gemma3", "llama3_2", "llama3_1", "qwen2_5"]


def corpus() -> list[Path]:
    return sorted(require_asset("llama.cpp/templates").glob("*.jinja"))


def tokenizer_for(template: str, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    markup = sorted(set(MARKUP.findall(template)) - set(tok.get_vocab()))
    if markup:
        tok.add_special_tokens({"additional_special_tokens": markup})
    tok.chat_template = template
    return tok


def check_mask(tok, fmt) -> None:
    trained = [tok.decode([t for t, m in zip(ids, mask) if m]) for ids, mask in encode_all(tok, CONV)]
    text = "".join(trained)
    assert [text.count(r) for r in REPLIES] == [1, 1], trained
    first_end = text[text.index(REPLIES[0]) + len(REPLIES[0]):text.index(REPLIES[1])]
    last_end = text[text.index(REPLIES[1]) + len(REPLIES[1]):]
    assert first_end.strip() and last_end.strip(), f"no end-of-turn marker trained after a reply: {trained}"
    assert not any(p in text for p in PROMPTS), trained
    if fmt.method == "turns":  # each reply follows exactly what the model sees before generating it
        texts = sequences(lambda m, g: render(tok, m, g, fmt), CONV, tok.eos_token)
        contexts = [t[:s] for t, spans in texts for s, _ in spans]
        assert contexts == [render(tok, CONV[:i], True, fmt) for i in (2, 4)]


def test_every_corpus_template_gives_the_right_mask_or_a_clear_refusal(tiny_tokenizer_dir):
    accepted, refused = [], []
    for path in corpus():
        tok = tokenizer_for(path.read_text(encoding="utf-8"), tiny_tokenizer_dir)
        try:
            fmt = ensure_chat_template(tok)
        except DataError as e:  # refused at pre-flight: must say what to set
            assert e.hint and ("model.chat_template" in e.hint or "{% generation %}" in e.hint), (path.name, e)
            refused.append(path.stem)
            continue
        check_mask(tok, fmt)
        accepted.append(path.stem)
    print(f"\naccepted {len(accepted)}: {', '.join(accepted)}\nrefused {len(refused)}: {', '.join(refused)}")
    assert not set(MUST_ACCEPT) - set(accepted), set(MUST_ACCEPT) - set(accepted)
    assert len(accepted) + len(refused) == len(corpus()) >= 70


@pytest.mark.parametrize("name", TRL_TEMPLATES)
def test_trl_templates_give_the_right_mask(name, tiny_tokenizer_dir):
    from edgetune.data.template import read_template

    tok = tokenizer_for(read_template(f"trl:{name}"), tiny_tokenizer_dir)
    check_mask(tok, ensure_chat_template(tok))


def test_template_that_rejects_the_system_role_gets_it_folded(tiny_tokenizer_dir):
    gemma2 = next(p for p in corpus() if p.stem == "google-gemma-2-2b-it")
    tok = tokenizer_for(gemma2.read_text(encoding="utf-8"), tiny_tokenizer_dir)
    fmt = ensure_chat_template(tok)
    assert fmt.fold_system and any("folded into the first user turn" in n for n in fmt.notes)
    assert render(tok, CONV, False, fmt).startswith("<bos><start_of_turn>user\nBe brief.\n\nHi there") or \
        "<start_of_turn>user\nBe brief.\n\nHi there" in render(tok, CONV, False, fmt)
