"""Which exact weights a run trained on, recorded in the run (base.json) and required again by merge and export.

A hub model is pinned by its commit (the snapshot folder the weights came from); a local folder (and the embedded
default, and a converted GGUF) by a SHA-256 over its config and weight files. Merging an adapter into other weights
than it was trained on gives a model that silently behaves differently, so a mismatch stops merge and export.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgetune import runs
from edgetune.errors import RunDirError
from edgetune.events import Note, null_sink

HASHED = ("config.json", "*.safetensors", "*.bin")
BLOCK = 8 * 1024**2


@dataclass
class BaseIdentity:
    ref: str  # what the user wrote
    kind: str  # hub | local | default | gguf
    path: str  # the folder the weights were read from
    revision: str | None = None  # hub commit
    sha256: str | None = None  # local weights

    def describe(self) -> str:
        return f"{self.ref} @ {self.revision}" if self.revision else f"{self.path} (sha256 {self.sha256[:12]})"


def identify(resolved, sink=null_sink) -> BaseIdentity:
    """The identity of the weights `resolved` (edgetune.models.ResolvedModel) points at now."""
    from edgetune.models import local_checkpoint

    folder = local_checkpoint(resolved)
    if resolved.kind == "hub":  # the hub cache keeps each commit's files in snapshots/<commit>/
        return BaseIdentity(resolved.ref, "hub", str(folder), revision=folder.name)
    return BaseIdentity(resolved.ref, resolved.kind, str(folder), sha256=weights_sha256(folder, sink))


def weights_sha256(folder: Path, sink=null_sink) -> str:
    """One SHA-256 over config.json and the weight files (names and bytes, in name order)."""
    t0 = time.time()
    digest = hashlib.sha256()
    files = sorted({p for pattern in HASHED for p in Path(folder).glob(pattern)})
    for p in files:
        digest.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            while block := f.read(BLOCK):
                digest.update(block)
    size = sum(p.stat().st_size for p in files)
    if size > 256 * 1024**2:
        sink(Note(f"hashed the base weights ({size / 1e9:.1f} GB) in {time.time() - t0:.0f} s"))
    return digest.hexdigest()


def record(run_dir: Path, identity: BaseIdentity) -> None:
    runs.atomic_write_text(Path(run_dir) / runs.BASE, json.dumps(asdict(identity), indent=2))


def recorded(run_dir: Path) -> BaseIdentity | None:
    path = Path(run_dir) / runs.BASE
    if not path.is_file():
        return None  # runs trained before base.json existed
    return BaseIdentity(**json.loads(path.read_text(encoding="utf-8")))


def trained_base(run_dir: Path, cfg, sink=null_sink) -> Path:
    """The folder holding exactly the weights the run trained on; RunDirError when they changed or are gone."""
    from edgetune import models

    run_dir = Path(run_dir)
    was = recorded(run_dir)
    revision = was.revision if was and was.kind == "hub" else cfg.model.revision
    resolved = models.resolve(cfg.model.ref, revision or "", cfg.model.trust_remote_code, sink)
    if was is None:
        sink(Note(f"{run_dir.name} has no {runs.BASE} (trained by an older edgetune): using {cfg.model.ref} as it "
                  "is now, unchecked", "warning"))
        return models.local_checkpoint(resolved)
    now = identify(resolved, sink)
    if was.kind != "hub" and now.sha256 != was.sha256:
        raise RunDirError(f"the base weights at {now.path} changed since {run_dir.name} was trained on them "
                          f"(sha256 {was.sha256[:12]} then, {now.sha256[:12]} now)",
                          hint="put the original weights back at that path (or point model.ref in "
                               f"{run_dir / runs.CONFIG} at a copy of them); an adapter merged into other "
                               "weights gives a different model")
    if was.kind == "hub" and now.revision != was.revision:
        raise RunDirError(f"{cfg.model.ref}: commit {was.revision} is not in the local hub cache",
                          hint=f"download that commit (huggingface-cli download {cfg.model.ref} --revision "
                               f"{was.revision}) and run again")
    return Path(now.path)
