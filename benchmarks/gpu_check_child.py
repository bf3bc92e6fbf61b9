"""One step of benchmarks/gpu_check.py in its own process, through edgetune's CLI; writes its numbers as JSON.

    gpu_check_child.py RESULT.json train MODEL ENGINE [edgetune train options] [--labels] [--cap-gb N]
    gpu_check_child.py RESULT.json merge RUN_DIR [--cap-gb N]
    gpu_check_child.py RESULT.json export RUN_DIR          (F16 GGUF; llama.cpp does not travel, so not verified)

--cap-gb caps this process's CUDA memory (torch's per-process memory fraction) to emulate a smaller card.
--labels records the first batch the trainer sees and checks that no user or system text carries loss.
Imports nothing but torch before the CLI runs, so the CLI's own import order (unsloth first) is what is measured.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import json
import resource
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class RepoLayout(importlib.abc.MetaPathFinder):
    """edgetune.export / .tui / .profiles from this checkout's top-level folders, as the installed package has them."""
    FOLDERS = {"edgetune.export": "export", "edgetune.tui": "tui", "edgetune.profiles": "profiles"}

    def find_spec(self, name, path=None, target=None):
        folder = self.FOLDERS.get(name)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(name, REPO / folder / "__init__.py",
                                                      submodule_search_locations=[str(REPO / folder)])


def take(args: list[str], flag: str, has_value: bool = True):
    if flag not in args:
        return None
    i = args.index(flag)
    value = args[i + 1] if has_value else True
    del args[i:i + (2 if has_value else 1)]
    return value


def cap_cuda(gb: float | None) -> None:
    import torch

    if gb and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gb * 2**30 / torch.cuda.get_device_properties(0).total_memory)


def peaks() -> dict:
    import torch

    out = {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}
    if torch.cuda.is_available():
        out["peak_vram_gb"] = round(torch.cuda.max_memory_reserved() / 1e9, 2)
        out["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        # what the card holds beyond torch's allocator (CUDA context, kernels, libraries' own buffers such as
        # bitsandbytes' paged optimizer): the plan's runtime term (the GPU is this process's alone)
        free, total = torch.cuda.mem_get_info()
        out["outside_torch_gb"] = round((total - free - torch.cuda.memory_reserved()) / 1e9, 2)
    return out


def record_labels(seen: dict) -> None:
    """Wrap the trainer edgetune builds so the first batch compute_loss receives is kept."""
    from edgetune import train as T

    real = T.build_trainer

    def build(model, tokenizer, *args, **kwargs):
        trainer = real(model, tokenizer, *args, **kwargs)
        compute_loss = trainer.compute_loss

        def recording(model, inputs, *a, **k):
            if "inputs" not in seen:
                seen["inputs"] = {k: v.detach().cpu() for k, v in inputs.items() if hasattr(v, "detach")}
            return compute_loss(model, inputs, *a, **k)

        trainer.compute_loss, seen["tokenizer"] = recording, tokenizer
        return trainer

    T.build_trainer = build


def labels_ok(seen: dict, data: Path) -> tuple[bool, str]:
    """No prompt text among the tokens with labels, and every row trains some reply tokens."""
    tok, inputs = seen["tokenizer"], seen["inputs"]
    prompts = set()
    for line in data.read_text(encoding="utf-8").splitlines():
        for m in json.loads(line).get("messages", []):
            if m["role"] != "assistant" and len(m["content"]) > 12:
                prompts.add(m["content"])
    for ids, labels in zip(inputs["input_ids"], inputs["labels"]):
        trained = tok.decode(ids[labels != -100])
        if not trained.strip():
            return False, "a row trains no token"
        leaked = [p for p in prompts if p in trained]
        if leaked:
            return False, f"prompt text carries loss: {leaked[0][:60]!r}"
    kept = float((inputs["labels"] != -100).float().mean())
    return True, f"{kept:.2f} of the batch's tokens carry loss, none of them prompt text"


def train_numbers(run_dir: Path, cap: float | None) -> dict:
    from transformers import AutoConfig

    from edgetune import engines, hardware
    from edgetune.memory import ModelShape, plan
    from edgetune.runs import load_run_config

    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [x["tokens_per_s"] for x in lines if x.get("event") == "TrainStep" and x.get("tokens_per_s")]
    cfg = load_run_config(run_dir)
    # the plan training printed and recorded (at the data's longest rows); older runs: recomputed at max_length
    recorded = json.loads((run_dir / "report.json").read_text()).get("memory_plan", {}) \
        if (run_dir / "report.json").is_file() else {}
    plan_gb, terms = recorded.get("peak_gb"), recorded.get("terms", {})
    if plan_gb is None:
        hw = hardware.detect(run_dir)
        if cap:
            hw.vram_gb = cap
        shape = ModelShape.from_config(AutoConfig.from_pretrained(cfg.model.ref))
        estimate = plan(cfg, shape, hw, engines.choose_precision(cfg.train.precision, hw)).estimate
        plan_gb = estimate.total_gb if estimate else None
    return {"tokens_per_s": round(statistics.median(rates[1:] or rates), 1) if rates else None,
            "steps": sum(x.get("event") == "TrainStep" for x in lines), "batch": cfg.train.batch_size,
            "max_length": cfg.train.max_length, "plan_gb": round(plan_gb, 2) if plan_gb is not None else None,
            "plan_seq_len": recorded.get("seq_len"), "method": cfg.method.name,
            "plan_runtime_gb": terms.get("overhead")}


def main() -> int:
    sys.meta_path.insert(0, RepoLayout())
    sys.path.insert(0, str(REPO))
    result_file, command, target, *rest = sys.argv[1:]
    cap = float(take(rest, "--cap-gb") or 0) or None
    labels = take(rest, "--labels", has_value=False)
    cap_cuda(cap)
    from edgetune.cli import main as cli

    result: dict = {"command": command}
    if command == "train":
        engine, *rest = rest
        run_dir = Path(result_file).with_suffix("")
        seen: dict = {}
        if labels:
            record_labels(seen)
        rc = cli(["train", "--model", target, "--engine", engine, "--run-dir", str(run_dir), "--4bit",
                  "--gguf", "none", *rest])
        result.update(rc_cli=rc, run_dir=str(run_dir), engine=engine, **peaks())
        if rc == 0:
            result.update(train_numbers(run_dir, cap))
            result["unsloth_imported"] = "unsloth" in sys.modules
        if labels and "inputs" in seen:
            result["labels_ok"], result["labels_note"] = labels_ok(seen, Path(rest[rest.index("--data") + 1]))
    elif command == "merge":
        rc = cli(["merge", target])
        result.update(rc_cli=rc, **peaks())
    else:
        from edgetune.export.gguf_export import export_gguf

        out = export_gguf(Path(target), ["f16"], verify=False)
        result.update(rc_cli=0, files={p.name: p.stat().st_size for p in out.files}, **peaks())
    Path(result_file).write_text(json.dumps(result))
    return 0 if result.get("rc_cli") == 0 and result.get("labels_ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
