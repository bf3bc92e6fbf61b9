"""Continued pretraining (method cpt) on a tiny random model: raw text in every accepted shape, bad files named with
the fix, packing with loss on every token, held-out perplexity falling, and a cpt,sft staged run."""
import io
import json
import random
import tomllib

import pytest
from rich.console import Console

from edgetune import config as C
from edgetune.data.text import MIN_BLOCK, is_text_corpus, load_corpus, read_documents
from edgetune.errors import ConfigError, DataError
from edgetune.events import Collect, Note
from edgetune.train import train

NAMES = ["zorbl", "quix", "flem", "drap", "vorn", "pell", "snib", "krat"]


def domain_lines(n: int, seed: int) -> list[str]:
    """A made-up domain with regular structure a tiny model can pick up in a few steps."""
    rng = random.Random(seed)
    return [f"The {a} feeds the {b} with {rng.choice(['red', 'blue', 'amber'])} moss every morning."
            for a, b in (rng.sample(NAMES, 2) for _ in range(n))]


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "notes.txt").write_text("\n".join(domain_lines(240, 0)) + "\n")
    (tmp_path / "heldout.txt").write_text("\n".join(domain_lines(40, 1)) + "\n")
    return tmp_path


def cpt_cfg(model_dir, data, run_dir, **extra):
    return C.resolve(None, {"model": {"ref": str(model_dir), "load_in_4bit": False}, "data": {"path": str(data)},
                            "run_dir": str(run_dir), "method": {"name": "cpt"},
                            "train": {"max_steps": 20, "learning_rate": 5e-3, "batch_size": 4, "max_length": 64},
                            **extra}, profile="cpu")


def test_cpt_lowers_heldout_perplexity(tiny_model_dir, corpus, tmp_path):
    from edgetune.perplexity import run_perplexity

    events = Collect()
    cfg = cpt_cfg(tiny_model_dir, corpus / "notes.txt", tmp_path / "run")
    cfg.data.eval_fraction = 0.1
    result = train(cfg, events)
    assert result.steps == 20 and (result.adapter_dir / "adapter_model.safetensors").is_file()
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["format"] == "text" and report["n_documents"] == 1 and report["n_tokens"] > 1000
    assert any("packed into" in e.text for e in events.of(Note))
    out = run_perplexity(str(tmp_path / "run"), str(corpus / "heldout.txt"))
    base, tuned = (t["perplexity"] for t in out["targets"])
    assert tuned < 0.8 * base, (base, tuned)  # the domain got much more predictable
    saved = json.loads((tmp_path / "run" / "report.json").read_text())["perplexity"]
    assert saved["targets"][1]["label"] == "base+adapter" and saved["block_tokens"] == 64
    # without --data: the run's own held-out blocks (data.eval_fraction) are scored
    own = run_perplexity(str(tmp_path / "run"))
    assert own["data"].endswith("heldout_text.jsonl") and own["targets"][1]["perplexity"] < own["targets"][0]["perplexity"]


def test_packing_trains_every_token(tiny_tokenizer_dir, tmp_path):
    from edgetune.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_tokenizer_dir)
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in domain_lines(30, 2)) + "\n")
    blocks, report = load_corpus(tok, str(tmp_path / "a.jsonl"), 32)
    assert report.n_documents == 30 and all(len(b) == 32 for b in blocks[:-1]) and MIN_BLOCK <= len(blocks[-1]) <= 32
    assert sum(map(len, blocks)) + report.n_dropped_tokens == report.n_tokens
    flat = [i for b in blocks for i in b]
    assert flat.count(tok.eos_token_id) >= 29  # documents end with EOS (the last may sit in a dropped tail)


