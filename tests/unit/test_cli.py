"""The CLI: user errors print a titled message (no traceback) and exit non-zero; --help texts come from the config."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgetune.cli import main

BAD = Path(__file__).parent.parent / "data" / "bad"
GOOD = Path(__file__).parent.parent / "data" / "good"


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("path", sorted(BAD.iterdir()), ids=lambda p: p.name)
def test_every_bad_file_fails_validate_with_file_line_and_fix(path, tiny_model_dir, capsys):
    code, text = run_cli(capsys, "validate", "--data", path, "--model", tiny_model_dir)
    assert code == 1
    assert "Traceback" not in text
    flat = " ".join(text.split())  # rich wraps long lines
    assert path.name in flat
    # Row problems carry file:line (or "row N"); whole-file problems say what the file is and give a hint.
    assert ("fix:" in flat and any(f"{path.name}:{n}" in flat or f"row {n}" in flat for n in range(1, 40))) or "hint:" in flat


@pytest.mark.parametrize("name", ["messages.jsonl", "sharegpt.jsonl", "alpaca.csv", "messages.parquet"])
def test_good_files_validate(name, tiny_model_dir, capsys):
    code, text = run_cli(capsys, "validate", "--data", GOOD / name, "--model", tiny_model_dir)
    assert code == 0, text
    assert "valid examples  3" in text and "masked fraction" in text and "usable" in text


def test_skipped_rows_can_be_accepted(tiny_model_dir, capsys):
    code, text = run_cli(capsys, "validate", "--data", BAD / "unknown_role.jsonl", "--model", tiny_model_dir, "--allow-skips")
    assert code == 0 and "unknown_role.jsonl:2" in text and "write 'assistant'" in text


def test_config_errors_are_titled_not_tracebacks(tmp_path, capsys):
    bad = tmp_path / "c.toml"
    bad.write_text("[train]\nmax_seq_length = 4\n")
    code, text = run_cli(capsys, "train", "--config", bad, "--data", "x.jsonl", "--run-dir", tmp_path / "r")
    assert code == 1
    assert "Invalid configuration" in text and "did you mean `train.max_length`" in text and "Traceback" not in text


def test_missing_model_dir_is_a_model_error(tmp_path, chat_jsonl, capsys):
    code, text = run_cli(capsys, "train", "--model", tmp_path / "nope", "--data", chat_jsonl, "--run-dir", tmp_path / "r")
    assert code == 1 and "Cannot load model" in text and "Traceback" not in text


def test_resume_needs_run_dir(capsys):
    code, text = run_cli(capsys, "train", "--resume")
    assert code == 1 and "--resume needs --run-dir" in text


def test_help_uses_config_docs():
    out = subprocess.run([sys.executable, "-m", "edgetune.cli", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    flat = " ".join(out.stdout.split())
    assert "Optimizer steps to run" in flat and "--resume" in flat and "--profile" in flat


def test_console_script_exits_nonzero_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgetune.cli", "validate", "--data", str(tmp_path / "missing.jsonl"),
                          "--model", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr


def test_doctor_lists_the_stack(capsys):
    code, text = run_cli(capsys, "doctor")
    for name in ("torch", "bitsandbytes", "llama.cpp binding", "unsloth", "free disk"):
        assert name in text
    assert code == 0 and "quantize binding present" in text


def test_doctor_names_the_fix_for_a_broken_llama_cpp_binding(tmp_path):
    """A binding whose shared library does not load (seen as a missing libgomp): doctor fails and prints the pip
    command for a prebuilt wheel (no compiler), instead of the user meeting it at export time."""
    broken = tmp_path / "llama_cpp"
    broken.mkdir()
    (broken / "__init__.py").write_text(
        "raise OSError('libgomp.so.1: cannot open shared object file: No such file or directory')\n")
    out = subprocess.run([sys.executable, "-m", "edgetune.cli", "doctor"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "400"})
    flat = " ".join(out.stdout.split())
    assert out.returncode == 1, out.stdout + out.stderr
    assert "does not load (OSError: libgomp.so.1" in flat
    assert "--only-binary llama-cpp-python llama-cpp-python==0.3.36 --extra-index-url" in flat
    assert "https://abetlen.github.io/llama-cpp-python/whl/cpu" in flat


@pytest.mark.parametrize("args", [["trian"], ["train", "--max-steps", "x"]])
def test_usage_errors_exit_2_without_traceback(args):
    out = subprocess.run([sys.executable, "-m", "edgetune.cli", *args], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "Error:" in out.stderr


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "edgetune.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and all(c in out.stdout for c in ("train", "export", "eval", "chat", "tui"))


PREF = Path(__file__).parent.parent / "data" / "preference"


@pytest.mark.parametrize("method, rows, needle", [
    ("dpo", None, "dpo_bad.jsonl:3"),
    ("kto", ['{"prompt": "Hi", "completion": "Arr!", "label": true}', '{"prompt": "Hi", "completion": "No", "label": "yes"}'],
     "rows.jsonl:2: `label` is"),
    ("grpo", ['{"prompt": "1+1?", "answer": "2"}', '{"prompt": "2+2?", "answer": ""}', '{"prompt": [], "answer": "4"}'],
     "rows.jsonl:2: `answer`"),
])
def test_validate_method_rows(method, rows, needle, tiny_model_dir, tmp_path, capsys):
    path = PREF / "dpo_bad.jsonl"
    if rows:
        path = tmp_path / "rows.jsonl"
        path.write_text("\n".join(rows) + "\n")
    code, text = run_cli(capsys, "validate", "--method", method, "--data", path, "--model", tiny_model_dir)
    flat = " ".join(text.split())
    assert code == 1 and needle in flat and "fix:" in flat and "Traceback" not in text
    good = PREF / f"{method}_good.jsonl"
    assert run_cli(capsys, "validate", "--method", method, "--data", good, "--model", tiny_model_dir)[0] == 0


def test_validate_says_up_front_when_the_model_cannot_be_exported(tmp_path, capsys, tiny_tokenizer_dir):
    """Before any training: a model edgetune cannot export to GGUF fails validate (naming the families it can),
    and `--gguf none` checks the data alone."""
    from families import build_lfm2
    from shared_data import write_chat_jsonl

    model, data = build_lfm2(tmp_path / "lfm2", tiny_tokenizer_dir), write_chat_jsonl(tmp_path)
    code, text = run_cli(capsys, "validate", "--data", data, "--model", model)
    flat = " ".join(text.split())
    assert code == 1 and "GGUF no" in flat and "lfm2" in flat and "export.gguf = []" in flat
    assert "Traceback" not in text
    code, text = run_cli(capsys, "validate", "--data", data, "--model", model, "--gguf", "none")
    assert code == 0 and "usable" in text


def test_validate_folds_the_system_prompt_for_a_template_that_rejects_it(tmp_path, capsys):
    """Gemma 2's template raises on a system message; validate says it folds it into the first user turn.
    The model is a tiny Gemma 3, whose tokenizer has <end_of_turn> as a special token, as Gemma 2's does."""
    from families import build_family
    from fetched import require_asset
    from shared_data import write_rows

    tiny_model_dir = build_family("gemma3", tmp_path / "gemma")

    template = require_asset("llama.cpp/templates/google-gemma-2-2b-it.jinja")
    data = write_rows(tmp_path / "chat.jsonl", [{"messages": [
        {"role": "system", "content": "Talk like a pirate."}, {"role": "user", "content": f"Say {i}."},
        {"role": "assistant", "content": f"Arr! {i}."}]} for i in range(4)])
    code, text = run_cli(capsys, "validate", "--data", data, "--model", tiny_model_dir, "--chat-template", template)
    flat = " ".join(text.split())
    assert code == 0 and "Traceback" not in text and "folded into the first user turn" in flat, text
