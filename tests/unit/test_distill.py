"""distill: a teacher GGUF (built here from the tiny model, run by llama.cpp) answers a prompts file; the rows are
valid SFT rows with the teacher and sampling recorded, on disk row by row, and a rerun after Ctrl-C skips them."""
import json

import pytest

from edgetune.config import DataConfig
from edgetune.data.load import load_rows
from edgetune.distill import Sampling, distill, skipped_path
from edgetune.errors import DataError, Interrupted
from edgetune.events import Collect, Progress
from shared_data import write_rows

PROMPTS = [{"prompt": f"Say the word number {i}."} for i in range(5)] + [
    {"messages": [{"role": "system", "content": "You answer in one sentence."},
                  {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                  {"role": "user", "content": "What is the capital of France?"}]}]
FAST = Sampling(max_tokens=6, temperature=0.7, seed=3)


@pytest.fixture(scope="module")
def teacher(tiny_model_dir, tmp_path_factory):
    from edgetune.export.gguf_convert import convert

    return str(convert(tiny_model_dir, tmp_path_factory.mktemp("teacher") / "teacher.F16.gguf", "f16"))


@pytest.fixture
def prompts(tmp_path):
    return str(write_rows(tmp_path / "prompts.jsonl", PROMPTS))


class StopAfter:
    """A progress sink that presses Ctrl-C once `n` rows are written."""

    def __init__(self, n):
        self.n = n

    def __call__(self, event):
        if isinstance(event, Progress) and event.done >= self.n:
            raise KeyboardInterrupt


def rows_of(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_rows_survive_ctrl_c_and_a_rerun_skips_them(teacher, prompts, tmp_path, tiny_model_dir):
    out = tmp_path / "train.jsonl"
    with pytest.raises(Interrupted, match="stopped after 2 new row"):
        distill(teacher, prompts, out, FAST, keep_truncated=True, sink=StopAfter(2))  # a random teacher never stops
    first = rows_of(out)
    assert len(first) == 2
    events = Collect()
    result = distill(teacher, prompts, out, FAST, keep_truncated=True, sink=events)
    assert (result.already_done, result.written) == (2, 4)
    rows = rows_of(out)
    assert rows[:2] == first  # kept as they were
    assert len({r["distill"]["key"] for r in rows}) == 6
    assert [e.done for e in events.of(Progress)] == [3, 4, 5, 6]  # the bar counts the earlier rows
    assert "eta" in events.of(Progress)[-1].detail
    meta = rows[-1]["distill"]
    assert meta["teacher"].endswith("teacher.F16.gguf") and meta["backend"] == "llamacpp"
    assert meta["sampling"] == {"max_tokens": 6, "temperature": 0.7, "top_p": 0.95, "repeat_penalty": 1.0, "seed": 3,
                                "samples": 1}
    assert meta["source"].endswith("prompts.jsonl:6") and meta["finish_reason"] == "length"
    # the multi-turn prompt keeps its context; the teacher's answer is the last turn
    assert [m["role"] for m in rows[-1]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    # valid SFT rows: the data loader and `edgetune validate` accept every one
    loaded = load_rows(DataConfig(path=str(out)))
    assert loaded.format == "messages" and len(loaded.conversations) == 6 and loaded.problems == []
    from edgetune.cli import main

    assert main(["validate", "--data", str(out), "--model", str(tiny_model_dir), "--gguf", "none"]) == 0
    # and the student trains on them as usual
    from edgetune import config as C
    from edgetune.train import train

    result = train(C.resolve(None, {"model": {"ref": str(tiny_model_dir), "load_in_4bit": False},
                                    "data": {"path": str(out)}, "run_dir": str(tmp_path / "student"),
                                    "train": {"max_steps": 2}}, profile="cpu"))
    assert result.steps == 2 and (result.adapter_dir / "adapter_model.safetensors").is_file()
    # nothing left to do: a third call generates nothing
    again = distill(teacher, prompts, out, FAST, keep_truncated=True)
    assert (again.already_done, again.written) == (6, 0)


def test_same_seed_same_answers(teacher, prompts, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    distill(teacher, prompts, a, FAST, keep_truncated=True, limit=2)
    distill(teacher, prompts, b, FAST, keep_truncated=True, limit=2)
    assert [r["messages"] for r in rows_of(a)] == [r["messages"] for r in rows_of(b)]


def test_cut_off_answers_are_skipped_then_retried_with_more_tokens(teacher, prompts, tmp_path):
    out = tmp_path / "train.jsonl"
    result = distill(teacher, prompts, out, FAST, limit=2)
    assert result.written == 0 and result.skipped == {"truncated": 2}
    assert [r["distill"]["skipped"] for r in rows_of(skipped_path(out))] == ["truncated"] * 2
    assert distill(teacher, prompts, out, FAST, limit=2).already_done == 2  # not generated again
    more = Sampling(**{**FAST.__dict__, "max_tokens": 8})
    assert distill(teacher, prompts, out, more, limit=2, keep_truncated=True).written == 2


def test_a_line_cut_off_by_a_crash_is_dropped_and_regenerated(teacher, prompts, tmp_path):
    out = tmp_path / "train.jsonl"
    distill(teacher, prompts, out, FAST, keep_truncated=True, limit=2)
    out.write_bytes(out.read_bytes()[:-20])  # the second row half-written
    result = distill(teacher, prompts, out, FAST, keep_truncated=True, limit=2)
    assert (result.already_done, result.written) == (1, 1)
    assert len(rows_of(out)) == 2


def test_another_teacher_or_sampling_is_refused_for_the_same_file(teacher, prompts, tmp_path):
    out = tmp_path / "train.jsonl"
    distill(teacher, prompts, out, FAST, keep_truncated=True, limit=1)
    with pytest.raises(DataError, match="already holds answers"):
        distill(teacher, prompts, out, Sampling(max_tokens=6, temperature=0.2), keep_truncated=True, limit=1)


def test_bad_prompt_rows_are_refused_up_front_with_file_and_line(teacher, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": ""}\nnot json\n{"text": "x"}\n'
                    '{"messages": [{"role": "assistant", "content": "Hi"}]}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        distill(teacher, str(path), tmp_path / "out.jsonl", FAST)
    text = str(err.value)
    for line in (2, 3, 4, 5):
        assert f"prompts.jsonl:{line}:" in text
    assert "prompts.jsonl:1:" not in text and not (tmp_path / "out.jsonl").exists()


def test_cli_distill(teacher, prompts, tmp_path, capsys):
    from edgetune.cli import main

    out = tmp_path / "train.jsonl"
    rc = main(["distill", "--teacher", teacher, "--prompts", prompts, "--out", str(out), "--max-tokens", "4",
               "--keep-truncated", "--limit", "2", "--seed", "3"])
    assert rc == 0 and len(rows_of(out)) == 2
    assert f"edgetune train --data {out}" in capsys.readouterr().out


def test_an_hf_folder_teacher_through_transformers(tiny_model_dir, prompts, tmp_path):
    out = tmp_path / "train.jsonl"
    result = distill(str(tiny_model_dir), prompts, out, FAST, keep_truncated=True, limit=2)
    rows = rows_of(out)
    assert result.written == 2 and rows[0]["distill"]["backend"] == "hf"
    assert rows[0]["distill"]["teacher"] == str(tiny_model_dir.resolve()) and rows[0]["distill"]["tokens"] == 6
    again = tmp_path / "again.jsonl"
    distill(str(tiny_model_dir), prompts, again, FAST, keep_truncated=True, limit=2)
    assert [r["messages"] for r in rows_of(again)] == [r["messages"] for r in rows]  # seeded sampling reproduces
