"""Where each assistant reply sits in a rendered conversation, as the model sees it at inference, for any template.

For assistant turn i the model sees C = render(messages[:i], add_generation_prompt=True) and then writes the reply;
what it writes is G = render(messages[:i+1])[len(C):] (the reply, its end-of-turn marker, and anything the template
puts before the reply, such as Qwen3's empty think block). A training sequence is C + G with G in the loss.

Turns share one sequence while each next context starts with the sequence so far (prefix-consistent templates: one
sequence per conversation). Templates that rewrite earlier turns once a later one exists (Qwen3 drops reasoning and
think blocks from earlier turns, gpt-oss ends the last turn with <|return|> but earlier ones with <|end|>) start a new
sequence for that turn, so every reply is trained in exactly the context it will be generated in.

Two quirks are handled: a template that appends eos_token after the conversation's last end-of-turn marker (Phi's
`{% else %}{{ eos_token }}`) has it left out of the reply, and a template that renders the prompt differently once a
reply follows (Mistral v0.3 puts the system message into the last user turn) is aligned through a sentinel reply.
Anything else (a generation prompt that pre-fills text the rendered reply does not start with, e.g. an opened
reasoning block) raises TemplateShapeError, and the caller falls back to {% generation %} markers or refuses.
"""
from __future__ import annotations

SENTINEL = "XQZREPLYSENTINELQZX"


class TemplateShapeError(ValueError):
    """The template renders turns in a way this module cannot place a reply in (the message says how)."""


def sequences(render, messages: list[dict], eos_token: str | None) -> list[tuple[str, list[tuple[int, int]]]]:
    """[(text, [(start, end) of each trained reply])]: the training sequences of one conversation.

    `render(messages, add_generation_prompt)` renders with the chat template (system folding already applied).
    """
    out: list[tuple[str, list[tuple[int, int]]]] = []
    text, spans = None, []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        context, reply = place_reply(render, messages, i, eos_token)
        span = (len(context), len(context) + len(reply))
        if text is not None and context.startswith(text):
            spans.append(span)
        else:
            if text is not None:
                out.append((text, spans))
            spans = [span]
        text = context + reply
    if text is not None:
        out.append((text, spans))
    return out


def place_reply(render, messages: list[dict], i: int, eos_token: str | None) -> tuple[str, str]:
    """(context the model sees, text it generates) for assistant turn i."""
    context = render(messages[:i], True)
    whole = render(messages[: i + 1], False)
    if whole.startswith(context):
        reply = whole[len(context):]
    else:
        reply = _reply_after_realigned_prompt(render, messages, i, context, whole)
    if eos_token and reply.endswith(eos_token) and end_marker_after(reply[: -len(eos_token)], messages[i]["content"]):
        reply = reply[: -len(eos_token)]  # the conversation-final eos after an end-of-turn marker (Phi)
    if not reply.strip():
        raise TemplateShapeError(f"message {i + 1} (assistant) renders no reply text after the generation prompt")
    return context, reply


def _reply_after_realigned_prompt(render, messages, i, context: str, whole: str) -> str:
    probe = render(messages[:i] + [{"role": "assistant", "content": SENTINEL}], False)
    if probe.count(SENTINEL) != 1:
        raise TemplateShapeError(f"message {i + 1} (assistant): the reply is not rendered exactly once")
    before = probe[: probe.index(SENTINEL)]
    if not whole.startswith(before):
        raise TemplateShapeError(f"message {i + 1} (assistant): what precedes the reply depends on the reply's text")
    prompt = next((m["content"] for m in reversed(messages[:i]) if m["role"] != "assistant"), "")
    at = before.rfind(prompt) if prompt else -1
    # The generation prompt must end like the rendered text before the reply does, through the user's message; what
    # the rendering adds after that point (Mistral's space before the reply) is what the model generates first.
    end = next((k for k in range(len(before), at + len(prompt) - 1, -1) if context.endswith(before[at:k])), -1) \
        if at >= 0 else -1
    if end < 0:
        where = context[-40:]
        raise TemplateShapeError(
            f"message {i + 1} (assistant): the generation prompt ({where!r}) is not how the template renders the text "
            "before a reply (it pre-fills something, such as an opened reasoning block, that rendered replies do not carry)")
    return whole[end:]


def end_marker_after(reply: str, content: str) -> bool:
    """True when something other than whitespace follows the reply's text (its end-of-turn marker). Unknown (the
    template reshaped the text) counts as True: the probe conversation checks templates with plain replies."""
    text = content.strip()
    at = reply.rfind(text) if text else -1
    return at < 0 or bool(reply[at + len(text):].strip())
