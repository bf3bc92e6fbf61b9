"""Rich tables `edgetune eval` prints for held-out perplexity and the forgetting probe (kept out of cli.py)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_perplexity(result: dict, console: Console | None = None) -> None:
    table = Table(title=f"held-out perplexity on {result['data']} (blocks of {result['block_tokens']} tokens)")
    for col in ("model", "backend", "perplexity", "tokens", "seconds"):
        table.add_column(col)
    base = result["targets"][0]["perplexity"] if result["targets"] else None
    for r in result["targets"]:
        change = f" ({r['perplexity'] / base - 1:+.1%})" if base and r is not result["targets"][0] else ""
        table.add_row(r["label"], r["backend"], f"{r['perplexity']:.3f}{change}", str(r["tokens"]), f"{r['seconds']:.1f}")
    (console or Console()).print(table)
