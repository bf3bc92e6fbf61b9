"""Read and write safetensors one tensor at a time, with plain file reads instead of mmap.

Why not `safetensors.safe_open`: it maps the whole file, and every page a read touches stays in the process's
resident set until the file is closed, so streaming through a 6 GB checkpoint would still show 6 GB of RSS.
Plain reads go through the page cache, which the kernel can drop; the process holds only the tensor it asked for.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

DTYPES = {"F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2), "F64": ("float64", 8),
          "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
          "BOOL": ("bool", 1)}
CODE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
SHARD_BYTES = 2 * 1024**3  # like transformers' save_pretrained: files that FAT32 and hubs take


@dataclass
class Entry:
    file: Path
    dtype: str  # safetensors code: F32, F16, BF16, ...
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: Path) -> dict[str, Entry]:
    path = Path(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {name: Entry(path, h["dtype"], tuple(h["shape"]), 8 + n + h["data_offsets"][0], 8 + n + h["data_offsets"][1])
            for name, h in header.items()}


def checkpoint_index(model_dir: Path) -> dict[str, Entry]:
    """Every tensor of a safetensors checkpoint (one file or shards), by name, in file order."""
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    files = [f for f in files if not f.name.startswith("adapter_")]
    entries: dict[str, Entry] = {}
    for f in files:
        entries.update(sorted(read_header(f).items(), key=lambda kv: kv[1].start))
    return entries


def read_tensor(entry: Entry, rows: tuple[int, int] | None = None):
    """The tensor (or rows [a, b) of its first dimension) as a torch tensor in its stored dtype."""
    import torch

    dtype = getattr(torch, DTYPES[entry.dtype][0])
    shape = list(entry.shape)
    start, nbytes = entry.start, entry.nbytes
    if rows is not None:
        row_bytes = nbytes // max(shape[0], 1)
        start, nbytes = entry.start + rows[0] * row_bytes, (rows[1] - rows[0]) * row_bytes
        shape[0] = rows[1] - rows[0]
    buf = torch.empty(nbytes, dtype=torch.uint8)
    with open(entry.file, "rb") as f:
        f.seek(start)
        if f.readinto(memoryview(buf.numpy())) != nbytes:
            raise OSError(f"{entry.file}: truncated safetensors file")
    return buf.view(dtype).reshape(shape)


class ShardedWriter:
    """Writes a planned set of tensors as safetensors shards (+ index), tensor by tensor, into a folder.

    The plan (name -> (dtype code, shape)) fixes every header before any data is written, so each tensor can be
    written as soon as it is computed and then dropped.
    """

    def __init__(self, out_dir: Path, plan: dict[str, tuple[str, tuple[int, ...]]], shard_bytes: int = SHARD_BYTES):
        self.out_dir = Path(out_dir)
        sizes = {n: DTYPES[d][1] * _numel(s) for n, (d, s) in plan.items()}
        shards: list[list[str]] = [[]]
        used = 0
        for name in plan:
            if shards[-1] and used + sizes[name] > shard_bytes:
                shards.append([])
                used = 0
            shards[-1].append(name)
            used += sizes[name]
        n = len(shards)
        self.files = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self.where: dict[str, tuple[int, int]] = {}  # name -> (shard, absolute offset)
        self._handles = []
        for i, names in enumerate(shards):
            offset, header = 0, {"__metadata__": {"format": "pt"}}
            for name in names:
                dtype, shape = plan[name]
                header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + sizes[name]]}
                offset += sizes[name]
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
            f = open(self.out_dir / self.files[i], "wb")
            f.write(struct.pack("<Q", len(raw)) + raw)
            f.truncate(8 + len(raw) + offset)
            self._handles.append(f)
            for name in names:
                self.where[name] = (i, 8 + len(raw) + header[name]["data_offsets"][0])
        self.plan, self.sizes, self.written = plan, sizes, set()

    def write(self, name: str, tensor, row_offset: int = 0) -> None:
        """Write `tensor` (already in the planned dtype) as `name`, or as rows from row_offset on."""
        import torch

        dtype, shape = self.plan[name]
        if CODE.get(str(tensor.dtype).removeprefix("torch.")) != dtype:
            raise ValueError(f"{name}: planned {dtype}, got {tensor.dtype}")
        shard, offset = self.where[name]
        row_bytes = self.sizes[name] // max(shape[0], 1) if shape else 0
        f = self._handles[shard]
        f.seek(offset + row_offset * row_bytes)
        f.write(memoryview(tensor.contiguous().view(-1).view(torch.uint8).numpy()))
        if row_offset + (tensor.shape[0] if tensor.dim() else 1) >= (shape[0] if shape else 1):
            self.written.add(name)

    def abort(self) -> None:
        """Close the shards without completing them (the caller removes the folder)."""
        for f in self._handles:
            f.close()

    def close(self) -> None:
        """Flush and fsync every shard and write the index; raises if a planned tensor was never written."""
        missing = [n for n in self.plan if n not in self.written]
        for f in self._handles:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        if missing:
            raise ValueError(f"tensors planned but not written: {', '.join(missing[:5])}")
        if len(self.files) > 1:
            index = {"metadata": {"total_size": sum(self.sizes.values())},
                     "weight_map": {n: self.files[self.where[n][0]] for n in self.plan}}
            (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
