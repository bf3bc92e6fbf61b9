"""Loading rows from every file type, and the bad-input corpus: each bad file names the file, the line and the fix."""
import json
from pathlib import Path

import pytest

from edgetune.config import DataConfig
from edgetune.data import Problem, load_conversations, read_rows
from edgetune.errors import DataError

DATA = Path(__file__).parent.parent / "data"
GOOD, BAD = DATA / "good", DATA / "bad"
SAMPLE = Path(__file__).parents[2] / "edgetune" / "sample_data"

# The three conversations every good single-turn file holds, in chat-message form.
EXPECTED = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "The capital of France is Paris."}],
    [{"role": "user", "content": "Translate to French.\n\nGood morning"}, {"role": "assistant", "content": "Bonjour."}],
    [{"role": "user", "content": "Write a Python function that adds two numbers."},
     {"role": "assistant", "content": "def add(a, b):\n    return a + b"}],
]


def load(path, **kw):
    return load_conversations(DataConfig(path=str(path), **kw))


@pytest.mark.parametrize("name, fmt", [
    ("messages.jsonl", "messages"), ("bom_messages.jsonl", "messages"), ("messages.json", "messages"),
    ("messages.csv", "messages"), ("messages.parquet", "messages"), ("sharegpt.jsonl", "sharegpt"),
    ("alpaca.jsonl", "alpaca"), ("alpaca.csv", "alpaca"), ("alpaca_under_data.json", "alpaca"),
    ("prompt_completion.jsonl", "prompt_completion"), ("prompt_completion.parquet", "prompt_completion"),
    ("prompt_completion_conversational.jsonl", "prompt_completion"),
])
def test_good_files_give_the_same_conversations(name, fmt):
    convs, problems, detected = load(GOOD / name)
    assert problems == []
    assert detected == fmt
    assert convs == EXPECTED


def test_multiturn_files_agree_across_formats():
    (a,), _, _ = load(GOOD / "multiturn.jsonl")
    (b,), _, _ = load(GOOD / "sharegpt_multiturn.jsonl")
    assert a == b
    assert [m["role"] for m in a] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]


def test_positions_are_jsonl_lines_and_json_row_indexes(tmp_path):
    p = tmp_path / "gaps.jsonl"
    p.write_text("\n" + json.dumps({"messages": EXPECTED[0]}) + "\n\n" + json.dumps({"messages": EXPECTED[1]}) + "\n")
    assert [pos for pos, _ in read_rows(str(p))] == [2, 4]
    assert [pos for pos, _ in read_rows(str(GOOD / "messages.json"))] == [1, 2, 3]
    # A quoted multi-line cell: the next record starts on the physical line after it.
    assert [pos for pos, _ in read_rows(str(GOOD / "alpaca.csv"))] == [2, 3, 4]


def test_problem_text():
    assert str(Problem("d.jsonl", 12, "bad role", "use user")) == "d.jsonl:12: bad role (fix: use user)"
    assert str(Problem("d.json", 3, "null", "give text", unit="row")) == "d.json: row 3: null (fix: give text)"
    assert Problem("d.jsonl", 1, "r", "f").to_dict()["text"] == "d.jsonl:1: r (fix: f)"


def test_read_rows_without_a_problem_list_raises_on_the_first_bad_line():
    with pytest.raises(DataError, match=r"truncated\.jsonl:3: invalid JSON"):
        read_rows(str(BAD / "truncated.jsonl"))
    problems = []
    assert len(read_rows(str(BAD / "truncated.jsonl"), problems=problems)) == 2
    assert [p.line for p in problems] == [3]


def test_max_examples_and_system_prompt():
    convs, _, _ = load(GOOD / "messages.jsonl", max_examples=2, system_prompt="Be brief.")
    assert len(convs) == 2
    assert convs[0][0] == {"role": "system", "content": "Be brief."}


def test_forced_format_reports_rows_in_another_shape():
    convs, problems, fmt = load(GOOD / "alpaca.jsonl", format="messages")
    assert fmt == "messages" and convs == []
    assert len(problems) == 3
    assert 'looks like alpaca; set data.format = "auto"' in problems[0].fix


