"""Qwen2 / Qwen2.5 (q/k/v biases) and Qwen3 (q/k RMSNorm, tied embeddings at small sizes): llama.cpp's QWEN2 and
QWEN3 architectures rotate halves like transformers, so q/k need no permutation. Reference: conversion/qwen.py."""
from __future__ import annotations

import gguf

from .llama import Llama


class Qwen2(Llama):
    arch = gguf.MODEL_ARCH.QWEN2
    permute_qk = False
    rope_types = ("default", "linear", "yarn")


class Qwen3(Qwen2):
    arch = gguf.MODEL_ARCH.QWEN3
