"""The export screen offers ONNX variants beside the GGUF types: one click exports both, verified, into one table
(and the same table comes back from report.json when the run is reopened)."""
from __future__ import annotations

import shutil

import pytest

from shared_data import write_chat_jsonl
from tui_helpers import FAKE_HARDWARE, export_from_screen
from edgetune import config as C
from edgetune.tui.app import make_app
from edgetune.tui.widgets.verify_table import VerifyTable

pytestmark = pytest.mark.anyio


def merged_run(root, model_dir):
    """A run dir without training: config.toml + merged/ (export needs nothing else)."""
    data = write_chat_jsonl(root)
    run = root / "runs" / "onnx"
    cfg = C.resolve(None, {"model": {"ref": str(model_dir), "load_in_4bit": False}, "data": {"path": str(data)},
                           "run_dir": str(run), "name": "onnx"}, profile="cpu")
    run.mkdir(parents=True)
    cfg.save(run / "config.toml")
    shutil.copytree(model_dir, run / "merged")
    return run


async def test_export_screen_exports_gguf_and_onnx_into_one_table(tiny_model_dir, tmp_path, recorder):
    run = merged_run(tmp_path, tiny_model_dir)
    app = make_app(hardware=FAKE_HARDWARE, runs_root=tmp_path / "runs")
    async with app.run_test(size=(100, 30), message_hook=recorder) as pilot:
        await app.open_stage(run, "export")
        await pilot.pause()
        exported = await export_from_screen(app, pilot, recorder, "q8_0", "onnx:int4")
        assert [r["type"] for r in exported.result.results] == ["f16", "q8_0", "onnx int4"]
        onnx = exported.result.results[-1]
        assert onnx["token_ids_identical"] and onnx["genai_token_ids_identical"] and "mean_kld" in onnx
        assert (run / "onnx" / "int4" / "model.onnx").is_file()
        assert app.screen.query_one(VerifyTable).row_count == 3
        app.screen.query_one(VerifyTable).clear()
        app.screen.show_report()  # reopened: the same rows from report.json
        assert app.screen.query_one(VerifyTable).row_count == 3
