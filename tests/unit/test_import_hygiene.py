"""The headless core never imports textual (harlequin's test_import_hygiene), and `--help` stays light."""
import subprocess
import sys


def imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_cli_does_not_import_textual():
    mods = imported_after("import edgetune.cli")
    assert not any(m == "textual" or m.startswith("textual.") for m in mods)


def test_core_modules_do_not_import_textual():
    mods = imported_after("import edgetune.cli, edgetune.train, edgetune.merge, edgetune.chat, edgetune.data, "
                          "edgetune.config, edgetune.export.gguf_convert, edgetune.export.quantize")
    assert "textual" not in mods


def test_no_core_file_mentions_textual():
    from pathlib import Path

    root = Path(__file__).parents[2] / "edgetune"
    offenders = [p for p in root.rglob("*.py") if "import textual" in p.read_text() or "from textual" in p.read_text()]
    assert offenders == []


def test_cli_import_is_light():
    """`edgetune --help` must not pay for torch/transformers imports."""
    mods = imported_after("import edgetune.cli")
    assert "torch" not in mods and "transformers" not in mods
