"""Small llvmlite.ir helpers shared by the lowering files: types (including `bfloat`, which
llvmlite.ir lacks), constants, intrinsic declarations, and the register type of each tilec dtype.

Register representation of element types (what one "value" of a register tile is in LLVM):
* i1 -> i1; f32/f64/f16/bf16 -> float/double/half/bfloat;
* integers of 1..8 bits -> i8 holding the value (sign-extended for intN, zero-extended for uintN);
  i16/u16 -> i16, i32/u32 -> i32, i64/u64 -> i64;
* every other float (fp8, fp6, fp4, f{b}e{E}m{M}) -> i8 holding its code; arithmetic decodes it
  to f32 and encodes the result (codegen/llvm_numerics.py).
"""
from __future__ import annotations

import struct

import llvmlite.ir as ir
from llvmlite.ir.types import _BaseFloatType

from ..ir.dtypes import DType


class BFloatType(_BaseFloatType):
    """LLVM's `bfloat` (llvmlite.ir has no class for it)."""
    null = "0xR0000"
    intrinsic_name = "bf16"

    def __str__(self):
        return "bfloat"

    def format_constant(self, value):
        return "0xR%04X" % f32_to_bf16_bits(float(value))


BFloatType._create_instance()

i1, i8, i16, i32, i64 = (ir.IntType(n) for n in (1, 8, 16, 32, 64))
f16, f32, f64 = ir.HalfType(), ir.FloatType(), ir.DoubleType()
bf16 = BFloatType()
void = ir.VoidType()
gptr = ir.PointerType(addrspace=1)
sptr = ir.PointerType(addrspace=3)


def f32_to_bf16_bits(x: float) -> int:
    """Round a Python float to bf16 (nearest even), as its 16-bit code."""
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    if (u & 0x7F800000) == 0x7F800000 and (u & 0x7FFFFF):
        return ((u >> 16) & 0x8000) | 0x7FC0
    u += 0x7FFF + ((u >> 16) & 1)
    return (u >> 16) & 0xFFFF


NATIVE_FLOATS = {"f32": f32, "f64": f64, "f16": f16, "bf16": bf16}


def is_native_float(dt: DType) -> bool:
    return dt.is_float and dt.name in NATIVE_FLOATS


def is_small_float(dt: DType) -> bool:
    return dt.is_float and dt.name not in NATIVE_FLOATS


def reg_type(dt: DType) -> ir.Type:
    """The LLVM type of one register value of dtype `dt` (see the module docstring)."""
    if dt.kind == "bool":
        return i1
    if dt.is_float:
        return NATIVE_FLOATS.get(dt.name, i8)
    if dt.bits <= 8:
        return i8
    return ir.IntType(dt.bits)


def mem_int_type(dt: DType) -> ir.Type:
    """The integer type with the dtype's storage bits (>= 8-bit dtypes)."""
    return ir.IntType(dt.bits)


def const(t: ir.Type, v) -> ir.Constant:
    return ir.Constant(t, v)


def ci32(v: int) -> ir.Constant:
    return ir.Constant(i32, int(v))


def ci64(v: int) -> ir.Constant:
    return ir.Constant(i64, int(v))


class Decls:
    """Declares intrinsics / external functions in one module, once each."""

    def __init__(self, module: ir.Module):
        self.module = module

    def fn(self, name: str, ret: ir.Type, args) -> ir.Function:
        g = self.module.globals.get(name)
        if g is None:
            g = ir.Function(self.module, ir.FunctionType(ret, list(args)), name)
        return g

    def call(self, b: ir.IRBuilder, name: str, ret: ir.Type, args, vals, name_hint: str = ""):
        return b.call(self.fn(name, ret, args), list(vals), name=name_hint)


def is_const(v) -> bool:
    return isinstance(v, ir.Constant)


def const_int(v):
    """The Python int of an integer constant, else None."""
    if isinstance(v, ir.Constant) and isinstance(v.type, ir.IntType):
        c = v.constant
        if isinstance(c, int):
            return c
    return None