def test_a_json_document_saved_as_jsonl_is_still_read(tmp_path):
    p = tmp_path / "pretty.jsonl"
    p.write_text(json.dumps([{"messages": c} for c in EXPECTED], indent=2))
    convs, problems, _ = load(p)
    assert convs == EXPECTED and problems == []


def test_a_single_example_json_object(tmp_path):
    p = tmp_path / "one.json"
    p.write_text(json.dumps({"messages": EXPECTED[0]}))
    assert load(p)[0] == EXPECTED[:1]


# --- the bad-input corpus ---------------------------------------------------------------------------------------
# Row-level: (file, position, unit, words in the reason, words in the fix); the file's other rows still load.
ROW_PROBLEMS = [
    ("truncated.jsonl", 3, "line", "invalid JSON", "cut off"),
    ("unknown_role.jsonl", 2, "line", "role 'bot'", "'assistant'"),
    ("null_content.jsonl", 3, "line", "content is null", "string"),
    ("missing_assistant.jsonl", 1, "line", "no assistant turn", "add the assistant reply"),
    ("assistant_not_last.jsonl", 2, "line", "ends with a user turn", "add the assistant reply"),
    ("empty_content.jsonl", 1, "line", "content is empty", "write the text"),
    ("mixed_formats.jsonl", 3, "line", "alpaca format but most rows of this file are messages", "messages shape"),
    ("unknown_keys.jsonl", 2, "line", "fits no known format (keys: answer, question)", '"messages"'),
    ("lines_not_objects.jsonl", 2, "line", "JSON list, not an object", '"messages"'),
    ("sharegpt_unknown_from.jsonl", 1, "line", "from='robot'", "gpt"),
    ("content_not_string.jsonl", 1, "line", "not a string", "quoted string"),
    ("user_twice.jsonl", 1, "line", "'user' but 'assistant' was expected", "merge consecutive turns"),
    ("system_not_first.jsonl", 1, "line", "only the first turn", "move the system message"),
    ("alpaca_null_output.jsonl", 1, "line", "output is null", "string"),
    ("ragged.csv", 3, "line", "4 cells but the header has 3 columns", "quote cells"),
]

# File-level: (file, what follows the path in the DataError message, words in the hint).
FILE_ERRORS = [
    ("truncated.json", ":18: invalid JSON", "cut off"),
    ("empty.jsonl", ": file is empty", "one training example per row"),
    ("blank_lines.jsonl", ": file is empty", "one training example per row"),
    ("binary.jsonl", ": looks like a binary file", ".jsonl"),
    ("gzipped.jsonl", ": file is gzip-compressed", "gunzip"),
    ("latin1.jsonl", ":2: not valid UTF-8 (byte 0xe9 at column", "UTF-8"),
    ("utf16.jsonl", ": file is UTF-16", "UTF-8"),
    ("top_level_number.json", ":1: top level is a JSON number", '{"data": [...]}'),
    ("list_of_lists.json", ": row 1 is a JSON list", '"messages"'),
    ("two_lists.json", ": top level is an object", '"data"'),
    ("notes.txt", ": unsupported file type '.txt'", ".jsonl"),
]


def test_every_bad_file_has_a_test():
    covered = {name for name, *_ in ROW_PROBLEMS} | {name for name, *_ in FILE_ERRORS}
    assert covered == {p.name for p in BAD.iterdir()}


@pytest.mark.parametrize("name, line, unit, reason, fix", ROW_PROBLEMS, ids=[r[0] for r in ROW_PROBLEMS])
def test_bad_rows_are_reported_with_file_line_and_fix(name, line, unit, reason, fix):
    _, problems, _ = load(BAD / name)
    assert len(problems) == 1
    (p,) = problems
    assert (p.source, p.line, p.unit) == (str(BAD / name), line, unit)
    assert reason in p.reason
    assert fix in p.fix
    assert str(p).startswith(f"{BAD / name}:{line}: ")


@pytest.mark.parametrize("name, message, hint", FILE_ERRORS, ids=[r[0] for r in FILE_ERRORS])
def test_bad_files_raise_a_data_error_naming_the_file(name, message, hint):
    with pytest.raises(DataError) as e:
        load(BAD / name)
    assert f"{BAD / name}{message}" in e.value.message
    assert hint in e.value.hint


