"""Chat template rendering and the assistant-only loss mask, with the tiny offline tokenizer."""
import json
import sys
from pathlib import Path

import pytest

from edgetune.config import DataConfig
from edgetune.data import (DataReport, build_dataset, ensure_chat_template, tokenize_conversation, validate_data)
from edgetune.errors import DataError

TESTS = Path(__file__).parents[1]
GOOD, BAD = TESTS / "data" / "good", TESTS / "data" / "bad"
SAMPLE = TESTS.parent / "edgetune" / "sample_data"
if str(TESTS) not in sys.path:  # until tests/conftest.py puts it there
    sys.path.insert(0, str(TESTS))
import tinymodels  # noqa: E402

CHAT = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Arr! Ahoy."},
        {"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "Arr! That be 4."}]


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    return tinymodels.build_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def in_loss(tokenizer, example) -> str:
    return tokenizer.decode([t for t in example["labels"] if t != -100])


def test_tiny_tokenizer_is_a_chatml_tokenizer(tokenizer):
    assert 600 <= len(tokenizer) <= 1000
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert tokenizer.is_fast
    text = tokenizer.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenizer("<|im_start|>x<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(tokenizer("Café 日本語 🙂")["input_ids"]) == "Café 日本語 🙂"


def test_every_assistant_turn_and_its_end_token_are_in_the_loss(tokenizer):
    ex = tokenize_conversation(tokenizer, CHAT, max_length=512)
    assert len(ex["input_ids"]) == len(ex["labels"])
    assert in_loss(tokenizer, ex) == "Arr! Ahoy.<|im_end|>\nArr! That be 4.<|im_end|>\n"
    in_loss_ids = [t for t in ex["labels"] if t != -100]
    assert in_loss_ids.count(tokenizer.eos_token_id) == 2  # the model learns to stop after each reply
    assert all(label in (-100, token) for label, token in zip(ex["labels"], ex["input_ids"]))
    # Everything else (default system prompt, user turns, "<|im_start|>assistant\n" headers) is masked out.
    outside = tokenizer.decode([t for t, label in zip(ex["input_ids"], ex["labels"]) if label == -100])
    assert "Hi there" in outside and "SmolLM" in outside and outside.count("<|im_start|>assistant\n") == 2


def test_truncation_keeps_the_start(tokenizer):
    full = tokenize_conversation(tokenizer, CHAT, max_length=10_000)
    cut = tokenize_conversation(tokenizer, CHAT, max_length=40)
    assert cut["input_ids"] == full["input_ids"][:40] and cut["labels"] == full["labels"][:40]


@pytest.mark.parametrize("name", ["sharegpt.jsonl", "alpaca.jsonl", "prompt_completion.jsonl", "messages.csv",
                                  "alpaca.csv", "messages.parquet", "messages.json", "bom_messages.jsonl"])
def test_same_conversations_in_any_format_give_identical_examples(tokenizer, name):
    reference, _ = build_dataset(tokenizer, DataConfig(path=str(GOOD / "messages.jsonl")), 256)
    other, report = build_dataset(tokenizer, DataConfig(path=str(GOOD / name)), 256)
    assert other.column_names == ["input_ids", "labels"]
    assert other.to_list() == reference.to_list()
    assert report.n_valid == 3 and report.problems == []


def test_multiturn_messages_and_sharegpt_give_identical_examples(tokenizer):
    a, _ = build_dataset(tokenizer, DataConfig(path=str(GOOD / "multiturn.jsonl")), 512)
    b, _ = build_dataset(tokenizer, DataConfig(path=str(GOOD / "sharegpt_multiturn.jsonl")), 512)
    assert a.to_list() == b.to_list()
    assert in_loss(tokenizer, a[0]) == "Arr! Ahoy there.<|im_end|>\nArr! That be 4.<|im_end|>\nArr! Fair winds.<|im_end|>\n"


def test_template_bos_is_not_doubled(tokenizer):
    from tokenizers import processors

    tokenizer.bos_token = "<|endoftext|>"
    bos = tokenizer.bos_token_id
    # A Llama-style tokenizer adds BOS itself, and the template writes one too: the classic double-BOS trap.
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)])
    tokenizer.chat_template = "{{ bos_token }}" + tinymodels.CHATML_TEMPLATE
    text = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert tokenizer(text)["input_ids"][:2] == [bos, bos]
    ids = tokenize_conversation(tokenizer, CHAT, 512)["input_ids"]
    assert ids[0] == bos and ids.count(bos) == 1


