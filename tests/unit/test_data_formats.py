"""Row formats: detection, normalisation to chat messages, and row errors that say what to fix."""
import pytest

from edgetune.data.formats import FORMATS, RowError, detect_format, normalize

QA = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]


@pytest.mark.parametrize("row, fmt", [
    ({"messages": QA}, "messages"),
    ({"conversations": [{"from": "human", "value": "hi"}]}, "sharegpt"),
    ({"instruction": "Say hi", "input": "", "output": "hi"}, "alpaca"),
    ({"instruction": "Say hi", "output": "hi"}, "alpaca"),
    ({"prompt": "Say hi", "completion": "hi"}, "prompt_completion"),
    ({"prompt": [QA[0]], "completion": [QA[1]]}, "prompt_completion"),
    ({"question": "q", "answer": "a"}, None),
    ({"messages": "not a list"}, None),
    ([1, 2], None),
])
def test_detect_format(row, fmt):
    assert detect_format(row) == fmt


def test_every_format_normalises_to_the_same_messages():
    rows = {
        "messages": {"messages": QA},
        "sharegpt": {"conversations": [{"from": "human", "value": "What is 2 + 2?"}, {"from": "gpt", "value": "4"}]},
        "alpaca": {"instruction": "What is 2 + 2?", "input": "", "output": "4"},
        "prompt_completion": {"prompt": "What is 2 + 2?", "completion": "4"},
    }
    assert set(rows) == set(FORMATS)
    for fmt, row in rows.items():
        assert normalize(row, fmt) == QA, fmt


def test_alpaca_input_is_appended_after_a_blank_line():
    row = {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour."}
    assert normalize(row, "alpaca")[0] == {"role": "user", "content": "Translate to French.\n\nGood morning"}
    assert normalize({**row, "input": None}, "alpaca")[0]["content"] == "Translate to French."
    assert normalize({**row, "input": "  "}, "alpaca")[0]["content"] == "Translate to French."


def test_sharegpt_speakers_map_to_roles():
    row = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "a"},
                             {"from": "model", "value": "b"}, {"from": "user", "value": "c"},
                             {"from": "assistant", "value": "d"}]}
    assert [m["role"] for m in normalize(row, "sharegpt")] == ["system", "user", "assistant", "user", "assistant"]


def test_system_prompt_is_added_only_when_missing():
    assert normalize({"messages": QA}, "messages", system_prompt="Be a pirate.")[0] == {
        "role": "system", "content": "Be a pirate."}
    own = [{"role": "system", "content": "Own."}, *QA]
    assert normalize({"messages": own}, "messages", system_prompt="Be a pirate.") == own


def test_conversational_prompt_completion_and_text_parts():
    row = {"prompt": [{"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2 + 2?"}]}],
           "completion": [{"role": "assistant", "content": "4"}]}
    assert normalize(row, "prompt_completion") == QA


def test_extra_keys_in_messages_are_dropped():
    row = {"messages": [{**QA[0], "name": "bob"}, {**QA[1], "weight": 1}], "id": 7}
    assert normalize(row, "messages") == QA


@pytest.mark.parametrize("messages, reason, fix", [
    ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}], "role 'bot'", "'assistant'"),
    ([{"role": "user", "content": "hi"}, {"role": "tool", "content": "{}"}], "role 'tool'", "tool turns"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}], "is null", "string"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}], "is empty", "drop the row"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": 42}], "not a string", "'42'"),
    ([{"role": "user", "content": "hi"}], "no assistant turn", "add the assistant reply"),
    ([*QA, {"role": "user", "content": "and?"}], "ends with a user turn", "add the assistant reply"),
    ([{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
     "'assistant' but 'user' was expected", "start the conversation with a user turn"),
    ([QA[0], QA[0], QA[1]], "'user' but 'assistant' was expected", "merge consecutive turns"),
    ([QA[0], {"role": "system", "content": "s"}, QA[1]], "only the first turn", "move the system message"),
    ([], "empty", "add at least one user turn"),
    (["hi", "there"], "not an object", '"role"'),
])
def test_bad_messages_say_what_and_how_to_fix(messages, reason, fix):
    with pytest.raises(RowError) as e:
        normalize({"messages": messages}, "messages")
    assert reason in e.value.reason
    assert fix in e.value.fix


@pytest.mark.parametrize("row, fmt, reason", [
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "robot", "value": "yo"}]}, "sharegpt", "from='robot'"),
    ({"instruction": "Say hi", "output": None}, "alpaca", "output is null"),
    ({"instruction": "", "output": "hi"}, "alpaca", "instruction is empty"),
    ({"instruction": "Say hi"}, "alpaca", "no `output`"),
    ({"prompt": "hi"}, "prompt_completion", "no `completion`"),
    ({"messages": None}, "messages", "`messages` is null"),
    ([QA], "messages", "row is a JSON list"),
])
def test_bad_rows_in_other_formats(row, fmt, reason):
    with pytest.raises(RowError) as e:
        normalize(row, fmt)
    assert reason in e.value.reason
    assert e.value.fix


def test_unknown_format_name_is_a_programming_error():
    with pytest.raises(ValueError):
        normalize({"messages": QA}, "chatml")
