"""Divisibility specialization: a launch whose tensors are `divisible` (16-byte aligned base, unit last
stride, last size and other strides multiples of 16 bytes' worth of elements) compiles a
specialization (function attribute `divisible`) in which the vector accesses whose index is a known
multiple of `vec` carry `vec_exact = true` and have no run-time check and no element-by-element
fallback; odd shapes compile the other specialization; the launchers (fast path, AOT artifact,
interpreter) refuse arguments that break what the code assumes."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import ml_dtypes as md
import numpy as np
import pytest

import tile
from tile import f16, f32
from tile.ir.parser import parse_module
from tile.ir.printer import print_module

from test_launch_fast import T, add1, driver  # noqa: F401 - the fake-driver fixture and its kernel

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not found on PATH")
SEED = 20240612


def _gemm_mod():
    spec = importlib.util.spec_from_file_location("gallery_gemm_divis", EXAMPLES / "gemm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _arrays(M, N, K, rng):
    A = rng.uniform(-1, 1, (M, K)).astype(md.bfloat16)
    B = rng.uniform(-1, 1, (K, N)).astype(md.bfloat16)
    bias = rng.uniform(-1, 1, N).astype(np.float32)
    C = np.full((M, N), np.nan, md.bfloat16)                   # poisoned: every element must be written
    return A, B, C, bias


DIVISIBLE, ODD = (96, 64, 128), (70, 38, 81)                 # (M, N, K)


@pytest.fixture(scope="module")
def gemm_specializations():
    """The gallery GEMM compiled for sm_80 (cp.async copies, vector stores) for divisible and for odd
    arguments: two specializations of one kernel."""
    mod = _gemm_mod()
    rng = np.random.default_rng(SEED)
    out = {}
    for name, (M, N, K) in (("divisible", DIVISIBLE), ("odd", ODD)):
        args = _arrays(M, N, K, rng)
        out[name] = (mod.gemm.compile(*args, 0.5, target="sm_80", BM=64, BN=64, BK=32, HAS_BIAS=True), args)
    return mod, out


def _accesses(text):
    """(op, vec_exact) of every global vector access of the IR text after the pipeline."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        for op in ("async_copy", "store", "load", "gather", "scatter"):
            if f"{op} %" in s and "vec = " in s and 'copy = "tma"' not in s and "shared" not in s.split("{")[0]:
                out.append((op, "vec_exact = true" in s))
    return out


def test_gemm_divisible_specialization_ir_and_ptx(gemm_specializations, tmp_path):
    mod, sp = gemm_specializations
    ck_div, ck_odd = sp["divisible"][0], sp["odd"][0]
    assert ck_div is not ck_odd and len(mod.gemm.cache) == 2
    assert 'divisible = ["A", "B", "C", "bias"]' in ck_div.ir and "divisible" not in ck_odd.ir
    assert ck_div.artifact.meta.divisible == ("A", "B", "C", "bias") and ck_odd.artifact.meta.divisible == ()
    after = print_module(ck_div.module)
    acc = _accesses(after)
    assert {op for op, _ in acc} >= {"async_copy", "store", "load"} and all(e for _, e in acc), acc
    assert not any(e for _, e in _accesses(print_module(ck_odd.module)))
    # the scalar fallback of the bf16 copies and stores is gone where the facts hold, kept where not
    for w in ("ld.global.b16", "st.global.b16"):
        assert w not in ck_div.ptx
        assert w in ck_odd.ptx
    assert len(ck_div.ptx) < 0.85 * len(ck_odd.ptx)
    # the printed IR parses back to the same text
    assert print_module(parse_module(after)) == after


@needs_ptxas
def test_gemm_specializations_assemble_without_spills(gemm_specializations, tmp_path):
    from helpers import assemble
    _, sp = gemm_specializations
    for name, (ck, _) in sp.items():
        (tmp_path / name).mkdir()
        report = assemble(ck.ptx, "sm_80", tmp_path / name)
        assert report, name
        spills = {k: v for k, v in _flat(report) if "spill" in k.lower()}
        assert spills and not any(spills.values()), (name, spills)