def test_missing_template_says_what_to_set(tokenizer):
    tokenizer.chat_template = None
    with pytest.raises(DataError, match="no chat template") as e:
        ensure_chat_template(tokenizer)
    assert "model.chat_template" in e.value.hint


def test_template_override_from_jinja_or_tokenizer_config(tokenizer, tmp_path):
    jinja = tmp_path / "plain.jinja"
    jinja.write_text("{% for m in messages %}### {{ m.role }}: {{ m.content }}\n<|im_end|>{% endfor %}"
                     "{% if add_generation_prompt %}### assistant: {% endif %}")
    ensure_chat_template(tokenizer, str(jinja))
    # The space after "assistant:" merges into the reply's first token ( "ĠA"), which stays in the loss.
    assert in_loss(tokenizer, tokenize_conversation(tokenizer, CHAT[:2], 512)) == " Arr! Ahoy.\n<|im_end|>"
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": tinymodels.CHATML_TEMPLATE}))
    ensure_chat_template(tokenizer, str(config))
    assert tokenizer.chat_template == tinymodels.CHATML_TEMPLATE
    with pytest.raises(DataError, match="nope.jinja: no such chat template file"):
        ensure_chat_template(tokenizer, str(tmp_path / "nope.jinja"))


def test_trl_template_override_by_name(tokenizer):
    fmt = ensure_chat_template(tokenizer, "trl:qwen2_5")
    assert fmt.method == "turns" and "You are Qwen, created by Alibaba Cloud" in tokenizer.chat_template
    with pytest.raises(DataError, match="trl:nope: TRL ships no template of that name") as e:
        ensure_chat_template(tokenizer, "trl:nope")
    assert "trl:qwen3" in e.value.hint


