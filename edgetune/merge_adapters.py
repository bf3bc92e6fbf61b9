"""Adapter merging: the LoRA adapters of several runs on one base, combined by PEFT's `add_weighted_adapter` into a
new run directory that `edgetune merge`, `export`, `eval` and `chat` take like any trained run.

Methods (PEFT's combination types; all work on the LoRA factors A and B):
  linear       weighted sum of the A's and of the B's. Cheap and rough: the product mixes the adapters' factors
               (B1·A2 terms), so each adapter's behaviour survives only partly. Needs equal ranks and targets.
  ties         TIES: per factor, keep the largest `density` share of each adapter's entries, elect a sign per entry,
               sum the agreeing ones. Less interference than linear. Equal ranks and targets.
  dare_ties    DARE: drop entries at random (keep `density`, rescale), then TIES. Random: --seed fixes it.
  dare_linear  DARE, then a weighted sum.   magnitude_prune: keep the largest entries, weighted sum.
  cat          the adapters side by side: rank = sum of ranks, and the merged update is exactly sum w_i * delta_i.
               The most faithful; the adapter grows. Any ranks and targets.
  svd          the exact weighted sum of the updates, truncated back to --svd-rank (default: the largest rank) by an
               SVD per layer. Faithful up to the truncation; slower. Any ranks and targets. (ties_svd, dare_ties_svd,
               dare_linear_svd, magnitude_prune_svd: the same pruning, then an SVD.)
Weights default to 1/n for linear (an average) and to 1 for the rest (each adapter's update kept at full strength).

Only the adapters are loaded: the base is a weightless skeleton (every weight a zero-stride view of one scalar), as
PEFT needs the base's layers to attach adapters to but never reads their weights for this.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgetune import runs
from edgetune.errors import ConfigError, RunDirError
from edgetune.events import Note, Progress, StageFinished, StageStarted, null_sink

METHODS = ("linear", "ties", "dare_ties", "dare_linear", "magnitude_prune", "cat", "svd", "ties_svd", "dare_ties_svd",
           "dare_linear_svd", "magnitude_prune_svd")
SAME_SHAPE = ("linear", "ties", "dare_ties", "dare_linear", "magnitude_prune")  # PEFT sums the factors themselves
PRUNING = ("ties", "dare_ties", "dare_linear", "magnitude_prune", "ties_svd", "dare_ties_svd", "dare_linear_svd",
           "magnitude_prune_svd")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "README.md")


@dataclass
class MergeAdaptersResult:
    run_dir: str
    sources: list[str]
    method: str
    weights: list[float]
    density: float | None
    rank: int
    seed: int
    seconds: float


@dataclass
class Source:
    run_dir: Path
    cfg: object  # RunConfig
    adapter: dict  # adapter_config.json


def parse_weights(text: str | None, n: int, method: str) -> list[float]:
    if not text:
        return [1.0 / n if method == "linear" else 1.0] * n
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise ConfigError([f"--weights {text!r} is not a comma-separated list of numbers"],
                          hint="e.g. --weights 0.5,0.5") from None
    if len(weights) != n:
        raise ConfigError([f"--weights has {len(weights)} value(s) for {n} runs"], hint="give one weight per run")
    return weights


def check_sources(run_dirs: list[Path], method: str, density: float | None, sink=null_sink) -> list[Source]:
    """Every problem that would make the merge fail or mean nothing, before anything is loaded."""
    from edgetune.models import resolve

    if method not in METHODS:
        raise ConfigError([f"--method {method!r} is not known"], hint=f"use one of: {', '.join(METHODS)}")
    if len(run_dirs) < 2:
        raise ConfigError([f"merge-adapters needs at least two runs, got {len(run_dirs)}"], hint="pass RUN_A RUN_B ...")
    if method in PRUNING and not (density is not None and 0 < density <= 1):
        raise ConfigError([f"--density {density} must be in (0, 1] for {method}"], hint="e.g. --density 0.5")
    sources = []
    for d in run_dirs:
        d = runs.require_run_dir(d, runs.ADAPTER)
        sources.append(Source(d, runs.load_run_config(d),
                              json.loads((d / runs.ADAPTER / "adapter_config.json").read_text(encoding="utf-8"))))
    problems = []
    bases = {}
    for s in sources:
        r = resolve(s.cfg.model.ref, s.cfg.model.revision, s.cfg.model.trust_remote_code, sink)
        bases.setdefault((r.path, r.revision or ""), []).append(str(s.run_dir))
        a = s.adapter
        if a.get("peft_type", "LORA") != "LORA":
            problems.append(f"{s.run_dir}: a {a.get('peft_type')} adapter; only LoRA adapters merge")
        if a.get("use_dora"):
            problems.append(f"{s.run_dir}: a DoRA adapter (lora.use_dora); PEFT's weighted merge drops its magnitudes")
        if a.get("rank_pattern") or a.get("alpha_pattern") or a.get("modules_to_save"):
            problems.append(f"{s.run_dir}: per-module ranks or modules_to_save, which weighted merging cannot combine")
    if len(bases) > 1:
        listed = "; ".join(f"{base}{'@' + rev if rev else ''}: {', '.join(ds)}" for (base, rev), ds in bases.items())
        problems.append(f"the runs were trained on different base models ({listed})")
    if method in SAME_SHAPE:
        ranks = {str(s.run_dir): s.adapter["r"] for s in sources}
        targets = {str(s.run_dir): sorted(s.adapter["target_modules"]) if isinstance(s.adapter["target_modules"], list)
                   else s.adapter["target_modules"] for s in sources}
        if len(set(ranks.values())) > 1:
            problems.append(f"{method} needs equal LoRA ranks; the runs have " + ", ".join(f"{d}: r={r}" for d, r in ranks.items()))
        if len({json.dumps(t) for t in targets.values()}) > 1:
            problems.append(f"{method} needs the same target modules; the runs have " +
                            "; ".join(f"{d}: {t}" for d, t in targets.items()))
    problems += _tokenizer_problems(sources)
    if problems:
        hint = ("merge runs of one base model" if len(bases) > 1 else
                "use --method cat or svd, which take any ranks and targets" if method in SAME_SHAPE else
                "retrain the runs with matching settings")
        raise ConfigError(problems, hint=hint)
    if len({s.cfg.model.load_in_4bit for s in sources}) > 1:
        sink(Note("the runs differ in model.load_in_4bit (4-bit QLoRA vs 16-bit LoRA); the merged run merges like "
                  f"{sources[0].run_dir} (load_in_4bit = {sources[0].cfg.model.load_in_4bit})", "warning"))
    return sources


def _tokenizer_problems(sources: list[Source]) -> list[str]:
    """The merged run keeps the first run's tokenizer and chat template: the others must have trained with the same."""
    from edgetune.tokenizer import load_tokenizer

    first = load_tokenizer(sources[0].run_dir / runs.ADAPTER)
    out = []
    for s in sources[1:]:
        tok = load_tokenizer(s.run_dir / runs.ADAPTER)
        if len(tok) != len(first) or tok.chat_template != first.chat_template:
            out.append(f"{s.run_dir} trained with another tokenizer or chat template than {sources[0].run_dir} "
                       "(model.chat_template differs?)")
    return out


