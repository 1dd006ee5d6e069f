"""The built wheel alone is enough: installed into a fresh virtual environment, outside this
checkout, `redraft.load()` samples and infills from the shipped default model."""

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Run inside the fresh environment, from an empty folder: which redraft was imported, where its
# default model lives, and what it writes for fixed seeds.
PROBE = r"""
import json, sys
import redraft
import redraft.default
m, ar = redraft.load(), redraft.load("default-ar")
gen = m.generate("def ", max_new_tokens=16, steps=8, seed=3)
fill = m.infill("def f(x):\n    <|mask:8|>\n", steps=8, sampler="confidence", seed=3)
cont = ar.generate("import ", max_new_tokens=8, seed=3)
print(json.dumps({"file": redraft.__file__, "prefix": sys.prefix, "model_path": str(m.path),
                  "kinds": [m.kind, ar.kind], "gen": gen.tokens, "fill": fill.tokens,
                  "fill_text": fill.text, "spans": fill.spans, "cont": cont.tokens,
                  "card": redraft.default.card().splitlines()[0]}))
"""


def build_wheel(out: Path, work: Path) -> Path:
    """The wheel of a copy of this checkout (the build writes nothing into the checkout)."""
    src = work / "checkout"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", str(src), "-w", str(out)], check=True, cwd=work)
    (wheel,) = out.glob("redraft-*.whl")
    return wheel


def make_venv(venv: Path) -> Path:
    """A fresh virtual environment that sees this interpreter's installed packages (torch & co.,
    pip) but nothing of this checkout, offline; its python.

    `--system-site-packages` is not enough: when the tests themselves run in a virtual
    environment it exposes the *base* interpreter's packages, not this one's, and torch is
    usually installed only in this one. So the new environment gets a .pth file naming this
    interpreter's site folders. A plain path line in a .pth file adds the folder after the
    environment's own site-packages (so the wheel's redraft wins), and the .pth files inside it
    are not run, so an editable install of redraft there stays invisible."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_path('purelib'))"], check=True,
                             capture_output=True, text=True).stdout.strip()
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    dirs = [d for d in dict.fromkeys(dirs) if Path(d).is_dir()]
    (Path(purelib) / "_redraft_test_parent_site.pth").write_text("\n".join(dirs) + "\n")
    return python


@pytest.mark.slow
def test_the_wheel_alone_samples_and_infills_from_the_default_model(tmp_path):
    wheel = build_wheel(tmp_path / "dist", tmp_path)
    assert wheel.stat().st_size < 80e6  # a few tens of MB at most
    venv = tmp_path / "venv"
    python = make_venv(venv)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["REDRAFT_CACHE"] = str(tmp_path / "cache")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index",
                    "--ignore-installed", "-q", str(wheel)], check=True, env=env)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    out = subprocess.run([str(python), "-c", PROBE], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    prefix = Path(got["prefix"]).resolve()
    assert prefix == venv.resolve()
    assert Path(got["file"]).resolve().is_relative_to(prefix)  # not this checkout's redraft
    assert Path(got["model_path"]).resolve().is_relative_to(prefix)
    assert got["kinds"] == ["diffusion", "ar"]
    assert got["card"] == "# Model card: redraft's default models"  # the card is in the wheel
    assert len(got["gen"][0]) == 4 + 16 and len(got["cont"][0]) == 7 + 8
    assert got["fill_text"].startswith("def f(x):\n    ") and got["fill_text"].endswith("\n")
    assert len(got["spans"][0]) <= 8 and not (tmp_path / "cache").exists()

    # The same weights and seeds in this checkout give the very same tokens.
    here = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True,
                          text=True, timeout=120,
                          env={**env, "PYTHONPATH": str(ROOT / "src")})
    assert here.returncode == 0, here.stderr
    mine = json.loads(here.stdout)
    assert Path(mine["file"]).resolve().is_relative_to(ROOT)
    assert [mine[k] for k in ("gen", "fill", "cont")] == [got[k] for k in ("gen", "fill", "cont")]

    # The command line too, with no checkpoint argument.
    cli = subprocess.run([str(venv / "bin" / "redraft"), "sample", "--length", "24", "--steps",
                          "4", "--prompt", "def ", "--json"], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["samples"][0].startswith("def ")
