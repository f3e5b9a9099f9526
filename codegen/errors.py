"""Errors of the code generators.

`CompileError` is what every back-end failure becomes: a lowering rule that does not support an
op/type/layout combination, LLVM rejecting the generated IR, or the LLVM child process dying on a
signal (the llvmlite wheel aborts on some malformed IR; see `codegen/llvm_isolated.py`).
"""
from __future__ import annotations

from ..ir.errors import TileError


class CompileError(TileError):
    """A kernel could not be compiled for a target. The message names the kernel and, where one is
    to blame, the op (with its source location)."""

    def __init__(self, msg: str, op=None, kernel: str | None = None):
        self.op = op
        self.kernel = kernel
        where = ""
        if op is not None:
            loc = getattr(op, "loc", None)
            where = (f"{loc}: " if loc else "") + f"op '{getattr(op, 'name', '?')}': "
        head = f"kernel '{kernel}': " if kernel else ""
        super().__init__(head + where + msg)


def unsupported(op, what: str) -> CompileError:
    return CompileError(f"not supported by this back end: {what}", op)