def merge_adapters(run_dirs: list[Path], out: Path, method: str = "linear", weights: list[float] | None = None,
                   density: float | None = None, svd_rank: int | None = None, seed: int = 0,
                   sink=null_sink) -> MergeAdaptersResult:
    """Combine the runs' adapters into a new run directory `out` (written atomically)."""
    t0 = time.time()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise RunDirError(f"{out} already exists and is not empty", hint="pass a new --out directory")
    if method in PRUNING and density is None:
        density = 0.5
    sources = check_sources([Path(d) for d in run_dirs], method, density, sink)
    weights = weights or parse_weights(None, len(sources), method)
    sink(StageStarted("merge-adapters", f"{method} of {len(sources)} adapters"))
    tmp = runs.temp_dir_beside(out)
    try:
        rank = _combine(sources, tmp / runs.ADAPTER, method, weights, density, svd_rank, seed, sink)
        result = MergeAdaptersResult(str(out), [str(s.run_dir) for s in sources], method, weights,
                                     density if method in PRUNING else None, rank, seed, 0.0)
        _write_run(sources, tmp, out, result)
        runs.replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # Ctrl-C or a failure leaves no half-written run
        raise
    result.seconds = time.time() - t0
    runs.update_report(out, "merge_adapters", asdict(result))
    sink(StageFinished("merge-adapters", result.seconds, f"rank {rank} adapter in {out}"))
    return result


