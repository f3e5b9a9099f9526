"""Errors a user can read: the CLI shows a kernel's CompileError as the Python API does (line and
caret), misspelled builtins get a suggestion, ptxas spills warn (tile.PerformanceWarning), and
tile.device_print formats its values (interpreter) and prints through vprintf (NVIDIA)."""
from __future__ import annotations

import shutil
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import tile
from tile import cli, f32

needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not found on PATH")


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    monkeypatch.setenv("TILEC_TARGET", "cpu")
    monkeypatch.setenv("TILEC_CACHE", "0")


BAD = textwrap.dedent("""\
    import tile
    from tile import f32

    @tile.kernel
    def k(X: tile.Tensor[f32, 1]):
        x = tile.load(X, (0,), (4,))
        tile.store(X, (0,), tile.exps(x))
    """)


def test_cli_error_shows_line_and_caret_as_the_api(tmp_path, capsys):
    p = tmp_path / "bad.py"
    p.write_text(BAD)
    rc = cli.main(["ir", f"{p}::k"])
    err = capsys.readouterr().err
    assert rc == 1
    from tile.cli import load_file
    with pytest.raises(tile.CompileError) as ei:
        load_file(str(p)).k.compile(tile.Tensor[f32, 1], target="cpu")
    assert err.rstrip("\n") == str(ei.value)                      # exactly what the API shows
    lines = err.rstrip("\n").splitlines()
    assert len(lines) == 3 and lines[0].endswith("bad.py:7:25: module 'tile' has no attribute 'exps'; did you mean 'exp'?")
    assert lines[1] == "        tile.store(X, (0,), tile.exps(x))"
    assert lines[2] == "                            ^~~~~~~~~"
    # in a fresh process too (no traceback, exit status 1)
    r = subprocess.run([sys.executable, "-m", "tile.cli", "ir", f"{p}::k"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[1:] == lines[1:]


@pytest.mark.parametrize("wrong, right", [("lod", "load"), ("exps", "exp"), ("stor", "store"), ("F32", "f32"),
                                          ("block_idx", "block_id"), ("zero", "zeros")])
def test_misspelled_builtin_suggests(wrong, right, tmp_path):
    p = tmp_path / f"k_{wrong}.py"
    p.write_text(f"import tile\nfrom tile import f32\n\n@tile.kernel\ndef k(X: tile.Tensor[f32, 1]):\n"
                 f"    x = tile.{wrong}\n")
    k = cli.load_file(str(p)).k
    with pytest.raises(tile.CompileError, match=rf"has no attribute '{wrong}'; did you mean '{right}'\?"):
        k.compile(tile.Tensor[f32, 1], target="cpu")


def test_no_suggestion_for_far_names():
    from tile.dsl.frontend import _did_you_mean
    assert _did_you_mean(tile, "qqqqqq") == ""
    import math
    assert _did_you_mean(math, "lod") == ""                       # only the tile namespace


# ------------------------------------------------------------------------------ device_print
@tile.kernel
def printer(X: tile.Tensor[f32, 1], n: int, s: float):
    i = tile.block_id(0)
    x = tile.load(X, (i * 4,), (4,))
    tile.device_print("n = {} s={:.3f} i={}", n, s, i)
    tile.device_print("plain", n, x)
    tile.store(X, (i * 4,), x + s)


def test_device_print_formats_in_the_interpreter(capsys):
    x = np.arange(8, dtype=np.float32)
    printer[(2,)](x, 3, 0.5)
    out = capsys.readouterr().out.splitlines()
    assert out == ["[block (0, 0, 0)] n = 3 s=0.500 i=0", "[block (0, 0, 0)] plain 3 [0. 1. 2. 3.]",
                   "[block (1, 0, 0)] n = 3 s=0.500 i=1", "[block (1, 0, 0)] plain 3 [4. 5. 6. 7.]"]


def test_printf_format():
    from tile.codegen.lower_tile import printf_format
    assert printf_format("n = {} s={:.3f}", ["d", "g"], []) == "n = %d s=%.3f\n"
    assert printf_format("x", ["d", "lld", "g"], []) == "x %d %lld %g\n"
    assert printf_format("", ["u"], []) == "%u\n"
    assert printf_format("100% {{ok}} {:5d} {:x}", ["d", "lld"], []) == "100%% {ok} %5d %llx\n"
    assert printf_format("t={}", [None], ["tile<4xf32>"]) == "t=<tile tile<4xf32>>\n"
    with pytest.raises(ValueError, match="more fields"):
        printf_format("{} {}", ["d"], [])
    with pytest.raises(ValueError, match="1 fields for 2 values"):
        printf_format("{}", ["d", "d"], [])
    with pytest.raises(ValueError, match="does not fit"):
        printf_format("{:d}", ["g"], [])
    with pytest.raises(ValueError, match="positional"):
        printf_format("{name}", ["d"], [])


@needs_ptxas
def test_device_print_compiles_to_vprintf(tmp_path, monkeypatch):
    # the warning comes from code generation: compile afresh (a private, empty kernel cache)
    from tile.runtime import cache as rc
    monkeypatch.setattr(rc, "_DEFAULT", rc.KernelCache(tmp_path / "cache"))
    printer.cache.clear()
    with pytest.warns(RuntimeWarning, match="register tiles print as <tile"):
        ck = printer.compile(tile.Tensor[f32, 1], int, float, target="sm_80")
    ptx = ck.ptx
    assert "vprintf" in ptx and "call.uni" in ptx
    text = "[block (%d, %d, %d)] n = %d s=%.3f i=%d\n"
    data = text.encode()
    assert f"[{len(data) + 1}] = {{" + ", ".join(str(c) for c in data) + "}" in ptx     # NUL-terminated
    from tile.codegen import run_ptxas
    run_ptxas(ptx, "sm_80")                                    # ptxas accepts it
    run_ptxas(printer.compile(tile.Tensor[f32, 1], int, float, target="sm_90a").ptx, "sm_90a")


def test_device_print_bad_format_is_located():
    @tile.kernel
    def k(n: int):
        tile.device_print("{} {}", n)
    with pytest.raises(Exception, match=r"device_print: the format '\{\} \{\}' has more fields"):
        k.compile(int, target="sm_80")


# ------------------------------------------------------------------------------ spills
@needs_ptxas
def test_spills_warn_with_the_numbers(monkeypatch):
    monkeypatch.delenv("TILEC_PTXAS_REPORT", raising=False)

    @tile.kernel
    def heavy(X: tile.Tensor[f32, 1], Y: tile.Tensor[f32, 1]):
        x = tile.load(X, (0,), (1024,))
        tile.store(Y, (0,), x * tile.sum(x, 0) + tile.max(x, 0))
    from tile import compiler
    from tile.ir.parser import parse_module
    ir = heavy.compile(tile.Tensor[f32, 1], tile.Tensor[f32, 1], target="cpu").ir
    with pytest.warns(tile.PerformanceWarning, match=r"kernel 'heavy' for sm_80 spills registers: \d+ bytes spill "
                                                     r"stores, \d+ bytes spill loads \(\d+ registers"):
        art = compiler.compile(parse_module(ir), "sm_80", maxnreg=16, num_warps=1)
    assert art.extra["ptxas"]["spill_stores"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")                         # no spills, no warning
        art = compiler.compile(parse_module(ir), "sm_80", num_warps=4)
    assert art.extra["ptxas"]["spill_stores"] == 0 and art.extra["ptxas"]["registers"] > 0


def test_spill_warning_from_a_cached_artifact():
    from tile import compiler
    from tile.ir.artifact import Artifact, KernelMeta
    art = Artifact(KernelMeta(name="kk", target="sm_90a", num_threads=128), ptx="//",
                   extra={"ptxas": {"registers": 255, "stack": 64, "spill_stores": 8, "spill_loads": 16}})
    with pytest.warns(tile.PerformanceWarning, match="kernel 'kk' for sm_90a spills registers: 8 bytes"):
        compiler.warn_resources(art)
    art.extra["ptxas"]["spill_stores"] = art.extra["ptxas"]["spill_loads"] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiler.warn_resources(art)


# ------------------------------------------------------------------------------ on the GPU
GPU_PRINT = textwrap.dedent("""\
    import torch, tile
    from tile import f32

    @tile.kernel
    def k(X: tile.Tensor[f32, 1], n: int, s: float):
        i = tile.block_id(0)
        x = tile.load(X, (i * 4,), (4,))
        tile.device_print("n = {} s={:.3f} i={}", n, s, i)
        tile.store(X, (i * 4,), x + s)

    x = torch.zeros(8, device="cuda")
    k[(2,)](x, 3, 0.5)
    torch.cuda.synchronize()
    assert x.cpu().tolist() == [0.5] * 8
    """)


def _have_gpu():
    from tile.runtime import cuda
    try:
        return cuda.available()
    except Exception:                                   # noqa: BLE001
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _have_gpu(), reason="no NVIDIA GPU/driver")
def test_device_print_on_the_gpu(tmp_path):
    p = tmp_path / "gpu_print.py"
    p.write_text(GPU_PRINT)
    env = {k: v for k, v in os.environ.items() if k != "TILEC_TARGET"}     # the GPU, not a test's target
    r = subprocess.run([sys.executable, str(p)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    lines = sorted(line for line in r.stdout.splitlines() if line.startswith("[block"))
    assert lines == ["[block (0, 0, 0)] n = 3 s=0.500 i=0", "[block (1, 0, 0)] n = 3 s=0.500 i=1"], r.stdout


@tile.kernel
def _ftz_runtime(X, Y, F: int):
    tile.store(Y, (0,), tile.exp2(tile.load(X, (0,), (16,)), ftz=F))


@tile.kernel
def _fma_ints(X, Y):
    x = tile.load(X, (0,), (16,))
    tile.store(Y, (0,), tile.fma(x, 3, 1))


def test_exp2_ftz_must_be_a_constant_and_fma_promotes_ints(monkeypatch):
    """exp2's ftz is a compile-time bool (the error names it, at the call's line); fma of integers
    computes in f32, as the other float math does."""
    T = tile.Tensor
    with pytest.raises(Exception, match=r"ftz must be a compile-time bool") as ei:
        _ftz_runtime.compile(T[tile.f32, 1], T[tile.f32, 1], int, target="cpu")
    assert "test_user_errors.py" in str(ei.value)
    monkeypatch.setenv("TILEC_TARGET", "cpu")
    x = np.arange(16, dtype=np.int32)
    y = np.zeros(16, np.float32)
    _fma_ints[(1,)](x, y)
    assert (y == 3.0 * x + 1).all()
