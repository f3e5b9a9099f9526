"""The fast dequantization tricks (codegen/fast_convert.py), JIT-compiled for the host by llvmlite
from the same LLVM IR the GPU gets, checked bit-exactly on every code of every type against
ml_dtypes (and against tilec's own numerics, which the rest of the suite checks against ml_dtypes)."""
import ctypes

import ml_dtypes
import numpy as np
import pytest

import llvmlite.binding as llvm
import llvmlite.ir as ir

from tile.codegen import fast_convert
from tile.ir import dtypes, numerics

INTS = [f"int{b}" for b in range(1, 8)] + [f"uint{b}" for b in range(1, 8)] + ["i8", "u8"]
FLOATS = ["f4e2m1", "f6e3m2", "f6e2m3", "f8e4m3fn", "f8e5m2", "f5e2m2", "f3e1m1", "f7e3m3", "f4e1m2",
          "f5e3m1", "f8e3m4", "f6e4m1", "f8e6m1"]
DSTS = ["bf16", "f16", "f32"]
ML = {"int2": ml_dtypes.int2, "int4": ml_dtypes.int4, "uint2": ml_dtypes.uint2, "uint4": ml_dtypes.uint4,
      "f4e2m1": ml_dtypes.float4_e2m1fn, "f6e3m2": ml_dtypes.float6_e3m2fn, "f6e2m3": ml_dtypes.float6_e2m3fn,
      "f8e4m3fn": ml_dtypes.float8_e4m3fn, "f8e5m2": ml_dtypes.float8_e5m2, "i8": np.int8, "u8": np.uint8}
NPDST = {"bf16": (ml_dtypes.bfloat16, np.uint16), "f16": (np.float16, np.uint16), "f32": (np.float32, np.uint32)}

_engine = None


def _jit():
    global _engine
    if _engine is None:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        # the host's own features: F16C converts f16 <-> f32 in hardware (no libcalls)
        tm = llvm.Target.from_default_triple().create_target_machine(
            cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten())
        eng = llvm.create_mcjit_compiler(llvm.parse_assembly(_LIBCALLS), tm)
        eng.finalize_object()
        _engine = (eng, tm)
    return _engine


# f32 -> bf16 rounding (round to nearest even), the libcall LLVM makes for `fptrunc float to bfloat` on
# a host without AVX512-BF16 -- in integer arithmetic only (no float op that would call it again)
_LIBCALLS = """
define bfloat @__truncsfbf2(float %x) {
  %u = bitcast float %x to i32
  %hi = lshr i32 %u, 16
  %lsb = and i32 %hi, 1
  %bias = add i32 %lsb, 32767
  %r = add i32 %u, %bias
  %rh = lshr i32 %r, 16
  %abs = and i32 %u, 2147483647
  %isnan = icmp ugt i32 %abs, 2139095040
  %q = or i32 %hi, 64
  %sel = select i1 %isnan, i32 %q, i32 %rh
  %t = trunc i32 %sel to i16
  %b = bitcast i16 %t to bfloat
  ret bfloat %b
}
"""


def _build(src, dst):
    """void f(u8 *codes, uN *out, i64 n): out[i] = bits of convert(codes[i]); the 16-bit destinations
    convert (codes[i], codes[i+1]) as one pair."""
    S, D = dtypes.dtype(src), dtypes.dtype(dst)
    m = ir.Module(name=f"fc_{src}_{dst}")
    ptr = ir.PointerType()
    i8, i64 = ir.IntType(8), ir.IntType(64)
    dw = ir.IntType(D.bits)
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [ptr, ptr, i64]), "conv")
    cp, op, n = fn.args
    entry = fn.append_basic_block("entry")
    loop = fn.append_basic_block("loop")
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)

    def code(k):
        raw = b.load(b.gep(cp, [k], source_etype=i8), typ=i8)
        if S.bits < 8 and S.kind == "int":            # the register representation: sign-extended
            sh = ir.Constant(i8, 8 - S.bits)
            raw = b.ashr(b.shl(raw, sh), sh)
        return raw

    k1 = b.add(i, ir.Constant(i64, 1))
    c0, c1 = code(i), code(k1)
    if D.name == "f32":
        vs = [fast_convert.convert_scalar(b, c0, S, D)]
    else:
        vs = list(fast_convert.convert_pair(b, c0, c1, S, D))
    for j, v in enumerate(vs):
        b.store(b.bitcast(v, dw), b.gep(op, [b.add(i, ir.Constant(i64, j))], source_etype=dw))
    nxt = b.add(i, ir.Constant(i64, len(vs)))
    i.add_incoming(nxt, loop)
    b.cbranch(b.icmp_unsigned("<", nxt, n), loop, done)
    b.position_at_end(done)
    b.ret_void()
    eng, tm = _jit()
    mod = llvm.parse_assembly(str(m))
    mod.verify()
    eng.add_module(mod)
    eng.finalize_object()
    addr = eng.get_function_address("conv")
    return ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(addr), mod


