"""The export verification table (report.json `export.files`): one row per GGUF type."""
from __future__ import annotations

from textual.widgets import DataTable

COLUMNS = ("type", "size MB", "top-1", "mean KLD", "token ids", "stops at EOS", "kept", "status")


class VerifyTable(DataTable):
    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns(*COLUMNS)

    def show(self, results: list[dict]) -> None:
        self.clear()
        for r in results:
            self.add_row(r["type"].upper(), f"{r['size_bytes'] / 1e6:.1f}", f"{r['top1']:.3f}",
                         f"{r['mean_kld']:.4f}", "identical" if r["token_ids_identical"] else "DIFFER",
                         "yes" if r["stops_at_eos"] else "NO", "yes" if r.get("kept", True) else "no",
                         "ok" if r["passed"] else "FAILED")
