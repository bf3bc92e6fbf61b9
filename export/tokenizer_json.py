"""Reading tokenizer.json: its normalizer / pre_tokenizer / post_processor steps, flattened out of Sequences."""
from __future__ import annotations


def flatten(node: dict | None, key: str) -> list[dict]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [leaf for child in node.get(key, []) for leaf in flatten(child, key)]
    return [node]
