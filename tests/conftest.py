"""Session-wide settings for the test suite."""
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _installed_tile() -> tuple:
    """(tile/__init__.py, error): where `import tile` leads a Python started outside this checkout (as
    the suite's subprocesses, autotune workers and CLI runs are), or why it fails there."""
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, "-c", "import tile, sys; sys.stdout.write(tile.__file__)"],
                           cwd=d, capture_output=True, text=True, timeout=120)
    err = (r.stderr.strip().splitlines() or ["?"])[-1]
    return (r.stdout.strip(), "") if r.returncode == 0 else ("", err)


_LINK_DIRS: list = []            # the PYTHONPATH folder made below (removed when the session ends)


def pytest_configure(config):
    # one base for the fuzzers' fresh seeds per session: pytest-xdist workers inherit it and collect
    # the same parametrized ids (set TILEC_FUZZ_BASE to replay a session)
    os.environ.setdefault("TILEC_FUZZ_BASE", str(random.SystemRandom().randrange(2 ** 31)))
    # launches check only the last pass's IR; the suite checks every pass, so a pass that breaks the
    # IR is named (passes/manager.py run_pipeline verify="final")
    os.environ.setdefault("TILEC_VERIFY", "each")
    # The tests' own imports find this checkout (its root is on sys.path); the processes they start do
    # not. If those would import another tilec (none installed, or an install of another checkout),
    # point them here: a folder holding only a link to this tile/ goes first on their PYTHONPATH (not
    # the root itself, whose benchmarks/ and examples/ must not become importable). Where even that
    # does not win, half the suite would test other code: say so once, with the fix, instead.
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        found, err = _installed_tile()
        if Path(found or "/").resolve() != ROOT / "tile" / "__init__.py":
            link_dir = tempfile.mkdtemp(prefix="tilec-tests-path-")
            _LINK_DIRS.append(link_dir)
            os.symlink(ROOT / "tile", Path(link_dir) / "tile")
            os.environ["PYTHONPATH"] = os.pathsep.join([link_dir] + [p for p in [os.environ.get("PYTHONPATH")] if p])
            found, err = _installed_tile()
        if Path(found or "/").resolve() != ROOT / "tile" / "__init__.py":
            why = f"the installed tilec is {Path(found).parent}" if found else \
                f"`import tile` fails outside this checkout ({err})"
            raise pytest.UsageError(f"{why}: the suite's subprocesses would not test this checkout ({ROOT}). "
                                    f"Install it first: python3 -m pip install -e '.[test]'")


@pytest.fixture
def hopper(monkeypatch):
    """Skips a GPU test where the GPU is not a Hopper (sm_90a); the kernels compile for the GPU's own
    target (TILEC_TARGET unset)."""
    from tile.compiler import gpu_arch
    if gpu_arch() != "sm_90a":
        pytest.skip("needs a Hopper GPU (sm_90a)")
    monkeypatch.delenv("TILEC_TARGET", raising=False)


def pytest_unconfigure(config):
    import shutil
    while _LINK_DIRS:
        shutil.rmtree(_LINK_DIRS.pop(), ignore_errors=True)
