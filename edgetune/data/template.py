"""Chat template rendering and the assistant-only loss, for any real chat template.

The trained tokens are exactly each assistant reply plus its end-of-turn token, as the model sees the conversation at
inference; system and user tokens never are. Two ways to find them, chosen once per template on a probe conversation
(`ensure_chat_template`):
- "turns" (edgetune.data.turns): render what the model sees before each reply and what it then writes; templates that
  rewrite earlier turns (Qwen3, gpt-oss, Mistral v0.3) give one training sequence per rewritten turn;
- "markers" (edgetune.data.markers): the template's own {% generation %} markers, or TRL's training variant of a
  template the first way cannot place (edgetune.data.trl_templates; e.g. DeepSeek-R1-distill's pre-filled <think>).
Anything else is refused here, before training, with what to set. A template that rejects system messages (Gemma 2)
gets the system prompt folded into the first user turn. The probe also checks that each trained reply ends on a
special token (the end-of-turn token runtimes stop at), as TRL's is_chat_template_stop_token_trained does.
"""
from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from edgetune.data.markers import marked_sequence
from edgetune.data.trl_templates import (exact_training_variant, nearest_training_variant, renders_alike,
                                         trl_template)
from edgetune.data.turns import TemplateShapeError, sequences
from edgetune.errors import DataError

