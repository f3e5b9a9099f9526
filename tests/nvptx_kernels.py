"""Small tile-IR kernels (built with ir.builder, no front end) covering the op families of the GPU
back end; used by tests/test_codegen_nvptx.py, tests/test_passes_nvidia.py and GPU checks.

Each builder returns a Module with one kernel. `inputs(name, rng)` gives matching arguments and a
grid for a run (in the interpreter or on a GPU).
"""
from __future__ import annotations

import numpy as np

from tile.ir.builder import Builder
from tile.ir.core import Block, Function, Module, Operation
from tile.ir.dtypes import bf16, bool_, dtype, f32, i32
from tile.ir.types import ScalarType, TensorType, scalar, tile_type


class K:
    """A tiny helper around Builder."""

    def __init__(self, name, params, names, attrs=None):
        self.fn = Function(name, params, names, attrs or {})
        self.b = Builder(self.fn.body)
        self.args = self.fn.args

    def v(self, name, ops, t, **attrs):
        return self.b.value(name, list(ops), t, attrs or None)

    def c(self, val, dt=i32):
        return self.v("constant", [], scalar(dt), value=val)

    def op(self, name, ops, **attrs):
        return self.b.create(name, list(ops), [], attrs or None)

    def bid(self, axis=0):
        return self.v("block_id", [], scalar(i32), axis=axis)

    def mul(self, a, b):
        return self.v("mul", [a, b], scalar(i32))

    def for_(self, lo, hi, step, inits, types, names=None, **attrs):
        body = Block([scalar(i32)] + list(types), names)
        op = Operation("for", [lo, hi, step, *inits], list(types), attrs, [body])
        self.b.block.append(op)
        return op, body

    def module(self):
        return Module([self.fn])


def T(dt, r=2):
    return TensorType(dtype(dt), (None,) * r)


# ---------------------------------------------------------------------------------------- kernels
def vadd(dt="f32", n=256):
    dt = dtype(dt)
    k = K("vadd", [T(dt, 1)] * 3, ["x", "y", "z"])
    x, y, z = k.args
    off = k.mul(k.bid(), k.c(n))
    a = k.v("load", [x, off], tile_type((n,), dt), shape=[n])
    b = k.v("load", [y, off], tile_type((n,), dt), shape=[n])
    k.op("store", [z, off, k.v("add", [a, b], tile_type((n,), dt))])
    return k.module()


UNARY_F = ["exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sin", "cos", "tanh", "erf", "sigmoid", "floor",
           "ceil", "round", "abs", "neg"]
BINARY_F = ["add", "sub", "mul", "div", "rem", "max", "min", "pow", "atan2"]
BINARY_I = ["add", "sub", "mul", "div", "rem", "max", "min", "and", "or", "xor", "shl", "shr"]


def math_f32(n=128, ops=UNARY_F):
    """Y[i, :] = op_i(X[0, :]) for each unary op."""
    k = K("math_f32", [T(f32), T(f32)], ["X", "Y"])
    X, Y = k.args
    z = k.c(0)
    x = k.v("load", [X, z, z], tile_type((n,), f32), shape=[n])
    for r, name in enumerate(ops):
        k.op("store", [Y, k.c(r), z, k.v(name, [x], tile_type((n,), f32))])
    return k.module()


def binary(dt="f32", n=128, ops=None):
    """Z[i, :] = op_i(X[0, :], X[1, :])."""
    dt = dtype(dt)
    ops = ops or (BINARY_F if dt.is_float else BINARY_I)
    k = K("binary", [T(dt), T(dt)], ["X", "Z"])
    X, Z = k.args
    z = k.c(0)
    a = k.v("load", [X, z, z], tile_type((n,), dt), shape=[n])
    b = k.v("load", [X, k.c(1), z], tile_type((n,), dt), shape=[n])
    for r, name in enumerate(ops):
        k.op("store", [Z, k.c(r), z, k.v(name, [a, b], tile_type((n,), dt))])
    return k.module()


def casts(src="f32", dsts=("bf16", "f16", "f8e4m3fn", "f8e5m2", "f6e3m2", "f4e2m1", "int4", "uint3", "i8", "i32", "i1"),
          n=256):
    """Each Y_j = cast(X, dst_j) (stores of sub-byte tiles: whole bytes per thread)."""
    src = dtype(src)
    outs = [dtype(d) for d in dsts]
    k = K("casts", [T(src, 1)] + [T(d, 1) for d in outs], ["X"] + [f"Y{j}" for j in range(len(outs))])
    X = k.args[0]
    z = k.c(0)
    x = k.v("load", [X, z], tile_type((n,), src), shape=[n])
    for Y, d in zip(k.args[1:], outs):
        k.op("store", [Y, z, k.v("cast", [x], tile_type((n,), d))])
    return k.module()


