"""Chat template rendering and the assistant-only loss, for any real chat template.

The trained tokens are exactly each assistant reply plus its end-of-turn token, as the model sees the conversation at
inference; system and user tokens never are. Two ways to find them, chosen once per template on a probe conversation
(`ensure_chat_template`):
- "turns" (edgetune.data.turns): render what the model sees before each reply and what it then writes; templates that
  rewrite earlier turns (Qwen3, gpt-oss) give one training sequence per rewritten turn;
- "markers": the template's own {% generation %} markers (the tokenizer's return_assistant_tokens_mask), or TRL's
  training variant of a template the first way cannot place (e.g. DeepSeek-R1-distill's pre-filled <think>).
A template that rejects system messages (Gemma 2) gets the system prompt folded into the first user turn.
Each example carries `labels` (-100 outside the trained tokens), so masking does not depend on how a trainer treats
mask columns (Unsloth replaces SFTTrainer's dataset preparation).
"""
from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from edgetune.data.turns import TemplateShapeError, end_marker_after, sequences
from edgetune.errors import DataError

_PROBE = [{"role": "system", "content": "Be brief."},
          {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello friend!"},
          {"role": "user", "content": "Bye now"}, {"role": "assistant", "content": "Goodbye friend!"}]
_TEMPLATE_HINT = ("set model.chat_template to a Jinja file (or trl:NAME for a template TRL ships, e.g. trl:gemma3), "
                  "or use an instruct model whose tokenizer has one")
_MARKERS_HINT = ("set model.chat_template to a template whose assistant replies are wrapped in {% generation %} ... "
                 "{% endgeneration %} (TRL ships such *_training.jinja variants: trl:NAME_training)")
_FORMATS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class ChatFormat:
    source: str  # "the tokenizer's chat template" or the override's path
    method: str  # turns | markers
    fold_system: bool = False
    training_template: str | None = None  # markers: the template with {% generation %} markers
    notes: list[str] = field(default_factory=list)


def ensure_chat_template(tokenizer, template_path: str = "") -> ChatFormat:
    """Install the override template (a Jinja file, a tokenizer_config.json holding one, or trl:NAME), then decide how
    replies are located and check it on a probe conversation: a DataError now, not mid-dataset or mid-training."""
    if template_path:
        tokenizer.chat_template = read_template(template_path)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named variants: the default one
        template = tokenizer.chat_template = template.get("default") or next(iter(template.values()))
    if not template:
        raise DataError("the tokenizer has no chat template, so conversations cannot be rendered", hint=_TEMPLATE_HINT)
    if not getattr(tokenizer, "is_fast", True):
        raise DataError("the tokenizer is a slow (Python) tokenizer; the assistant-only loss mask needs character offsets",
                        hint="load the tokenizer with use_fast=True (a tokenizer.json must exist)")
    source = template_path or "the tokenizer's chat template"
    fmt = _choose_format(tokenizer, template, source)
    _FORMATS[tokenizer] = (template, fmt)
    return fmt


def chat_format(tokenizer) -> ChatFormat:
    """The format decided for the tokenizer's current template (deciding it now if needed)."""
    cached = _FORMATS.get(tokenizer)
    if cached is not None and cached[0] == tokenizer.chat_template:
        return cached[1]
    return ensure_chat_template(tokenizer)


def read_template(ref: str) -> str:
    if ref.startswith("trl:"):
        import trl

        folder = Path(trl.__file__).parent / "chat_templates"
        path = folder / f"{ref[4:]}.jinja"
        if not path.is_file():
            names = sorted(p.stem for p in folder.glob("*.jinja"))
            raise DataError(f"{ref}: TRL ships no template of that name",
                            hint=f"use one of: {', '.join('trl:' + n for n in names)}")
        return path.read_text(encoding="utf-8")
    p = Path(ref)
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


def _choose_format(tokenizer, template: str, source: str) -> ChatFormat:
    fold = _rejects_system(tokenizer, source)
    fmt = ChatFormat(source, "turns", fold_system=fold)
    if fold:
        fmt.notes.append("the chat template rejects system messages: the system prompt is folded into the first "
                         "user turn (system + blank line + user), as Gemma 3's template does itself")
    if "{% generation %}" in template.replace("{%-", "{%").replace("-%}", "%}"):
        fmt.method, fmt.training_template = "markers", template
        fmt.notes.append("replies located by the template's own {% generation %} markers")
        _check_probe(tokenizer, fmt)
        return fmt
    try:
        _check_probe(tokenizer, fmt)
    except TemplateShapeError as shape:
        trained = _trl_training_template(tokenizer)
        if trained is None:
            raise DataError(f"{source} cannot be used for the assistant-only loss: {shape}",
                            hint=_MARKERS_HINT) from None
        fmt.method, fmt.training_template = "markers", trained
        fmt.notes.append(f"{shape}; training renders with TRL's training variant of this template "
                         "({% generation %} markers), which keeps every turn as it is generated")
        _check_probe(tokenizer, fmt)
        return fmt
    texts = sequences(lambda m, g: render(tokenizer, m, g, fmt), _PROBE, tokenizer.eos_token)
    if len(texts) > 1:
        fmt.notes.append("the template rewrites earlier turns once a later one exists (e.g. drops reasoning), so a "
                         "conversation trains as one sequence per such turn, each in the context it is generated in")
    return fmt


def _rejects_system(tokenizer, source: str) -> bool:
    try:
        tokenizer.apply_chat_template(_PROBE[:2], tokenize=False, add_generation_prompt=True)
        return False
    except Exception as with_system:  # noqa: BLE001 - jinja raises TemplateError, TypeError, UndefinedError, ...
        try:
            tokenizer.apply_chat_template(_PROBE[1:2], tokenize=False, add_generation_prompt=True)
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{source} cannot render a simple user/assistant conversation ({type(e).__name__}: {e})",
                            hint=_TEMPLATE_HINT) from None
        if "system" not in str(with_system).lower():
            raise DataError(f"{source} fails on a conversation with a system message ({type(with_system).__name__}: "
                            f"{with_system})", hint=_TEMPLATE_HINT) from None
        return True


