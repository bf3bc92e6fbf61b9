"""Ollama Modelfile beside the GGUF files: FROM, a TEMPLATE in Ollama's Go-template syntax equivalent to the model's
chat template, a PARAMETER stop line per end token, and SYSTEM (the given one, else the template's default).

Ollama adds BOS itself (from the GGUF's add_bos flag), so the templates below leave it out, as Ollama's own do.
Ollama puts every system message into .System (and prepends SYSTEM when a request has none), so the templates
render .System once and skip system entries in .Messages.
"""
from __future__ import annotations

import re
from pathlib import Path

from edgetune.sampling import REPEAT_PENALTY
from edgetune.errors import ExportError
from edgetune.runs import atomic_write_text

# Tokens that end a turn or the text in common chat families; each one present in the vocab becomes a stop.
END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>", "<|end|>",
              "<end_of_turn>")

CHATML_TEMPLATE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}{{ if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}{{ end }}<|im_start|>assistant
"""

LLAMA3_TEMPLATE = """{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range .Messages }}{{ if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}{{ end }}<|start_header_id|>assistant<|end_header_id|>

"""

GENERIC_TEMPLATE = """{{- if .System }}{{ .System }}

{{ end }}
{{- range .Messages }}{{ if ne .Role "system" }}{{ .Role }}: {{ .Content }}
{{ end }}{{ end }}assistant: """

GENERIC_COMMENT = """\
# WARNING: edgetune did not recognise this model's chat template (not ChatML, not Llama 3), so the TEMPLATE below
# is a plain "role: content" fallback and the model will likely answer worse than in training.
# Fix: write the template by hand from merged/chat_template.jinja, or delete the TEMPLATE block so that Ollama
# tries to match the GGUF's own tokenizer.chat_template against its built-in templates."""

_PROBE_USER = "XQZ-USER"


def write_modelfile(gguf_dir: Path, gguf_file: str, model_dir: Path, system: str | None = None) -> Path:
    """Write gguf_dir/Modelfile for gguf_file using the tokenizer (and chat template) in model_dir; returns its path."""
    gguf_dir, model_dir = Path(gguf_dir), Path(model_dir)
    tokenizer = _load_tokenizer(model_dir)
    template = tokenizer.chat_template if isinstance(getattr(tokenizer, "chat_template", None), str) else ""
    derived = _derived_template(tokenizer) if template else None  # exact when it exists (checked); else by style
    style = "derived" if derived is not None else chat_style(template)
    default_system = _default_system(tokenizer, style) if template and derived is None else None
    system = system if system is not None else default_system

    lines = [f"# Ollama Modelfile written by edgetune for {gguf_file}",
             "# Create and run from this folder: ollama create <name> -f Modelfile && ollama run <name>",
             f"FROM ./{gguf_file}", ""]
    if style == "generic":
        lines.append(GENERIC_COMMENT)
    if derived is not None:
        lines.append("# TEMPLATE derived from the model's chat template and checked to render system/user/assistant "
                     "chats identically (not tools or images; a date the template computes is fixed at export)")
    lines += [f'TEMPLATE """{derived or _ollama_template(style)}"""', ""]
    for token in stop_tokens(tokenizer, style, model_dir):
        lines.append(f'PARAMETER stop "{token}"')
    lines.append(f"PARAMETER repeat_penalty {REPEAT_PENALTY}")  # what the export's stop-at-EOS check used
    if system:
        if default_system and system == default_system:
            lines += ["", "# the chat template's default system message (used when a chat has none)"]
        lines.append(f'SYSTEM """{system.replace(chr(34) * 3, chr(39) * 3)}"""')  # a """ would end the block
    path = gguf_dir / "Modelfile"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def chat_style(template: str) -> str:
    """chatml | llama3 | generic, from the markers the Jinja template writes."""
    if "<|im_start|>" in template and "<|im_end|>" in template:
        return "chatml"
    if "<|start_header_id|>" in template and "<|eot_id|>" in template:
        return "llama3"
    return "generic"


def stop_tokens(tokenizer, style: str, model_dir: Path | None = None) -> list[str]:
    """Every stop token of the model (generation config, eos, the template's end of turn: edgetune.stops), then the
    known end tokens in the vocab; ChatML also stops at a new turn."""
    from edgetune.stops import stop_tokens as model_stop_tokens

    vocab = tokenizer.get_vocab()
    found: list[str] = []

    def add(token):
        if isinstance(token, str) and token and token not in found:
            found.append(token)

    for token in model_stop_tokens(tokenizer, model_dir):
        add(token)
    for token in END_TOKENS:
        if token in vocab:
            add(token)
    if "<|im_start|>" in (tokenizer.chat_template or "") and "<|im_start|>" in vocab:
        add("<|im_start|>")  # a model that opens a new turn has finished its own
    if not found:
        raise ExportError(f"{tokenizer.name_or_path}: the tokenizer has no EOS or end-of-turn token",
                          hint="set eos_token in tokenizer_config.json; without one no runtime knows when to stop")
    return found


def _ollama_template(style: str) -> str:
    return {"chatml": CHATML_TEMPLATE, "llama3": LLAMA3_TEMPLATE}.get(style, GENERIC_TEMPLATE)


def _default_system(tokenizer, style: str) -> str | None:
    """The system message the HF template inserts when a conversation has none (SmolLM2, Qwen2.5, Llama 3.1 do)."""
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": _PROBE_USER}], tokenize=False,
                                             add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template that needs a system message or tools: no default to copy
        return None
    head = text[: text.find(_PROBE_USER)]
    pattern = {"chatml": r"<\|im_start\|>system\n(.*?)<\|im_end\|>",
               "llama3": r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>"}.get(style)
    match = re.search(pattern, head, re.S) if pattern else None
    return match.group(1) if match and match.group(1).strip() else None


def _derived_template(tokenizer) -> str | None:
    """A Go template checked to render like the model's own chat template, or None."""
    from .modelfile_template import derive, go_template

    def render(messages, add_generation_prompt):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    # Ollama adds BOS itself exactly when the tokenizer does (the GGUF's add_bos): then the template leaves it out
    ids = tokenizer("a")["input_ids"]
    adds_bos = tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id
    pieces = derive(render, tokenizer.bos_token if adds_bos else None, tokenizer.eos_token)
    return go_template(pieces) if pieces else None


def _load_tokenizer(model_dir: Path):
    from edgetune.tokenizer import load_tokenizer

    try:
        return load_tokenizer(model_dir)
    except Exception as e:  # noqa: BLE001 - missing/odd tokenizer files raise many types
        raise ExportError(f"{model_dir}: cannot load the tokenizer for the Modelfile ({e})",
                          hint="point at the merged/ folder, which holds the tokenizer saved by training") from None