def upcasts(srcs=("bf16", "f8e4m3fn", "f8e5m2", "f4e2m1", "int4", "uint2", "f6e2m3"), n=256):
    """Y[j, :] = cast(X_j, f32): sub-byte and narrow loads."""
    ins = [dtype(s) for s in srcs]
    k = K("upcasts", [T(s, 1) for s in ins] + [T(f32)], [f"X{j}" for j in range(len(ins))] + ["Y"])
    Y = k.args[-1]
    z = k.c(0)
    for j, (X, s) in enumerate(zip(k.args[:-1], ins)):
        x = k.v("load", [X, z], tile_type((n,), s), shape=[n])
        k.op("store", [Y, k.c(j), z, k.v("cast", [x], tile_type((n,), f32))])
    return k.module()


def reduce2d(kind="sum", axis=1, R=64, C=128, dt="f32"):
    dt = dtype(dt)
    rdt = i32 if kind in ("argmax", "argmin") else dt
    k = K("reduce2d", [T(dt), T(rdt, 1)], ["X", "Y"])
    X, Y = k.args
    r0 = k.mul(k.bid(), k.c(R))
    x = k.v("load", [X, r0, k.c(0)], tile_type((R, C), dt), shape=[R, C])
    s = k.v("reduce", [x], tile_type((C if axis == 0 else R,), rdt), kind=kind, axis=axis)
    k.op("store", [Y, k.c(0) if axis == 0 else r0, s])
    return k.module()


def reduce_all(kind="sum", n=1024, dt="f32"):
    dt = dtype(dt)
    k = K("reduce_all", [T(dt, 1), T(dt, 1)], ["X", "Y"])
    X, Y = k.args
    x = k.v("load", [X, k.c(0)], tile_type((n,), dt), shape=[n])
    s = k.v("reduce", [x], scalar(dt), kind=kind, axis=0)
    k.op("store_scalar", [Y, k.c(0), s])
    return k.module()


def softmax(R=16, C=256):
    k = K("softmax", [T(f32), T(f32)], ["X", "Y"])
    X, Y = k.args
    r0 = k.mul(k.bid(), k.c(R))
    t2 = tile_type((R, C), f32)
    x = k.v("load", [X, r0, k.c(0)], t2, shape=[R, C], other=float("-inf"))
    m = k.v("reduce", [x], tile_type((R,), f32), kind="max", axis=1)
    mb = k.v("broadcast", [k.v("reshape", [m], tile_type((R, 1), f32))], t2)
    e = k.v("exp", [k.v("sub", [x, mb], t2)], t2)
    s = k.v("reduce", [e], tile_type((R,), f32), kind="sum", axis=1)
    sb = k.v("broadcast", [k.v("reshape", [s], tile_type((R, 1), f32))], t2)
    k.op("store", [Y, r0, k.c(0), k.v("div", [e, sb], t2)])
    return k.module()


def loop_if(n=256):
    """acc += 1 on even iterations, += arange on odd ones; stores acc."""
    k = K("loop_if", [T(f32, 1), ScalarType(i32)], ["X", "n"])
    X, nn = k.args
    tt = tile_type((n,), f32)
    acc0 = k.v("full", [], tt, value=0.0)
    forop, body = k.for_(k.c(0), nn, k.c(1), [acc0], [tt], ["i", "acc"])
    with k.b.at(body):
        i, acc = body.args
        cnd = k.v("cmp", [k.v("rem", [i, k.c(2)], scalar(i32)), k.c(0)], scalar(bool_), pred="eq")
        th, el = Block(), Block()
        ifop = Operation("if", [cnd], [tt], {}, [th, el])
        k.b.block.append(ifop)
        with k.b.at(th):
            k.op("yield", [k.v("add", [acc, k.v("full", [], tt, value=1.0)], tt)])
        with k.b.at(el):
            arf = k.v("cast", [k.v("arange", [], tile_type((n,), i32), start=0, end=n)], tt)
            k.op("yield", [k.v("add", [acc, arf], tt)])
        k.op("yield", [ifop.results[0]])
    k.op("store", [X, k.c(0), forop.results[0]])
    return k.module()


