"""The SFT training set: every training sequence of every usable conversation as `input_ids` + `labels`.

`labels` holds the token id where the token is trained (each assistant reply and its end-of-turn token, see
edgetune.data.template) and -100 elsewhere. Masking lives in the data itself, not in a trainer option, so it holds
whichever trainer collates it: TRL pads labels with -100, and so does Unsloth's DataCollatorForSeq2Seq.
"""
from __future__ import annotations

from edgetune.config import DataConfig
from edgetune.data.report import DataReport, prepare
from edgetune.data.template import labels_for


def build_dataset(tokenizer, cfg: DataConfig, max_length: int) -> tuple[object, DataReport]:
    """A `datasets.Dataset` (columns input_ids, labels) and its DataReport; DataError when unusable."""
    from datasets import Dataset

    report, examples = prepare(tokenizer, cfg, max_length)
    report.check()
    columns = {"input_ids": [e["input_ids"] for e in examples],
               "labels": [labels_for(e["input_ids"], e["mask"]) for e in examples]}
    return Dataset.from_dict(columns), report