def _trl_training_template(tokenizer) -> str | None:
    try:
        from trl import get_training_chat_template

        return get_training_chat_template(tokenizer)
    except Exception:  # noqa: BLE001 - an unknown template: TRL has no variant for it
        return None


def fold_system(messages: list[dict]) -> list[dict]:
    """A leading system message merged into the first user turn (for templates that reject the system role)."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    for i, m in enumerate(rest):
        if m["role"] == "user":
            rest[i] = {**m, "content": f"{system}\n\n{m['content']}"}
            return rest
    return [{"role": "user", "content": system}, *rest]


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False, fmt: ChatFormat | None = None) -> str:
    """The conversation as the model sees it (system folded where the template needs it)."""
    fmt = fmt or chat_format(tokenizer)
    if fmt.fold_system:
        messages = fold_system(messages)
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # noqa: BLE001 - a row the template refuses (e.g. roles out of order)
        raise DataError(f"the chat template refuses this conversation ({type(e).__name__}: {e})",
                        hint="check the row's roles: user and assistant turns usually have to alternate") from None


def _check_probe(tokenizer, fmt: ChatFormat) -> None:
    """On the probe conversation: every reply and its end-of-turn marker are trained, system and user text is not."""
    def render_probe(m, g):
        try:
            return render(tokenizer, m, g, fmt)
        except DataError as e:
            raise DataError(f"{fmt.source} cannot render a simple user/assistant conversation ({e.message})",
                            hint=_TEMPLATE_HINT) from None

    if fmt.method == "turns":
        parts = [text[s:e] for text, spans in sequences(render_probe, _PROBE, tokenizer.eos_token) for s, e in spans]
    else:
        parts = _marked_texts(tokenizer, fmt, _PROBE)
    replies = [m["content"] for m in _PROBE if m["role"] == "assistant"]
    if len(parts) != len(replies) or any(r not in p for p, r in zip(parts, replies)):
        raise TemplateShapeError("the trained text does not hold each reply once")
    for part, reply in zip(parts, replies):
        if any(m["content"] in part for m in _PROBE if m["role"] != "assistant"):
            raise DataError(f"{fmt.source}: the located reply also covers system or user text", hint=_MARKERS_HINT)
        if not part.rstrip().endswith(reply) and end_marker_after(part, reply):
            continue
        raise DataError(f"{fmt.source} adds no end-of-turn marker after an assistant reply, so a fine-tuned model "
                        "would not learn to stop", hint=_TEMPLATE_HINT)


def _marked_texts(tokenizer, fmt: ChatFormat, messages: list[dict]) -> list[str]:
    """Each run of trained tokens under {% generation %} markers, decoded."""
    ids, mask = _encode_marked(tokenizer, fmt, messages)
    runs, current = [], []
    for token, bit in zip(ids, mask):
        if bit:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r) for r in runs]


def _encode_marked(tokenizer, fmt: ChatFormat, messages: list[dict]) -> tuple[list[int], list[int]]:
    if fmt.fold_system:
        messages = fold_system(messages)
    try:
        enc = tokenizer.apply_chat_template(messages, chat_template=fmt.training_template, tokenize=True,
                                            return_dict=True, return_assistant_tokens_mask=True)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"the chat template refuses this conversation ({type(e).__name__}: {e})",
                        hint="check the row's roles: user and assistant turns usually have to alternate") from None
    return list(enc["input_ids"]), list(enc["assistant_masks"])


def encode_all(tokenizer, messages: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(token ids, loss mask) of every training sequence of a conversation, untruncated; mask 1 = trained token."""
    fmt = chat_format(tokenizer)
    if fmt.method == "markers":
        return [_encode_marked(tokenizer, fmt, messages)]
    try:
        texts = sequences(lambda m, g: render(tokenizer, m, g, fmt), messages, tokenizer.eos_token)
    except TemplateShapeError as e:
        raise DataError(f"the chat template cannot place this row's replies ({e})", hint=_MARKERS_HINT) from None
    out = []
    for text, spans in texts:
        # The template already holds any BOS it wants; add_special_tokens would add a second one.
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        # Overlap, not containment: with "Assistant: " headers BPE merges the space into the reply's first token.
        mask = [1 if any(start < e and end > s for s, e in spans) else 0 for start, end in enc["offset_mapping"]]
        out.append((list(enc["input_ids"]), mask))
    return out


