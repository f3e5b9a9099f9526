"""Elementwise math on an NVIDIA GPU (`python3 -m pytest -m gpu tests/test_math_gpu.py`; skipped where
there is none): every op x type of tests/math_cases.py on special values (+-0, +-inf, NaN, subnormals,
largest finite, exp over/underflow thresholds, huge sin/cos arguments, ...) plus fresh log-uniform
random values of every magnitude and both signs, run on the GPU AND in the interpreter; both must
agree with float64 NumPy: NaN positions and infinities exactly, signs of zero exactly, finite results
within math_cases.ULP (the table of docs/language.md). Outputs start as NaN (poison). Also the masked
row softmax (other=-inf, ragged rows, a row of -inf but one element) and every cast among
f32/f16/bf16/fp8/fp6/fp4/int4/uint4/int8, GPU codes bit-exact vs the interpreter."""

import numpy as np
import pytest

import math_cases as M
from helpers import on_cpu
import tile

pytestmark = pytest.mark.gpu
CASES = list(M.cases())


@pytest.fixture(autouse=True)
def _need_gpu(monkeypatch):
    from tile.kernel import gpu_arch
    if gpu_arch() is None:
        pytest.skip("no NVIDIA GPU/driver found")
    monkeypatch.delenv("TILEC_TARGET", raising=False)


_on_cpu = on_cpu


@pytest.mark.parametrize("op,dt", CASES, ids=[f"{o}-{d}" for o, d in CASES])
def test_math_gpu_vs_interpreter_vs_float64(op, dt):
    rng = np.random.default_rng()
    args = [M.inputs(dt, 20000, rng, op)] if op in M.UNARY else list(M.pair_inputs(dt, 20000, rng, op))
    ref = M.reference(op, dt, *args)
    gpu = M.run_op(op, dt, args)
    cpu = _on_cpu(M.run_op, op, dt, args)
    M.check(op, dt, cpu, ref, "interpreter", args)
    M.check(op, dt, gpu, ref, "GPU", args)
    # the special values: GPU == interpreter exactly for the correctly rounded / exact ops
    if M.ULP[dt][op] <= 0.5:
        same = (gpu == cpu) | (np.isnan(gpu) & np.isnan(cpu))
        assert same.all(), f"{op} {dt}: GPU != interpreter at {np.flatnonzero(~same)[:8]}"


@pytest.mark.parametrize("dt", M.FUSED_TYPES)
def test_fma_and_exp2_ftz_gpu_vs_interpreter(dt):
    """fma.rn and ex2.approx.ftz on the GPU: fma bit for bit the exact rounding (and the interpreter's);
    exp2 with ftz flushes below 2^-126 exactly as the interpreter does (away from the edge)."""
    args = M.fused_inputs(dt, 20000, np.random.default_rng())
    e, f = M.run_fused(dt, args)
    M.check_fused(dt, args, e, f, "GPU")
    ce, cf = _on_cpu(M.run_fused, dt, args)
    assert ((f == cf) | (np.isnan(f) & np.isnan(cf))).all()


def test_masked_softmax_gpu():
    rng = np.random.default_rng()
    M.check_softmax(M.run_softmax(rng))
    M.check_softmax(M.run_softmax(rng, R=5, NCOL=256, BLOCK=256))


def test_casts_gpu_bit_exact_vs_interpreter():
    gpu = list(M.run_casts())
    cpu = _on_cpu(lambda: list(M.run_casts()))
    bad = []
    from tile.ir import numerics
    for (src, dst, x, g), (_, _, _, c) in zip(gpu, cpu):
        same = g == c
        dd = tile.dtype(dst)
        if dd.is_float:         # NaN payloads are not part of the semantics (docs/language.md): any NaN
            same |= np.isnan(numerics.decode(g, dd)) & np.isnan(numerics.decode(c, dd))
        if not same.all():
            i = np.flatnonzero(~same)[:4]
            bad.append(f"{src}->{dst}: codes {g[i]} vs interpreter {c[i]} at {i}")
    assert not bad, "\n".join(bad)