_keep = []


def _run(src, dst, codes):
    f, mod = _build(src, dst)
    _keep.append(mod)
    codes = np.ascontiguousarray(codes, np.uint8)
    out = np.zeros(codes.size, NPDST[dst][1])
    f(codes.ctypes.data, out.ctypes.data, codes.size)
    return out


def _all_codes(bits):
    """Every code in both lanes of a pair: c0 = all codes, c1 = all codes reversed, interleaved."""
    c = np.arange(1 << bits, dtype=np.uint8)
    return np.stack([c, c[::-1]], axis=1).reshape(-1)


def _oracle(src, dst, codes):
    """Bits of the exact value in `dst`: ml_dtypes' own decode where it has the type, else tilec's
    numerics (integers: the integer itself); NaN as the canonical quiet NaN with the code's sign."""
    S = dtypes.dtype(src)
    if src in ML and S.is_float:
        vals = codes.view(ML[src]) if np.dtype(ML[src]).itemsize == 1 else None
        vals = np.array([np.array(c, np.uint8).view(ML[src]) for c in codes]).astype(np.float64)
    elif src in ML:
        vals = np.array([np.array(c, np.uint8).view(ML[src]) for c in codes]).astype(np.float64)
    else:
        vals = numerics.decode(codes, S).astype(np.float64)
    ours = numerics.decode(codes, S).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(vals), np.isnan(ours))
    np.testing.assert_array_equal(vals[~np.isnan(vals)], ours[~np.isnan(ours)])
    npt, ut = NPDST[dst]
    ref = vals.astype(np.float32).astype(npt).view(ut).copy()
    nan = np.isnan(vals)
    sign = (codes >> (S.bits - 1)) & 1
    q = {"bf16": 0x7FC0, "f16": 0x7E00, "f32": 0x7FC00000}[dst]
    top = {"bf16": 0x8000, "f16": 0x8000, "f32": 0x80000000}[dst]
    ref[nan] = (q | np.where(sign[nan] == 1, top, 0)).astype(ut)
    # the interpreter's cast is the other reference: it must agree with the oracle
    interp = numerics.encode(ours, dtypes.dtype(dst)).astype(ut)
    np.testing.assert_array_equal(interp, ref)
    return ref


CASES = [(s, d) for s in INTS + FLOATS for d in DSTS
         if fast_convert.choose(dtypes.dtype(s), dtypes.dtype(d)) is not None]


def test_table_covers_the_lowbit_types():
    for s in INTS + ["f4e2m1", "f6e3m2", "f6e2m3", "f8e4m3fn", "f8e5m2"]:
        for d in ("bf16", "f16"):
            assert fast_convert.choose(dtypes.dtype(s), dtypes.dtype(d)) is not None, (s, d)
    assert fast_convert.choose(dtypes.dtype("f8e4m3fn"), dtypes.dtype("f32")) == "shift"
    assert fast_convert.choose(dtypes.dtype("u8"), dtypes.dtype("bf16")) == "magic32hi"
    assert fast_convert.choose(dtypes.dtype("int4"), dtypes.dtype("bf16")) == "magic"
    assert fast_convert.choose(dtypes.dtype("i16"), dtypes.dtype("bf16")) is None
    assert fast_convert.choose(dtypes.dtype("f6e5m0"), dtypes.dtype("f16")) is None   # its top code is finite


@pytest.mark.parametrize("src,dst", CASES, ids=[f"{s}->{d}" for s, d in CASES])
def test_fast_convert_exhaustive(src, dst):
    bits = dtypes.dtype(src).bits
    codes = _all_codes(bits)
    got = _run(src, dst, codes)
    ref = _oracle(src, dst, codes)
    bad = np.nonzero(got != ref)[0]
    assert bad.size == 0, [(int(codes[i]), hex(int(got[i])), hex(int(ref[i]))) for i in bad[:8]]
