"""edgetune.memory.plan: the arithmetic counts each unit once, each method's batch is one its TRL trainer accepts
(checked against TRL itself where TRL checks without a model), the effective batch survives fitting, and the CLI
and the TUI's setup screen get the same plan."""
import json

import pytest

from edgetune import config as C
from edgetune.engines import choose_precision
from edgetune.events import Collect, Note
from edgetune.hardware import Hardware
from edgetune.memory import (GB, MethodRule, ModelShape, divisors, estimate, fit_batch, legal_batch, method_rule,
                             plan)

# SmolLM2-135M's numbers (as tests/tui pins them), plus its GQA key/value width
SHAPE = ModelShape(n_params=134_515_008, hidden=576, layers=30, vocab=49152, intermediate=1536,
                   embed_params=49152 * 576, tied=True, kv_hidden=192)
CPU = Hardware(device="cpu", cpu_cores=8, ram_gb=32.0)


def gpu(vram_gb: float) -> Hardware:
    return Hardware(device="cuda", gpu_name="test", vram_gb=vram_gb, bf16=True, ram_gb=16.0)


def cfg(profile: str = "cpu", method: str = "sft", **train) -> C.RunConfig:
    return C.resolve(None, {"method": {"name": method}, "train": train}, profile=profile, check=False)


def plan_on(c: C.RunConfig, hw: Hardware, shape=SHAPE, longest=None):
    return plan(c, shape, hw, choose_precision(c.train.precision, hw), longest)


# --- the estimate's arithmetic -----------------------------------------------------------------------------------

@pytest.mark.parametrize("checkpointing", [False, True])
def test_activations_count_each_byte_once(checkpointing):
    """Korthikanti et al.: 34 bytes per token and hidden unit per layer in 16-bit (17 values of 2 bytes), not 34
    values of 2 bytes; with full recomputation 2 bytes (the layer input) per layer plus one layer recomputed."""
    tokens = 2 * 512
    est = estimate(SHAPE, r=16, n_targets=7, sequences=2, seq=512, load_in_4bit=False, checkpointing=checkpointing,
                   compute_bytes=2, device="cuda")
    per_layer = 2 if checkpointing else 34
    expected = SHAPE.layers * tokens * SHAPE.hidden * per_layer + (tokens * SHAPE.hidden * 34 if checkpointing else 0)
    assert est.activations_gb * GB == pytest.approx(expected)
    fp32 = estimate(SHAPE, r=16, n_targets=7, sequences=2, seq=512, load_in_4bit=False, checkpointing=checkpointing,
                    compute_bytes=4, device="cuda")
    assert fp32.activations_gb == pytest.approx(2 * est.activations_gb)  # values x 4 bytes, once


LLAMA_1B = ModelShape(n_params=1_235_814_400, hidden=2048, layers=16, vocab=128256, intermediate=8192,
                      embed_params=128256 * 2048, tied=True, kv_hidden=512)
QLORA = dict(r=16, n_targets=7, sequences=2, seq=1024, load_in_4bit=True, checkpointing=True, compute_bytes=2,
             device="cuda", eight_bit_optim=True)


def test_hf_qlora_counts_the_fp32_upcast_of_embeddings_and_residual_stream():
    """PEFT's prepare_model_for_kbit_training casts every non-4-bit parameter to fp32 (checked on the real function
    below), so on the HF engine the embedding is 4 bytes a value and so is the residual stream it starts; Unsloth
    keeps both in 16-bit."""
    hf = estimate(LLAMA_1B, engine="hf", **QLORA)
    unsloth = estimate(LLAMA_1B, engine="unsloth", **QLORA)
    assert (hf.weights_gb - unsloth.weights_gb) * GB == pytest.approx(LLAMA_1B.embed_params * 2)
    tokens = 2 * 1024
    layer_inputs = LLAMA_1B.layers * tokens * LLAMA_1B.hidden * 4
    assert hf.activations_gb * GB == pytest.approx(layer_inputs + tokens * LLAMA_1B.hidden * 2 * 17)


def test_peft_upcasts_what_is_not_4bit(tiny_model_dir):
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    model.is_loaded_in_4bit = True  # what bitsandbytes' loader sets; the cast skips only Params4bit weights
    prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    assert model.get_input_embeddings().weight.dtype == torch.float32


def test_unsloth_checkpointing_keeps_layer_inputs_off_the_gpu():
    """Unsloth's gradient checkpointing copies each layer's input to host memory: the GPU's activations do not grow
    with depth."""
    deep = ModelShape(**{**LLAMA_1B.__dict__, "layers": 64})
    assert estimate(deep, engine="unsloth", **QLORA).activations_gb == estimate(
        LLAMA_1B, engine="unsloth", **QLORA).activations_gb
    assert estimate(deep, engine="hf", **QLORA).activations_gb > estimate(LLAMA_1B, engine="hf", **QLORA).activations_gb


