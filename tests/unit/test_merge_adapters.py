"""merge-adapters: two adapters trained on disjoint toy tasks (a: -> "Arr", b: -> "Hello") merged by PEFT's weighted
merging into a new run that keeps both behaviours measurably (answer loss far below the base on both tasks, and
below each single adapter on the other's task), and that `edgetune merge` and export take like any run."""
import json
import shutil

import pytest

from edgetune import config as C
from edgetune.errors import ConfigError, RunDirError
from edgetune.evaluate import evaluate_targets, load_eval_rows, targets_for
from edgetune.merge_adapters import merge_adapters
from edgetune.train import train
from shared_data import write_rows

WORDS = "fox dog sea wind water Paris code tea cat sun moon ship rope gold map star bird fish tree rock".split()
TASKS = {"A": ("a", "Arr"), "B": ("b", "Hello")}


@pytest.fixture(scope="module")
def peaked_model(tmp_path_factory, tiny_tokenizer_dir):
    import tinymodels

    # a larger init gives peaked logits, so 40 steps learn each task to a clear margin
    return tinymodels.build_tiny_model(tmp_path_factory.mktemp("peaked"), tiny_tokenizer_dir, initializer_range=0.3)


@pytest.fixture(scope="module")
def task_runs(peaked_model, tmp_path_factory):
    """runs/A and runs/B (each task's rows only), and eval files on held-out words."""
    root = tmp_path_factory.mktemp("tasks")
    out = {}
    for name, (prefix, answer) in TASKS.items():
        rows = [{"messages": [{"role": "user", "content": f"{prefix}: {w}"}, {"role": "assistant", "content": answer}]}
                for w in WORDS[:14]]
        write_rows(root / f"eval{name}.jsonl", [{"prompt": f"{prefix}: {w}", "answer": answer} for w in WORDS[14:]])
        cfg = C.resolve(None, {"model": {"ref": str(peaked_model), "load_in_4bit": False},
                               "data": {"path": str(write_rows(root / f"{name}.jsonl", rows))},
                               "run_dir": str(root / f"run{name}"), "lora": {"r": 8, "alpha": 16},
                               "train": {"max_steps": 40, "learning_rate": 1e-2}}, profile="cpu")
        train(cfg)
        out[name] = root / f"run{name}"
    out["eval"] = {name: load_eval_rows(root / f"eval{name}.jsonl") for name in TASKS}
    return out


def scores(run, task_runs) -> dict:
    """{label: {task: (task score, answer loss)}} for the run's base and its adapter."""
    out = {}
    for task, rows in task_runs["eval"].items():
        for r in evaluate_targets(targets_for(str(run)), rows, max_tokens=4):
            label = "base" if r["label"].startswith("base ") else "tuned"
            out.setdefault(label, {})[task] = (r["task_score"], r["heldout_loss"])
    return out


@pytest.fixture(scope="module")
def single(task_runs):
    return {name: scores(task_runs[name], task_runs) for name in TASKS}


@pytest.mark.parametrize("method, weights", [("linear", "0.5,0.5"), ("ties", "1,1"), ("dare_ties", "1,1"), ("cat", "1,1")])
def test_merged_adapter_keeps_both_tasks(method, weights, task_runs, single, tmp_path, capsys):
    from edgetune.cli import main

    out = tmp_path / f"merged-{method}"
    assert main(["merge-adapters", str(task_runs["A"]), str(task_runs["B"]), "--method", method, "--weights", weights,
                 "--out", str(out)]) == 0
    got = scores(out, task_runs)
    base = got["base"]
    with capsys.disabled():
        print(f"\n{method} {weights}: " + "  ".join(
            f"task {t}: base {base[t][0]:.2f}/{base[t][1]:.2f}, A {single['A']['tuned'][t][0]:.2f}/"
            f"{single['A']['tuned'][t][1]:.2f}, B {single['B']['tuned'][t][0]:.2f}/{single['B']['tuned'][t][1]:.2f}, "
            f"merged {got['tuned'][t][0]:.2f}/{got['tuned'][t][1]:.2f}" for t in TASKS) + "  (score/answer loss)")
    for task, other in (("A", "B"), ("B", "A")):
        assert single[task]["tuned"][task][0] == 1.0  # each adapter learned its task
        merged_loss = got["tuned"][task][1]
        assert merged_loss < 0.3 * base[task][1], (method, task, got)  # the behaviour survives the merge ...
        assert merged_loss < single[other]["tuned"][task][1], (method, task)  # ... which the other adapter lacks
    report = json.loads((out / "report.json").read_text())["merge_adapters"]
    assert report["method"] == method and report["sources"] == [str(task_runs["A"]), str(task_runs["B"])]
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == (16 if method == "cat" else 8) and adapter["lora_alpha"] == adapter["r"]


