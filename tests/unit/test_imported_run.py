"""Runs trained elsewhere come back: a plain PEFT adapter (not made by edgetune) or a merged HF folder becomes a run
directory that `export`, `eval` and `chat` merge, export and verify as usual."""
import json
import shutil

import pytest

from edgetune.cli import main


def plain_peft_adapter(base_dir, out):
    """What a user's own script on a rented box writes: PEFT's get_peft_model + save_pretrained, no tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                      task_type="CAUSAL_LM"))
    with torch.no_grad():  # PEFT starts lora_B at zero; a trained adapter has moved it
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    model.save_pretrained(out)
    return out, model


def test_plain_peft_adapter_exports_and_verifies(tiny_model_dir, tmp_path, capsys):
    adapter, peft_model = plain_peft_adapter(tiny_model_dir, tmp_path / "their_adapter")
    assert not (adapter / "tokenizer_config.json").exists()
    run = tmp_path / "back_home"
    code = main(["export", "--model", str(tiny_model_dir), "--adapter", str(adapter), "--run-dir", str(run),
                 "--gguf", "q8_0"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    report = json.loads((run / "report.json").read_text())
    assert report["imported"]["kind"] == "adapter"
    assert report["merge"]["max_logit_diff"] < 1e-2  # the merged model is base + their adapter
    files = {r["type"]: r for r in report["export"]["files"]}
    assert not files["f16"]["fidelity_failures"], files["f16"]
    assert files["f16"]["mean_kld"] < 1e-4 and files["f16"]["token_ids_identical"]
    assert (run / "gguf" / f"{run.name}.Q8_0.gguf").is_file()

    # the merged weights are what PEFT itself computes (merge_and_unload), not merely self-consistent
    import torch
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 9, 13, 20, 7]])
    want = peft_model.merge_and_unload()(ids).logits
    got = AutoModelForCausalLM.from_pretrained(run / "merged", dtype=torch.float32)(ids).logits
    assert (want - got).abs().max() < 5e-2  # merged is saved in fp16

    # chat with the same sources reuses the run directory (and the export in it)
    code = main(["chat", "--model", str(tiny_model_dir), "--adapter", str(adapter), "--run-dir", str(run),
                 "-p", "hello", "--max-tokens", "4"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert "reusing it" in captured.err + captured.out


def test_merged_folder_exports_and_evals(tiny_model_dir, tmp_path, capsys):
    merged_elsewhere = tmp_path / "their_merged"
    shutil.copytree(tiny_model_dir, merged_elsewhere)
    run = tmp_path / "merged_home"
    assert main(["export", "--model", str(merged_elsewhere), "--run-dir", str(run), "--gguf", "f16"]) == 0, \
        capsys.readouterr().err[-3000:]
    report = json.loads((run / "report.json").read_text())
    f16 = report["export"]["files"][0]
    assert report["imported"]["kind"] == "merged" and not f16["fidelity_failures"] and f16["token_ids_identical"]
    assert "merge" not in report  # nothing to merge: the folder is the merged model
    rows = tmp_path / "eval.jsonl"
    rows.write_text(json.dumps({"prompt": "hi", "answer": "x"}) + "\n")
    assert main(["eval", "--model", str(merged_elsewhere), "--run-dir", str(run), "--data", str(rows),
                 "--max-tokens", "2"]) == 0
    assert "F16.gguf" in capsys.readouterr().out


def test_bad_sources_are_refused_up_front(tiny_model_dir, tmp_path, capsys):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text("{}")
    (pickled / "adapter_model.bin").write_bytes(b"x")
    code = main(["export", "--model", str(tiny_model_dir), "--adapter", str(pickled), "--gguf", "f16"])
    err = capsys.readouterr().err
    assert code == 1 and "adapter_model.safetensors" in err and "safetensors only" in err
    code = main(["export", "--model", "default", "--run-dir", str(tmp_path / "r"), "--gguf", "f16"])
    err = capsys.readouterr().err
    assert code == 1 and "merged Hugging Face folder" in err
    code = main(["export", "--adapter", str(pickled)])
    assert code == 1 and "--model" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default runs/ directory lands in the test's folder