def test_bad_files_are_named_with_the_fix(tmp_path, tiny_model_dir):
    from edgetune.validate import run_validate

    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "good.txt").write_text("\n".join(domain_lines(40, 3)))
    (d / "sub" / "notes.md").write_text("# Notes\n\nThe zorbl sleeps.\n")
    (d / "binary.txt").write_bytes(b"\x00\x01\x02\x03PK")
    (d / "latin1.txt").write_bytes("ok line\ncaf\xe9\n".encode("latin-1"))
    (d / "empty.md").write_text("  \n")
    (d / "ignored.pdf").write_bytes(b"%PDF")
    (d / "rows.jsonl").write_text('{"text": "fine"}\nnot json\n{"body": "x"}\n')  # .jsonl is not read in a folder
    docs, problems, n_files = read_documents(str(d))
    assert n_files == 5 and len(docs) == 2
    text = "\n".join(map(str, problems))
    assert "binary.txt: looks like a binary file" in text and "remove it from the folder" in text
    assert "latin1.txt:2: not valid UTF-8 (byte 0xe9)" in text and "iconv" in text
    assert "empty.md: file is empty" in text
    _, jsonl_problems, _ = read_documents(str(d / "rows.jsonl"))
    assert [p.line for p in jsonl_problems] == [2, 3] and "no `text` field" in str(jsonl_problems[1])

    def validate(allow):
        buf = io.StringIO()
        ok = run_validate(str(d), str(tiny_model_dir), "cpt", "auto", 64, "", Collect(),
                          console=Console(file=buf, width=200), allow_skips=allow, gguf=[])
        return ok, buf.getvalue()
    ok, printed = validate(False)
    assert not ok and "documents       2" in printed and "bad files       3" in printed and "binary.txt" in printed
    assert validate(True)[0]
    (tmp_path / "only_bad").mkdir()
    (tmp_path / "only_bad" / "x.txt").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="no usable text"):
        load_corpus(None, str(tmp_path / "only_bad"), 64)[1].check()


def test_text_corpus_detection(tmp_path, chat_jsonl):
    (tmp_path / "t.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.md").write_text("x")
    assert is_text_corpus(str(tmp_path / "t.jsonl")) and is_text_corpus(str(tmp_path / "d"))
    assert is_text_corpus(str(tmp_path / "notes.txt")) and not is_text_corpus(str(chat_jsonl))


def test_cpt_then_sft_carries_the_adapter(tiny_model_dir, corpus, chat_jsonl, tmp_path):
    from safetensors.torch import load_file

    cfg = C.resolve(None, {"model": {"ref": str(tiny_model_dir), "load_in_4bit": False}, "run_dir": str(tmp_path / "run"),
                           "method": {"stages": ["cpt", "sft"]},
                           "data": {"stage_paths": [f"cpt={corpus / 'notes.txt'}", f"sft={chat_jsonl}"]},
                           "train": {"max_steps": 4, "learning_rate": 5e-3, "batch_size": 4, "max_length": 64},
                           "stage": {"sft": {"train": {"max_steps": 2}}}}, profile="cpu")
    assert cfg.data.path == ""  # every stage has its own data
    result = train(cfg)
    run = tmp_path / "run"
    first = C.from_dict(tomllib.loads((run / "stages" / "1-cpt" / "config.toml").read_text()))
    second = C.from_dict(tomllib.loads((run / "stages" / "2-sft" / "config.toml").read_text()))
    assert (first.method.name, first.data.path) == ("cpt", str(corpus / "notes.txt"))
    assert (second.method.name, second.data.path, second.train.max_steps) == ("sft", str(chat_jsonl), 2)
    assert json.loads((run / "stages" / "1-cpt" / "data_report.json").read_text())["format"] == "text"
    assert result.steps == 2 and result.adapter_dir == run / "adapter"
    cpt = load_file(run / "stages" / "1-cpt" / "adapter" / "adapter_model.safetensors")
    sft = load_file(run / "adapter" / "adapter_model.safetensors")
    assert set(cpt) == set(sft) and any((cpt[k] - sft[k]).abs().sum() > 0 for k in cpt)
    # the SFT stage started from the CPT adapter, not a fresh one (whose B matrices start at zero): two SFT steps
    # moved B much less than CPT had moved it away from zero
    b = [k for k in sft if "lora_B" in k]
    moved_by_sft, moved_by_cpt = sum((sft[k] - cpt[k]).norm() for k in b), sum(cpt[k].norm() for k in b)
    assert moved_by_sft < 0.5 * moved_by_cpt


