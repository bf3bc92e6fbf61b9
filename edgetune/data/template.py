"""Chat template rendering and the assistant-only loss mask.

The mask comes from character offsets: the conversation is rendered once; assistant turn i covers the text between
render(messages[:i], add_generation_prompt=True) and render(messages[:i+1]), which includes the end-of-turn token
so the model learns to stop. Tokens that overlap such a span are in the loss (mask 1), all others are not.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgetune.errors import DataError

_PROBE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
          {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye!"}]
_TEMPLATE_HINT = "set model.chat_template to a Jinja file (e.g. ChatML), or use an instruct model whose tokenizer has one"


def ensure_chat_template(tokenizer, template_path: str = "") -> None:
    """Install the override template from `template_path` (Jinja text, or a tokenizer_config.json holding one),
    then check that it renders a conversation, is prefix-consistent and ends assistant turns with a marker."""
    if template_path:
        tokenizer.chat_template = _read_template(Path(template_path))
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("the tokenizer has no chat template, so conversations cannot be rendered", hint=_TEMPLATE_HINT)
    try:
        render(tokenizer, _PROBE)
    except Exception as e:  # jinja raises several types (TemplateError, TypeError, ...)
        where = template_path or "the tokenizer's chat template"
        raise DataError(f"{where} cannot render a simple user/assistant conversation ({type(e).__name__}: {e})",
                        hint=_TEMPLATE_HINT) from None
    if not getattr(tokenizer, "is_fast", True):
        raise DataError("the tokenizer is a slow (Python) tokenizer; the assistant-only loss mask needs character offsets",
                        hint="load the tokenizer with use_fast=True (a tokenizer.json must exist)")
    assistant_spans(tokenizer, _PROBE)  # fail now, not mid-dataset, on templates the mask cannot use


def _read_template(p: Path) -> str:
    if not p.is_file():
        raise DataError(f"{p}: no such chat template file",
                        hint="set model.chat_template to an existing Jinja file, or leave it empty to use the tokenizer's")
    text = p.read_text(encoding="utf-8-sig")
    if p.suffix == ".json":
        try:
            text = json.loads(text)["chat_template"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{p}: no `chat_template` string in this JSON file",
                            hint="point model.chat_template at a Jinja file or a tokenizer_config.json") from None
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{p}: chat template is empty", hint="write the Jinja template into the file")
    return text


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character span of every assistant turn."""
    text = render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render(tokenizer, messages[: i + 1])
        if not (upto.startswith(before) and text.startswith(upto)):
            raise DataError(
                f"the chat template is not prefix-consistent at turn {i + 1}: rendering the conversation up to a turn "
                "does not give a prefix of the whole rendering (templates that rewrite earlier turns, e.g. drop "
                "reasoning, do this), so assistant tokens cannot be located",
                hint=_TEMPLATE_HINT)
        _check_end_of_turn(text[len(before):len(upto)], m["content"])
        spans.append((len(before), len(upto)))
    return text, spans


def _check_end_of_turn(span: str, content: str) -> None:
    """The span must carry an end-of-turn marker after the reply, or the model never learns to stop."""
    at = span.rfind(content.strip())
    if at >= 0 and not span[at + len(content.strip()):].strip():
        raise DataError("the chat template adds no end-of-turn marker after an assistant reply, "
                        "so a fine-tuned model would not learn to stop", hint=_TEMPLATE_HINT)


def encode(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and the assistant mask, untruncated."""
    text, spans = assistant_spans(tokenizer, messages)
    # The template already holds any BOS it wants; add_special_tokens would add a second one.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    # Overlap, not containment: with "Assistant: " headers BPE merges the space into the reply's first token.
    mask = [1 if any(start < e and end > s for s, e in spans) else 0 for start, end in offsets]
    return ids, mask


def tokenize_conversation(tokenizer, messages: list[dict], max_length: int) -> dict:
    """{"input_ids", "assistant_masks"} truncated to `max_length`; mask 1 = token is in the loss."""
    ids, mask = encode(tokenizer, messages)
    return {"input_ids": ids[:max_length], "assistant_masks": mask[:max_length]}


def build_dataset(tokenizer, cfg, max_length: int):
    """A `datasets.Dataset` (columns input_ids, assistant_masks) and its DataReport; DataError when unusable."""
    from datasets import Dataset

    from edgetune.data.report import prepare  # report builds on this module

    report, examples = prepare(tokenizer, cfg, max_length)
    report.check()
    columns = {"input_ids": [e["input_ids"] for e in examples],
               "assistant_masks": [e["assistant_masks"] for e in examples]}
    return Dataset.from_dict(columns), report
