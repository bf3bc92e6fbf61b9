"""`edgetune` with no command and `edgetune tui` open the app through make_app (lazily imported by the CLI)."""
from __future__ import annotations

import pytest

from edgetune import cli

class FakeApp:
    return_code = 0

    def __init__(self, calls, **kw):
        self.calls, self.kw = calls, kw

    def run(self):
        self.calls.append(self.kw)


@pytest.fixture
def launched(monkeypatch):
    import edgetune.tui.app

    calls: list = []
    monkeypatch.setattr(edgetune.tui.app, "make_app", lambda **kw: FakeApp(calls, **kw))
    return calls


@pytest.mark.parametrize("argv", [[], ["tui"]])
def test_no_command_and_tui_open_the_app(launched, argv):
    assert cli.main(argv) == 0
    assert len(launched) == 1


def test_tui_run_dir_option(launched, tmp_path):
    assert cli.main(["tui", "--run-dir", str(tmp_path)]) == 0
    assert launched == [{"run_dir": tmp_path}]


def test_help_still_lists_commands(capsys):
    assert cli.main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
