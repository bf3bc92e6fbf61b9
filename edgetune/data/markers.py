"""Where each assistant reply sits when the chat template marks it with {% generation %} ... {% endgeneration %}.

Used for a user's own marked template and for TRL's *_training.jinja variants of templates whose turns cannot be
placed by rendering (edgetune.data.turns). Some marked templates wrap the assistant header too (TRL's
DeepSeek-R1-distill variant marks "<｜Assistant｜>" + reply + end token); the header is part of what the model is
given at inference (the generation prompt), not what it writes, so each marked span starts no earlier than where the
rendered conversation leaves that turn's generation prompt.
"""
from __future__ import annotations


def marked_sequence(tokenizer, template: str, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """(rendered text, [(start, end) of each marked reply]) of the whole conversation under `template`."""
    text, spans = _render(tokenizer, template, messages, False, marks=True)
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    eos = tokenizer.eos_token
    if len(spans) > len(turns) and eos and text[spans[-1][0]:spans[-1][1]].strip() == eos:
        spans = spans[:-1]  # the conversation-final eos after the last end-of-turn token (TRL's Phi-3 variants)
    spans = _join_touching(spans)  # one reply marked in several blocks (reply, then its end marker)
    if len(spans) != len(turns):  # marks that do not pair up with the turns: left as the template puts them
        return text, spans
    out = []
    for (start, end), i in zip(spans, turns):
        shared = _common_prefix(_render(tokenizer, template, messages[:i], True)[0], text)
        out.append((shared, end) if start < shared < end else (start, end))
    return text, out


def _join_touching(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in spans:
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _render(tokenizer, template: str, messages: list[dict], prompt: bool, marks: bool = False):
    from transformers.utils.chat_template_utils import render_jinja_template

    # As apply_chat_template does: the special tokens (bos_token, eos_token, ...) are template variables.
    rendered, indices = render_jinja_template(conversations=[messages], chat_template=template,
                                              add_generation_prompt=prompt, return_assistant_tokens_mask=marks,
                                              **tokenizer.special_tokens_map)
    return rendered[0], (list(indices[0]) if marks else [])


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