def test_fused_head_holds_one_tile_not_the_logits():
    """TRL's fused LM head (CUDA + Triton) projects at most 4096 positions x 32768 vocabulary entries at a time:
    the logits term stops growing with the sequence, unlike full logits."""
    import re
    from pathlib import Path

    import trl
    from trl.trainer import utils as trl_utils

    from edgetune.memory import HEAD_TILE_TOKENS, HEAD_TILE_VOCAB

    # the tile sizes the estimate assumes are TRL's own (the kernel module imports Triton, so it is read, not run)
    kernel = (Path(trl.__file__).parent / "kernels" / "chunked_logprob.py").read_text()
    assert int(re.search(r"^TOKEN_CHUNK_SIZE = (\d+)", kernel, re.M).group(1)) == HEAD_TILE_TOKENS
    assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == HEAD_TILE_VOCAB
    full = estimate(LLAMA_1B, engine="unsloth", **QLORA)
    fused = estimate(LLAMA_1B, engine="unsloth", fused_head=True, **QLORA)
    tokens = 2 * 1024
    assert fused.logits_gb * GB == pytest.approx(tokens * 32768 * 2 + tokens * 2048 * 4)
    assert full.logits_gb > 10 * fused.logits_gb
    long = estimate(LLAMA_1B, engine="unsloth", fused_head=True, **{**QLORA, "seq": 8192})
    assert long.logits_gb * GB == pytest.approx(4096 * 32768 * 2 + 2 * 8192 * 2048 * 4)


def test_plan_uses_the_engine_train_would_pick(monkeypatch):
    from edgetune.engines import choose

    monkeypatch.setattr(choose, "unsloth_available", lambda: True)
    c = cfg("gpu-8gb")
    assert choose.engine_name(c.train.engine, gpu(8), c) == "unsloth"
    assert choose.engine_name(c.train.engine, CPU, c) == "hf"
    assert choose.engine_name("hf", gpu(8), c) == "hf"
    dora = C.resolve(None, {"lora": {"use_dora": True}}, profile="gpu-8gb", check=False)
    assert choose.engine_name("auto", gpu(8), dora) == "hf"  # Unsloth does not train DoRA
    assert plan_on(c, gpu(8)).estimate.weights_gb < plan(c, SHAPE, gpu(8), choose_precision("auto", gpu(8)),
                                                          engine="hf").estimate.weights_gb


def test_cpu_peak_counts_the_checkpoint_mapped_while_loading():
    """On CPU the 16-bit checkpoint stays mapped until loading ends (a Llama-3.2-3B shape, measured: 6.4 GB of file
    pages beside 4.5 GB anonymous, above the training steps' 7.1 GB); the peak is the larger of the two moments, the
    budget is judged on the training step (file pages are the OS's to drop). On CUDA the file is host RAM, not VRAM."""
    llama3b = ModelShape(n_params=3_212_749_824, hidden=3072, layers=28, vocab=128256, intermediate=8192,
                         embed_params=128256 * 3072, tied=True, kv_hidden=1024)
    args = dict(r=16, n_targets=7, sequences=4, seq=106, load_in_4bit=True, checkpointing=False, compute_bytes=4)
    est = estimate(llama3b, device="cpu", **args)
    assert est.checkpoint_gb * GB == 2 * llama3b.n_params
    assert est.loading_gb == pytest.approx(est.checkpoint_gb + est.weights_gb + est.overhead_gb)
    assert est.peak_gb == est.loading_gb > est.total_gb
    assert est.describe().startswith(f"estimated peak RAM {est.loading_gb:.1f} GB while loading")
    small = estimate(SHAPE, device="cpu", **{**args, "seq": 2048})
    assert small.peak_gb == small.total_gb and "while loading" not in small.describe()
    assert estimate(llama3b, device="cuda", **args).loading_gb == 0


def test_grpo_estimate_follows_the_batch():
    """GRPO's per-device batch counts completions: fewer per step, less memory (the old estimate held
    num_generations sequences whatever the batch)."""
    one = plan_on(cfg("cpu", "grpo", batch_size=1, grad_accum=4), CPU)
    four = plan_on(cfg("cpu", "grpo", batch_size=4, grad_accum=1), CPU)
    assert (one.sequences, four.sequences) == (1, 4)
    assert one.estimate.total_gb < four.estimate.total_gb
    assert one.effective_batch == four.effective_batch == 4


