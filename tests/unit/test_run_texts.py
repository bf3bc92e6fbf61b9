"""Training leaves the held-out and calibration texts in the run directory; export reads them instead of
re-reading the source data and re-deriving the split."""
import json

from edgetune import config as C
from edgetune import runs


def test_training_writes_the_split_that_export_reads(tiny_model_dir, chat_jsonl, tmp_path):
    from edgetune.export.gguf_export import calibration_texts
    from edgetune.export.verify import GENERIC_TEXTS, heldout_texts
    from edgetune.tokenizer import load_tokenizer
    from edgetune.train import train

    run = tmp_path / "run"
    train(C.resolve(None, {"model": {"ref": str(tiny_model_dir)}, "data": {"path": str(chat_jsonl), "eval_fraction": 0.25},
                           "run_dir": str(run), "train": {"max_steps": 1}}, profile="cpu"))
    held, calib = runs.read_texts(run, runs.HELDOUT), runs.read_texts(run, runs.CALIBRATION)
    assert len(held) == 6 and len(calib) == 18  # 24 rows: a quarter held out, the rest trained on
    tok = load_tokenizer(run / runs.ADAPTER)
    assert all(t.count("<|im_start|>assistant") >= 1 for t in held + calib)  # rendered chats
    chat_jsonl.unlink()  # the source data moved away: later stages still have what they need
    assert calibration_texts(run, tok) == calib
    assert heldout_texts(run, tok) == held + list(GENERIC_TEXTS)
    lines = (run / runs.HELDOUT).read_text().splitlines()
    assert [json.loads(line)["text"] for line in lines] == held
