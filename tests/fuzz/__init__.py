"""Differential fuzzing of tilec: random kernels from a seed, checked against a float64 / exact-integer
NumPy model of the same program, op by op.

    case = generate(seed)            # DSL source text + the program's graph (a Case)
    res = run_case(case)             # interpreter (TILEC_TARGET=cpu) vs the model; raises FuzzMismatch
    compile_case(case, "sm_90a")     # PTX for a GPU target, assembled by ptxas
    res = run_case(case, gpu=True)   # (on a GPU) GPU vs the model AND GPU vs the interpreter

A case is a 2-D grid of (BR, BC) blocks over ragged (M, N) inputs: masked loads (bounds, an extra
mask, `other` of 0 / -inf / NaN / ...), random chains of unary/binary elementwise ops of int and float
dtypes (f32/f16/bf16; i32/i16/i8/u8/u32 and sub-byte int4/int3/uint5), comparisons, `where`, casts
(incl. to/from fp8/fp6/fp4 and sub-byte ints), Python-number operands, reductions (sum/max/min/argmax
along either axis) and broadcasts of their results back, and a final ragged store (optionally masked).

Every value the kernel computes is also stored to its own buffer (the "trace"), so each op is checked
on the inputs the backend actually gave it -- no error propagation, tight stated tolerances:

* exact ops (add/sub/mul of floats: the exact result rounded once; ints: wrap at the width; `//` `%`
  truncate with x//0 = -1, x%0 = x; shifts: out-of-range amounts give 0 / the sign fill; casts: round
  to nearest even, ints saturate, NaN -> 0; comparisons; where; max/min incl. -0 < +0; floor/ceil/abs/neg;
  integer reductions; float max/min reductions; argmax = the first index of the maximum): bit-exact
  (every NaN equals every NaN; the sign of a zero counts);
* the math functions, `/`, fmod, pow, atan2: within tests/math_cases.ULP (docs/language.md's table);
* float sums: |got - exact| <= n * 2^-24 * sum|x| + 1 ulp of the output type at the result (the
  accumulation is f32, each partial sum rounded; the result rounded once to the element type).
argmax of a row holding a NaN is not checked (unspecified in the docs; see the report).

The final output (ragged (M, N), poisoned) must equal the trace of the last value where stored and
keep its poison where the store's mask is false. Every failure message names the seed
(replay: `python scripts/fuzz_gpu.py --cpu --seed S --cases 1` or `generate(S)`).
"""
from __future__ import annotations

import importlib.util
import linecache
import math
import os
import random
import sys
from dataclasses import dataclass, field

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(_HERE) not in sys.path:          # tests/ (math_cases) when imported from a script
    sys.path.insert(0, os.path.dirname(_HERE))

import ml_dtypes  # noqa: E402

import math_cases as MC  # noqa: E402
import tile  # noqa: E402

FLOAT_ARITH = ("f32", "f16", "bf16")
FLOAT_STORE = ("f8e4m3fn", "f8e5m2", "f6e3m2", "f4e2m1")
INT_ARITH = ("i32", "i16", "i8", "u8", "u32", "int4", "int3", "uint5")
NP_FLOAT = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16, "f64": np.float64,
            "f8e4m3fn": ml_dtypes.float8_e4m3fn, "f8e5m2": ml_dtypes.float8_e5m2,
            "f6e3m2": ml_dtypes.float6_e3m2fn, "f4e2m1": ml_dtypes.float4_e2m1fn}
UNARY_MATH = ("exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sin", "cos", "tanh", "erf", "sigmoid", "floor", "ceil")
SUM_EPS = 2.0 ** -24


class FuzzMismatch(AssertionError):
    pass


def is_float(dt):
    return dt in NP_FLOAT


def int_range(dt):
    t = tile.dtype(dt)
    if dt == "i1":
        return 0, 1
    b = t.bits
    return (-(1 << (b - 1)), (1 << (b - 1)) - 1) if t.kind == "int" else (0, (1 << b) - 1)


def wrap(x, dt):
    lo, hi = int_range(dt)
    span = hi - lo + 1
    return ((np.asarray(x, np.int64) - lo) % span) + lo


def round_to(x, dt):
    with np.errstate(all="ignore"):
        return np.asarray(x, np.float64).astype(NP_FLOAT[dt]).astype(np.float64)


def cast_model(x, src, dst):
    x = np.asarray(x, np.float64 if is_float(src) else np.int64)
    if dst == "i1":
        return ((x != 0) | (np.isnan(x) if is_float(src) else False)).astype(np.int64)
    if is_float(dst):
        return round_to(x.astype(np.float64), dst)
    lo, hi = int_range(dst)
    if is_float(src):
        with np.errstate(invalid="ignore"):
            r = np.rint(np.where(np.isnan(x), 0.0, x))
        return np.clip(r, lo, hi).astype(np.int64)
    return np.clip(x, lo, hi)


