"""Typed run configuration: one dataclass per stage, defaults defined once here.

Each field's one-line doc (metadata "help") feeds `--help`. Layering, lowest first:
defaults < hardware profile (profiles/*.toml) < config file (-c) < CLI flags. Validation collects every problem
before raising, naming the field (e.g. `train.max_steps`) and what to set.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import tomli_w

from edgetune.errors import ConfigError


def opt(default: Any, help: str, choices: tuple | None = None, factory: bool = False):
    """A config field with a one-line doc and optional allowed values."""
    meta = {"help": help, "choices": choices}
    if factory:
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


ALL_LINEAR = ["all-linear"]  # every linear layer of the blocks, whatever the family calls them (Phi-3: qkv_proj, gate_up_proj)
METHODS = ("sft", "dpo", "kto", "grpo", "cpt")
ENGINES = ("auto", "unsloth", "hf")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DATA_FORMATS = ("auto", "messages", "sharegpt", "alpaca", "prompt_completion")
# TRL 1.15 GRPOConfig.loss_type values (TRL's default is dapo); README "GRPO variants" says when to pick which.
GRPO_LOSS_TYPES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo")
IS_LEVELS = ("token", "sequence")
REWARD_SCALING = ("group", "batch", "none")


@dataclass
class ModelConfig:
    ref: str = opt("default", "Model: a Hugging Face hub id, a local HF directory, a .gguf file, or `default` (SmolLM2-135M-Instruct, shipped offline).")
    revision: str = opt("", "Hub revision (branch, tag or commit) when `ref` is a hub id; empty = main.")
    trust_remote_code: bool = opt(False, "Run model code from the hub repo. Off unless you trust the repo.")
    load_in_4bit: bool = opt(True, "Load the base in 4-bit NF4 (QLoRA). Off = 16/32-bit LoRA.")
    chat_template: str = opt("", "Chat template overriding the tokenizer's (for base models without one): a Jinja file, a tokenizer_config.json, or trl:NAME for a template TRL ships (e.g. trl:gemma3, trl:llama3_2).")


@dataclass
class DataConfig:
    path: str = opt("", "Training data: .jsonl/.json/.csv/.parquet file or a hub dataset id; for cpt, raw text: a .txt/.md file, a folder of them, or .jsonl with a `text` field.")
    format: str = opt("auto", "Row format; `auto` detects messages / sharegpt / alpaca / prompt_completion.", DATA_FORMATS)
    split: str = opt("train", "Split to read when `path` is a hub dataset id.")
    system_prompt: str = opt("", "System message prepended to every conversation that has none.")
    eval_fraction: float = opt(0.0, "Fraction of examples held out for evaluation (0 = none).")
    max_examples: int = opt(0, "Use at most this many examples (0 = all).")
    stage_paths: list[str] = opt([], "Data for each stage of a multi-stage run, as METHOD=PATH (e.g. cpt=notes.txt,sft=chat.jsonl); a stage without one uses `path`.", factory=True)


@dataclass
class MethodConfig:
    name: str = opt("sft", "Training method: sft, dpo (preference pairs), kto (unpaired labels), grpo (rewards) or cpt (continued pretraining on raw text).", METHODS)
    stages: list[str] = opt([], "Run several methods in order on one run dir (e.g. sft,dpo or cpt,sft), each starting from the previous stage's adapter; data per stage in `data.stage_paths`.", factory=True)
    beta: float = opt(0.1, "DPO/KTO/GRPO: strength of the pull towards the reference model (KL coefficient for GRPO uses `kl_beta`).")
    rewards: list[str] = opt(["answer_match"], "GRPO reward functions, NAME[=WEIGHT] or module:function[=WEIGHT].", factory=True)
    reward_pattern: str = opt(r"^Arr!", "Regex for the `regex_format` reward (a completion matching it scores 1).")
    numeric_tolerance: float = opt(1e-6, "Relative tolerance for the `numeric_match` reward.")
    on_reward_error: str = opt("skip", "When a reward function raises: `skip` scores that completion 0 and warns, `stop` ends the run cleanly.", ("skip", "stop"))
    num_generations: int = opt(4, "GRPO: completions sampled per prompt (the group size).")
    max_completion_length: int = opt(64, "GRPO: longest sampled completion in tokens.")
    kl_beta: float = opt(0.0, "GRPO: KL coefficient to the reference model (0 = no reference model, less memory).")
    temperature: float = opt(1.0, "GRPO: sampling temperature for completions.")
    loss_type: str = opt("dapo", "GRPO: how token losses are aggregated: dapo (TRL default, normalised over the batch's tokens), grpo (per sequence; length bias), dr_grpo (by a constant; no length bias), bnpo (over the local batch's tokens), cispo, sapo, luspo, vespo.", GRPO_LOSS_TYPES)
    importance_sampling_level: str = opt("token", "GRPO: importance ratios per token, or per sequence (GSPO: stabler on long completions and MoE; pair it with loss_type grpo).", IS_LEVELS)
    scale_rewards: str = opt("group", "GRPO: divide advantages by the reward std of the group, of the batch, or not at all (`none`, as Dr. GRPO recommends).", REWARD_SCALING)


@dataclass
class LoraConfig:
    r: int = opt(16, "LoRA rank.")
    alpha: int = opt(32, "LoRA alpha (scale = alpha / r, or alpha / sqrt(r) with rsLoRA).")
    dropout: float = opt(0.0, "LoRA dropout.")
    target_modules: list[str] = opt(ALL_LINEAR, "Module names that get adapters; `all-linear` = every linear layer of the blocks (attention and MLP, fused or not).", factory=True)
    use_rslora: bool = opt(False, "Rank-stabilised LoRA scaling.")
    use_dora: bool = opt(False, "Weight-decomposed LoRA (DoRA); slower.")


@dataclass
class TrainConfig:
    engine: str = opt("auto", "Training engine: `unsloth` (CUDA + unsloth installed), `hf` (transformers+PEFT+bitsandbytes), or `auto`.", ENGINES)
    max_steps: int = opt(60, "Optimizer steps to run (0 = use `epochs`).")
    epochs: float = opt(1.0, "Passes over the data when `max_steps` is 0.")
    learning_rate: float = opt(2e-4, "Peak learning rate.")
    lr_scheduler: str = opt("cosine", "Learning-rate schedule (any transformers scheduler name).")
    warmup_steps: int = opt(5, "Linear warm-up steps.")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    batch_size: int = opt(4, "Examples per device step.")
    grad_accum: int = opt(1, "Gradient accumulation steps (effective batch = batch_size x grad_accum x nproc).")
    max_length: int = opt(1024, "Longest tokenized example; longer ones are truncated.")
    packing: bool = opt(False, "Pack several short examples into one sequence.")
    gradient_checkpointing: bool = opt(True, "Recompute activations to save memory (slower, much less VRAM).")
    precision: str = opt("auto", "Compute precision: bf16 where the GPU supports it, else fp16; fp32 on CPU.", PRECISIONS)
    optimizer: str = opt("auto", "Optimizer: `auto` = paged 8-bit AdamW on CUDA, AdamW on CPU; or any transformers optim name.")
    seed: int = opt(42, "Random seed.")
    save_steps: int = opt(20, "Write a resumable checkpoint every N steps.")
    save_total_limit: int = opt(2, "Keep at most this many checkpoints.")
    logging_steps: int = opt(1, "Emit a progress event every N steps.")
    sample_every: int = opt(0, "Generate a reply to one training prompt every N steps, to watch the behaviour change (0 = never).")
    nproc: int = opt(1, "Processes for data-parallel training: one per GPU (N CPU processes on gloo without GPUs); batch_size stays per device.")
    distributed: str = opt("ddp", "With nproc > 1: `ddp` (each process holds the model; LoRA and QLoRA) or `fsdp` (the 16-bit model sharded across GPUs, for models one GPU cannot hold).", ("ddp", "fsdp"))


@dataclass
class ExportConfig:
    gguf: list[str] = opt(["q4_k_m"], "GGUF types to export (f16, bf16, q8_0, q6_k, q5_k_m, q4_k_m, q4_k_s, q3_k_m, q2_k).", factory=True)
    merge_dtype: str = opt("auto", "Dtype of the merged checkpoint: `auto` (fp16, the F16 GGUF's precision; bf16 if a weight exceeds fp16's range), fp16, bf16, fp32.", ("auto", "fp16", "bf16", "fp32"))
    imatrix: bool = opt(True, "Quantize 5-bit and smaller types with an importance matrix computed from the run's own data.")
    max_kld: float = opt(0.1, "With `gguf = [\"auto\"]`: keep the smallest type whose mean KL divergence to the merged model stays below this.")
    keep_f16: bool = opt(False, "Keep the intermediate F16 GGUF even when f16 was not requested.")
    f16_check: str = opt("auto", "How the F16 GGUF is checked against merged/: `full` runs the whole file in llama.cpp (its size must fit in RAM beside the rest); `sliced` runs its first layers in llama.cpp and compares every tensor byte for byte (bounded memory); `auto` slices files over 2 GiB (models over ~1B parameters) or a quarter of this machine's RAM.", ("auto", "full", "sliced"))
    onnx: list[str] = opt([], "ONNX variants to export for onnxruntime (fp32, fp16, int8, int4); empty = none.", factory=True)


@dataclass
class EvalConfig:
    probe: bool = opt(True, "`edgetune eval` on a run also scores the shipped general-ability probe, base vs tuned (the forgetting check).")
    max_probe_drop: float = opt(5.0, "Warn when the tuned model scores more than this many points (of 100) below the base on the general probe.")


SECTIONS = {"model": ModelConfig, "data": DataConfig, "method": MethodConfig, "lora": LoraConfig, "train": TrainConfig,
            "export": ExportConfig, "eval": EvalConfig}


@dataclass
class RunConfig:
    name: str = opt("", "Run name (default: the run directory's name).")
    run_dir: str = opt("", "Directory that holds everything this run writes (default: runs/<name>).")
    profile: str = opt("", "Hardware profile from profiles/ (cpu, gpu-6gb, gpu-8gb, ...); empty = detect.")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Per-stage settings of a multi-stage run, e.g. [stage.grpo.train] max_steps = 30: same tables as the file,
    # applied on top of everything else for that stage only.
    stage: dict = field(default_factory=dict, metadata={"help": "Per-stage overrides: [stage.METHOD.SECTION] tables.", "choices": None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def save(self, path: Path) -> None:
        from edgetune.atomic import atomic_write_text

        atomic_write_text(Path(path), "# Resolved edgetune config. Reproduce: edgetune train -c THIS_FILE\n" + self.to_toml())


# --- field lookup (for --help and error messages) -------------------------------------------------------------

def _section_fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(cls) if f.name not in SECTIONS}


def field_help(dotted: str) -> str:
    """The one-line doc of `section.field` (or a top-level field), for CLI --help."""
    section, _, name = dotted.rpartition(".")
    cls = SECTIONS[section] if section else RunConfig
    f = _section_fields(cls)[name]
    text = f.metadata["help"]
    if f.metadata.get("choices"):
        text += f" [{'|'.join(f.metadata['choices'])}]"
    return text


# --- merging partial dicts into a config, with type checks -----------------------------------------------------

def _check_type(value: Any, hint: Any) -> Any | None:
    """Return the value coerced to `hint`, or None when it does not fit."""
    origin = get_origin(hint)
    if origin is list:
        (inner,) = get_args(hint)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            return None
        out = [_check_type(v, inner) for v in value]
        return None if any(v is None for v in out) else out
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        return None
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if hint is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if hint is str:
        return value if isinstance(value, str) else None
    return value


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is list:
        return f"a list of {_type_name(get_args(hint)[0])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def apply_overrides(cfg: RunConfig, data: dict, source: str, problems: list[str]) -> None:
    """Merge a partial nested dict (from TOML, a profile or CLI flags) into `cfg`, recording problems."""
    for key, value in data.items():
        if key == "stage":
            _apply_stage_overrides(cfg, value, source, problems)
        elif key in SECTIONS:
            if not isinstance(value, dict):
                problems.append(f"{source}: `{key}` must be a table ([{key}])")
                continue
            target, cls, prefix = getattr(cfg, key), SECTIONS[key], f"{key}."
            _apply_section(target, cls, value, prefix, source, problems)
        else:
            _apply_section(cfg, RunConfig, {key: value}, "", source, problems)


_STAGE_FIXED = {"run_dir", "name", "profile", "model", "stage"}  # one run, one base model: not per stage


def _apply_stage_overrides(cfg: RunConfig, value, source: str, problems: list[str]) -> None:
    """Check `[stage.METHOD...]` tables against a scratch config, then deep-merge them into `cfg.stage`."""
    if not isinstance(value, dict):
        problems.append(f"{source}: `stage` must be a table of methods, e.g. [stage.grpo.train]")
        return
    for method, tables in value.items():
        where = f"stage.{method}"
        if method not in METHODS:
            problems.append(f"{source}: `{where}` is not a method; use one of: {', '.join(METHODS)}")
            continue
        if not isinstance(tables, dict):
            problems.append(f"{source}: `{where}` must be a table, e.g. [{where}.train]")
            continue
        fixed = sorted(set(tables) & _STAGE_FIXED) + [f"method.{k}" for k in ("name", "stages")
                                                       if k in (tables.get("method") or {})]
        if fixed:
            problems += [f"{source}: `{where}.{key}` cannot differ between stages; set it once, outside [stage]"
                         for key in fixed]
            continue
        before = len(problems)
        apply_overrides(RunConfig(), tables, f"{source}: {where}", problems)  # type and name checks only
        if len(problems) == before:
            _deep_merge(cfg.stage.setdefault(method, {}), tables)


def _deep_merge(into: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = v


def for_stage(cfg: RunConfig, method: str) -> RunConfig:
    """`cfg` as one stage of it sees it: a single-method copy with its `data.stage_paths` entry and `[stage.METHOD]`
    applied."""
    sub = copy.deepcopy(cfg)
    sub.stage, sub.method.name, sub.method.stages = {}, method, []
    paths = dict((k.strip(), v.strip()) for k, _, v in (sp.partition("=") for sp in cfg.data.stage_paths))
    sub.data.path, sub.data.stage_paths = paths.get(method) or sub.data.path, []
    problems: list[str] = []
    apply_overrides(sub, cfg.stage.get(method, {}), f"stage.{method}", problems)
    if problems:
        raise ConfigError(problems, hint="fix the listed fields")
    return sub


def _apply_section(target, cls, values: dict, prefix: str, source: str, problems: list[str]) -> None:
    known = _section_fields(cls)
    hints = get_type_hints(cls)
    for name, value in values.items():
        if name not in known:
            guess = difflib.get_close_matches(name, list(known) + [n for n in _ALIASES], n=1)
            fix = _ALIASES.get(guess[0], guess[0]) if guess else ""
            tip = f" (did you mean `{prefix}{fix}`?)" if fix else f" (known: {', '.join(sorted(known))})"
            problems.append(f"{source}: unknown field `{prefix}{name}`{tip}")
            continue
        coerced = _check_type(value, hints[name])
        if coerced is None:
            problems.append(f"{source}: `{prefix}{name}` must be {_type_name(hints[name])}, got {value!r}")
            continue
        setattr(target, name, coerced)


# Common spellings from other tools, mapped to ours so the error can say what to write instead.
_ALIASES = {"max_seq_length": "max_length", "num_train_epochs": "epochs", "lora_r": "r", "lora_alpha": "alpha",
            "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum"}


# --- validation -----------------------------------------------------------------------------------------------

def validate(cfg: RunConfig, source: str = "config") -> None:
    """Check values (not just types); raise one ConfigError that lists every problem."""
    p: list[str] = []
    for sec_name, cls in SECTIONS.items():
        section = getattr(cfg, sec_name)
        for f in fields(cls):
            choices = f.metadata.get("choices")
            if choices and getattr(section, f.name) not in choices:
                p.append(f"`{sec_name}.{f.name}` = {getattr(section, f.name)!r}; set one of: {', '.join(choices)}")
    t, lora = cfg.train, cfg.lora
    staged = {sp.split("=", 1)[0].strip() for sp in cfg.data.stage_paths if "=" in sp}
    for sp in cfg.data.stage_paths:
        method = sp.split("=", 1)[0].strip()
        if "=" not in sp or not sp.split("=", 1)[1].strip():
            p.append(f"`data.stage_paths` has {sp!r}; write METHOD=PATH, e.g. --stage-data sft=chat.jsonl")
        elif method not in cfg.method.stages:
            p.append(f"`data.stage_paths` names {method!r}, which is not a stage of this run; set `method.stages` "
                     f"(--stages) to include it, or drop {sp!r}")
    if not cfg.data.path and not (cfg.method.stages and all(st in staged for st in cfg.method.stages)):
        p.append("`data.path` is empty; set --data PATH (a .jsonl/.json/.csv/.parquet file or hub dataset id; for cpt "
                 "a .txt/.md file or folder), or --stage-data METHOD=PATH for every stage")
    if not cfg.model.ref:
        p.append("`model.ref` is empty; set --model (hub id, local dir, .gguf file or `default`)")
    if t.max_steps < 0:
        p.append(f"`train.max_steps` = {t.max_steps}; set 0 (use epochs) or a positive number")
    if t.max_steps == 0 and t.epochs <= 0:
        p.append("`train.epochs` must be > 0 when `train.max_steps` is 0")
    for name in ("batch_size", "grad_accum", "max_length", "save_steps", "logging_steps", "nproc"):
        if getattr(t, name) < 1:
            p.append(f"`train.{name}` = {getattr(t, name)}; set a positive integer")
    if not 0 < t.learning_rate < 1:
        p.append(f"`train.learning_rate` = {t.learning_rate}; typical LoRA values are 1e-5 .. 5e-4")
    if t.sample_every < 0:
        p.append("`train.sample_every` must be >= 0 (0 = no samples)")
    if t.warmup_steps < 0:
        p.append("`train.warmup_steps` must be >= 0")
    if lora.r < 1:
        p.append(f"`lora.r` = {lora.r}; set a positive rank such as 8, 16 or 32")
    if lora.alpha < 1:
        p.append(f"`lora.alpha` = {lora.alpha}; set a positive value (commonly 2 x r)")
    if not 0 <= lora.dropout < 1:
        p.append(f"`lora.dropout` = {lora.dropout}; set a value in [0, 1)")
    if not lora.target_modules:
        p.append("`lora.target_modules` is empty; list module names such as q_proj, v_proj")
    m = cfg.method
    for st in cfg.stage:
        if st not in m.stages:
            p.append(f"`stage.{st}` sets options for a stage this run does not have; add {st!r} to `method.stages`"
                     f" (now {m.stages or 'empty'}) or remove the [stage.{st}] tables")
    for st in cfg.stage:
        if st in m.stages:
            try:
                validate(for_stage(cfg, st))
            except ConfigError as e:
                p += [f"[stage.{st}]: {q}" for q in e.problems]
    for st in m.stages:
        if st not in METHODS:
            p.append(f"`method.stages` has {st!r}; set methods from: {', '.join(METHODS)} (e.g. [\"sft\", \"dpo\"])")
    if m.name == "grpo" or "grpo" in m.stages:
        if m.num_generations < 2:
            p.append(f"`method.num_generations` = {m.num_generations}; GRPO needs at least 2 completions per prompt")
        if m.max_completion_length < 1:
            p.append("`method.max_completion_length` must be positive")
        if not m.rewards:
            p.append("`method.rewards` is empty; name at least one reward, e.g. answer_match")
    if m.beta < 0:
        p.append(f"`method.beta` = {m.beta}; set a non-negative value such as 0.1")
    if cfg.export.max_kld <= 0:
        p.append(f"`export.max_kld` = {cfg.export.max_kld}; set a positive KL divergence budget such as 0.05")
    if not 0 <= cfg.eval.max_probe_drop <= 100:
        p.append(f"`eval.max_probe_drop` = {cfg.eval.max_probe_drop}; set points of 100 in [0, 100], e.g. 5")
    if not 0 <= cfg.data.eval_fraction < 1:
        p.append(f"`data.eval_fraction` = {cfg.data.eval_fraction}; set a value in [0, 1)")
    if cfg.data.max_examples < 0:
        p.append("`data.max_examples` must be >= 0")
    if cfg.profile and cfg.profile not in list_profiles():
        p.append(f"`profile` = {cfg.profile!r}; set one of: {', '.join(list_profiles())}")
    from edgetune.export.types import GGUF_TYPES, ONNX_VARIANTS

    for q in cfg.export.gguf:
        if q.lower() not in GGUF_TYPES and q.lower() != "auto":
            p.append(f"`export.gguf` has {q!r}; set any of: {', '.join(GGUF_TYPES)}, auto")
    for v in cfg.export.onnx:
        if v.lower() not in ONNX_VARIANTS:
            p.append(f"`export.onnx` has {v!r}; set any of: {', '.join(ONNX_VARIANTS)}")
    if p:
        raise ConfigError(p, hint="fix the listed fields in the config file or pass the matching --flags", source=source)


# --- profiles and files ---------------------------------------------------------------------------------------

def list_profiles() -> list[str]:
    root = resources.files("edgetune.profiles")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_profile(name: str) -> dict:
    """A profile is a partial override (same tables as a config file)."""
    if name not in list_profiles():
        raise ConfigError([f"unknown profile {name!r}; set one of: {', '.join(list_profiles())}"])
    text = resources.files("edgetune.profiles").joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def read_toml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: no such config file"], hint="pass an existing TOML file to -c/--config")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: {e}"], hint="fix the TOML syntax at the line shown") from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"], hint="save the config file as UTF-8") from None


def resolve(config_file: Path | None = None, overrides: dict | None = None, profile: str | None = None,
            detect_profile=None, check: bool = True) -> RunConfig:
    """Build the full config: defaults < profile < file < overrides. `detect_profile()` names one when none is set."""
    cfg = RunConfig()
    problems: list[str] = []
    file_data = read_toml(config_file) if config_file else {}
    overrides = overrides or {}
    name = profile or overrides.get("profile") or file_data.get("profile") or ""
    if not name and detect_profile is not None:
        name = detect_profile()
    if name:
        if name not in list_profiles():
            problems.append(f"`profile` = {name!r}; set one of: {', '.join(list_profiles())}")
        else:
            apply_overrides(cfg, load_profile(name), f"profile {name}", problems)
    if file_data:
        apply_overrides(cfg, file_data, str(config_file), problems)
    apply_overrides(cfg, overrides, "command line", problems)
    if name:
        cfg.profile = name
    if problems:
        raise ConfigError(problems, hint="fix the listed fields")
    if check:
        validate(cfg, str(config_file) if config_file else "config")
    return cfg


def from_dict(data: dict, source: str = "config") -> RunConfig:
    cfg, problems = RunConfig(), []
    apply_overrides(cfg, data, source, problems)
    if problems:
        raise ConfigError(problems)
    return cfg