def while_loop(n=128):
    """x = X; while max(x) > 1: x = x / 2 -- then store x and the iteration count."""
    k = K("while_loop", [T(f32, 1), T(i32, 1)], ["X", "C"])
    X, Cn = k.args
    tt = tile_type((n,), f32)
    x0 = k.v("load", [X, k.c(0)], tt, shape=[n])
    before, after = Block([tt, scalar(i32)], ["x", "c"]), Block([tt, scalar(i32)], ["x", "c"])
    wop = Operation("while", [x0, k.c(0)], [tt, scalar(i32)], {}, [before, after])
    k.b.block.append(wop)
    with k.b.at(before):
        x, c = before.args
        mx = k.v("reduce", [x], scalar(f32), kind="max", axis=0)
        cond = k.v("cmp", [mx, k.c(1.0, f32)], scalar(bool_), pred="gt")
        k.op("condition", [cond, x, c])
    with k.b.at(after):
        x, c = after.args
        h = k.v("full", [], tt, value=0.5)
        k.op("yield", [k.v("mul", [x, h], tt), k.v("add", [c, k.c(1)], scalar(i32))])
    k.op("store", [X, k.c(0), wop.results[0]])
    k.op("store_scalar", [Cn, k.c(0), wop.results[1]])
    return k.module()


def gemm(BM=128, BN=128, BK=32, dt="bf16", stages=None, out="bf16", num_warps=4, epilogue=False):
    """C = A @ B (+ bias row, relu when `epilogue`), f32 accumulate, ragged edges masked."""
    dt, out = dtype(dt), dtype(out)
    params = [T(dt), T(dt), T(out)] + ([T(f32, 1)] if epilogue else [])
    k = K("gemm", params, ["A", "B", "C"] + (["bias"] if epilogue else []), {"num_warps": num_warps})
    A, B, C = k.args[:3]
    m0, n0 = k.mul(k.bid(0), k.c(BM)), k.mul(k.bid(1), k.c(BN))
    Kd = k.v("dim", [A], scalar(i32), axis=1)
    tacc = tile_type((BM, BN), f32)
    acc0 = k.v("full", [], tacc, value=0.0)
    attrs = {"stages": stages} if stages else {}
    forop, body = k.for_(k.c(0), Kd, k.c(BK), [acc0], [tacc], ["kk", "acc"], **attrs)
    with k.b.at(body):
        kk, acc = body.args
        a = k.v("load", [A, m0, kk], tile_type((BM, BK), dt), shape=[BM, BK])
        b = k.v("load", [B, kk, n0], tile_type((BK, BN), dt), shape=[BK, BN])
        k.op("yield", [k.v("dot", [a, b, acc], tacc)])
    res = forop.results[0]
    if epilogue:
        bias = k.v("load", [k.args[3], n0], tile_type((BN,), f32), shape=[BN])
        bb = k.v("broadcast", [bias], tacc)
        res = k.v("max", [k.v("add", [res, bb], tacc), k.v("full", [], tacc, value=0.0)], tacc)
    if out != f32:
        res = k.v("cast", [res], tile_type((BM, BN), out))
    k.op("store", [C, m0, n0, res])
    return k.module()


def gemm_int4(BM=64, BN=64, BK=32, stages=None):
    """C = A(bf16) @ dequant(W int4 [K, N]) -- the low-bit GEMM pattern."""
    k = K("gemm_int4", [T(bf16), T("int4"), T(f32)], ["A", "W", "C"])
    A, W, C = k.args
    m0, n0 = k.mul(k.bid(0), k.c(BM)), k.mul(k.bid(1), k.c(BN))
    Kd = k.v("dim", [A], scalar(i32), axis=1)
    tacc = tile_type((BM, BN), f32)
    acc0 = k.v("full", [], tacc, value=0.0)
    attrs = {"stages": stages} if stages else {}
    forop, body = k.for_(k.c(0), Kd, k.c(BK), [acc0], [tacc], ["kk", "acc"], **attrs)
    with k.b.at(body):
        kk, acc = body.args
        a = k.v("load", [A, m0, kk], tile_type((BM, BK), bf16), shape=[BM, BK])
        w = k.v("load", [W, kk, n0], tile_type((BK, BN), dtype("int4")), shape=[BK, BN])
        wb = k.v("cast", [w], tile_type((BK, BN), bf16))
        k.op("yield", [k.v("dot", [a, wb, acc], tacc)])
    k.op("store", [C, m0, n0, forop.results[0]])
    return k.module()


def dot_fma(M=32, N=32, K_=16, dt="f32"):
    dt = dtype(dt)
    acc_dt = f32 if dt.is_float else i32
    k = K("dot_fma", [T(dt), T(dt), T(acc_dt)], ["A", "B", "C"])
    A, B, C = k.args
    z = k.c(0)
    a = k.v("load", [A, z, z], tile_type((M, K_), dt), shape=[M, K_])
    b = k.v("load", [B, z, z], tile_type((K_, N), dt), shape=[K_, N])
    acc = k.v("full", [], tile_type((M, N), acc_dt), value=0)
    k.op("store", [C, z, z, k.v("dot", [a, b, acc], tile_type((M, N), acc_dt))])
    return k.module()


