"""CPU half of the elementwise-math tests (tests/math_cases.py): the interpreter against float64 NumPy
with the ulp bounds of docs/language.md on special values + fresh random values, the masked softmax,
and every kernel of tests/test_math_gpu.py compiled for sm_90a and sm_80 and assembled by ptxas
(that file runs them on the GPU). Plus a look at the LLVM IR of exp: -inf and overflow are guarded."""
import shutil
import subprocess

import numpy as np
import pytest

import math_cases as M
import tile

needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not found on PATH")
CASES = list(M.cases())


@pytest.fixture
def cpu(monkeypatch):
    monkeypatch.setenv("TILEC_TARGET", "cpu")


@pytest.mark.parametrize("op,dt", CASES, ids=[f"{o}-{d}" for o, d in CASES])
def test_interpreter_vs_float64(op, dt, cpu):
    rng = np.random.default_rng()
    args = [M.inputs(dt, 3000, rng, op)] if op in M.UNARY else list(M.pair_inputs(dt, 3000, rng, op))
    got = M.run_op(op, dt, args)
    M.check(op, dt, got, M.reference(op, dt, *args), "interpreter", args)


def test_softmax_interpreter(cpu):
    M.check_softmax(M.run_softmax(np.random.default_rng()))


@pytest.mark.parametrize("dt", M.FUSED_TYPES)
def test_fma_and_exp2_ftz_interpreter(dt, cpu):
    """fma bit-exact against exact rationals (the interpreter rounds to odd in f64 first); exp2 with
    ftz: +0 below 2^-126, exp2's bound above."""
    args = M.fused_inputs(dt, 3000, np.random.default_rng())
    e, f = M.run_fused(dt, args)
    M.check_fused(dt, args, e, f, "interpreter")


def test_fma_exp2_ftz_and_max_are_one_instruction_each():
    """The PTX of the softmax's ops: one ex2.approx.ftz, one fma.rn, and maximum as one max.f32
    (PTX's max is maximumNumber: no signed-zero fix-up)."""
    T = tile.Tensor[tile.f32, 1]
    ptx = M.fused_kernel.compile(T, T, T, T, T, int, target="sm_90a").ptx
    n = ptx.count("ex2.approx.ftz.f32")      # once per code path (vector and element-wise)
    assert n >= 1 and "ex2.approx.f32" not in ptx and ptx.count("fma.rn.f32") == n, ptx
    ptx = M.binary_kernel.compile(T, T, T, int, target="sm_90a", OP="max").ptx
    assert ptx.count("max.f32") >= 1 and not any(f"setp.{p}.f32" in ptx for p in ("eq", "equ", "ne", "neu", "nan")), ptx


def test_casts_interpreter_run(cpu):
    """The cast harness of the GPU test runs (the interpreter's casts are bit-exact vs ml_dtypes:
    tests/test_numerics.py); float -> float casts of the special values keep NaN and inf."""
    n = 0
    for src, dst, x, codes in M.run_casts():
        n += 1
    assert n == len(M.CAST_TYPES) * (len(M.CAST_TYPES) - 1)


def _ptxas(ptx, arch, tmp_path):
    src = tmp_path / f"k_{arch}.ptx"
    src.write_text(ptx)
    r = subprocess.run(["ptxas", f"-arch={arch}", str(src), "-o", str(tmp_path / "k.cubin")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@needs_ptxas
@pytest.mark.parametrize("arch", ["sm_90a", "sm_80"])
def test_math_kernels_assemble(arch, tmp_path):
    """All op x type kernels of the GPU test, the softmax and the casts for sm_90a (the H100 the GPU
    test runs on); the f32 ones and the softmax for sm_80 (CI time)."""
    for op, dt in CASES:
        if arch == "sm_90a" or dt == "f32":
            ck = M.compile_op(op, dt, arch)
            assert f".target {arch}" in ck.ptx
            _ptxas(ck.ptx, arch, tmp_path)
    for i, ck in enumerate(M.compile_others(arch)):
        _ptxas(ck.ptx, arch, tmp_path)
        if arch != "sm_90a":
            break


def test_exp_guards_infinities():
    """exp's hi/lo split would make exp(-inf) = NaN (lo = -inf + inf): the IR selects lo = 0 where hi
    is not finite and the overflowed 2^hi itself where it is inf."""
    import llvmlite.ir as ir
    from tile.codegen.llvm_numerics import Numerics
    from tile.codegen.llvm_util import Decls, f32

    class Prov:
        def __init__(self, d):
            self.d = d

        def exp2_approx(self, b, x):
            return self.d.call(b, "llvm.nvvm.ex2.approx.f", f32, [f32], [x])

    m = ir.Module()
    d = Decls(m)
    fn = ir.Function(m, ir.FunctionType(f32, [f32]), "e")
    b = ir.IRBuilder(fn.append_basic_block())
    b.ret(Numerics(d, Prov(d)).exp(b, fn.args[0]))
    text = str(m)
    assert "0x7ff0000000000000" in text and text.count("select") >= 2, text


def test_fma_f64_interpreter_exact():
    """f64 fma in the interpreter: exact rationals rounded once (the float64 mul + add differs from it
    on these inputs), an overflowing result is the infinity of its sign, specials as IEEE says."""
    from fractions import Fraction
    from tile.ir.folding import fma_f64
    rng = np.random.default_rng()
    a, b = rng.standard_normal(500), rng.standard_normal(500)
    c = -(a * b) * (1 + rng.standard_normal(500) * 1e-12)
    got = fma_f64(a, b, c)
    want = [float(Fraction(x) * Fraction(y) + Fraction(z)) for x, y, z in zip(a, b, c)]
    assert (got == np.array(want)).all()
    assert (got != a * b + c).any()
    big = fma_f64(np.array([1e308, 1e308, np.inf, 0.0]), np.array([10.0, -10.0, 0.0, -1.0]), np.array([-1.0, 1.0, 1.0, 0.0]))
    assert big[0] == np.inf and big[1] == -np.inf and np.isnan(big[2]) and big[3] == 0 and not np.signbit(big[3])