def test_row_index_for_bad_rows_in_a_json_list(tmp_path):
    p = tmp_path / "rows.json"
    p.write_text(json.dumps([{"messages": EXPECTED[0]}, "oops", {"messages": [EXPECTED[0][0]]}]))
    _, problems, _ = load(p)
    assert [str(x).split(": ")[1] for x in problems] == ["row 2", "row 3"]
    assert all(x.unit == "row" for x in problems)


def test_missing_file_and_empty_path():
    with pytest.raises(DataError, match="nope.jsonl: no such file"):
        load("nope.jsonl")
    with pytest.raises(DataError, match="data.path is empty"):
        load("")


# --- hub ids and saved datasets (no network: the hub loader is faked or reads a local folder) --------------------

def test_hub_id_goes_through_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list([{"messages": c} for c in EXPECTED])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    convs, problems, fmt = load("someone/pirate-chat", split="validation")
    assert calls == [("someone/pirate-chat", "validation")]
    assert (convs, problems, fmt) == (EXPECTED, [], "messages")
    rows = read_rows("someone/pirate-chat", "validation")
    assert [pos for pos, _ in rows] == [1, 2, 3]


def test_hub_failure_is_a_data_error_with_an_offline_hint(monkeypatch):
    import datasets

    def offline(name, split):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="someone/missing: cannot load hub dataset") as e:
        load("someone/missing")
    assert "save_to_disk" in e.value.hint


def test_folder_of_data_files_goes_through_the_real_hub_loader(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "local-dataset"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes((GOOD / "sharegpt.jsonl").read_bytes())
    assert load(folder) == (EXPECTED, [], "sharegpt")


def test_saved_dataset_folder(tmp_path):
    import datasets

    rows = [{"conversations": [{"from": "human", "value": c[0]["content"]}, {"from": "gpt", "value": c[1]["content"]}]}
            for c in EXPECTED]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    assert load(tmp_path / "dd")[0] == EXPECTED
    assert load(tmp_path / "ds")[0] == EXPECTED
    with pytest.raises(DataError, match="no split 'test'"):
        load(tmp_path / "dd", split="test")


# --- the shipped demo data ----------------------------------------------------------------------------------------

def test_pirate_sample_data_is_clean_and_reproducible():
    import importlib.util

    convs, problems, fmt = load(SAMPLE / "pirate_chat.jsonl")
    assert problems == [] and fmt == "messages" and 200 <= len(convs) <= 300
    assert all(m["content"].startswith("Arr! ") for c in convs for m in c if m["role"] == "assistant")
    assert not any(m["role"] == "system" for c in convs for m in c)
    evals = [row for _, row in read_rows(str(SAMPLE / "pirate_eval.jsonl"))]
    assert 25 <= len(evals) <= 40 and all(e["answer"].startswith("Arr!") for e in evals)
    trained = {m["content"] for c in convs for m in c if m["role"] == "user"}
    assert not any(e["prompt"] in trained for e in evals)
    for f in ("pirate_chat.jsonl", "pirate_eval.jsonl"):
        assert (SAMPLE / f).stat().st_size < 150_000
    spec = importlib.util.spec_from_file_location("make_pirate", SAMPLE / "make_pirate.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    train, ev = make.build()
    assert [r["messages"] for r in train] == convs and ev == evals
    assert [row for _, row in read_rows(str(SAMPLE / "pirate_prompts.jsonl"))] == make.grpo_prompts(train)


def test_sample_preference_pairs_are_clean_and_held_out():
    from edgetune.data.preference import load_method_rows

    pairs, problems = load_method_rows(str(SAMPLE / "pirate_pairs.jsonl"), "dpo")
    held, held_problems = load_method_rows(str(SAMPLE / "pirate_pairs_eval.jsonl"), "dpo")
    assert problems == [] and held_problems == [] and len(pairs) >= 200 and len(held) >= 25
    assert all(p["chosen"][0]["content"].startswith("Arr!") for p in pairs + held)
    trained = {p["prompt"][-1]["content"] for p in pairs}
    evals = {row["prompt"] for _, row in read_rows(str(SAMPLE / "pirate_eval.jsonl"))}
    assert {p["prompt"][-1]["content"] for p in held} <= evals and not trained & evals
