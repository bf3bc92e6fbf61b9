"""The Ollama Modelfile written beside the GGUF files: TEMPLATE, stop tokens, SYSTEM."""
from __future__ import annotations

import shutil
from pathlib import Path

from edgetune.export.modelfile import write_modelfile


def _modelfile(path: Path) -> dict:
    """Parse a Modelfile into {instruction: [values]} (triple-quoted blocks kept whole)."""
    text = path.read_text(encoding="utf-8")
    parsed: dict[str, list[str]] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if value.startswith('"""'):
            block = value[3:]
            while not block.endswith('"""'):
                block += "\n" + next(lines)
            value = block[:-3]
        elif value.startswith('"'):
            value = value.strip('"')
        parsed.setdefault(key, []).append(value)
    return parsed


def test_modelfile_chatml(tiny_model_dir, tmp_path):
    path = write_modelfile(tmp_path, "tiny.Q8_0.gguf", tiny_model_dir)
    assert path == tmp_path / "Modelfile" and not list(tmp_path.glob(".*.tmp"))
    mf = _modelfile(path)
    assert mf["FROM"] == ["./tiny.Q8_0.gguf"]
    (template,) = mf["TEMPLATE"]
    assert "derived from the model's chat template" in path.read_text(encoding="utf-8")
    assert '{{ if eq $m.Role "user" }}<|im_start|>user\n{{ $m.Content }}<|im_end|>\n' in template
    assert template.endswith("<|im_start|>assistant\n") and "{{ .System }}" in template
    assert template.count("{{") == template.count("}}")
    assert template.count("{{ if") + template.count("{{- if") + template.count("{{- range") == \
        template.count("end }}")
    stops = [s.split(" ", 1)[1].strip('"') for s in mf["PARAMETER"]]
    assert {"<|im_end|>", "<|endoftext|>"} <= set(stops) and stops[0] == "<|im_end|>"
    # the template's default system message, written when a chat has none, as the HF template does
    assert "{{ else }}<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face" \
        in template and "SYSTEM" not in mf


def test_modelfile_own_system_and_llama3_and_fallback(tiny_model_dir, tmp_path):
    """ChatML and Llama 3 get their hand-written templates; a template whose rendering cannot be reproduced by
    role pieces (here it lower-cases the text) gets the plain fallback with a warning that says what to do."""
    path = write_modelfile(tmp_path, "m.gguf", tiny_model_dir, system='Talk like a pirate. Say """arr""".')
    assert _modelfile(path)["SYSTEM"] == ["Talk like a pirate. Say '''arr'''."]

    llama3 = tmp_path / "llama3"
    shutil.copytree(tiny_model_dir, llama3)
    (llama3 / "chat_template.jinja").write_text(
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
        "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}", encoding="utf-8")
    mf = _modelfile(write_modelfile(tmp_path, "m.gguf", llama3))
    assert "<|start_header_id|>assistant<|end_header_id|>\n\n" in mf["TEMPLATE"][0]
    assert "SYSTEM" not in mf  # this template has no default system message

    generic = tmp_path / "generic"
    shutil.copytree(tiny_model_dir, generic)
    (generic / "chat_template.jinja").write_text(
        "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] | lower }}\n{% endfor %}", encoding="utf-8")
    path = write_modelfile(tmp_path, "m.gguf", generic)
    assert "did not recognise this model's chat template" in path.read_text(encoding="utf-8")
    assert "<|im_end|>" in [p.split(" ", 1)[1].strip('"') for p in _modelfile(path)["PARAMETER"]]
