"""GGUF output types edgetune can write, mapped to llama.cpp's file-type names, and the parser for type lists."""

from edgetune.errors import ExportError

# name -> llama_cpp LLAMA_FTYPE_* constant name
GGUF_TYPES = {
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "bf16": "LLAMA_FTYPE_MOSTLY_BF16",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
}

ONNX_VARIANTS = ("fp32", "fp16", "int8", "int4")  # onnxruntime-genai builder precisions edgetune exports


def parse_choices(values: list[str], allowed, what: str, example: str) -> list[str]:
    """Flags like `--gguf q4_k_m --gguf q8_0,f16` -> unique lowercase names, each checked against `allowed`."""
    out: list[str] = []
    for value in values:
        for part in str(value).lower().replace(",", " ").split():
            if part not in allowed:
                raise ExportError(f"unknown {what} {part!r}", hint=f"use any of {', '.join(allowed)}")
            if part not in out:
                out.append(part)
    if not out:
        raise ExportError(f"no {what} given", hint=f"e.g. {example}")
    return out