_PROBE = [{"role": "system", "content": "Be brief."},
          {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello friend!"},
          {"role": "user", "content": "Bye now"}, {"role": "assistant", "content": "Goodbye friend!"}]
_TEMPLATE_HINT = ("set model.chat_template to a Jinja file (or trl:NAME for a template TRL ships, e.g. trl:gemma3), "
                  "or use an instruct model whose tokenizer has one")
_MARKERS_HINT = ("set model.chat_template to a template whose assistant replies are wrapped in {% generation %} ... "
                 "{% endgeneration %} (TRL ships such *_training.jinja variants: trl:NAME_training)")
_END_HINT = ("set model.chat_template to a template that closes every assistant turn, the last one included, with the "
             "token generation stops at")
_FORMATS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class ChatFormat:
    source: str  # "the tokenizer's chat template" or the override's path
    method: str  # turns | markers
    fold_system: bool = False
    training_template: str | None = None  # markers: the template with {% generation %} markers
    notes: list[str] = field(default_factory=list)


def ensure_chat_template(tokenizer, template_path: str = "") -> ChatFormat:
    """Install the chat template (see install_chat_template), then decide how replies are located and check it on a
    probe conversation: a DataError now, not mid-dataset or mid-training."""
    template = install_chat_template(tokenizer, template_path)
    if not getattr(tokenizer, "is_fast", True):
        raise DataError("the tokenizer is a slow (Python) tokenizer; the assistant-only loss mask needs character offsets",
                        hint="load the tokenizer with use_fast=True (a tokenizer.json must exist)")
    source = template_path or "the tokenizer's chat template"
    fmt = _choose_format(tokenizer, template, source)
    _FORMATS[tokenizer] = (template, fmt)
    return fmt


def install_chat_template(tokenizer, template_path: str = "") -> str:
    """Put the override template (a Jinja file, a tokenizer_config.json holding one, or trl:NAME) on the tokenizer and
    return the template in use; no loss-mask checks (methods that render prompts only, such as DPO, need none)."""
    if template_path:
        tokenizer.chat_template = read_template(template_path)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named variants: the default one
        template = tokenizer.chat_template = template.get("default") or next(iter(template.values()))
    if not template:
        raise DataError("the tokenizer has no chat template, so conversations cannot be rendered", hint=_TEMPLATE_HINT)
    return template


def chat_format(tokenizer) -> ChatFormat:
    """The format decided for the tokenizer's current template (deciding it now if needed)."""
    cached = _FORMATS.get(tokenizer)
    if cached is not None and cached[0] == tokenizer.chat_template:
        return cached[1]
    return ensure_chat_template(tokenizer)


def read_template(ref: str) -> str:
    if ref.startswith("trl:"):
        return trl_template(ref[4:])
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
    if re.search(r"\{%-?\s*generation\s*-?%\}", template):
        fmt.method, fmt.training_template = "markers", template
        fmt.notes.append("replies located by the template's own {% generation %} markers")
        _check_marked_probe(tokenizer, fmt)
        return fmt
    try:
        _check_probe(tokenizer, fmt)
    except (TemplateShapeError, DataError) as failed:
        trained, why = _trl_training_variant(tokenizer, template, fmt)
        if trained is None and isinstance(failed, DataError):
            raise
        if trained is None:
            raise DataError(f"{source} cannot be used for the assistant-only loss: {failed}",
                            hint=_markers_hint(template)) from None
        fmt.method, fmt.training_template = "markers", trained
        own = failed.message if isinstance(failed, DataError) else str(failed)
        fmt.notes.append(f"{why} (with the template itself: {own})")
        _check_marked_probe(tokenizer, fmt)
        return fmt
    texts = sequences(lambda m, g: render(tokenizer, m, g, fmt), _PROBE, tokenizer.eos_token)
    if len(texts) > 1:
        fmt.notes.append("the template renders earlier turns differently once a later one exists (Qwen3 drops think "
                         "blocks, gpt-oss ends them with <|end|>, Mistral moves the system prompt to the last user "
                         "turn), so such a turn trains as its own sequence, in exactly the context it is generated in")
    return fmt


def _check_marked_probe(tokenizer, fmt: ChatFormat) -> None:
    """The probe check for {% generation %} markers: a template whose marks do not pair up with the replies (or
    that renders no text for plain string contents, like the multimodal SmolVLM / Idefics3 templates) is refused."""
    try:
        _check_probe(tokenizer, fmt)
    except TemplateShapeError as e:
        raise DataError(f"{fmt.source}: its {{% generation %}} markers do not mark each assistant reply once ({e})",
                        hint=_TEMPLATE_HINT) from None


def _markers_hint(template: str, hint: str = _MARKERS_HINT) -> str:
    near = nearest_training_variant(template)
    if near is None:
        return hint
    name, alike = near
    return (f"{hint}; the nearest is trl:{name}_training ({alike:.0%} alike): if it renders your model's turns the "
            f"same way, set model.chat_template: trl:{name}_training")


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


def _trl_training_variant(tokenizer, template: str, fmt: ChatFormat) -> tuple[str | None, str]:
    """TRL's {% generation %}-marked variant of this template: for TRL's own template exactly, or for a model repo's
    near-copy that renders every probe conversation exactly as TRL's does (DeepSeek-R1-distill, GLM-4.6)."""
    exact = exact_training_variant(tokenizer)
    if exact is not None:
        return exact, ("training renders with TRL's training variant of this template ({% generation %} markers), "
                       "which keeps every turn as it is generated")
    near = nearest_training_variant(template)
    probes = [fold_system(c) if fmt.fold_system else c for c in (_PROBE, _PROBE[1:])]
    if near is None or not renders_alike(tokenizer, template, trl_template(near[0]), probes):
        return None, ""
    return trl_template(f"{near[0]}_training"), (
        f"the template renders conversations exactly as TRL's {near[0]} template does, so training renders with "
        f"trl:{near[0]}_training ({{% generation %}} markers)")


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
    if fmt.fold_system if fmt else _folds_system(tokenizer):
        messages = fold_system(messages)
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # noqa: BLE001 - a row the template refuses (e.g. roles out of order)
        raise DataError(f"the chat template refuses this conversation ({type(e).__name__}: {e})",
                        hint="check the row's roles: user and assistant turns usually have to alternate") from None


def _folds_system(tokenizer) -> bool:
    """Whether render() folds the system prompt, without the loss-mask checks (exports render too)."""
    cached = _FORMATS.get(tokenizer)
    if cached is not None and cached[0] == tokenizer.chat_template:
        return cached[1].fold_system
    try:
        return _rejects_system(tokenizer, "the tokenizer's chat template")
    except DataError:  # it renders nothing at all: apply_chat_template will say so
        return False


def _check_probe(tokenizer, fmt: ChatFormat) -> None:
    """On the probe conversation: every reply and its end-of-turn marker are trained, system and user text is not."""
    def render_probe(m, g):
        try:
            return render(tokenizer, m, g, fmt)
        except DataError as e:
            raise DataError(f"{fmt.source} cannot render a simple user/assistant conversation ({e.message})",
                            hint=_TEMPLATE_HINT) from None

    if fmt.method == "turns":
        texts = sequences(render_probe, _PROBE, tokenizer.eos_token)
    else:
        try:
            texts = [_marked(tokenizer, fmt, _PROBE)]
        except DataError as e:
            raise DataError(f"{fmt.source} cannot render a simple user/assistant conversation ({e.message})",
                            hint=_TEMPLATE_HINT) from None
    parts = [(text, span) for text, spans in texts for span in spans]
    replies = [m["content"] for m in _PROBE if m["role"] == "assistant"]
    if len(parts) != len(replies) or any(r not in text[s:e] for (text, (s, e)), r in zip(parts, replies)):
        raise TemplateShapeError("the trained text does not hold each reply once")
    for (text, (start, end)), reply in zip(parts, replies):
        if any(m["content"] in text[start:end] for m in _PROBE if m["role"] != "assistant"):
            raise DataError(f"{fmt.source}: the located reply also covers system or user text",
                            hint=_markers_hint(tokenizer.chat_template))
        if _ends_on_special_token(tokenizer, text, (start, end)):
            continue
        marker = text[start:end].rsplit(reply, 1)[-1].strip()
        if marker:  # e.g. Gemma's template on a tokenizer without <end_of_turn>: runtimes stop at a token, not text
            raise DataError(f"{fmt.source} ends assistant replies with {marker[:40]!r}, which is not a special token "
                            "of this tokenizer, so a fine-tuned model would not learn to stop",
                            hint="use the chat template made for this model (its end-of-turn marker must be one of "
                                 "the tokenizer's special tokens), or set model.chat_template to one")
        raise DataError(f"{fmt.source} puts no end-of-turn token after an assistant reply, so a fine-tuned model "
                        "would not learn to stop", hint=_markers_hint(tokenizer.chat_template, _END_HINT))


def _ends_on_special_token(tokenizer, text: str, span: tuple[int, int]) -> bool:
    """The last trained token that is not whitespace is a special token (as TRL's is_chat_template_stop_token_trained
    judges): the end-of-turn token the model must learn to emit."""
    ids, mask = _tokenize(tokenizer, text, [span])
    special = set(tokenizer.get_added_vocab().values()) | set(tokenizer.all_special_ids)
    last = next((t for t, m in zip(reversed(ids), reversed(mask)) if m and tokenizer.decode([t]).strip()), None)
    return last in special


def _marked(tokenizer, fmt: ChatFormat, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    if fmt.fold_system:
        messages = fold_system(messages)
    try:
        return marked_sequence(tokenizer, fmt.training_template, messages)
    except Exception as e:  # noqa: BLE001 - jinja raises TemplateError, TypeError, UndefinedError, ...
        raise DataError(f"the chat template refuses this conversation ({type(e).__name__}: {e})",
                        hint="check the row's roles: user and assistant turns usually have to alternate") from None


def training_texts(tokenizer, messages: list[dict]) -> list[tuple[str, list[tuple[int, int]]]]:
    """[(text, [(start, end) of each trained reply])]: the training sequences of a conversation, as text."""
    fmt = chat_format(tokenizer)
    if fmt.method == "markers":
        return [_marked(tokenizer, fmt, messages)]
    try:
        return sequences(lambda m, g: render(tokenizer, m, g, fmt), messages, tokenizer.eos_token)
    except TemplateShapeError as e:
        raise DataError(f"the chat template cannot place this row's replies ({e})", hint=_MARKERS_HINT) from None


def encode_all(tokenizer, messages: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(token ids, loss mask) of every training sequence of a conversation, untruncated; mask 1 = trained token."""
    return [_tokenize(tokenizer, text, spans) for text, spans in training_texts(tokenizer, messages)]


def _tokenize(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    # The template already holds any BOS it wants; add_special_tokens would add a second one.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    # Overlap, not containment: with "Assistant: " headers BPE merges the space into the reply's first token.
    mask = [1 if any(start < e and end > s for s, e in spans) else 0 for start, end in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


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