def test_grpo_generation_cache_counts_when_it_is_the_peak():
    """TRL generates batch x accumulation completions at once (no gradients): their KV cache can outgrow a step."""
    c = cfg("gpu-24gb", "grpo", batch_size=1, grad_accum=64)
    c.method.max_completion_length = 1024
    p = plan_on(c, gpu(80))
    kv = 2 * SHAPE.layers * SHAPE.kv_hidden * 64 * p.seq_len * 2
    assert p.estimate.activations_gb * GB == pytest.approx(kv)


# --- the batch rules, checked against TRL --------------------------------------------------------------------------

def grpo_config(batch: int, accum: int, generations: int, tmp_path):
    from trl import GRPOConfig

    return GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
                      num_generations=generations, use_cpu=True, bf16=False, report_to="none")


@pytest.mark.parametrize("batch,accum,generations", [(1, 8, 4), (3, 1, 4), (6, 1, 4), (8, 1, 4), (2, 3, 4), (5, 2, 3)])
def test_grpo_batch_is_one_trl_accepts(batch, accum, generations, tmp_path):
    b, a = legal_batch(batch, accum, MethodRule(multiple=generations))
    assert (b * a) % generations == 0 and b <= max(batch, 1)
    if (batch * accum) % generations == 0:
        assert b * a == batch * accum and b == batch  # already valid: untouched
    args = grpo_config(b, a, generations, tmp_path)  # raises when TRL would refuse it
    assert args.generation_batch_size == b * a


def test_grpo_fit_keeps_the_effective_batch_and_whole_groups(tmp_path, monkeypatch):
    """A card too small for the asked batch: the batch shrinks, accumulation grows, batch x accumulation stays 8 (a
    multiple of num_generations) and TRL accepts the result. The old fit took 8 x 1 to 1 x 8, and the GRPO builder
    then rounded the batch back up to 4: 4 x 8 = 32 completions per step."""
    c = cfg("gpu-6gb", "grpo", batch_size=8, grad_accum=1, max_length=1024, gradient_checkpointing=False)
    c.method.max_completion_length = 768
    small = plan_on(c, gpu(2.5))
    assert small.batch < 8 and small.effective_batch == 8 and small.effective_batch % c.method.num_generations == 0
    assert any("does not fit" in text for text, _ in small.notes)
    assert grpo_config(small.batch, small.grad_accum, c.method.num_generations, tmp_path).generation_batch_size == 8
    c.train.batch_size, c.train.grad_accum = small.batch, small.grad_accum
    from edgetune.methods import grpo

    assert grpo_build_args(grpo, c, tmp_path, monkeypatch) == (small.batch, small.grad_accum)  # what TRL gets, unchanged


def grpo_build_args(grpo, c, tmp_path, monkeypatch):
    """The batch grpo.build_trainer hands to TRL (its trainer swapped for a recorder: no model needed)."""
    import trl

    from edgetune.engines.base import Precision

    seen = {}

    class Recorder:
        def __init__(self, args, **_):
            seen["args"] = args

        def remove_callback(self, _):
            pass

    monkeypatch.setattr(trl, "GRPOTrainer", Recorder)
    grpo.build_trainer(None, None, None, None, c, tmp_path, Precision("fp32", "cpu"), [])
    return seen["args"].per_device_train_batch_size, seen["args"].gradient_accumulation_steps


def test_fit_batch_keeps_an_effective_batch_that_halving_would_break():
    """6 x 1 halved gives 3 x 2 then 1 x 4 (4 examples per step, not 6); the divisors of 6 keep it."""
    sizes = []

    def make(b):
        sizes.append(b)
        return estimate(SHAPE, r=8, n_targets=7, sequences=b, seq=1024, load_in_4bit=False, checkpointing=False,
                        compute_bytes=4, device="cpu")

    b, a, _ = fit_batch(make, 6, 1, make(2).total_gb + 0.01)
    assert (b, a) == (2, 3) and sizes[1:] == [6, 3, 2]


@pytest.mark.parametrize("profile", C.list_profiles())
def test_kto_from_every_profile_gets_a_batch_trl_accepts(profile):
    """KTOTrainer raises at per_device_train_batch_size <= 1 (its KL term); gpu-6gb sets 1 x 8: 2 x 4 keeps 8."""
    c = cfg(profile, "kto")
    asked = c.train.batch_size * c.train.grad_accum
    hw = CPU if profile == "cpu" else gpu(float(profile.split("-")[1][:-2]))
    p = plan_on(c, hw)
    assert p.batch >= 2 and p.effective_batch == asked
    assert plan(c, None, hw, choose_precision("auto", hw)).batch >= 2  # no shape, no estimate: the rule still holds


