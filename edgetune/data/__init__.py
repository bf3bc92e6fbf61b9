"""Training data: read rows (files or hub ids), normalise formats to chat messages, render the chat template and
mask everything but assistant turns. Light to import: transformers and datasets load inside the functions that use them.
"""
from edgetune.data.dataset import build_dataset
from edgetune.data.formats import FORMATS, RowError, detect_format, normalize
from edgetune.data.load import Problem, load_conversations, read_rows
from edgetune.data.report import DataReport, validate_data
from edgetune.data.template import ensure_chat_template, install_chat_template, tokenize_conversation

__all__ = [
    "FORMATS", "RowError", "detect_format", "normalize",
    "Problem", "read_rows", "load_conversations",
    "ensure_chat_template", "install_chat_template", "tokenize_conversation", "build_dataset",
    "DataReport", "validate_data",
]
