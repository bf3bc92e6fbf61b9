"""Small blocking helpers over the core that the screens run in thread workers (never on the UI thread)."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

_tokenizers: dict[tuple[str, bool], object] = {}
_lock = threading.Lock()
_import_lock = threading.Lock()


def heavy_imports() -> None:
    """Import transformers once, serialised: its lazy module raises `cannot import name` when two worker threads
    trigger the first import at the same time. Every worker calls this before touching the core."""
    with _import_lock:
        from edgetune.console import quiet_libraries

        quiet_libraries()  # before the first transformers import: no library progress bars under the app
        from transformers import AutoConfig, AutoTokenizer  # noqa: F401


def model_shape(ref: str):
    """Parameter counts and sizes of `ref` for the memory estimate (meta device: no weights are loaded)."""
    heavy_imports()
    from transformers import AutoConfig

    from edgetune import models
    from edgetune.memory import ModelShape

    resolved = models.resolve(ref)
    return ModelShape.from_config(AutoConfig.from_pretrained(resolved.path))


def export_support(ref: str):
    """Whether `ref` can be exported to GGUF / ONNX (edgetune.preflight.ExportSupport), from its config.json only."""
    heavy_imports()
    from edgetune import models, preflight

    return preflight.export_support(preflight.model_config(models.resolve(ref).path))


def tokenizer_for(ref: str, chat: bool = True):
    """The model's tokenizer, with its chat template checked unless `chat` is False (raw text needs none), cached
    per ref (validation reruns on every edit)."""
    with _lock:
        if (ref, chat) in _tokenizers:
            return _tokenizers[(ref, chat)]
    heavy_imports()
    from edgetune import models
    from edgetune.config import RunConfig
    from edgetune.data import ensure_chat_template
    from edgetune.engines.hf import HFEngine

    cfg = RunConfig()
    cfg.model.ref = ref
    tok = HFEngine().load_tokenizer(models.resolve(ref), cfg)
    if chat:
        ensure_chat_template(tok)
    with _lock:
        _tokenizers[(ref, chat)] = tok
    return tok


@dataclass
class MethodRows:
    """What a dpo/kto/grpo file holds (no chat template or mask here: TRL renders these rows itself)."""

    method: str
    n_valid: int
    problems: list
    first: dict | None


def check_dataset(ref: str, path: str, max_length: int, method: str = "sft"):
    """(DataReport, first conversation rendered as (text, assistant spans) or None), as training would read it;
    for dpo/kto/grpo, (MethodRows, None); for cpt, (TextReport, None)."""
    if method == "cpt":  # raw text: files, documents, tokens, blocks and bad files (edgetune.data.text.TextReport)
        from edgetune.data.text import load_corpus

        return load_corpus(tokenizer_for(ref, chat=False), str(Path(path).expanduser()), max_length)[1], None
    if method != "sft":
        from edgetune.data.preference import load_method_rows

        rows, problems = load_method_rows(str(Path(path).expanduser()), method)
        return MethodRows(method, len(rows), problems, rows[0] if rows else None), None
    from edgetune.config import DataConfig
    from edgetune.data import load_conversations, validate_data
    from edgetune.data.template import assistant_spans

    tok = tokenizer_for(ref)
    cfg = DataConfig(path=str(Path(path).expanduser()))
    report = validate_data(tok, cfg, max_length)
    convs, _, _ = load_conversations(cfg)
    example = assistant_spans(tok, convs[0]) if convs else None
    return report, example


def looks_loadable(ref: str) -> bool:
    """Worth inspecting now (the user may still be typing): `default`, an existing path, or an org/name id."""
    from edgetune.models import DEFAULT_MODEL, HUB_ID

    ref = ref.strip()
    return ref == DEFAULT_MODEL or Path(ref).expanduser().exists() or bool(HUB_ID.match(ref))
