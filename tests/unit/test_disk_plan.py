"""The export states the disk it needs before writing anything, and refuses when it cannot fit."""
from collections import namedtuple

import pytest

from edgetune.errors import ExportError
from edgetune.export.disk_plan import plan_gguf_export

GB = 10**9


def test_plan_counts_every_file_at_the_fullest_moment(tmp_path):
    plan = plan_gguf_export(tmp_path, 3 * GB, ["q8_0", "q4_k_m"], merge_bytes=6 * GB, keep_f16=False, imatrix=True,
                            reference_positions=3584, vocab=128256)
    sizes = {i.what: i.nbytes for i in plan.items}
    assert sizes["merged 16-bit checkpoint"] == 6 * GB and 6.0 * GB <= sizes["F16 GGUF"] <= 6.1 * GB
    assert 1.8 * GB <= sizes["Q4_K_M GGUF"] <= 1.9 * GB and 3.2 * GB <= sizes["Q8_0 GGUF"] <= 3.3 * GB
    assert sizes["verification log-probs"] == 3584 * 128256 * 4
    assert plan.peak_bytes > sum(sizes.values()) and plan.kept_bytes < plan.peak_bytes  # F16, log-probs go
    text = plan.describe()
    assert "F16 GGUF 6.0 GB (removed after)" in text and "Q4_K_M GGUF 1.9 GB" in text


def test_export_refuses_before_merging_when_the_disk_is_too_small(tmp_path, tiny_model_dir, chat_jsonl, monkeypatch):
    from edgetune import config as C
    from edgetune.export import disk_plan
    from edgetune.export.gguf_export import export_gguf
    from edgetune.train import train

    run = tmp_path / "run"
    train(C.resolve(None, {"model": {"ref": str(tiny_model_dir)}, "data": {"path": str(chat_jsonl)},
                           "run_dir": str(run), "train": {"max_steps": 1}}, profile="cpu"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(disk_plan.shutil, "disk_usage", lambda p: usage(10**12, 10**12 - 10**6, 10**6))
    with pytest.raises(ExportError, match=r"not enough free disk .* free at least") as e:
        export_gguf(run, ["q4_k_m"])
    assert "F16 GGUF" in e.value.hint and not (run / "merged").exists() and not list((run / "gguf").glob("*.gguf"))
    monkeypatch.undo()
    assert export_gguf(run, ["q4_k_m"]).files  # with the real disk it goes through