def _flat(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flat(v, f"{prefix}{k}.")
    elif isinstance(d, (list, tuple)):
        for i, v in enumerate(d):
            yield from _flat(v, f"{prefix}{i}.")
    else:
        yield prefix.rstrip("."), d


def _reference(A, B, bias, scale):
    return scale * (A.astype(np.float64) @ B.astype(np.float64)) + bias.astype(np.float64)[None, :]


def test_both_specializations_are_right_in_the_interpreter(gemm_specializations):
    """The IR after the sm_80 pipeline, run by the interpreter (which checks every `vec_exact` index
    is a multiple of `vec`), matches a float64 reference for both specializations; the divisible one
    refuses odd arguments."""
    from tile.runtime import interpreter
    mod, sp = gemm_specializations
    for name, (M, N, K) in (("divisible", DIVISIBLE), ("odd", ODD)):
        ck, _ = sp[name]
        rng = np.random.default_rng(SEED + len(name))
        A, B, C, bias = _arrays(M, N, K, rng)
        interpreter.run(ck.module.functions[0], mod.grid(M, N, 64, 64), [A, B, C, bias, 0.5])
        ref = _reference(A, B, bias, 0.5)
        assert not np.isnan(C.astype(np.float32)).any(), name
        np.testing.assert_allclose(C.astype(np.float64), ref, rtol=2e-2, atol=2e-2 * np.abs(ref).max())
    A, B, C, bias = _arrays(*ODD, np.random.default_rng(SEED))
    with pytest.raises(ValueError, match="argument 'A'.*divisible"):
        interpreter.run(sp["divisible"][0].module.functions[0], (2, 1), [A, B, C, bias, 0.5])


@tile.kernel
def indexing(X: tile.Tensor[f16, 2], Y: tile.Tensor[f16, 2], n: int, BLOCK: tile.constexpr = 64):
    pid = tile.block_id(0)
    a = tile.load(X, (pid, pid * BLOCK), (16, BLOCK))                 # exact: a multiple of 64
    b = tile.load(X, (pid, pid * BLOCK + 3), (16, BLOCK))             # + 3: the run-time check
    c = tile.load(X, (pid, n), (16, BLOCK))                           # an unknown scalar
    d = tile.load(X, (pid, X.shape[1] - 2 * BLOCK), (16, BLOCK))      # the last size: a multiple of 8
    acc = a + b + c + d
    for k in tile.range(0, n, 32):                                   # k: multiples of 32
        acc = acc + tile.load(X, (pid, k + 16), (16, BLOCK))          # exact (16 % 8 == 0)
    j = tile.minimum(pid * 64, 128)
    tile.store(Y, (pid, j), acc, mask=acc > 0.0)                      # exact; the mask stays
    tile.store(Y, (pid, j + 4), acc)                                  # + 4: not a multiple of 8


def _lower(divisible):
    from tile import compiler
    fe = indexing.compile(tile.Tensor[f16, 2], tile.Tensor[f16, 2], int, target="cpu").ir
    m = parse_module(fe)
    if divisible is not None:
        m.functions[0].attrs["divisible"] = list(divisible)
    m, _ = compiler.lower(m, compiler.resolve("sm_80"))
    return m


def test_known_multiples_mark_what_they_prove():
    acc = _accesses(print_module(_lower(["X", "Y"])))
    assert [op for op, _ in acc] == ["load"] * 5 + ["store"] * 2, acc
    assert [e for _, e in acc] == [True, False, False, True, True, True, False]
    # only the tensors the launch found divisible; none without the attribute
    assert [e for _, e in _accesses(print_module(_lower(["Y"])))] == [False] * 5 + [True, False]
    assert not any(e for _, e in _accesses(print_module(_lower(None))))


def test_the_interpreter_checks_every_exact_index():
    """The lowered kernel runs in the interpreter, which checks each `vec_exact` index at run time
    (a multiple of `vec`) -- and catches a mark the analysis could not have proved."""
    from tile.runtime import interpreter
    from tile.runtime.interpreter import InterpreterError
    rng = np.random.default_rng(SEED)
    X = rng.uniform(-1, 1, (4, 256)).astype(np.float16)
    Y = np.full((4, 256), np.nan, np.float16)
    m = _lower(["X", "Y"])
    interpreter.run(m.functions[0], (3,), [X, Y, 64])
    loads = [op for op in m.functions[0].walk() if op.name == "load"]
    loads[1].attrs["vec_exact"] = True                     # pid * BLOCK + 3: wrong on purpose
    with pytest.raises(InterpreterError, match="vec_exact.*index along the last dim is 3, not a multiple"):
        interpreter.run(m.functions[0], (3,), [X, Y, 64])


def test_vec_exact_needs_the_tensor_in_divisible():
    """An edited IR with `vec_exact` on a tensor whose facts the launch does not check is a located
    error in code generation, never code that runs wrong."""
    from tile import compiler
    from tile.codegen.errors import CompileError
    m = _lower(["X", "Y"])
    m.functions[0].attrs["divisible"] = ["Y"]
    with pytest.raises(CompileError, match="vec_exact.*'X'.*divisible"):
        compiler.generate(m, compiler.resolve("sm_80"))


def test_divisible_must_name_tensor_parameters():
    from tile.ir.errors import VerifyError
    from tile.ir.verifier import verify
    m = _lower(["X"])
    m.functions[0].attrs["divisible"] = ["n"]
    with pytest.raises(VerifyError, match="divisible.*tensor parameters"):
        verify(m)


def test_fast_launcher_takes_the_specialization_its_facts_select(driver):  # noqa: F811
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)          # 1000 f32: divisible
    odd_x, odd_y = T(1001, 0x7F0000200000), T(1001, 0x7F0000300000)  # 1001: not
    ck1 = add1[(16,)](x, y, 1000)
    assert add1[(16,)](x, y, 1000) is ck1
    ck2 = add1[(16,)](odd_x, odd_y, 1001)                            # the fast launcher refuses: general path
    assert add1[(16,)](odd_x, odd_y, 1001) is ck2
    assert add1[(16,)](x, y, 1000) is ck1                            # and back
    assert [k for k, _, _ in driver] == ["general", "fast", "general", "fast", "general"]
    assert ck1 is not ck2
    assert ck1.artifact.meta.divisible == ("X", "Y") and ck2.artifact.meta.divisible == ()
    assert driver[2][2][:3] == [0x7F0000200000, 1001, 1]


