"""The wheel maps tui/, export/ and profiles/ into the edgetune namespace and ships no generic top-level module."""
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


@pytest.mark.slow
def test_wheel_installs_in_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPO)],
                   check=True, capture_output=True)
    (wheel,) = dist.glob("edgetune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops <= {"edgetune", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
    assert "edgetune/tui/__init__.py" in names and "edgetune/export/gguf_convert.py" in names
    assert "edgetune/tui/app.tcss" in names and "edgetune/tui/screens/setup.py" in names
    assert "edgetune/tui/widgets/loss_plot.py" in names and "edgetune/export/onnx_export.py" in names
    assert "edgetune/profiles/cpu.toml" in names and "edgetune/sample_data/pirate_chat.jsonl" in names
    # A fresh venv that sees the dependencies installed in *this* interpreter's environment (a venv, a conda env or
    # the system Python alike) but not this checkout: a .pth names those site dirs. Plain path lines do not run the
    # .pth files inside them, so the editable install of this checkout stays invisible.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    env_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in [*site.getsitepackages(), site.getusersitepackages()] if Path(p).is_dir()]
    (Path(env_site) / "outer_env.pth").write_text("\n".join(ours) + "\n", encoding="utf-8")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True)
    code = ("import edgetune, edgetune.tui, edgetune.tui.app, edgetune.export, edgetune.export.gguf_convert\n"
            "from edgetune.config import list_profiles, load_profile\n"
            "assert 'site-packages' in edgetune.__file__ and 'venv' in edgetune.__file__, edgetune.__file__\n"
            "assert 'cpu' in list_profiles() and load_profile('gpu-8gb')['train']['batch_size'] == 2\n"
            "import importlib.util as u\n"
            "assert u.find_spec('tui') is None and u.find_spec('export') is None\n"
            "print('ok')")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "ok", out.stderr
