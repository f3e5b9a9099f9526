"""The values lowering works with: what one IR value is in the generated code (per thread).

* `RTile`: a register tile -- this thread's LLVM values, one per value slot of its ThreadMap;
* `SView`: a shared tile -- a byte offset into the kernel's one dynamic shared buffer + its layout;
* `TensorV`: a global tensor parameter -- base pointer, runtime sizes and strides;
* `WordCode`: where a narrow code (<= 8 bits) sits in the packed word it was loaded as, so that a
  `cast` can decode straight from the words (two values per 32-bit register) instead of from
  one-code-per-byte values;
* `LazyFrag`: a shared tile whose fragments the consuming dot reads itself, when it needs them
  (instruction selection's `smem.desc` / `ldmatrix.k` copies; `ds_read.k` on AMD, plan DS_READ).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.dtypes import DType
from ..ir.thread_maps import ThreadMap


@dataclass
class RTile:
    """A lowered register tile: this thread's values, one per value slot of `map`."""
    map: ThreadMap
    vals: list
    dtype: DType


@dataclass
class TensorV:
    """A lowered global tensor parameter."""
    ptr: object
    shape: list
    strides: list
    dtype: DType
    name: str

    @property
    def rank(self):
        return len(self.shape)


@dataclass
class SView:
    """A lowered shared tile: byte offset (i32) in the dynamic shared buffer + its layout."""
    off: object
    shape: tuple
    dtype: DType
    layout: object          # tile.ir.layout.Layout | ComposedLayout over the tile shape (element offsets)
    align: int = 16         # a power of two dividing `off` (known at compile time)


@dataclass(frozen=True)
class WordCode:
    """A code value's origin: bits [shift, shift + bits) of the integer register value `word` (i32,
    or a wider integer joining a vector's words). Recorded by loads in the lowering context's
    `word_codes` (code value -> WordCode); consumers that do not look it up see ordinary values."""
    word: object
    shift: int


DS_READ = "ds_read"          # LazyFrag.plan of an MFMA operand read from LDS by the dot (AMD)


class LazyFrag:
    """A shared_load into an mma operand fragment whose ldmatrix reads are done by the dot that
    uses it, one k16 step at a time (keeps fewer fragment registers live). `transposed`: the IR
    value is the transpose of this view (sv and map are already the transposed ones; the transpose
    op that follows passes it on)."""

    def __init__(self, sv, m, dtype, plan, transposed=False):
        self.sv, self.map, self.dtype, self.plan, self.transposed = sv, m, dtype, plan, transposed
