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
`dot`, `sum`, `exp`, `where`, `range`, `alloc_shared`, ...). Host side: `kernel`, `autotune` / `Config`
(tile/autotuner.py), `CompileError`, `Array` / `asarray` (low-bit arrays), `dtype(name)` for any other type name,
`torch_op` (a kernel as a PyTorch custom op; torch is imported only when it is called).

`import tile` is light: the language namespace and the kernel API (which pull in the front end) are
loaded on first use of any of their names (module `__getattr__`), so `tile.load_compiled(path)` runs
an AOT artifact with neither the front end, the passes, the code generator nor llvmlite imported.
"""
from __future__ import annotations

import os as _os
import sys as _sys
import types as _types

# In a source tree the layers (dsl/, ir/, passes/, codegen/, runtime/) are folders beside tile/, mapped
# to tile.<layer> by the install (pyproject's package-dir). Python run from the repository root finds
# this tile/ before any installed finder, with no install at all or with an editable install of another
# checkout: the repository root on the package path lets tile.ir & co. resolve here all the same. (An
# installed copy has them inside tile/; nothing is added there. realpath: tile/ reached through a link,
# as the test suite's PYTHONPATH folder does, still finds its checkout.)
_root = _os.path.dirname(_os.path.dirname(_os.path.realpath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "ir")) and _os.path.isfile(_os.path.join(_root, "ir", "__init__.py")):
    __path__.append(_root)

from .ir.errors import PerformanceWarning, TileError  # noqa: E402
from .aot import LoadedKernel, load_compiled

_SHADOWS_PYTHON = {"sum", "max", "min", "abs", "pow", "range"}
_LANG_EXTRA = ("DType", "Tensor", "TensorSpec", "InlineFunction", "OutsideKernelError", "constexpr", "dtype",
               "inline", "cdiv")
_API = ("kernel", "Kernel", "CompiledKernel", "current_target")
_LAZY_ARRAYS = ("Array", "asarray", "dtype_of", "from_codes", "from_packed")
_LAZY_DEVICE = ("DeviceArray", "to_device", "empty", "empty_like")
_LAZY_AUTOTUNE = ("autotune", "Config", "Autotuner")
_SUBPACKAGES = ("dsl", "ir", "passes", "codegen", "runtime", "compiler", "cli", "aot", "autotuner", "torchlib")
_LOADED: list = []


def _load_language():
    """Import the front end's language namespace and publish every name of it on this module (so
    later look-ups are plain attribute reads)."""
    if _LOADED:
        return _LOADED[0]
    from .dsl import language as lang
    from .dsl.errors import CompileError
    import importlib
    _k = importlib.import_module(__name__ + ".kernel")   # (`from . import kernel` would read the property)
    CompileError.__module__ = "tile"      # tracebacks read `tile.CompileError: file:line:col: ...`
    g = globals()
    for n in (*lang.DTYPE_NAMES, *lang.BUILTIN_NAMES, *_LANG_EXTRA):
        g[n] = getattr(lang, n)
    g["CompileError"] = CompileError
    for n in _API:
        if n != "kernel":
            g[n] = getattr(_k, n)
    g["__all__"] = sorted(
        set(lang.DTYPE_NAMES) | {n for n in lang.BUILTIN_NAMES if n not in _SHADOWS_PYTHON}
        | {"DType", "Tensor", "constexpr", "dtype", "inline", "cdiv", "kernel", "Kernel", "CompiledKernel",
           "CompileError", "TileError", "PerformanceWarning", "current_target", "Array", "asarray",
           "load_compiled", "LoadedKernel", "autotune", "Config", "torch_op"})
    _LOADED.append(lang)
    return lang


def __getattr__(name):
    # runtime helpers and the layout algebra are imported on first use (they pull in more modules)
    if name in _LAZY_ARRAYS:
        from .runtime import arrays
        return getattr(arrays, name)
    if name in _LAZY_DEVICE:
        from .runtime import device
        return getattr(device, name)
    if name in _LAZY_AUTOTUNE:
        import importlib
        return getattr(importlib.import_module(".autotuner", __name__), name)
    if name in ("prelayout_weights", "unprelayout_weights", "prelayout_plan"):
        from . import prelayout
        return getattr(prelayout, name)
    if name == "torch_op":                # PyTorch custom ops: torch is imported only when it is called
        from .torchlib import torch_op
        return torch_op
    if name == "layout":
        import importlib
        return importlib.import_module(".ir.layout", __name__)
    if name in _SUBPACKAGES:
        import importlib
        return importlib.import_module("." + name, __name__)
    if name.startswith("__") and name != "__all__":
        raise AttributeError(f"module 'tile' has no attribute {name!r}")
    _load_language()
    g = globals()
    if name in g:
        return g[name]
    raise AttributeError(f"module 'tile' has no attribute {name!r}")


def __dir__():
    _load_language()
    return sorted(globals())


class _TileModule(_types.ModuleType):
    """`tile.kernel` is the decorator, though `tile/kernel.py` is also a submodule: importing the
    submodule sets the package attribute `kernel` to the module, which this property ignores."""

    @property
    def kernel(self):
        _load_language()
        return _sys.modules[__name__ + ".kernel"].kernel

    @kernel.setter
    def kernel(self, value):
        pass


_sys.modules[__name__].__class__ = _TileModule