def test_template_that_rewrites_earlier_turns_trains_each_turn_in_its_own_context(tokenizer, tmp_path):
    """Like Qwen3's template: the last assistant turn carries a think block that earlier turns lose. Each reply is
    trained exactly as generated (with its think block), after exactly the context it is generated in."""
    from edgetune.data.template import encode_all, render

    rewriting = tmp_path / "thinking.jinja"
    rewriting.write_text("{% for m in messages %}<|im_start|>{{ m.role }}\n"
                         "{% if m.role == 'assistant' and loop.last %}<think></think>{% endif %}{{ m.content }}"
                         "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    fmt = ensure_chat_template(tokenizer, str(rewriting))
    assert fmt.method == "turns" and any("its own sequence" in n for n in fmt.notes)
    sequences = encode_all(tokenizer, CHAT)
    assert len(sequences) == 2  # one per turn: the second context shows the first reply without its think block
    for (ids, mask), turn in zip(sequences, (1, 3)):
        trained = tokenizer.decode([t for t, m in zip(ids, mask) if m])
        assert trained == f"<think></think>{CHAT[turn]['content']}<|im_end|>\n"
        context = tokenizer.decode(ids[: mask.index(1)])
        assert context == render(tokenizer, CHAT[:turn], add_generation_prompt=True)


def test_template_whose_prompt_changes_once_answered_is_refused_clearly(tokenizer, tmp_path):
    # The last user turn is marked "(latest)": once a reply follows, the prompt the model saw is no longer there.
    rewriting = tmp_path / "rewriting.jinja"
    rewriting.write_text("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
                         "{% if loop.last %} (latest){% endif %}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(DataError, match="rewriting.jinja cannot be used for the assistant-only loss") as e:
        ensure_chat_template(tokenizer, str(rewriting))
    assert "{% generation %}" in e.value.hint


def write_template(tmp_path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


TURN = "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
PROMPT = "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"


def test_own_generation_markers_train_the_reply_not_the_header(tokenizer, tmp_path):
    """A template whose {% generation %} block also wraps the assistant header: the header is what the model is given
    (the generation prompt), so only the reply and its end-of-turn token are trained."""
    marked = write_template(tmp_path, "marked.jinja", "{% for m in messages %}{% if m.role == 'assistant' %}"
                            "{% generation %}<|im_start|>assistant\n{{ m.content }}<|im_end|>\n{% endgeneration %}"
                            "{% else %}" + TURN + "{% endif %}{% endfor %}" + PROMPT)
    fmt = ensure_chat_template(tokenizer, marked)
    assert fmt.method == "markers" and any("{% generation %}" in n for n in fmt.notes)
    assert in_loss(tokenizer, tokenize_conversation(tokenizer, CHAT, 512)) == \
        "Arr! Ahoy.<|im_end|>\nArr! That be 4.<|im_end|>\n"


def test_generation_markers_that_leave_the_end_token_out_are_refused(tokenizer, tmp_path):
    # Like templates that attribute the end-of-turn token to the next message: the model would never learn to stop.
    marked = write_template(tmp_path, "open_end.jinja", "{% for m in messages %}<|im_start|>{{ m.role }}\n"
                            "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}"
                            "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}" + PROMPT)
    with pytest.raises(DataError, match="open_end.jinja puts no end-of-turn token after an assistant reply") as e:
        ensure_chat_template(tokenizer, marked)
    assert "model.chat_template" in e.value.hint


def test_eos_appended_after_the_last_turn_is_not_trained(tokenizer, tmp_path):
    """Phi's templates end the conversation with eos_token after the last turn's end marker; the model stops at the
    marker, so the eos is not part of what it generates. (Llama 3's eos IS its end marker: kept, see the families.)"""
    phi = write_template(tmp_path, "phi.jinja", "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
                         "<|endoftext|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                         "{% else %}{{ eos_token }}{% endif %}")
    ensure_chat_template(tokenizer, phi)
    assert in_loss(tokenizer, tokenize_conversation(tokenizer, CHAT, 512)) == \
        "Arr! Ahoy.<|endoftext|>\nArr! That be 4.<|endoftext|>\n"


def test_generation_prompt_that_opens_a_reasoning_block_is_refused_clearly(tokenizer, tmp_path):
    # The model is given "<think>\n" to continue, but rendered replies carry no reasoning block: no turn-exact place
    # for the reply exists, and TRL has no training variant of this template.
    thinking = write_template(tmp_path, "prefill.jinja", "{% for m in messages %}" + TURN + "{% endfor %}"
                              "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
    with pytest.raises(DataError, match="prefill.jinja cannot be used .* pre-fills something") as e:
        ensure_chat_template(tokenizer, thinking)
    assert "{% generation %}" in e.value.hint and "model.chat_template" in e.value.hint


@pytest.mark.parametrize("body, match", [
    ("{% if messages[0].role == 'system' %}{{ raise_exception('Conversation roles must alternate') }}{% endif %}"
     "{% for m in messages %}" + TURN + "{% endfor %}" + PROMPT, "fails on a conversation with a system message"),
    ("{{ messages | length + 'x' }}", "cannot render a simple user/assistant conversation .TypeError"),
    ("{{ tools[0].name }}{% for m in messages %}" + TURN + "{% endfor %}", "cannot render a simple user/assistant"),
])
def test_template_errors_become_data_errors_naming_the_template(tokenizer, tmp_path, body, match):
    path = write_template(tmp_path, "custom.jinja", body)
    with pytest.raises(DataError, match=f"custom.jinja {match}") as e:
        ensure_chat_template(tokenizer, path)
    assert "model.chat_template" in e.value.hint


def test_template_that_rejects_the_system_role_gets_it_folded(tokenizer, tmp_path):
    gemma2_like = write_template(tmp_path, "nosystem.jinja",
                                 "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}"
                                 "{% endif %}{% for m in messages %}" + TURN + "{% endfor %}" + PROMPT)
    fmt = ensure_chat_template(tokenizer, gemma2_like)
    assert fmt.fold_system and "folded into the first user turn" in fmt.notes[0]
    ex = tokenize_conversation(tokenizer, [{"role": "system", "content": "Be a pirate."}, *CHAT], 512)
    text = tokenizer.decode(ex["input_ids"])
    assert text.startswith("<|im_start|>user\nBe a pirate.\n\nHi there<|im_end|>") and "system" not in text
    assert in_loss(tokenizer, ex) == "Arr! Ahoy.<|im_end|>\nArr! That be 4.<|im_end|>\n"


def test_template_without_end_of_turn_marker_is_rejected(tokenizer, tmp_path):
    bare = tmp_path / "bare.jinja"
    bare.write_text("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                    "{% if add_generation_prompt %}assistant: {% endif %}")
    with pytest.raises(DataError, match="no end-of-turn token"):
        ensure_chat_template(tokenizer, str(bare))


def test_template_that_cannot_render_is_reported(tokenizer, tmp_path):
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}{{ m.role ")
    with pytest.raises(DataError, match="broken.jinja cannot render"):
        ensure_chat_template(tokenizer, str(broken))


def test_report_counts_problems_and_token_stats(tokenizer):
    report = validate_data(tokenizer, DataConfig(path=str(BAD / "mixed_formats.jsonl")), 512)
    assert (report.format, report.n_rows, report.n_valid, report.n_rejected) == ("messages", 3, 2, 1)
    assert report.problems[0].line == 3
    assert 0 < report.masked_fraction < 1
    assert report.tokens_min <= report.tokens_median <= report.tokens_p95 <= report.tokens_max
    assert report.tokens_total >= 2 * report.tokens_min
    d = json.loads(json.dumps(report.to_dict()))
    assert d["problems"][0]["text"].startswith(f"{BAD / 'mixed_formats.jsonl'}:3: ")
    assert "2 of 3 rows usable, 1 rejected" in report.summary()


def test_truncated_examples_are_counted_and_replies_cut_off_entirely_are_rejected(tokenizer, tmp_path):
    long_prompt = {"messages": [{"role": "user", "content": "tell me a story " * 40},
                                {"role": "assistant", "content": "Arr! No."}]}
    short = {"messages": CHAT}
    p = tmp_path / "long.jsonl"
    p.write_text(json.dumps(short) + "\n" + json.dumps(long_prompt) + "\n")
    full = len(tokenize_conversation(tokenizer, CHAT, 10_000)["input_ids"])
    ds, report = build_dataset(tokenizer, DataConfig(path=str(p)), max_length=full - 3)
    assert (report.n_valid, report.n_truncated, report.n_rejected) == (1, 1, 1)
    assert len(ds[0]["input_ids"]) == full - 3 == report.tokens_max
    (problem,) = report.problems
    assert problem.line == 2 and "no assistant token within the first" in problem.reason
    assert "train.max_length" in problem.fix


def test_no_usable_row_raises_listing_the_problems(tokenizer, tmp_path):
    p = tmp_path / "all_bad.jsonl"
    p.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}) + "\n" for i in range(12)))
    with pytest.raises(DataError) as e:
        build_dataset(tokenizer, DataConfig(path=str(p)), 128)
    message = str(e.value)
    assert f"{p}: no usable examples (12 of 12 rows rejected)" in message
    assert f"{p}:1: conversation has no assistant turn" in message and f"{p}:10:" in message
    assert f"{p}:11:" not in message and "... and 2 more" in message
    assert len(e.value.problems) == 12
    # validate_data reports the same rows without raising.
    assert validate_data(tokenizer, DataConfig(path=str(p)), 128).n_rejected == 12


def test_file_level_failures_raise_from_validate_data(tokenizer):
    with pytest.raises(DataError, match="latin1.jsonl:2: not valid UTF-8"):
        validate_data(tokenizer, DataConfig(path=str(BAD / "latin1.jsonl")), 128)


@pytest.mark.parametrize("masked, ok", [(0.0, False), (0.4, True), (1.0, False)])
def test_check_requires_masked_fraction_strictly_between_0_and_1(masked, ok):
    report = DataReport(source="d.jsonl", format="messages", n_rows=1, n_valid=1, masked_fraction=masked)
    if ok:
        report.check()
    else:
        with pytest.raises(DataError, match="in the loss"):
            report.check()


def test_pirate_sample_builds(tokenizer):
    ds, report = build_dataset(tokenizer, DataConfig(path=str(SAMPLE / "pirate_chat.jsonl")), 256)
    assert len(ds) == report.n_valid == report.n_rows and report.n_truncated == 0
    assert 0.2 < report.masked_fraction < 0.9
    assert all(in_loss(tokenizer, ex).startswith("Arr! ") for ex in ds.select(range(20)))