def encode(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """The sequence holding the conversation's last reply (what eval scores: prompt + reference answer)."""
    return encode_all(tokenizer, messages)[-1]


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The last training sequence as text and the [start, end) character span of each trained reply (for previews)."""
    ids, mask = encode(tokenizer, messages)
    text, spans, pos = "", [], 0
    for token, bit in zip(ids, mask):
        piece = tokenizer.decode([token])
        if bit and spans and spans[-1][1] == pos:
            spans[-1] = (spans[-1][0], pos + len(piece))
        elif bit:
            spans.append((pos, pos + len(piece)))
        text, pos = text + piece, pos + len(piece)
    return text, spans


def labels_for(ids: list[int], mask: list[int]) -> list[int]:
    return [t if m else -100 for t, m in zip(ids, mask)]


def tokenize_conversation(tokenizer, messages: list[dict], max_length: int) -> dict:
    """{"input_ids", "labels"} of the conversation's last sequence, truncated to `max_length`."""
    ids, mask = encode(tokenizer, messages)
    return {"input_ids": ids[:max_length], "labels": labels_for(ids, mask)[:max_length]}


def build_dataset(tokenizer, cfg, max_length: int):
    """A `datasets.Dataset` (columns input_ids, labels) and its DataReport; DataError when unusable."""
    from datasets import Dataset

    from edgetune.data.report import prepare  # report builds on this module

    report, examples = prepare(tokenizer, cfg, max_length)
    report.check()
    columns = {"input_ids": [e["input_ids"] for e in examples],
               "labels": [labels_for(e["input_ids"], e["mask"]) for e in examples]}
    return Dataset.from_dict(columns), report
