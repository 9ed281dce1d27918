"""What scripts/check_onnx.py and bench/compare_ort.py share: a virtualenv with pinned onnxruntime,
onnx and numpy, the release build of netc, and the list of networks.

The virtualenv lives in NETC_ORT_VENV, by default `$CARGO_TARGET_DIR/ort-venv` (`target/ort-venv`
without CARGO_TARGET_DIR). `ensure_venv()` creates it on first use, installs the pinned packages
with pip from PyPI (binary wheels only), and re-executes the calling script with the virtualenv's
Python; a stamp file records what was installed, so later runs start at once. This module itself
uses only the standard library, so it runs under any Python 3.9 or newer.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# onnx is the release whose schema proto/onnx.proto is; its checker validates exported models.
REQUIREMENTS = ["onnxruntime==1.22.1", "onnx==1.18.0", "numpy==2.2.6"]
_REEXEC_FLAG = "NETC_ORT_VENV_ACTIVE"


def fail(message: str, code: int = 2) -> "None":
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def target_dir() -> Path:
    t = os.environ.get("CARGO_TARGET_DIR")
    return REPO / t if t else REPO / "target"


def venv_dir() -> Path:
    v = os.environ.get("NETC_ORT_VENV")
    return Path(v) if v else target_dir() / "ort-venv"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _install(venv: Path, requirements: "list[str]") -> None:
    stamp = venv / "netc-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    python = _venv_python(venv)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return
    print(f"setting up {venv} with {' '.join(requirements)}", file=sys.stderr)
    if venv.exists():
        shutil.rmtree(venv)
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        fail(
            f"`{sys.executable} -m venv {venv}` failed:\n{made.stderr.strip()}\n"
            "install Python's venv module (Debian: `apt-get install python3-venv`)"
        )
    pip = [
        str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
        "--retries", "5", "--timeout", "60", "--only-binary", ":all:", *requirements,
    ]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        shutil.rmtree(venv, ignore_errors=True)
        fail(
            f"pip could not install {', '.join(requirements)} from PyPI "
            f"(exit code {done.returncode}); its last lines:\n{tail}\n"
            f"these pinned versions need Python 3.10 to 3.13 on x86-64 or aarch64 Linux, macOS or "
            f"Windows (this is Python {sys.version.split()[0]}); or point NETC_ORT_VENV at a "
            "virtualenv that has them"
        )
    stamp.write_text(wanted)


def ensure_venv(venv: "Path | None" = None, requirements: "list[str] | None" = None) -> None:
    """Makes sure the script runs in the virtualenv with the pinned packages, re-executing it
    there if needed. Returns only in the virtualenv. By default the virtualenv is venv_dir() with
    REQUIREMENTS; a script that needs more passes its own directory and list (which should
    include REQUIREMENTS)."""
    if sys.version_info < (3, 9):
        fail(f"Python 3.9 or newer is needed, this is {sys.version.split()[0]}")
    venv = venv or venv_dir()
    requirements = requirements or REQUIREMENTS
    if os.environ.get(_REEXEC_FLAG) == str(venv):
        try:
            import numpy  # noqa: F401
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as e:
            fail(f"the virtualenv {venv} lacks a package ({e}); delete it and run again")
        return
    _install(venv, requirements)
    env = dict(os.environ, **{_REEXEC_FLAG: str(venv)})
    python = str(_venv_python(venv))
    os.execve(python, [python, *sys.argv], env)


def netc_binary() -> Path:
    """The release netc binary: NETC if set, else built with `cargo build --release`."""
    given = os.environ.get("NETC")
    if given:
        return Path(given)
    built = subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO)
    if built.returncode != 0:
        fail("`cargo build --release` failed")
    return target_dir() / "release" / "netc"


def seed_nets() -> "list[Path]":
    return sorted((REPO / "nets").glob("*.net"))


def run(cmd: "list[str]", what: str) -> subprocess.CompletedProcess:
    """Runs a command, failing with its stderr if it fails."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit code {done.returncode}): {' '.join(cmd)}\n{done.stderr.strip()}")
    return done