def _combine(sources, adapter_out: Path, method, weights, density, svd_rank, seed, sink) -> int:
    """PEFT's add_weighted_adapter over a weightless base; returns the merged adapter's rank."""
    import torch
    from peft import PeftModel

    names = [f"source{i}" for i in range(len(sources))]
    model = None
    for i, (s, name) in enumerate(zip(sources, names)):
        sink(Progress("merge-adapters", i, len(sources) + 1, f"loading {s.run_dir}"))
        if model is None:
            model = PeftModel.from_pretrained(_weightless_base(s), str(s.run_dir / runs.ADAPTER), adapter_name=name)
        else:
            model.load_adapter(str(s.run_dir / runs.ADAPTER), adapter_name=name)
    sink(Progress("merge-adapters", len(sources), len(sources) + 1, f"{method} merge"))
    torch.manual_seed(seed)  # DARE drops entries at random
    model.add_weighted_adapter(names, weights, "merged", combination_type=method, svd_rank=svd_rank, density=density)
    merged_cfg = model.peft_config["merged"]
    # PEFT folds every source's scale into the merged factors and sets lora_alpha = r; with rsLoRA left on, a reload
    # would scale by sqrt(r) instead of 1
    merged_cfg.use_rslora = False
    tmp = runs.temp_dir_beside(adapter_out)
    try:
        model.save_pretrained(str(tmp), selected_adapters=["merged"])
        shutil.move(str(tmp / "merged"), str(adapter_out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for f in (sources[0].run_dir / runs.ADAPTER).iterdir():  # the tokenizer and chat template training saved
        if f.is_file() and f.name not in ADAPTER_FILES:
            shutil.copy2(f, adapter_out / f.name)
    sink(Progress("merge-adapters", len(sources) + 1, len(sources) + 1, "saved"))
    return int(merged_cfg.r)


def _weightless_base(source: Source):
    """The base model's modules with every parameter a zero-stride view of one scalar: PEFT needs the layers to attach
    adapters to, never their weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from edgetune.models import local_checkpoint, resolve

    m = source.cfg.model
    path = local_checkpoint(resolve(m.ref, m.revision, m.trust_remote_code))
    config = AutoConfig.from_pretrained(path, trust_remote_code=m.trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=m.trust_remote_code)
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            setattr(module, name, torch.nn.Parameter(torch.zeros((), dtype=p.dtype).expand(p.shape), requires_grad=False))
    return model


def _write_run(sources: list[Source], tmp: Path, out: Path, result: MergeAdaptersResult) -> None:
    """config.toml (the first run's, with the merged adapter's LoRA shape) and the texts later stages read: the
    calibration and held-out rows of every source, in turn."""
    from edgetune.train import CALIBRATION_ROWS, HELDOUT_ROWS

    cfg = sources[0].cfg
    cfg.name, cfg.run_dir = out.name, str(out)
    cfg.lora.r = cfg.lora.alpha = result.rank
    cfg.lora.use_rslora = False
    header = (f"# Made by `edgetune merge-adapters` ({result.method}, weights {result.weights}) from "
              f"{', '.join(result.sources)}; the data and method sections are those of the first run.\n")
    runs.atomic_write_text(tmp / runs.CONFIG, header + cfg.to_toml())
    for name, cap in ((runs.CALIBRATION, CALIBRATION_ROWS), (runs.HELDOUT, HELDOUT_ROWS)):
        per_source = [runs.read_texts(s.run_dir, name) or [] for s in sources]
        mixed = [t for group in zip(*[_padded(p, max(map(len, per_source))) for p in per_source]) for t in group if t]
        if mixed:
            runs.write_texts(tmp, name, mixed[:cap])


def _padded(texts: list[str], n: int) -> list:
    return texts + [None] * (n - len(texts))