def test_stage_data_must_name_stages(tmp_path):
    base = {"model": {"ref": "default"}, "method": {"stages": ["cpt", "sft"]}}
    with pytest.raises(ConfigError, match=r"names 'dpo', which is not a stage.*--stages"):
        C.resolve(None, {**base, "data": {"path": "x.txt", "stage_paths": ["dpo=p.jsonl"]}})
    with pytest.raises(ConfigError, match=r"'notes.txt'; write METHOD=PATH"):
        C.resolve(None, {**base, "data": {"path": "x.txt", "stage_paths": ["notes.txt"]}})
    with pytest.raises(ConfigError, match=r"data.path. is empty.*--stage-data METHOD=PATH for every stage"):
        C.resolve(None, {**base, "data": {"stage_paths": ["cpt=notes.txt"]}})


def test_cli_stage_data_takes_commas(tmp_path, monkeypatch):
    """`--stage-data cpt=notes.txt,sft=chat.jsonl` is the same as repeating the flag."""
    from typer.testing import CliRunner

    from edgetune import cli, train as train_mod

    seen = {}

    def fake_train(cfg, sink, resume=False):  # the config the command built is what this test checks
        seen["cfg"] = cfg
        raise DataError("stop here")
    monkeypatch.setattr(train_mod, "train", fake_train)
    out = CliRunner().invoke(cli.app, ["train", "--stages", "cpt,sft", "--stage-data", "cpt=notes.txt,sft=chat.jsonl",
                                       "--run-dir", str(tmp_path / "r"), "--profile", "cpu"])
    assert str(out.exception) == "stop here", out.output
    assert seen["cfg"].data.stage_paths == ["cpt=notes.txt", "sft=chat.jsonl"] and seen["cfg"].data.path == ""


# --- the forgetting probe (its behaviour on a real model: tests/integration/test_forgetting_smollm2.py) ---------

def test_probe_ships_valid_items_with_checkers():
    from edgetune.forgetting import CHECKS, KINDS, load_probe

    items = load_probe()
    assert 40 <= len(items) <= 60 and len({i.id for i in items}) == len(items)
    assert {i.kind for i in items} == set(KINDS) and {i.check for i in items} <= set(CHECKS)


@pytest.mark.parametrize("check,answer,reply,ok", [
    ("contains", "Paris", "The capital of France is paris.", True), ("contains", "Paris", "It is Lyon.", False),
    ("number", "25", "Half of 50 is 25.", True), ("number", "5", "2 + 3 = 5. Then 7 more.", True),
    ("number", "42", "The answer is 41.", False), ("regex", r"\bcold\b", "The opposite of hot is Cold.", True),
    ("regex", r"(?-i:CAT)", "cat", False), ("exact", "Rome", "rome!", True), ("exact", "Rome", "Rome is old", False)])
def test_probe_checkers(check, answer, reply, ok):
    from edgetune.forgetting import ProbeItem, passes

    assert passes(reply, ProbeItem("x", "factual", "q", check, answer)) is ok


def test_eval_runs_the_probe_and_writes_report_md(tiny_model_dir, chat_jsonl, tmp_path):
    """`edgetune eval RUN` with no --data: the probe, base vs tuned, into report.json and report.md."""
    from typer.testing import CliRunner

    from edgetune import cli

    cfg = C.resolve(None, {"model": {"ref": str(tiny_model_dir), "load_in_4bit": False}, "data": {"path": str(chat_jsonl)},
                           "run_dir": str(tmp_path / "run"), "train": {"max_steps": 2, "batch_size": 4}}, profile="cpu")
    train(cfg)
    out = CliRunner().invoke(cli.app, ["eval", str(tmp_path / "run"), "--max-drop", "0"])
    assert out.exit_code == 0, out.output
    assert "forgetting check" in out.output
    saved = json.loads((tmp_path / "run" / "report.json").read_text())["forgetting"]
    assert [t["n"] for t in saved["targets"]] == [50, 50] and saved["max_drop"] == 0
    assert "## Forgetting check" in (tmp_path / "run" / "report.md").read_text()
    none = CliRunner().invoke(cli.app, ["eval", str(tmp_path / "run"), "--no-probe"])
    assert none.exit_code != 0 and "nothing to evaluate" in str(none.exception)