def gather_scatter(R=32, C=64):
    """Y[idx[r], :] = X[idx[r], c0:c0+C] * 2, idx from a tensor."""
    k = K("gather_scatter", [T(f32), T(i32, 1), T(f32), ScalarType(i32)], ["X", "I", "Y", "c0"])
    X, I, Y, c0 = k.args
    rows = k.v("load", [I, k.c(0)], tile_type((R,), i32), shape=[R], other=-1)
    g = k.v("gather", [X, rows, c0], tile_type((R, C), f32), shape=[R, C])
    g2 = k.v("mul", [g, k.v("full", [], tile_type((R, C), f32), value=2.0)], tile_type((R, C), f32))
    k.op("scatter", [Y, rows, c0, g2])
    return k.module()


def scalars():
    """Y[0] = X[i, j] * 3 + n (load_scalar, store_scalar, scalar arithmetic)."""
    k = K("scalars", [T(f32), T(f32, 1), ScalarType(i32), ScalarType(i32), ScalarType(f32)], ["X", "Y", "i", "j", "s"])
    X, Y, i, j, s = k.args
    x = k.v("load_scalar", [X, i, j], scalar(f32))
    y = k.v("add", [k.v("mul", [x, k.c(3.0, f32)], scalar(f32)), s], scalar(f32))
    k.op("store_scalar", [Y, k.c(0), y])
    return k.module()


def atomics(n=256):
    """Y[0:n] += X[b, :] for every block b (atomic add), and M[:] = max over blocks."""
    k = K("atomics", [T(f32), T(f32, 1), T(i32, 1)], ["X", "Y", "M"])
    X, Y, M = k.args
    x = k.v("load", [X, k.bid(), k.c(0)], tile_type((n,), f32), shape=[n])
    k.op("atomic", [Y, k.c(0), x], kind="add")
    xi = k.v("cast", [x], tile_type((n,), i32))
    k.op("atomic", [M, k.c(0), xi], kind="max")
    return k.module()


def masked_copy(R=32, C=64, dt="f32"):
    """Y = where(mask(X > 0), X, -1) with a load mask and a store mask."""
    dt = dtype(dt)
    k = K("masked_copy", [T(dt), T(dt)], ["X", "Y"])
    X, Y = k.args
    z = k.c(0)
    tt = tile_type((R, C), dt)
    x0 = k.v("load", [X, z, z], tt, shape=[R, C])
    mask = k.v("cmp", [x0, k.v("full", [], tt, value=0)], tile_type((R, C), bool_), pred="gt")
    x = k.v("load", [X, z, z, mask], tt, shape=[R, C], other=-1)
    k.op("store", [Y, z, z, x, mask])
    return k.module()


def transpose_copy(R=64, C=32):
    """Y = X.T through a register transpose + store."""
    k = K("transpose_copy", [T(f32), T(f32)], ["X", "Y"])
    X, Y = k.args
    z = k.c(0)
    x = k.v("load", [X, z, z], tile_type((R, C), f32), shape=[R, C])
    k.op("store", [Y, z, z, k.v("transpose", [x], tile_type((C, R), f32), perm=[1, 0])])
    return k.module()


def shape_ops(n=64):
    """reshape (row-major regroup), slice, concat."""
    k = K("shape_ops", [T(f32, 1), T(f32)], ["X", "Y"])
    X, Y = k.args
    z = k.c(0)
    x = k.v("load", [X, z], tile_type((n,), f32), shape=[n])
    r = k.v("reshape", [x], tile_type((8, n // 8), f32))
    s = k.v("slice", [r], tile_type((4, n // 8), f32), start=[2, 0], size=[4, n // 8])
    c = k.v("concat", [s, s], tile_type((8, n // 8), f32), axis=0)
    k.op("store", [Y, z, z, c])
    return k.module()


def explicit_pipeline(BM=64, BN=64, BK=32):
    """The explicit level: alloc_shared / async_copy / commit / wait / barrier / shared_load."""
    k = K("explicit", [T(bf16), T(bf16), T(f32)], ["A", "B", "C"])
    A, B, C = k.args
    z = k.c(0)
    sa = k.v("alloc_shared", [], tile_type((BM, BK), bf16, "shared"))
    sb = k.v("alloc_shared", [], tile_type((BK, BN), bf16, "shared"))
    k.op("async_copy", [sa, A, z, z])
    k.op("async_copy", [sb, B, z, z])
    k.op("async_commit", [])
    k.op("async_wait", [], pending=0)
    k.op("barrier", [])
    a = k.v("shared_load", [sa], tile_type((BM, BK), bf16))
    b = k.v("shared_load", [sb], tile_type((BK, BN), bf16))
    acc = k.v("full", [], tile_type((BM, BN), f32), value=0.0)
    k.op("store", [C, z, z, k.v("dot", [a, b, acc], tile_type((BM, BN), f32))])
    return k.module()
