"""`edgetune export`: offline (network namespace / blocked sockets), atomic under SIGKILL, verified, Modelfile."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from shared_data import write_chat_jsonl
from edgetune import config as C
from edgetune.train import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    """A trained tiny run (adapter only: export merges first)."""
    root = tmp_path_factory.mktemp("export_run")
    data = write_chat_jsonl(root)
    run = root / "run"
    cfg = C.resolve(None, {"model": {"ref": str(tiny_model_dir), "load_in_4bit": False}, "data": {"path": str(data)},
                           "run_dir": str(run), "name": "tiny", "train": {"max_steps": 3}}, profile="cpu")
    train(cfg)
    return run


def fresh_copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    cfg = (dst / "config.toml").read_text().replace(str(run), str(dst))
    (dst / "config.toml").write_text(cfg)
    return dst


def edgetune(*args):
    return [sys.executable, "-m", "edgetune.cli", *map(str, args)]


def test_export_merges_quantizes_verifies_and_writes_modelfile(tiny_run, tmp_path):
    from edgetune.export.gguf_export import export_gguf

    run = fresh_copy(tiny_run, tmp_path)
    result = export_gguf(run, ["f16", "q8_0"])
    names = sorted(p.name for p in (run / "gguf").glob("*.gguf") if "imatrix" not in p.name)
    assert names == ["tiny.F16.gguf", "tiny.Q8_0.gguf"]
    assert (run / "merged" / "config.json").is_file()
    report = json.loads((run / "report.json").read_text())
    f16 = next(r for r in report["export"]["files"] if r["type"] == "f16")
    assert f16["mean_kld"] <= 1e-4 and f16["token_ids_identical"] and not f16["fidelity_failures"]
    assert f16["stops_at_eos"] is False and "stop" in " ".join(f16["failures"])  # a random model never stops
    modelfile = (run / "gguf" / "Modelfile").read_text()
    assert "FROM ./tiny.Q8_0.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert (run / "report.md").is_file()
    assert [p.name for p in result.files] == ["tiny.F16.gguf", "tiny.Q8_0.gguf"]
    assert not list((run / "gguf").glob(".*.tmp"))


def test_f16_is_an_intermediate_unless_asked(tiny_run, tmp_path):
    from edgetune.export.gguf_export import export_gguf

    run = fresh_copy(tiny_run, tmp_path)
    export_gguf(run, ["q8_0"], imatrix=False)
    assert sorted(p.name for p in (run / "gguf").glob("*.gguf")) == ["tiny.Q8_0.gguf"]


def test_unknown_type_is_a_clear_error(tiny_run, tmp_path, capsys):
    from edgetune.cli import main

    code = main(["export", str(fresh_copy(tiny_run, tmp_path)), "--gguf", "q4_k_x"])
    err = capsys.readouterr().err
    assert code == 1 and "unknown GGUF type 'q4_k_x'" in err and "Traceback" not in err


def _no_network_prefix() -> list[str]:
    """`unshare -n` (root) or `unshare -rn` (an unprivileged user namespace): a process with no route out."""
    if shutil.which("unshare") is None:
        pytest.fail("util-linux `unshare` is missing: install it (apt install util-linux) to run this check")
    return ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]


def test_export_in_a_network_namespace(tiny_run, tmp_path):
    """No network at all (only a down loopback): the whole export still works."""
    run = fresh_copy(tiny_run, tmp_path)
    prefix = _no_network_prefix()
    probe = subprocess.run([*prefix, sys.executable, "-c",
                            "import socket; s=socket.socket(); s.settimeout(1); print(s.connect_ex(('1.1.1.1', 443)))"],
                           capture_output=True, text=True)
    assert probe.returncode == 0 and probe.stdout.strip() != "0", "the namespace must have no route out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_HUB_OFFLINE")}  # prove it needs no flag
    out = subprocess.run([*prefix, *edgetune("export", run, "--gguf", "q4_k_m")], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run / "gguf" / "tiny.Q4_K_M.gguf").is_file()


def test_export_with_sockets_blocked(tiny_run, tmp_path, monkeypatch):
    """Same guarantee where namespaces are unavailable: any connection attempt fails the test."""
    from edgetune.export.gguf_export import export_gguf

    def refuse(*a, **k):
        raise AssertionError(f"network access attempted: {a}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    run = fresh_copy(tiny_run, tmp_path)
    export_gguf(run, ["q8_0"])
    assert (run / "gguf" / "tiny.Q8_0.gguf").is_file()


@pytest.fixture(scope="module")
def big_run(tmp_path_factory, tiny_tokenizer_dir):
    """A run whose merged model is ~90 MB in F16, so a kill can land mid-write."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("big_run")
    run = root / "run"
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=1024, intermediate_size=2816,
                                         num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=4,
                                         tie_word_embeddings=True, eos_token_id=tok.eos_token_id))
    model.to(torch.float16).save_pretrained(run / "merged")
    tok.save_pretrained(run / "merged")
    cfg = C.RunConfig(name="big", run_dir=str(run))
    cfg.save(run / "config.toml")
    return run


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_export_leaves_no_file_at_the_final_path(big_run, sig):
    gguf_dir = big_run / "gguf"
    shutil.rmtree(gguf_dir, ignore_errors=True)
    proc = subprocess.Popen(edgetune("export", big_run, "--gguf", "f16"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(gguf_dir.glob(".*.tmp")):
        time.sleep(0.002)
    assert list(gguf_dir.glob(".*.tmp")), "the converter writes to a temp file first"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not list(gguf_dir.glob("*.gguf")), "nothing at a final path"
    if sig == signal.SIGTERM:
        assert not list(gguf_dir.glob(".*.tmp")), "a catchable signal also removes the temp file"


def test_cli_onnx_export_then_chat_and_eval(tiny_run, tmp_path, capsys):
    """`edgetune export --onnx`, `chat --backend onnx` and an eval row per ONNX variant, through the CLI."""
    from edgetune.cli import main

    run = fresh_copy(tiny_run, tmp_path)
    assert main(["export", str(run), "--onnx", "fp32"]) == 0
    assert (run / "onnx" / "fp32").is_dir() and not list(run.glob("gguf/*.gguf")), "--onnx alone exports no GGUF"
    (fp32,) = json.loads((run / "report.json").read_text())["onnx"]["variants"]
    assert fp32["mean_kld"] <= 1e-4 and not fp32["fidelity_failures"]
    capsys.readouterr()
    assert main(["chat", str(run), "--backend", "onnx", "--prompt", "hello", "--max-tokens", "4"]) == 0
    rows = tmp_path / "eval.jsonl"
    rows.write_text('{"prompt": "Say 1", "answer": "Arr! 1"}\n')
    assert main(["eval", str(run), "--data", str(rows), "--max-tokens", "4"]) == 0
    assert "onnx fp32" in capsys.readouterr().out


def test_auto_with_task_scores(tiny_run, tmp_path, capsys):
    """`--gguf auto --eval-data`: every candidate is measured and scored; the table has a task column."""
    from edgetune.cli import main

    run = fresh_copy(tiny_run, tmp_path)
    rows = tmp_path / "eval.jsonl"
    rows.write_text('{"prompt": "Say 1", "answer": "Arr! 1"}\n{"prompt": "Say 2", "answer": "Arr! 2"}\n')
    assert main(["export", str(run), "--gguf", "auto", "--max-kld", "10", "--eval-data", str(rows),
                 "--match", "prefix:1", "--no-imatrix"]) == 0
    captured = capsys.readouterr()
    assert "task" in captured.out and "auto: kept" in captured.out
    files = json.loads((run / "report.json").read_text())["export"]["files"]
    assert all("task_score" in r for r in files) and len(files) == 8  # F16 + the 7 auto candidates
    kept = [p.name for p in (run / "gguf").glob("*.gguf")]
    # A random model never stops at EOS, so no candidate qualifies: the lowest-KLD one is kept, with a warning.
    best = min((r for r in files if r["type"] != "f16"), key=lambda r: r["mean_kld"])
    assert kept == [best["file"]] and "no candidate stayed under" in " ".join(captured.err.split())


def test_choose_auto_keeps_the_smallest_faithful_file():
    """`--gguf auto`: the smallest candidate under the KLD budget that also stops at EOS wins."""
    from edgetune.export.gguf_export import choose_auto

    def r(qtype, mb, kld, stops=True):
        return {"type": qtype, "size_bytes": mb * 1_000_000, "mean_kld": kld, "stops_at_eos": stops}

    results = [r("f16", 270, 0.0), r("q8_0", 145, 0.004), r("q6_k", 120, 0.01), r("q4_k_m", 105, 0.04),
               r("q3_k_m", 90, 0.2), r("q2_k", 80, 0.03, stops=False)]
    assert choose_auto(results, max_kld=0.05) == "q4_k_m"  # q2_k is smaller and under budget but never stops
    assert choose_auto(results, max_kld=0.005) == "q8_0"
    assert choose_auto(results, max_kld=0.001) is None  # F16 is never an auto candidate
