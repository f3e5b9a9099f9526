"""tilec: a tile-level GPU kernel language. `import tile` re-exports the language and the launch API.

    import tile
    from tile import bf16, f32

    @tile.kernel
    def add(X: tile.Tensor[f32], Y: tile.Tensor[f32], BLOCK: tile.constexpr = 128):
        i = tile.block_id(0) * BLOCK
        tile.store(Y, (i,), tile.load(X, (i,), (BLOCK,)) + 1.0)

    add[(tile.cdiv(n, 128),)](x, y)

The language (docs/language.md): dtypes (every int/uint of 1..8 bits, small floats f{bits}e{E}m{M},
bf16/f16/f32/f64, fp8), `Tensor[dtype, rank]`, `constexpr`, `inline`, and the builtins (`load`, `store`,
`dot`, `sum`, `exp`, `where`, `range`, `alloc_shared`, ...). Host side: `kernel`, `CompileError`,
`Array` / `asarray` (low-bit arrays), `dtype(name)` for any other type name.
"""
from __future__ import annotations

from .dsl import language as _lang
from .dsl.errors import CompileError
from .dsl.language import (  # noqa: F401  (the language namespace)
    DType, Tensor, TensorSpec, InlineFunction, OutsideKernelError, constexpr, dtype, inline, cdiv,
    block_id, num_blocks, load, store, atomic_add, atomic_max, atomic_min, load_scalar, store_scalar, gather, scatter,
    dot, sum, max, min, prod, argmax, argmin, cumsum, exp, exp2, log, log2, sqrt, rsqrt, sin, cos, tanh, erf, sigmoid, floor,
    ceil, abs, pow, atan2, maximum, minimum, where, zeros, full, arange, broadcast_to, reshape, trans, permute,
    concat, range, static_range, static_assert, static_print, device_print, alloc_shared, copy_async, commit, wait,
    barrier, annotate,
)
from .ir.errors import PerformanceWarning, TileError
from .kernel import CompiledKernel, Kernel, current_target, kernel
from .aot import LoadedKernel, load_compiled

CompileError.__module__ = "tile"          # tracebacks read `tile.CompileError: file:line:col: ...`

for _n in _lang.DTYPE_NAMES:
    globals()[_n] = getattr(_lang, _n)
del _n

_SHADOWS_PYTHON = {"sum", "max", "min", "abs", "pow", "range"}
__all__ = sorted(
    set(_lang.DTYPE_NAMES) | {n for n in _lang.BUILTIN_NAMES if n not in _SHADOWS_PYTHON}
    | {"DType", "Tensor", "constexpr", "dtype", "inline", "cdiv", "kernel", "Kernel", "CompiledKernel",
       "CompileError", "TileError", "current_target", "Array", "asarray", "load_compiled", "LoadedKernel"})

_LAZY_ARRAYS = ("Array", "asarray", "dtype_of", "from_codes", "from_packed")
_LAZY_DEVICE = ("DeviceArray", "to_device", "empty", "empty_like")


def __getattr__(name):
    # runtime helpers and the layout algebra are imported on first use (they pull in more modules)
    if name in _LAZY_ARRAYS:
        from .runtime import arrays
        return getattr(arrays, name)
    if name in _LAZY_DEVICE:
        from .runtime import device
        return getattr(device, name)
    if name == "layout":
        import importlib
        return importlib.import_module(".ir.layout", __name__)
    raise AttributeError(f"module 'tile' has no attribute {name!r}")