def fmax(a, b):       # IEEE 754-2019 maximumNumber, -0 < +0
    r = np.fmax(a, b)
    z = (a == 0) & (b == 0)
    return np.where(z, np.where(np.signbit(a) & np.signbit(b), -0.0, 0.0), r)


def fmin(a, b):
    r = np.fmin(a, b)
    z = (a == 0) & (b == 0)
    return np.where(z, np.where(np.signbit(a) | np.signbit(b), -0.0, 0.0), r)


def int_binary(op, a, b, dt):
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    bits = tile.dtype(dt).bits
    signed = tile.dtype(dt).kind == "int"
    if op == "add":
        return wrap(a + b, dt)
    if op == "sub":
        return wrap(a - b, dt)
    if op == "mul":    # the low bits of the product (int64 overflow only wraps mod 2^64: low bits exact)
        with np.errstate(over="ignore"):
            return wrap(a * b, dt)
    if op == "div":
        z = b == 0
        bs = np.where(z, 1, b)
        q = (np.abs(a) // np.abs(bs)) * np.sign(a) * np.sign(bs)
        return wrap(np.where(z, -1, q), dt)
    if op == "rem":
        z = b == 0
        bs = np.where(z, 1, b)
        q = (np.abs(a) // np.abs(bs)) * np.sign(a) * np.sign(bs)
        return wrap(np.where(z, a, a - q * bs), dt)
    if op in ("max", "min"):
        return np.maximum(a, b) if op == "max" else np.minimum(a, b)
    if op in ("and", "or", "xor"):
        return wrap({"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}[op](a, b), dt)
    if op in ("shl", "shr"):
        big = (b < 0) | (b >= bits)
        s = np.where(big, 0, b)
        if op == "shl":
            return wrap(np.where(big, 0, a << s), dt)
        if signed:
            return wrap(a >> np.where(big, bits - 1, s), dt)
        return wrap(np.where(big, 0, a >> s), dt)
    raise ValueError(op)


def subbyte(dt):
    return tile.dtype(dt).bits < 8


def buf_dt(dt):
    """The dtype a value's trace is stored in: sub-byte values (i1 too) widened exactly to f32 / i32 (a
    GPU store of a sub-byte tile needs each thread to own whole bytes, which (BR, BC) tiles of odd
    widths do not give: a located CompileError, not what this fuzzer is after)."""
    if subbyte(dt):
        return "f32" if is_float(dt) else "i32"
    return dt


# =========================================================================================== graph
@dataclass
class Node:
    id: int
    kind: str               # load, unary, binary, scalar, cmp, where, cast, reduce
    op: str
    dt: str                 # the result's dtype
    shape: str              # full | row | col
    args: list = field(default_factory=list)     # node ids
    attrs: dict = field(default_factory=dict)


@dataclass
class Case:
    seed: int
    source: str
    nodes: list
    inputs: dict            # X<k> -> (dtype, values float64/int64 of shape (M, N))
    M: int
    N: int
    BR: int
    BC: int
    num_warps: int
    lim: int
    out_mask: str | None
    kernel: object = None

    @property
    def grid(self):
        return (-(-self.M // self.BR), -(-self.N // self.BC))

    def describe(self):
        return (f"seed={self.seed} M={self.M} N={self.N} BR={self.BR} BC={self.BC} num_warps={self.num_warps} "
                f"lim={self.lim}")


OP_SYM = {"add": "+", "sub": "-", "mul": "*", "div": "/", "rem": "%", "and": "&", "or": "|", "xor": "^",
          "shl": "<<", "shr": ">>"}
CMP_SYM = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
MASKS = {"none": None, "cols": "cols[None, :] < lim", "rows": "rows[:, None] < lim",
         "diag": "(rows[:, None] + cols[None, :]) % 3 != 0"}


def _float_values(rng: random.Random, nprng, dt, n):
    scale = rng.choice([1.0, 1.0, 4.0, 100.0, 1e-3])
    x = nprng.standard_normal(n) * scale
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -3e-8, 1e30, -65504.0, 448.0, 0.5, -1.5]
    if rng.random() < 0.6:
        k = nprng.random(n) < rng.choice([0.02, 0.1, 0.3])
        x[k] = nprng.choice(special, int(k.sum()))
    return round_to(x, dt)


def _int_values(rng, nprng, dt, n):
    lo, hi = int_range(dt)
    if rng.random() < 0.5:
        x = nprng.integers(lo, hi + 1, n, dtype=np.int64)
    else:
        x = np.clip(nprng.integers(-9, 10, n), lo, hi)
    k = nprng.random(n) < 0.05
    x[k] = nprng.choice([lo, hi, 0, -1 if lo < 0 else 1], int(k.sum()))
    return x.astype(np.int64)


def _const(rng, dt):
    if is_float(dt):
        return rng.choice(["0.5", "2.0", "-1.0", "3.0", "0.0", "-0.0", "1e-3", "float('inf')"])
    lo, hi = int_range(dt)
    return str(rng.randint(max(lo, -5), min(hi, 7)))


def generate(seed: int, max_ops: int | None = None) -> Case:
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    total = rng.choice([1, 2, 7, 13, 31, 97, 128, 257, 1000, 1031, 2048, 3001])
    M = rng.choice([1, 2, 3, 5, 7, 8, 16, 17, 33, 64])
    M = max(1, min(M, total))
    N = max(1, total // M)
    BR = rng.choice([1, 2, 4, 8, 16, 32])
    BC = rng.choice([2, 4, 8, 16, 32, 64, 128, 256])
    while BR * BC > 4096:
        BC //= 2
    num_warps = rng.choice([1, 2, 4, 8])
    while BR * BC > 16 * 32 * num_warps:   # <= 16 elements a thread: f32 fmod unrolls 9 64-bit steps per
        BC = max(1, BC // 2) if BC > BR else BC  # element, so 128 a thread takes LLVM minutes (see the report)
        BR = BR // 2 if BR * BC > 16 * 32 * num_warps and BR > 1 else BR
    lim = rng.randint(0, N + 3)
    nodes: list[Node] = []
    inputs = {}
    lines = []

    def add(kind, op, dt, shape, args=(), expr="", **attrs):
        n = Node(len(nodes), kind, op, dt, shape, list(args), attrs)
        nodes.append(n)
        lines.append(f"    v{n.id} = {expr}")
        return n

    def operand(n: Node, ctx_shape: str):
        if n.shape == ctx_shape or ctx_shape in ("row", "col") and n.shape == ctx_shape:
            return f"v{n.id}"
        if n.shape == "row":
            return f"v{n.id}[:, None]"
        if n.shape == "col":
            return f"v{n.id}[None, :]"
        return f"v{n.id}"

    def new_load():
        k = len(inputs)
        dt = rng.choice(FLOAT_ARITH * 3 + FLOAT_STORE + INT_ARITH * 2)
        vals = _float_values(rng, nprng, dt, M * N) if is_float(dt) else _int_values(rng, nprng, dt, M * N)
        inputs[f"X{k}"] = (dt, vals.reshape(M, N))
        mask = rng.choice(list(MASKS))
        if is_float(dt):
            other = rng.choice(["0.0", "float('-inf')", "float('nan')", "1.5", "-0.0"])
            if dt in ("f6e3m2", "f4e2m1") and other in ("float('-inf')", "float('nan')"):
                other = "0.0"
        else:
            lo, hi = int_range(dt)
            other = str(rng.choice([0, lo, hi, 1 if hi >= 1 else 0]))
        m = f", mask={MASKS[mask]}" if MASKS[mask] else ""
        return add("load", "load", dt, "full", (), f"tile.load(X{k}, (r0, c0), (BR, BC){m}, other={other})",
                   input=f"X{k}", mask=mask, other=eval(other))

    def arith(n: Node):
        """n itself, or a cast of it to an arithmetic dtype."""
        if n.dt in FLOAT_ARITH or n.dt in INT_ARITH:
            return n
        dst = rng.choice(FLOAT_ARITH) if is_float(n.dt) else "i32"
        return cast(n, dst)

    def cast(n: Node, dst: str):
        return add("cast", "cast", dst, n.shape, [n.id], f"v{n.id}.astype(DT_{dst})")

    def same_dtype(a: Node, b: Node):
        if a.dt != b.dt:
            b = cast(b, a.dt)
        return a, b

    def result_shape(a, b):
        s = {a.shape, b.shape}
        if s == {"row"} or s == {"col"}:
            return a.shape
        return "full"

    def pick(pred=lambda n: True):
        c = [n for n in nodes if pred(n) and n.dt != "i1"]
        return rng.choice(c[-6:]) if c and rng.random() < 0.7 else (rng.choice(c) if c else None)

    new_load()
    if rng.random() < 0.6:
        new_load()
    n_ops = max_ops if max_ops is not None else rng.randint(2, 12)
    for _ in range(n_ops):
        r = rng.random()
        if r < 0.08 and len(inputs) < 4:
            new_load()
            continue
        a = pick()
        a = arith(a)
        shp = a.shape
        if r < 0.3:                                    # unary
            if is_float(a.dt):
                op = rng.choice(UNARY_MATH + ("neg", "abs"))
                expr = {"neg": f"-v{a.id}", "abs": f"abs(v{a.id})"}.get(op, f"tile.{op}(v{a.id})")
            else:
                op = rng.choice(("neg", "abs", "not"))
                expr = {"neg": f"-v{a.id}", "abs": f"abs(v{a.id})", "not": f"~v{a.id}"}[op]
            add("unary", op, a.dt, shp, [a.id], expr)
        elif r < 0.6:                                  # binary tile-tile
            b = pick(lambda n: n.id != a.id) or a
            b = arith(b)
            a2, b2 = same_dtype(a, b)
            fl = is_float(a2.dt)
            ops = ["add", "sub", "mul", "div", "rem", "max", "min"] + (["pow", "atan2"] if fl else
                                                                         ["and", "or", "xor", "shl", "shr"])
            op = rng.choice(ops)
            shp = result_shape(a2, b2)
            x, y = operand(a2, shp), operand(b2, shp)
            if op in ("max", "min"):
                expr = f"tile.{'maximum' if op == 'max' else 'minimum'}({x}, {y})"
            elif op in ("pow", "atan2"):
                expr = f"{x} ** {y}" if op == "pow" else f"tile.atan2({x}, {y})"
            elif op == "div" and not fl:
                expr = f"{x} // {y}"
            else:
                expr = f"{x} {OP_SYM[op]} {y}"
            add("binary", op, a2.dt, shp, [a2.id, b2.id], expr)
        elif r < 0.68:                                 # with a Python number
            op = rng.choice(["add", "sub", "mul", "max"] + (["div"] if is_float(a.dt) else ["and", "shr"]))
            c = _const(rng, a.dt)
            if op == "max":
                expr = f"tile.maximum(v{a.id}, {c})"
            elif op == "div" or op == "sub" and rng.random() < 0.5:
                expr = f"{c} {OP_SYM[op]} v{a.id}"
                op = op + "_r"
            else:
                expr = f"v{a.id} {OP_SYM[op]} {c}"
            add("scalar", op, a.dt, shp, [a.id], expr, const=eval(c))
        elif r < 0.78:                                 # compare + where
            b = arith(pick(lambda n: n.id != a.id) or a)
            a2, b2 = same_dtype(a, b)
            pred = rng.choice(list(CMP_SYM))
            shp = result_shape(a2, b2)
            c = add("cmp", pred, "i1", shp, [a2.id, b2.id], f"{operand(a2, shp)} {CMP_SYM[pred]} {operand(b2, shp)}")
            x, y = (a2, b2) if rng.random() < 0.5 else (b2, a2)
            add("where", "where", a2.dt, shp, [c.id, x.id, y.id],
                f"tile.where({operand(c, shp)}, {operand(x, shp)}, {operand(y, shp)})")
        elif r < 0.88:                                 # cast
            src = pick()
            dst = rng.choice(FLOAT_ARITH + FLOAT_STORE + INT_ARITH + ("i1",))
            if dst != src.dt:
                c = cast(src, dst)
                if dst == "i1":
                    cast(c, "i32")
        else:                                          # reduction (of a full tile)
            full = pick(lambda n: n.shape == "full")
            if full is None:
                continue
            full = arith(full)
            kind = rng.choice(["sum", "max", "min", "argmax"])
            if kind == "sum" and full.dt in ("f16", "bf16") and rng.random() < 0.5:
                full = cast(full, "f32")
            if kind == "sum" and not is_float(full.dt) and tile.dtype(full.dt).bits < 32:
                full = cast(full, "i32")             # (the front end sums narrow ints in i32)
            axis = rng.choice([0, 1])
            dt = "i32" if kind == "argmax" else full.dt
            add("reduce", kind, dt, "row" if axis == 1 else "col", [full.id],
                f"tile.{kind}(v{full.id}, axis={axis})", axis=axis)
    last = [n for n in nodes if n.shape == "full" and n.dt != "i1"][-1]
    if subbyte(last.dt):
        last = cast(last, "f32" if is_float(last.dt) else "i32")
    out_mask = rng.choice([None, None, "cols", "diag"])
    # source
    head = ["import tile", "from tile import *"]
    dts = sorted({n.dt for n in nodes} | {buf_dt(n.dt) for n in nodes} | {d for d, _ in inputs.values()})
    head += [f"DT_{d} = tile.dtype({d!r})" for d in dts]
    params = [f"{k}: tile.Tensor[DT_{d}, 2]" for k, (d, _) in inputs.items()]
    params += [f"T{n.id}: tile.Tensor[DT_{buf_dt(n.dt)}, 2]" for n in nodes]
    params += [f"OUT: tile.Tensor[DT_{last.dt}, 2]", "lim: int", "BR: tile.constexpr", "BC: tile.constexpr"]
    body = ["    bi = tile.block_id(0)", "    bj = tile.block_id(1)", "    r0 = bi * BR", "    c0 = bj * BC",
            "    rows = r0 + tile.arange(0, BR)", "    cols = c0 + tile.arange(0, BC)"]
    for n, line in zip(nodes, lines):
        body.append(line)
        v = f"v{n.id}" if buf_dt(n.dt) == n.dt else f"v{n.id}.astype(DT_{buf_dt(n.dt)})"
        if n.shape == "full":
            body.append(f"    tile.store(T{n.id}, (r0, c0), {v})")
        elif n.shape == "row":
            body.append(f"    tile.store(T{n.id}, (r0, bj), {v}[:, None])")
        else:
            body.append(f"    tile.store(T{n.id}, (bi, c0), {v}[None, :])")
    m = f", mask={MASKS[out_mask]}" if out_mask else ""
    body.append(f"    tile.store(OUT, (r0, c0), v{last.id}{m})")
    src = "\n".join(head) + "\n\n\n@tile.kernel\ndef fuzz_kernel(" + ", ".join(params) + "):\n" + "\n".join(body) + "\n"
    case = Case(seed, src, nodes, inputs, M, N, BR, BC, num_warps, lim, out_mask)
    case.last = last.id
    return case


def load_kernel(case: Case):
    """exec the source as a module whose file is registered with linecache (source locations work)."""
    if case.kernel is None:
        fname = f"<fuzz-{case.seed}>.py"
        linecache.cache[fname] = (len(case.source), None, case.source.splitlines(True), fname)
        mod = type(sys)(f"fuzz_case_{case.seed}")
        mod.__file__ = fname
        code = compile(case.source, fname, "exec")
        exec(code, mod.__dict__)
        case.kernel = mod.fuzz_kernel
    return case.kernel


# =========================================================================================== running
def _buf_shape(case, n: Node):
    GR, GC = case.grid
    return {"full": (GR * case.BR, GC * case.BC), "row": (GR * case.BR, GC), "col": (GR, GC * case.BC)}[n.shape]


def _poison(dt, shape, rng):
    if is_float(dt):
        v = float(round_to(rng.choice([np.nan, -1234.5, 3.0]), dt))
    else:
        lo, hi = int_range(dt)
        v = rng.choice([lo, hi])
    return np.full(shape, v, np.float64 if is_float(dt) else np.int64)


def _arr(vals, dt, device=False):
    a = tile.asarray(vals, dt)
    return tile.to_device(a) if device else a


def _values(a, dt):
    if hasattr(a, "numpy") and not isinstance(a, np.ndarray):
        a = a.numpy()
    a = np.asarray(a)
    return a.astype(np.float64) if is_float(dt) else a.astype(np.int64)


def launch(case: Case, device=False, poison_seed=0):
    """Run the kernel (under the current TILEC_TARGET); returns ({node id: trace values}, out, poison)."""
    k = load_kernel(case)
    prng = random.Random(poison_seed)
    xs = [_arr(v, d, device) for d, v in case.inputs.values()]
    ts = [_arr(_poison(buf_dt(n.dt), _buf_shape(case, n), prng), buf_dt(n.dt), device) for n in case.nodes]
    last = case.nodes[case.last]
    poison = _poison(last.dt, (case.M, case.N), prng)
    out = _arr(poison, last.dt, device)
    k[case.grid](*xs, *ts, out, case.lim, BR=case.BR, BC=case.BC, num_warps=case.num_warps)
    trace = {n.id: _values(t, buf_dt(n.dt)) for n, t in zip(case.nodes, ts)}
    return trace, _values(out, last.dt), poison


def _full_coords(case, shape):
    R, C = shape
    return np.arange(R)[:, None], np.arange(C)[None, :]


def _expand(v, shape_kind, case):
    if shape_kind == "row":
        return np.repeat(v, case.BC, axis=1)
    if shape_kind == "col":
        return np.repeat(v, case.BR, axis=0)
    return v


def model_load(case, n: Node):
    GR, GC = case.grid
    dt, x = case.inputs[n.attrs["input"]]
    full = np.full((GR * case.BR, GC * case.BC), 0.0 if is_float(dt) else 0, np.float64 if is_float(dt) else np.int64)
    other = n.attrs["other"]
    other = round_to(other, dt) if is_float(dt) else int(other)
    full[...] = other
    full[:case.M, :case.N] = x
    rows, cols = _full_coords(case, full.shape)
    lim = case.lim
    m = {"none": True, "cols": cols < lim, "rows": rows < lim, "diag": (rows + cols) % 3 != 0}[n.attrs["mask"]]
    return np.where(m, full, other)


def same(got, ref, dt):
    """Bit-exact as values: NaN == NaN, signs of zeros count."""
    got, ref = np.asarray(got), np.asarray(ref)
    if not is_float(dt):
        return got == ref
    return (got == ref) & (np.signbit(got) == np.signbit(ref)) | (np.isnan(got) & np.isnan(ref))


def _fail(case, n, what, bad, got, ref, extra=""):
    idx = np.argwhere(bad)[:5]
    det = "; ".join(f"{tuple(int(t) for t in i)}: got {got[tuple(i)]!r} want {ref[tuple(i)]!r}" for i in idx)
    raise FuzzMismatch(f"[fuzz {case.describe()}] {what}: v{n.id} = {n.kind} {n.op} ({n.dt}, {n.shape}) "
                       f"args {['v%d' % a for a in n.args]}: {int(np.sum(bad))} mismatches: {det}{extra}\n"
                       f"--- source ---\n{case.source}")


def check_node(case, n: Node, trace, who="interpreter"):
    got = trace[n.id]
    args = [trace[a] for a in n.args]
    argn = [case.nodes[a] for a in n.args]
    if n.kind in ("binary", "cmp", "where"):
        args = [_expand(v, an.shape, case) if n.shape == "full" else v for v, an in zip(args, argn)]
    dt = n.dt
    with np.errstate(all="ignore"):
        if n.kind == "load":
            ref = model_load(case, n)
        elif n.kind == "cast":
            ref = cast_model(args[0], argn[0].dt, dt)
        elif n.kind == "cmp":
            a, b = args
            ref = {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b, "eq": a == b, "ne": a != b}[n.op].astype(np.int64)
        elif n.kind == "where":
            ref = np.where(args[0] != 0, args[1], args[2])
        elif n.kind == "unary":
            a = args[0]
            if not is_float(dt):
                ref = wrap({"neg": -a, "abs": np.abs(a), "not": ~a}[n.op], dt)
            elif n.op in ("neg", "abs"):
                ref = -a if n.op == "neg" else np.abs(a)
            else:
                return _check_ulp(case, n, MC.reference(n.op, dt, a), got, (a,), who)
        elif n.kind in ("binary", "scalar"):
            a = args[0]
            if n.kind == "scalar":
                c = n.attrs["const"]
                b = np.full_like(a, round_to(c, dt) if is_float(dt) else c)
                op = n.op
                if op.endswith("_r"):
                    a, b, op = b, a, op[:-2]
            else:
                a, b = args
                op = n.op
            if not is_float(dt):
                ref = int_binary(op, a, b, dt)
            elif op in ("add", "sub", "mul"):
                ref = round_to({"add": a + b, "sub": a - b, "mul": a * b}[op], dt)
            elif op in ("max", "min"):
                ref = fmax(a, b) if op == "max" else fmin(a, b)
            else:
                return _check_ulp(case, n, MC.reference(op, dt, a, b), got, (a, b), who, op)
        elif n.kind == "reduce":
            return _check_reduce(case, n, args[0], argn[0].dt, got, who)
        else:
            raise ValueError(n.kind)
    bad = ~same(got, ref, dt)
    if bad.any():
        _fail(case, n, f"{who} vs model (exact)", bad, got, ref)


def _check_ulp(case, n, ref, got, args, who, op=None):
    try:
        MC.check(op or n.op, n.dt, got.ravel(), np.asarray(ref).ravel(),
                 who, tuple(np.asarray(a).ravel() for a in args))
    except AssertionError as e:
        raise FuzzMismatch(f"[fuzz {case.describe()}] {who} vs model (ulp bound): v{n.id} = {n.kind} {n.op} "
                           f"({n.dt}): {e}\n--- source ---\n{case.source}") from None


def _blocks(x, case, axis):
    R, C = x.shape
    if axis == 1:
        return x.reshape(R, C // case.BC, case.BC), 2
    return x.reshape(R // case.BR, case.BR, C), 1


def _check_reduce(case, n, x, xdt, got, who):
    xb, ax = _blocks(x, case, n.attrs["axis"])
    dt = n.dt
    if n.op == "argmax":
        ref = np.argmax(xb, axis=ax)
        ok = same(got, ref, dt)
        if is_float(xdt):
            ok |= np.isnan(xb).any(axis=ax)                 # unspecified: not checked
        if not ok.all():
            _fail(case, n, f"{who} vs model (argmax, first index)", ~ok, got, ref)
        return
    if not is_float(dt):
        ref = {"sum": lambda: wrap(xb.sum(axis=ax), dt), "max": lambda: xb.max(axis=ax),
               "min": lambda: xb.min(axis=ax)}[n.op]()
        bad = ~same(got, ref, dt)
        if bad.any():
            _fail(case, n, f"{who} vs model (exact)", bad, got, ref)
        return
    if n.op in ("max", "min"):
        f = fmax if n.op == "max" else fmin
        ref = np.moveaxis(xb, ax, 0)
        acc = ref[0]
        for row in ref[1:]:
            acc = f(acc, row)
        bad = ~same(got, acc, dt)
        if bad.any():
            _fail(case, n, f"{who} vs model (maximumNumber/minimumNumber: NaN ignored, -0 < +0)", bad, got, acc)
        return
    with np.errstate(all="ignore"):
        ref = xb.sum(axis=ax)
        cnt = xb.shape[ax]
        bound = cnt * SUM_EPS * np.abs(xb).sum(axis=ax)
        fin = np.finfo(np.float32) if dt == "f32" else ml_dtypes.finfo(NP_FLOAT[dt])
        mag = np.maximum(np.abs(ref), np.abs(got))
        ulp = np.where(np.isfinite(mag), np.spacing(round_to(mag, dt).astype(NP_FLOAT[dt])).astype(np.float64)
                       if dt != "bf16" else 2.0 ** (np.floor(np.log2(np.maximum(mag, float(fin.tiny)))) - 7), 0)
        err = np.abs(got - ref)
        ok = np.isfinite(ref) & np.isfinite(got) & (err <= bound + ulp)
        ok |= ~np.isfinite(ref) & same(got, ref, dt)
        ok |= np.isinf(got) & np.isfinite(ref) & (np.abs(ref) + bound >= float(fin.max)) & (np.sign(got) == np.sign(ref))
    if not ok.all():
        _fail(case, n, f"{who} vs model (sum within n*2^-24*sum|x| + 1 ulp)", ~ok, got, ref)


def check_out(case, trace, out, poison, who="interpreter"):
    n = case.nodes[case.last]
    ref = trace[n.id][:case.M, :case.N]
    rows, cols = np.arange(case.M)[:, None], np.arange(case.N)[None, :]
    m = {None: True, "cols": cols < case.lim, "diag": (rows + cols) % 3 != 0}[case.out_mask]
    want = np.where(m, ref, poison)
    bad = ~same(out, want, n.dt)
    if bad.any():
        _fail(case, n, f"{who}: final ragged store (mask {case.out_mask}) vs the trace / the poison", bad, out, want)


def check_all(case, trace, out, poison, who="interpreter"):
    for n in case.nodes:
        check_node(case, n, trace, who)
    check_out(case, trace, out, poison, who)


def run_case(case: Case, target="cpu", device=False):
    """Launch under `target` (cpu: the interpreter) and check every op against the model."""
    old = os.environ.get("TILEC_TARGET")
    os.environ["TILEC_TARGET"] = target
    try:
        trace, out, poison = launch(case, device=device, poison_seed=case.seed)
    except FuzzMismatch:
        raise
    except Exception as e:
        raise FuzzMismatch(f"[fuzz {case.describe()}] {target} launch raised {type(e).__name__}: {e}\n"
                           f"--- source ---\n{case.source}") from e
    finally:
        if old is None:
            os.environ.pop("TILEC_TARGET", None)
        else:
            os.environ["TILEC_TARGET"] = old
    check_all(case, trace, out, poison, who=target if target != "cpu" else "interpreter")
    return trace, out


def compile_case(case: Case, target: str, assemble=True):
    """PTX for `target` (the case's num_warps), assembled with ptxas."""
    from tile.codegen import run_ptxas
    k = load_kernel(case)
    xs = [tile.asarray(v[:1, :1], d) for d, v in case.inputs.values()]
    ts = [tile.asarray(np.zeros((1, 1)), buf_dt(n.dt)) for n in case.nodes]
    out = tile.asarray(np.zeros((1, 1)), case.nodes[case.last].dt)
    try:
        ck = k.compile(*xs, *ts, out, case.lim, target=target, num_warps=case.num_warps, BR=case.BR, BC=case.BC)
        if assemble:
            run_ptxas(ck.ptx, target)
    except Exception as e:
        raise FuzzMismatch(f"[fuzz {case.describe()}] compile for {target} raised {type(e).__name__}: {e}\n"
                           f"--- source ---\n{case.source}") from e
    return ck


# =========================================================================================== gallery
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(_HERE)), "examples")


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"gallery_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def gallery_config(seed: int):
    """A random configuration of a gallery kernel: (name, kwargs of its run(), tolerance)."""
    r = random.Random(seed)
    which = r.choice(["gemm", "gemm", "attention", "lowbit_gemm"])
    if which == "gemm":
        kw = dict(M=r.choice([1, 7, 33, 64, 100]), N=r.choice([1, 5, 16, 47, 72]), K=r.choice([1, 16, 31, 80, 130]),
                  BM=r.choice([16, 32, 64, 128]), BN=r.choice([16, 32, 64, 128]), BK=r.choice([16, 32, 64]),
                  act=r.choice(["none", "relu", "gelu", "silu"]), with_bias=r.random() < 0.5, seed=seed)
        return which, kw, 1e-2
    if which == "attention":
        H = r.choice([1, 2, 4])
        kw = dict(B=r.choice([1, 2]), H=H, HKV=r.choice([h for h in (1, 2, 4) if H % h == 0]),
                  S=r.choice([1, 5, 17, 40, 64, 70]), D=r.choice([64, 128]), causal=r.random() < 0.5,
                  BM=r.choice([16, 32, 64]), BN=r.choice([16, 32, 64]), seed=seed)
        return which, kw, 2e-2
    G = r.choice([32, 64])
    kw = dict(M=r.choice([1, 5, 9, 17]), N=r.choice([8, 40, 64]), K=r.choice([G, 2 * G]), G=G,
              wtype=r.choice(["int3", "int4", "uint5", "f4e2m1", "f6e3m2", "int8"]), seed=seed,
              BK=r.choice([16, 32]), BN=r.choice([32, 64]), BM=r.choice([16, 32]))
    return which, kw, 1e-2


def run_gallery(seed: int, target="cpu"):
    which, kw, tol = gallery_config(seed)
    mod = load_example(which)
    old = os.environ.get("TILEC_TARGET")
    os.environ["TILEC_TARGET"] = target
    try:
        kwargs = dict(kw)
        if which == "lowbit_gemm":
            err = mod.run(**{k: kwargs.pop(k) for k in ("M", "N", "K", "wtype", "G", "seed")}, **kwargs)
        else:
            err = mod.run(**kwargs)
    except Exception as e:
        raise FuzzMismatch(f"[fuzz gallery seed={seed}] {which}{kw} on {target} raised {type(e).__name__}: {e}") from e
    finally:
        if old is None:
            os.environ.pop("TILEC_TARGET", None)
        else:
            os.environ["TILEC_TARGET"] = old
    if not err < tol:
        raise FuzzMismatch(f"[fuzz gallery seed={seed}] {which}{kw} on {target}: relative error {err} >= {tol}")
    return which, kw, err


# =========================================================================================== backends
def exact_node(case, n: Node) -> bool:
    """Ops whose result is specified bit for bit from inputs that are too (the GPU must then equal the
    interpreter): an exact op downstream of an approximate one (tanh, exp, a float sum, ...) gets
    different inputs on the two backends, so only its model check (on the backend's own inputs) applies."""
    return _exact_op(case, n) and all(exact_node(case, case.nodes[a]) for a in n.args)


def _exact_op(case, n: Node) -> bool:
    if n.kind == "unary" and is_float(n.dt) and n.op not in ("neg", "abs", "floor", "ceil"):
        return False
    if n.kind in ("binary", "scalar") and is_float(n.dt) and n.op.replace("_r", "") not in ("add", "sub", "mul", "max", "min"):
        return n.op.replace("_r", "") in ("div", "rem")     # correctly rounded / exact: still bit-exact
    if n.kind == "reduce" and n.op == "sum" and is_float(n.dt):
        return False
    return True


def compare_backends(case, trace_a, trace_b, out_a, out_b, names=("GPU", "interpreter")):
    """Bit-exact agreement of two backends on every exactly-specified op (argmax rows holding a NaN
    excepted); returns the number of values compared. Raises FuzzMismatch."""
    total = 0
    for n in case.nodes:
        if not exact_node(case, n):
            continue
        a, b = trace_a[n.id], trace_b[n.id]
        ok = same(a, b, buf_dt(n.dt))
        if n.kind == "reduce" and n.op == "argmax" and is_float(case.nodes[n.args[0]].dt):
            xb, ax = _blocks(trace_b[n.args[0]], case, n.attrs["axis"])
            ok |= np.isnan(xb).any(axis=ax)
        total += ok.size
        if not ok.all():
            _fail(case, n, f"{names[0]} vs {names[1]} (bit-exact op)", ~ok, a, b)
    if not exact_node(case, case.nodes[case.last]):
        return total                    # the final value depends on approximate ops: checked against the model
    ok = same(out_a, out_b, buf_dt(case.nodes[case.last].dt))
    if not ok.all():
        _fail(case, case.nodes[case.last], f"{names[0]} vs {names[1]}: final store", ~ok, out_a, out_b)
    return total + ok.size
