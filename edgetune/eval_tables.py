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


def print_probe(result: dict, console: Console | None = None) -> None:
    """The forgetting check: the general probe's score per model and kind, and the drop against the base."""
    console = console or Console()
    table = Table(title=f"forgetting check: general probe ({result['items']} items, score of 100)")
    kinds = sorted({k for r in result["targets"] for k in r["by_kind"]})
    for col in ("model", "score", *kinds, "seconds"):
        table.add_column(col)
    for r in result["targets"]:
        table.add_row(r["label"], f"{r['score']:.1f}", *(f"{r['by_kind'].get(k, 0):g}" for k in kinds), f"{r['seconds']:.1f}")
    console.print(table)
    if "drop" in result:
        style = "bold yellow" if result["warning"] else "green"
        verdict = "more than" if result["warning"] else "within"
        console.print(f"[{style}]tuned vs base: {-result['drop']:+.1f} points ({verdict} the allowed drop of "
                      f"{result['max_drop']:g}, eval.max_probe_drop)[/]")
