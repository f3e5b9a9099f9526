"""The fast dequantization tricks (codegen/fast_convert.py), JIT-compiled for the host by llvmlite
from the same LLVM IR the GPU gets, checked bit-exactly on every code of every type against
ml_dtypes (and against tilec's own numerics, which the rest of the suite checks against ml_dtypes)."""

import ml_dtypes
import numpy as np
import pytest

import llvmlite.ir as ir

from host_jit import close_loop, host_function
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
    close_loop(b, i, len(vs), n, loop, done)
    return host_function(m)


def _run(src, dst, codes):
    f = _build(src, dst)
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


# ------------------------------------------------------------------ decoding from packed words
from tile.codegen.values import WordCode   # noqa: E402

# where the two codes of a pair sit: (word bits, offset of code 0, offset of code 1). Adjacent codes
# (the order of a plain packed row), codes 16 bits apart (one shift serves both: the magic number
# moved to them, the lane's power of two folded into the fma), a shared shift reused by a second
# pair, and 64-bit words whose codes straddle the 32-bit boundary.
PLACEMENTS = [(32, 0, "b"), (32, 4, "4+b"), (32, 0, 16), (32, 3, 19), (32, 12, 28), (32, 8, 24),
              (32, 16, 0), (64, 30, 44), (64, 27, 43), (64, 56 - 8, "56-8+b")]


def _offsets(bits, s0, s1):
    ev = lambda s: eval(s, {"b": bits}) if isinstance(s, str) else s
    return ev(s0), ev(s1)


def _build_words(src, dst, wbits, s0, s1):
    """void f(uW *words, u16 *out, i64 n): out[2i], out[2i+1] = the pair decoded from words[i]'s
    codes at offsets s0, s1 -- twice per word, the second pair reusing the first's shift."""
    S, D = dtypes.dtype(src), dtypes.dtype(dst)
    m = ir.Module(name=f"fw_{src}_{dst}")
    ptr, i64, wt, i16 = ir.PointerType(), ir.IntType(64), ir.IntType(wbits), ir.IntType(16)
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [ptr, ptr, i64]), "conv")
    wp, op, n = fn.args
    entry, loop, done = (fn.append_basic_block(x) for x in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    w = b.load(b.gep(wp, [i], source_etype=wt), typ=wt)
    shifts = {}
    vs = list(fast_convert.convert_pair_words(b, WordCode(w, s0), WordCode(w, s1), S, D, shifts))
    vs += list(fast_convert.convert_pair_words(b, WordCode(w, s0), WordCode(w, s1), S, D, shifts))
    for j, v in enumerate(vs):
        b.store(b.bitcast(v, i16), b.gep(op, [b.add(b.mul(i, ir.Constant(i64, 4)), ir.Constant(i64, j))],
                                         source_etype=i16))
    close_loop(b, i, 1, n, loop, done)
    return host_function(m)


WORD_CASES = [(s, d) for s, d in CASES if d != "f32"]


@pytest.mark.parametrize("src,dst", WORD_CASES, ids=[f"{s}->{d}" for s, d in WORD_CASES])
def test_fast_convert_from_words_exhaustive(src, dst):
    """Every code in both lanes, at every placement, with random bits everywhere else in the word
    (the decode must mask them off), bit-exact against the same oracle."""
    bits = dtypes.dtype(src).bits
    codes = _all_codes(bits).reshape(-1, 2).astype(np.uint64)
    rng = np.random.default_rng(bits)
    ref = _oracle(src, dst, codes.reshape(-1).astype(np.uint8)).reshape(-1, 2)
    for wbits, s0, s1 in PLACEMENTS:
        s0, s1 = _offsets(bits, s0, s1)
        if max(s0, s1) + bits > wbits or abs(s0 - s1) < bits:
            continue
        f = _build_words(src, dst, wbits, s0, s1)
        mask = (1 << bits) - 1
        junk = rng.integers(0, 1 << 63, codes.shape[0], dtype=np.uint64) & np.uint64((1 << wbits) - 1)
        keep = ~np.uint64((mask << s0) | (mask << s1)) & np.uint64((1 << wbits) - 1)
        words = (junk & keep) | (codes[:, 0] << np.uint64(s0)) | (codes[:, 1] << np.uint64(s1))
        words = np.ascontiguousarray(words.astype(np.uint32 if wbits == 32 else np.uint64))
        out = np.zeros(4 * words.size, np.uint16)
        f(words.ctypes.data, out.ctypes.data, words.size)
        got = out.reshape(-1, 2, 2)
        for rep in range(2):
            bad = np.nonzero((got[:, rep] != ref).any(axis=1))[0]
            assert bad.size == 0, ((wbits, s0, s1, rep), [(codes[k].tolist(), got[k, rep].tolist(), ref[k].tolist())
                                                          for k in bad[:4]])