def test_kto_rule_matches_trl():
    import inspect

    from trl.trainer import kto_trainer

    assert "per_device_train_batch_size <= 1" in inspect.getsource(kto_trainer.KTOTrainer.__init__)
    assert method_rule(C.MethodConfig(name="kto")).min_batch == 2
    assert legal_batch(1, 1, method_rule(C.MethodConfig(name="kto"))) == (2, 1)  # odd: rounded up, said in a note
    assert legal_batch(1, 3, method_rule(C.MethodConfig(name="kto"))) == (2, 2)


def test_kto_trains_at_a_profile_batch_of_one(tiny_model_dir, tmp_path):
    """gpu-6gb's batch 1 (here on CPU): TRL raised before the plan applied the rule; now it trains at 2 x 2."""
    from edgetune.train import train

    rows = [{"prompt": f"Say {i}", "completion": ("Arr! " if i % 2 else "No ") + str(i), "label": bool(i % 2)}
            for i in range(12)]
    data = tmp_path / "kto.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    c = C.resolve(None, {"model": {"ref": str(tiny_model_dir), "load_in_4bit": False}, "data": {"path": str(data)},
                         "run_dir": str(tmp_path / "run"), "method": {"name": "kto"},
                         "train": {"max_steps": 1, "batch_size": 1, "grad_accum": 4}}, profile="cpu")
    events = Collect()
    assert train(c, events).steps == 1
    saved = C.resolve(tmp_path / "run" / "config.toml", check=False)
    assert (saved.train.batch_size, saved.train.grad_accum) == (2, 2)
    assert any("KTO needs at least 2" in n.text for n in events.of(Note))
    recorded = json.loads((tmp_path / "run" / "report.json").read_text())["memory_plan"]  # the plan beside the run
    assert (recorded["method"], recorded["batch"], recorded["grad_accum"], recorded["device"]) == ("kto", 2, 2, "cpu")
    assert recorded["seq_len_from_data"] and recorded["peak_gb"] >= recorded["step_gb"] > 0


def test_dpo_counts_chosen_and_rejected():
    sft, dpo = plan_on(cfg("cpu", "sft"), CPU), plan_on(cfg("cpu", "dpo"), CPU)
    assert dpo.sequences == 2 * sft.sequences and dpo.estimate.activations_gb == pytest.approx(2 * sft.estimate.activations_gb)


def test_divisors():
    assert divisors(12) == [1, 2, 3, 4, 6, 12] and divisors(1) == [1]


# --- one plan for the CLI and the TUI --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", C.METHODS)
@pytest.mark.parametrize("profile,hw", [("cpu", CPU), ("gpu-6gb", gpu(6)), ("gpu-8gb", gpu(3))])
def test_cli_and_tui_get_the_same_plan(tiny_model_dir, tmp_path, method, profile, hw):
    """The TUI plans from the profile and its settings inputs; `edgetune train` from the resolved config and the
    model's config.json. Same inputs, same plan (batch, accumulation, estimate and every note)."""
    from edgetune.tui.screens.setup import plan_for
    from transformers import AutoConfig

    from edgetune.train import plan_memory

    shape = ModelShape.from_config(AutoConfig.from_pretrained(tiny_model_dir))
    settings = {"train": {"max_steps": 10, "learning_rate": 2e-4, "batch_size": 3, "max_length": 4096},
                "lora": {"r": 8}}
    tui = plan_for(profile, settings, method, shape, hw)
    c = C.resolve(None, {**settings, "method": {"name": method}, "model": {"ref": str(tiny_model_dir)},
                         "data": {"path": "d.jsonl"}}, profile=profile)
    events = Collect()
    cli = plan_memory(c, str(tiny_model_dir), hw, choose_precision(c.train.precision, hw), events)
    assert cli == tui
    assert [(n.text, n.level) for n in events.of(Note)] == tui.notes
    assert (c.train.batch_size, c.train.grad_accum) == (cli.batch, cli.grad_accum)  # the CLI applies it


def test_cpt_plans_like_sft_at_full_blocks():
    """cpt packs raw text into max_length blocks: the same batch rule and estimate as SFT at max_length."""
    sft, cpt = plan_on(cfg("cpu", "sft"), CPU), plan_on(cfg("cpu", "cpt"), CPU)
    assert (cpt.batch, cpt.grad_accum, cpt.seq_len) == (sft.batch, sft.grad_accum, sft.seq_len)
    assert cpt.estimate.total_gb == pytest.approx(sft.estimate.total_gb)
    assert "raw text packed" in cpt.notes[-1][0]
