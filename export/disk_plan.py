"""The disk an export needs, stated before anything is written, and a refusal when it cannot fit.

Everything an export holds at its fullest moment counts: the merged 16-bit checkpoint (when it still has to be
written), the F16 GGUF every quantization reads, each quantized file (auto makes every candidate before keeping
one), the importance matrix and the reference log-probs verification keeps beside the files (positions x vocab
floats). Files planned as intermediates are named, so the user sees what is removed afterwards.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from edgetune.errors import ExportError

# Bits per weight of each GGUF type, measured on Llama-shaped files (mixed types inside K-quants) plus headroom.
BITS_PER_WEIGHT = {"f16": 16.1, "bf16": 16.1, "q8_0": 8.6, "q6_k": 6.7, "q5_k_m": 5.8, "q4_k_m": 5.0,
                   "q4_k_s": 4.7, "q3_k_m": 4.0, "q2_k": 3.5}
MARGIN = 256 * 1024**2  # tokenizer metadata, Modelfile, report, filesystem slack


@dataclass
class DiskItem:
    what: str
    nbytes: int
    kept: bool = True  # False: an intermediate, removed when the export ends


@dataclass
class DiskPlan:
    folder: Path
    items: list[DiskItem] = field(default_factory=list)

    @property
    def peak_bytes(self) -> int:
        return sum(i.nbytes for i in self.items) + MARGIN

    @property
    def kept_bytes(self) -> int:
        return sum(i.nbytes for i in self.items if i.kept)

    def describe(self) -> str:
        parts = ", ".join(f"{i.what} {_gb(i.nbytes)}{'' if i.kept else ' (removed after)'}" for i in self.items)
        return f"disk: needs {_gb(self.peak_bytes)} at most ({parts}); {_gb(self.kept_bytes)} stays"

    def check(self) -> None:
        free = shutil.disk_usage(self.folder).free
        if free < self.peak_bytes:
            raise ExportError(f"not enough free disk in {self.folder}: the export needs {_gb(self.peak_bytes)} at its "
                              f"fullest and {_gb(free)} is free; free at least {_gb(self.peak_bytes - free)}",
                              hint=f"{self.describe()}. Export fewer types at once (e.g. --gguf q4_k_m), turn off "
                                   "--keep-f16, or move the run directory to a bigger disk")


def plan_gguf_export(folder: Path, n_params: int, quants: list[str], *, merge_bytes: int = 0, keep_f16: bool,
                     keep_quants: bool = True, imatrix: bool = False, verify: bool = True,
                     reference_positions: int = 0, vocab: int = 0, slice_bytes: int = 0) -> DiskPlan:
    """The plan for one GGUF export of a model with n_params weights into folder."""
    plan = DiskPlan(Path(folder))
    if merge_bytes:
        plan.items.append(DiskItem("merged 16-bit checkpoint", merge_bytes))
    plan.items.append(DiskItem("F16 GGUF", _file_bytes(n_params, "f16"), kept=keep_f16))
    for q in quants:
        plan.items.append(DiskItem(f"{q.upper()} GGUF", _file_bytes(n_params, q), kept=keep_quants))
    if imatrix:
        plan.items.append(DiskItem("importance matrix", 16 * 1024**2))  # 4 bytes per input column: small
    if verify and reference_positions and vocab:
        plan.items.append(DiskItem("verification log-probs", reference_positions * vocab * 4, kept=False))
    if verify and slice_bytes:  # the F16 checked by layer slice (export/gguf_slice.py): the slice and its log-probs
        plan.items.append(DiskItem("F16 layer slice", slice_bytes, kept=False))
        if reference_positions and vocab:
            plan.items.append(DiskItem("slice log-probs", reference_positions * vocab * 4, kept=False))
    return plan


def checkpoint_params(model_dir: Path) -> int:
    """Weights in a safetensors checkpoint, read from its headers."""
    from edgetune.safetensors_io import checkpoint_index

    total = 0
    for entry in checkpoint_index(model_dir).values():
        n = 1
        for s in entry.shape:
            n *= s
        total += n
    return total


def _file_bytes(n_params: int, qtype: str) -> int:
    return int(n_params * BITS_PER_WEIGHT[qtype] / 8)


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
