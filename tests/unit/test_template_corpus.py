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

from edgetune.data.template import encode_all, ensure_chat_template, render, training_texts
from edgetune.errors import DataError
from fetched import require_asset

CONV = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello friend!"},
        {"role": "user", "content": "Bye now"}, {"role": "assistant", "content": "Goodbye friend!"}]
REPLIES = ["Hello friend!", "Goodbye friend!"]
PROMPTS = ["Be brief.", "Hi there", "Bye now"]
# Markup the templates write (<|im_end|>, <｜Assistant｜>, <end_of_turn>, [INST], <seed:eos>, </assistant>, MiniMax's
# ]~b] ... [e~[, ...): special tokens of the real model, so the tiny tokenizer gets them as special tokens too
MARKUP = re.compile(r"<[|｜][^<>\s]{1,40}?[|｜]>|</?[A-Za-z_][\w:.-]{1,30}>|\[/?[A-Z_]{2,20}\]|<[a-z_]+\|>|<\|[a-z_]+>"
                    r"|〈\|[A-Z_]+\|〉|\][~!][a-z!]?\[|\[e~\[")
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


def trained_runs(ids: list[int], mask: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i, (token, bit) in enumerate(zip(ids, mask)):
        if bit and (i == 0 or not mask[i - 1]):
            runs.append([])
        if bit:
            runs[-1].append(token)
    return runs


def check_mask(tok, fmt) -> None:
    """Each trained run holds one reply and ends on a special (end-of-turn) token; no system or user text is trained;
    the text before each reply is what the model sees before generating it (for TRL training variants: that text
    up to where the model's own generation prompt pre-fills more, e.g. DeepSeek-R1's "<think>\n")."""
    spans = [(text, s, e) for text, sp in training_texts(tok, CONV) for s, e in sp]
    assert len(spans) == 2
    for (text, start, end), reply, turn in zip(spans, REPLIES, (2, 4)):
        assert text[start:end].count(reply) == 1 and not any(p in text[start:end] for p in PROMPTS), text[start:end]
        seen = render(tok, CONV[:turn], True, fmt)
        assert text[:start] == seen if fmt.method == "turns" else seen.startswith(text[:start]), (text[:start], seen)
    runs = [run for ids, mask in encode_all(tok, CONV) for run in trained_runs(ids, mask)]
    assert [tok.decode(run).count(reply) for run, reply in zip(runs, REPLIES)] == [1, 1] and len(runs) == 2
    special = set(tok.all_special_ids)
    for run in runs:  # the model learns to stop: the run ends on the end-of-turn token (then maybe whitespace)
        last = next(t for t in reversed(run) if tok.decode([t]).strip())
        assert last in special, f"{tok.decode(run)!r} ends on text"
    assert not any(p in tok.decode(run) for run in runs for p in PROMPTS)


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


def test_every_trl_template_gives_the_right_mask_or_a_clear_refusal(tiny_tokenizer_dir):
    """All of TRL's shipped templates, the *_training variants the refusal hints point to included (`trl:NAME`)."""
    import trl

    from edgetune.data.template import read_template

    names = sorted(p.stem for p in (Path(trl.__file__).parent / "chat_templates").glob("*.jinja"))
    refused = []
    for name in names:
        tok = tokenizer_for(read_template(f"trl:{name}"), tiny_tokenizer_dir)
        try:
            fmt = ensure_chat_template(tok)
        except DataError as e:
            assert e.hint, name
            refused.append(name)
            continue
        check_mask(tok, fmt)
    # only the multimodal templates that expect content as a list of parts (plain text renders no reply)
    assert set(refused) <= {"idefics3", "idefics3_training", "llava_next", "llava_next_training", "smolvlm",
                            "smolvlm_training"}, refused
    assert {"phi3_training", "phi3_5_training", "qwen3_training", "deepseek_r1_distill_training"}.isdisjoint(refused)


def test_template_that_rejects_the_system_role_gets_it_folded(tiny_tokenizer_dir):
    gemma2 = next(p for p in corpus() if p.stem == "google-gemma-2-2b-it")
    tok = tokenizer_for(gemma2.read_text(encoding="utf-8"), tiny_tokenizer_dir)
    fmt = ensure_chat_template(tok)
    assert fmt.fold_system and any("folded into the first user turn" in n for n in fmt.notes)
    text = render(tok, CONV, False, fmt)
    assert "<start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>" in text and text.count("Be brief.") == 1


def template_named(stem: str) -> str:
    return next(p for p in corpus() if p.stem == stem).read_text(encoding="utf-8")


def test_copy_of_a_trl_template_uses_its_training_variant(tiny_tokenizer_dir):
    """DeepSeek-R1-Distill-Llama-8B's template pre-fills "<think>\n" that rendered replies drop, so turns cannot be
    placed by rendering; it renders every probe exactly as TRL's deepseek_r1_distill does, so TRL's training variant
    ({% generation %} markers) is used, without training the "<｜Assistant｜>" header the model is given."""
    tok = tokenizer_for(template_named("deepseek-ai-DeepSeek-R1-Distill-Llama-8B"), tiny_tokenizer_dir)
    fmt = ensure_chat_template(tok)
    assert fmt.method == "markers" and any("trl:deepseek_r1_distill_training" in n for n in fmt.notes)
    (ids, mask), = encode_all(tok, CONV)
    assert [tok.decode(run) for run in trained_runs(ids, mask)] == [f"{r}<｜end▁of▁sentence｜>" for r in REPLIES]


def test_near_copy_that_renders_differently_names_the_trl_template_to_set(tiny_tokenizer_dir):
    # DeepSeek-R1-Distill-Qwen-32B's copy pre-fills "<think>\n</think>": not TRL's rendering, so not switched silently.
    tok = tokenizer_for(template_named("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"), tiny_tokenizer_dir)
    with pytest.raises(DataError, match="pre-fills something") as e:
        ensure_chat_template(tok)
    assert "model.chat_template: trl:deepseek_r1_distill_training" in e.value.hint