def test_merged_run_goes_through_merge_and_export(task_runs, tmp_path):
    from edgetune.export.gguf_export import export_gguf
    from edgetune.merge import merge

    out = tmp_path / "merged-run"
    merge_adapters([task_runs["A"], task_runs["B"]], out, "cat", [1.0, 1.0])
    assert (out / "calibration.jsonl").is_file() and (out / "adapter" / "tokenizer.json").is_file()
    calibration = (out / "calibration.jsonl").read_text()
    assert "a: " in calibration and "b: " in calibration  # both runs' texts for the importance matrix
    result = merge(out)
    assert result.max_logit_diff < 0.05, result
    export = export_gguf(out, ["q8_0"])
    assert export.files and all(r["passed"] for r in export.results)


def _copy_run(src, dst, edit_adapter=None, edit_config=None):
    shutil.copytree(src, dst)
    if edit_adapter:
        path = dst / "adapter" / "adapter_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **edit_adapter}))
    if edit_config:
        path = dst / "config.toml"
        path.write_text(path.read_text().replace(*edit_config))
    return dst


def test_refusals_come_before_any_loading(task_runs, tiny_model_dir, peaked_model, tmp_path):
    a, b = task_runs["A"], task_runs["B"]
    other_rank = _copy_run(b, tmp_path / "r4", edit_adapter={"r": 4})
    with pytest.raises(ConfigError, match="equal LoRA ranks") as err:
        merge_adapters([a, other_rank], tmp_path / "x", "linear")
    assert "cat or svd" in err.value.hint
    other_targets = _copy_run(b, tmp_path / "t", edit_adapter={"target_modules": ["q_proj", "v_proj"]})
    with pytest.raises(ConfigError, match="same target modules"):
        merge_adapters([a, other_targets], tmp_path / "x", "ties")
    other_base = _copy_run(b, tmp_path / "base", edit_config=(str(peaked_model), str(tiny_model_dir)))
    with pytest.raises(ConfigError, match="different base models"):
        merge_adapters([a, other_base], tmp_path / "x", "cat")
    with pytest.raises(ConfigError, match="at least two runs"):
        merge_adapters([a], tmp_path / "x", "linear")
    with pytest.raises(ConfigError, match="--density"):
        merge_adapters([a, b], tmp_path / "x", "ties", density=1.5)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(RunDirError, match="not empty"):
        merge_adapters([a, b], tmp_path / "taken", "linear")
    assert not (tmp_path / "x").exists()


def test_cat_is_the_exact_weighted_sum_of_the_updates_with_rslora_too(task_runs, tmp_path):
    """cat keeps every update exactly (scales folded in); an rsLoRA source (scale alpha/sqrt(r)) included."""
    from edgetune.merge_stream import read_adapter

    rs = _copy_run(task_runs["B"], tmp_path / "rs", edit_adapter={"use_rslora": True})
    out = tmp_path / "cat"
    merge_adapters([task_runs["A"], rs], out, "cat", [0.7, 0.4])
    a, b, merged = (read_adapter(d / "adapter") for d in (task_runs["A"], rs, out))
    assert set(merged) == set(a) == set(b)

    def delta(d):
        return d.scale * d.b @ d.a

    for name in merged:
        want = 0.7 * delta(a[name]) + 0.4 * delta(b[name])
        assert (delta(merged[name]) - want).abs().max() < 1e-5 * want.abs().max(), name
