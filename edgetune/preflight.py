"""Pre-flight: can this model be exported the way the run asks (GGUF, ONNX)? Answered before any training.

Reads only the checkpoint's config.json (no weights, no torch), so `validate`, `train` and the app's setup screen
can say it in a second, instead of after an hour of training and a merge.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgetune.errors import ConfigError, ModelError


@dataclass
class ExportSupport:
    model_type: str
    gguf: str | None  # None: exportable; else the reason it is not
    onnx: str | None

    def describe(self) -> str:
        def one(name: str, reason: str | None) -> str:
            return f"{name} yes" if reason is None else f"{name} no ({reason})"

        return f"export of {self.model_type}: {one('GGUF', self.gguf)}; {one('ONNX', self.onnx)}"


def model_config(path: str, revision: str | None = None, trust_remote_code: bool = False) -> dict:
    """config.json of a resolved model (a local folder, or a hub id read from the cache or the hub)."""
    local = Path(path) / "config.json"
    if local.is_file():
        try:
            return json.loads(local.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ModelError(f"{local}: not valid JSON ({e})", hint="re-save the model with save_pretrained") from None
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code).to_dict()
    except Exception as e:  # noqa: BLE001 - the loader raises OSError/ValueError/...; the message is what matters
        raise ModelError(f"{path}: cannot read its config.json ({str(e).splitlines()[0] if str(e) else type(e).__name__})",
                         hint="check the model reference; offline, the model must be in the Hugging Face cache") from None


def export_support(config: dict) -> ExportSupport:
    from edgetune.export.families import gguf_support
    from edgetune.export.onnx_support import onnx_support

    model_type = str(config.get("model_type") or "?")
    return ExportSupport(model_type, gguf_support(config), onnx_support(config))


def require_exports(gguf_types: list[str], onnx_variants: list[str], support: ExportSupport) -> None:
    """Refuse up front when the run asks for an export this model cannot have (export.gguf / export.onnx)."""
    problems = []
    if gguf_types and support.gguf is not None:
        problems.append(f"`export.gguf` = {gguf_types} but GGUF export is not possible: {support.gguf}. "
                        "Set export.gguf = [] to train and merge without it")
    if onnx_variants and support.onnx is not None:
        problems.append(f"`export.onnx` = {onnx_variants} but ONNX export is not possible: {support.onnx}. "
                        "Set export.onnx = [] to train without it")
    if problems:
        raise ConfigError(problems)