def test_divisible_facts_of_shapes_and_strides():
    """ir.artifact.divisible_ok: 16-byte aligned base, unit last stride, last size and other strides
    multiples of 16 bytes of elements -- and a tensor with no elements has every fact, whatever
    strides its library gave it (the NumPy 64 x 0 array's (0, 1) and its device copy's (1, 1) must
    select the same specialization: a K = 0 GEMM launch once refused its own)."""
    from tile.ir.artifact import divisible_ok
    assert divisible_ok(0x1000, (64, 64), (64, 1), 16) and divisible_ok(None, (3, 8), (8, 1), 16)
    assert not divisible_ok(0x1008, (64, 64), (64, 1), 16)            # 8-byte aligned
    assert not divisible_ok(0x1000, (64, 60), (60, 1), 16)            # 60 bf16 = 120 bytes
    assert not divisible_ok(0x1000, (64, 64), (72, 2), 16)            # not a unit last stride
    assert divisible_ok(0x1000, (64, 32), (32, 1), 4) and not divisible_ok(0x1000, (64, 16), (16, 1), 4)
    for strides in ((0, 1), (1, 1), (1, 0)):
        assert divisible_ok(0x1000, (64, 0), strides, 16) and divisible_ok(0x1008, (0, 5), strides, 16)


def test_fast_launcher_checks_the_compiled_facts(driver):  # noqa: F811
    """A FastLauncher built for a divisible specialization returns None (launching nothing) for
    arguments without the facts, whoever built it."""
    from tile.runtime import launch as L
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    ck = add1[(16,)](x, y, 1000)
    fl = L.fast_launcher(ck, [x, y, 1000], result="ok")
    assert fl.fast((16,), (x, y, 1000), {}) == "ok"
    assert fl.fast((16,), (T(1004, 0x7F0000000000), T(1000, 0x7F0000100010), 1000), {}) == "ok"
    assert fl.fast((16,), (T(1002, 0x7F0000000000), y, 1000), {}) is None       # 1002 % 4
    assert fl.fast((16,), (x, T(1000, 0x7F0000100008), 1000), {}) is None       # 8-byte aligned


def test_aot_artifact_refuses_a_launch_that_breaks_its_facts(driver, tmp_path):  # noqa: F811
    x, y = T(1000, 0x7F0000000000), T(1000, 0x7F0000100000)
    ck = add1[(16,)](x, y, 1000)
    ck.artifact.save(tmp_path / "add1.tilec")
    k = tile.load_compiled(tmp_path / "add1.tilec")
    assert k.artifact.meta.divisible == ("X", "Y")
    k[(16,)](x, y, 1000)
    assert driver[-1][0] == "general"
    with pytest.raises(ValueError, match="parameter 'Y'.*divisible.*4 elements.*shape \\(1001,\\)"):
        k[(16,)](x, T(1001, 0x7F0000100000), 1000)


# ------------------------------------------------------------------------------------------- GPU
def _have_gpu():
    from tile.runtime import cuda
    return cuda.available()


@pytest.mark.gpu
@pytest.mark.skipif(not _have_gpu(), reason="no NVIDIA GPU/driver")
def test_gemm_divisible_and_odd_on_the_gpu():
    """One kernel object launched with divisible and with odd shapes compiles two specializations
    (each launch's facts checked by the launcher); each result matches a float64 reference; outputs
    are poisoned with NaN first. Then a divisible launch again (the fast path's other specialization)."""
    mod = _gemm_mod()
    for i, (M, N, K) in enumerate([DIVISIBLE, ODD, (256, 264, 320), (129, 130, 131), DIVISIBLE]):
        A, B, C, bias = _arrays(M, N, K, np.random.default_rng(SEED + i))
        mod.gemm[mod.grid(M, N, 128, 128)](A, B, C, bias, 0.5, HAS_BIAS=True, BM=128, BN=128, BK=64)
        ref = _reference(A, B, bias, 0.5)
        assert not np.isnan(C.astype(np.float32)).any(), (M, N, K)
        np.testing.assert_allclose(C.astype(np.float64), ref, rtol=2e-2, atol=2e-2 * np.abs(ref).max())
    divs = sorted(ck.artifact.meta.divisible for ck in mod.gemm.cache.values())
    assert divs == [(), ("A", "B", "C", "bias")], divs
