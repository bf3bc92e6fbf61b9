"""`edgetune handoff verl RUN_OR_CONFIG --out DIR`: GRPO at a scale that needs Verl (Ray, vLLM rollouts).

DIR gets the GRPO prompts as parquet in Verl's schema (the layout of Verl's examples/data_preprocess: `data_source`,
`prompt` as a chat list, `ability`, `reward_model` {style, ground_truth}, `extra_info`), reward_fn.py whose
`compute_score(data_source, solution_str, ground_truth, extra_info=None)` applies the run's edgetune reward functions
with their weights (edgetune must be installed where Verl runs), and run_verl.sh with the `python3 -m
verl.trainer.main_ppo` overrides for GRPO with LoRA. Keys checked against verl 0.9.1's generated ppo_trainer config
(tests/unit/test_handoff_verl.py checks every override key exists there).
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from edgetune import runs
from edgetune.config import RunConfig, for_stage
from edgetune.errors import ConfigError
from edgetune.events import Note, null_sink

ABILITY = "edgetune"

REWARD_FN = '''\
"""Verl custom reward for `{name}`, written by `edgetune handoff verl`: edgetune's GRPO rewards with their weights,
called the way edgetune's GRPO calls them (a conversational completion, the row's `answer` and prompt).
Verl: reward.custom_reward_function.path=THIS_FILE reward.custom_reward_function.name=compute_score. Needs edgetune
installed."""
import math

REWARDS = {rewards!r}  # method.rewards: NAME[=WEIGHT] or module:function[=WEIGHT]
REWARD_PATTERN = {pattern!r}  # method.reward_pattern (regex_format)
NUMERIC_TOLERANCE = {tolerance!r}  # method.numeric_tolerance (numeric_match)
ON_REWARD_ERROR = {on_error!r}  # method.on_reward_error: skip (score 0, warn) or stop (raise)

_built = None


def _rewards():
    global _built
    if _built is None:
        from types import SimpleNamespace

        from edgetune.methods import rewards

        cfg = SimpleNamespace(method=SimpleNamespace(reward_pattern=REWARD_PATTERN, numeric_tolerance=NUMERIC_TOLERANCE))
        chosen = rewards.build(REWARDS, cfg)
        _built = [(rewards.guarded(r, ON_REWARD_ERROR, lambda note: print(note.message)), r.weight) for r in chosen]
    return _built


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """Weighted sum of the rewards for one completion (a reward that returns None counts 0, as in TRL's nansum)."""
    extra_info = extra_info or {{}}
    prompt = extra_info.get("prompt")
    prompts = [list(prompt)] if prompt is not None else None
    completion = [{{"role": "assistant", "content": solution_str}}]
    total = 0.0
    for func, weight in _rewards():
        value = func(prompts=prompts, completions=[completion], answer=[ground_truth])[0]
        if value is not None and not math.isnan(value):
            total += weight * value
    return float(total)
'''

RUN_SH = """\
#!/usr/bin/env bash
# GRPO with LoRA for `{name}` on Verl, written by `edgetune handoff verl`. Needs verl (with vLLM and Ray) and edgetune
# installed here. Extra Hydra overrides go at the end: ./run_verl.sh trainer.total_training_steps=500
# Group size {n} = actor_rollout_ref.rollout.n; data.train_batch_size counts prompts (edgetune's batch counts
# completions). Verl writes the adapter to checkpoints/global_step_N/actor/lora_adapter; bring it home with:
#   edgetune export --model {model} --adapter checkpoints/global_step_N/actor/lora_adapter
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
NGPUS="${{NGPUS:-$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)}}"
[ "${{NGPUS:-0}}" -gt 0 ] || {{ echo "no GPU found: Verl needs CUDA GPUs (set NGPUS to override)" >&2; exit 1; }}
exec python3 -m verl.trainer.main_ppo \\
{overrides}  "$@"
"""


def grpo_config(cfg: RunConfig) -> RunConfig:
    """The GRPO stage's view of the config (its [stage.grpo] overrides and data); refuses a run without GRPO."""
    if cfg.method.name == "grpo" and not cfg.method.stages:
        return cfg
    if "grpo" not in cfg.method.stages:
        raise ConfigError([f"the run's method is {cfg.method.name!r} (stages {cfg.method.stages or '-'}): the Verl "
                           "hand-off is for GRPO"], hint="set method.name = \"grpo\" or add grpo to method.stages")
    sub = for_stage(cfg, "grpo")
    paths = dict(p.split("=", 1) for p in cfg.data.stage_paths if "=" in p)
    sub.data.path = paths.get("grpo", sub.data.path)
    return sub


def verl_rows(cfg: RunConfig, name: str) -> tuple[list[dict], list]:
    """GRPO rows in Verl's schema, plus the rows edgetune's checks rejected (file:line problems)."""
    from edgetune.data.preference import load_method_rows

    rows, problems = load_method_rows(cfg.data.path, "grpo", cfg.data.split, cfg.data.system_prompt)
    if cfg.data.max_examples:
        rows = rows[: cfg.data.max_examples]
    question = [next((m["content"] for m in reversed(r["prompt"]) if m["role"] == "user"), "") for r in rows]
    return [{"data_source": f"edgetune/{name}", "prompt": r["prompt"], "ability": ABILITY,
             "reward_model": {"style": "rule", "ground_truth": r["answer"]},
             "extra_info": {"split": "train", "index": i, "answer": r["answer"], "question": q, "prompt": r["prompt"]}}
            for i, (r, q) in enumerate(zip(rows, question))], problems


def write_parquet(rows: list[dict], path: Path) -> None:
    """Atomically (temp file + rename), as every file edgetune writes."""
    import os
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_path(cfg: RunConfig, source: Path, sink) -> str:
    """The policy Verl starts from: the merged earlier stage of a staged run (merged here if needed), else the base."""
    from edgetune import models

    if source.is_dir() and cfg.method.stages and cfg.method.stages.index("grpo") > 0:
        from edgetune.stages import stage_dirs

        before = [d for m, d in stage_dirs(cfg)][: cfg.method.stages.index("grpo")][-1]
        if (before / runs.ADAPTER / "adapter_config.json").is_file():
            if not (before / runs.MERGED / "config.json").is_file():
                from edgetune.merge import merge

                sink(Note(f"merging {before.name}, the stage GRPO starts from"))
                merge(before, sink)
            return str((before / runs.MERGED).resolve())
        sink(Note(f"{before.name} has not finished: Verl starts from the base model", "warning"))
    elif cfg.method.stages and cfg.method.stages.index("grpo") > 0:
        sink(Note("a config file, not a run: Verl starts from the base model; train the stages before GRPO first and "
                  "hand off the run directory to start from them", "warning"))
    ref = cfg.model.ref
    if models.HUB_ID.match(ref) and not Path(ref).exists():
        return ref  # Verl downloads it on the box
    path = models.resolve(ref, cfg.model.revision, cfg.model.trust_remote_code, sink).path
    sink(Note(f"the model is a local folder ({path}): copy it to the box and set actor_rollout_ref.model.path", "warning"))
    return str(Path(path).resolve())


def overrides(cfg: RunConfig, name: str, model: str, n_rows: int) -> list[str]:
    t, m, lora = cfg.train, cfg.method, cfg.lora
    prompts = max(1, min(n_rows, t.batch_size * t.grad_accum * max(1, t.nproc) // m.num_generations))
    targets = "all-linear" if lora.target_modules == ["all-linear"] else f"[{','.join(lora.target_modules)}]"
    steps = [f"trainer.total_training_steps={t.max_steps}"] if t.max_steps > 0 else [f"trainer.total_epochs={max(1, round(t.epochs))}"]
    return [
        "algorithm.adv_estimator=grpo", "algorithm.use_kl_in_reward=False",
        'data.train_files="$HERE/train.parquet"', 'data.val_files="$HERE/val.parquet"',
        "data.prompt_key=prompt", "data.reward_fn_key=data_source", f"data.train_batch_size={prompts}",
        f"data.max_prompt_length={max(64, t.max_length - m.max_completion_length)}",
        f"data.max_response_length={m.max_completion_length}", "data.filter_overlong_prompts=True",
        "data.truncation=error", f"actor_rollout_ref.model.path={shlex.quote(model)}",
        f"actor_rollout_ref.model.trust_remote_code={cfg.model.trust_remote_code}",
        f"actor_rollout_ref.model.lora_rank={lora.r}", f"actor_rollout_ref.model.lora_alpha={lora.alpha}",
        f"actor_rollout_ref.model.target_modules={shlex.quote(targets)}",
        f"actor_rollout_ref.model.enable_gradient_checkpointing={t.gradient_checkpointing}",
        f"actor_rollout_ref.actor.optim.lr={t.learning_rate}", f"actor_rollout_ref.actor.ppo_mini_batch_size={prompts}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={t.batch_size}",
        f"actor_rollout_ref.actor.use_kl_loss={m.kl_beta > 0}", f"actor_rollout_ref.actor.kl_loss_coef={m.kl_beta}",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl", "actor_rollout_ref.actor.entropy_coeff=0",
        "actor_rollout_ref.rollout.name=vllm", f"actor_rollout_ref.rollout.n={m.num_generations}",
        f"actor_rollout_ref.rollout.temperature={m.temperature}", "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.load_format=safetensors", "actor_rollout_ref.rollout.layered_summon=True",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={t.batch_size}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={t.batch_size}",
        # verl >= 0.9 reads reward.custom_reward_function (older releases: custom_reward_function at the top)
        'reward.custom_reward_function.path="$HERE/reward_fn.py"', "reward.custom_reward_function.name=compute_score",
        'trainer.n_gpus_per_node="$NGPUS"', "trainer.nnodes=1", "trainer.logger='[\"console\"]'",
        "trainer.project_name=edgetune", f"trainer.experiment_name={shlex.quote(name)}", *steps,
        f"trainer.save_freq={t.save_steps}", "trainer.test_freq=-1", "trainer.val_before_train=False",
        'trainer.default_local_dir="$HERE/checkpoints"']


def write_verl_handoff(source: Path, out: Path, sink=null_sink) -> dict:
    """Write DIR/train.parquet, val.parquet, reward_fn.py, run_verl.sh; returns what was written and why."""
    from edgetune.launch_config import load_source
    from edgetune.methods import rewards

    source, out = Path(source), Path(out)
    cfg = load_source(source)
    name = runs.slug(cfg.name or source.stem)
    grpo = grpo_config(cfg)
    rewards.build(grpo.method.rewards, grpo)  # an unknown reward or unimportable plugin: refused here, not on the box
    rows, problems = verl_rows(grpo, name)
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(rows, out / "train.parquet")
    write_parquet(rows[: min(32, len(rows))], out / "val.parquet")  # Verl wants val_files; validation is off
    sink(Note(f"{len(rows)} GRPO prompts -> {out / 'train.parquet'} ({len(problems)} rows rejected)"))
    m = grpo.method
    runs.atomic_write_text(out / "reward_fn.py", REWARD_FN.format(name=name, rewards=list(m.rewards), pattern=m.reward_pattern,
                                                              tolerance=m.numeric_tolerance, on_error=m.on_reward_error))
    model = model_path(cfg, source, sink)
    lines = overrides(grpo, name, model, len(rows))
    script = out / "run_verl.sh"
    runs.atomic_write_text(script, RUN_SH.format(name=name, n=m.num_generations, model=model,
                                                 overrides="".join(f"  {o} \\\n" for o in lines)))
    script.chmod(0o755)
    summary = {"rows": len(rows), "rejected": len(problems), "model": model, "rewards": list(m.rewards),
               "overrides": lines}
    runs.atomic_write_text(out / "handoff.json", json.dumps(summary, indent=2))
    return summary
