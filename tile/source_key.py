"""A launch's kernel-cache key computed from the Python kernel itself, so that a process whose kernel
is already in the disk cache launches it without running (or importing) the front end.

The kernel cache (runtime/cache.py) is keyed on the front end's IR. `source_key` hashes what the
front end reads to make that IR -- the kernel's file (its whole text) and place in it, its
parameters, the values of every global or closure name its code (or the code of a
`tile.inline` helper it refers to) names, the specialization (argument types, constexpr values,
launch options), the target and the compiler version -- and the cache keeps an alias from it to the
IR key (`KernelCache.put_alias`). A value the fingerprint cannot pin down (an arbitrary object, a
plain Python function, a class) makes `source_key` None: that kernel always goes through the front
end, as before.

Names are over-approximated (an attribute name that is also a global adds that global to the key),
never under-approximated: every name the front end can look up is among the code's names. Values
of tile's own modules, numpy and math are covered by the compiler version, not hashed one by one.
"""
from __future__ import annotations

import builtins
import hashlib
import inspect
import linecache
import sys
import types

__all__ = ["source_key", "kernel_fingerprint"]

_LIBRARY_MODULES = ("tile", "numpy", "math", "operator", "builtins", "cmath")
_PLAIN = (type(None), bool, int, float, complex, str, bytes)


class _Unpinned(Exception):
    """A value whose identity across processes the fingerprint cannot establish."""


def _code_names(code) -> set:
    names = set(code.co_names) | set(code.co_freevars)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _code_names(c)
    return names


def _value(v, names, depth: int, seen: set):
    """A stable description of a global value the front end may read."""
    from .ir.dtypes import DType
    from .dsl import language as L
    if isinstance(v, _PLAIN):
        return (type(v).__name__, repr(v))
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, tuple(_value(x, names, depth, seen) for x in v))
    if isinstance(v, (set, frozenset)):
        return (type(v).__name__, tuple(sorted(repr(_value(x, names, depth, seen)) for x in v)))
    if isinstance(v, DType):
        return ("dtype", v.name)
    if isinstance(v, L.InlineFunction):
        return ("inline", _function(v.fn, depth + 1, seen))
    if L.is_builtin(v) or v is L.constexpr or v is L.Tensor or isinstance(v, L.TensorSpec):
        return ("tile", getattr(v, "__qualname__", None) or repr(v))
    if isinstance(v, types.ModuleType):
        name = v.__name__
        if name.split(".")[0] in _LIBRARY_MODULES or depth > 3:
            return ("module", name)
        attrs = []                               # a user module: the attributes the code may read
        for n in sorted(names):
            if n in getattr(v, "__dict__", {}):
                attrs.append((n, _value(v.__dict__[n], names, depth + 1, seen)))
        return ("module", name, tuple(attrs))
    mod = getattr(type(v), "__module__", "") or ""
    if mod.split(".")[0] == "numpy" and getattr(v, "shape", None) == ():
        return ("numpy", type(v).__name__, repr(v))      # a numpy scalar
    raise _Unpinned(f"{type(v).__module__}.{type(v).__qualname__}")


def _function(fn, depth: int = 0, seen: set | None = None) -> tuple:
    """(file, first line, name, hash of the file's text, Python version, the global and closure
    values its code names) of a kernel or inline helper, recursively."""
    seen = set() if seen is None else seen
    fn = inspect.unwrap(fn)
    if id(fn) in seen or depth > 8:
        return ("seen", fn.__module__, fn.__qualname__)
    seen.add(id(fn))
    code = fn.__code__
    lines = linecache.getlines(code.co_filename)   # the front end parses the function from these
    if not lines:
        raise _Unpinned("no source")
    src = hashlib.sha256("".join(lines).encode()).hexdigest()   # the whole file: cheaper than finding the def
    closure = {}
    if fn.__closure__:
        for n, cell in zip(code.co_freevars, fn.__closure__):
            try:
                closure[n] = cell.cell_contents
            except ValueError:
                pass
    g = fn.__globals__
    names = _code_names(code)
    vals = []
    for n in sorted(names):
        if n in closure:
            vals.append(("c", n, _value(closure[n], names, depth, seen)))
        elif n in g:
            vals.append(("g", n, _value(g[n], names, depth, seen)))
        elif not hasattr(builtins, n):
            vals.append(("-", n))                # unbound now: bound later would change the key
    # the file's text, the function's place in it and the Python version fix what the front end
    # parses (marshal's bytes of the code object would not do: they depend on reference counts)
    return (code.co_filename, code.co_firstlineno, fn.__qualname__, src, sys.version_info[:2], tuple(vals))


def kernel_fingerprint(fn, params) -> str | None:
    """A sha256 over a kernel's source, code, parameters and the global values it names; None
    when one of them cannot be pinned down across processes."""
    try:
        parts = (_function(fn), tuple((p.name, p.kind, str(p.dtype), p.rank, _value(p.default, (), 0, set())
                                       if p.has_default else "-") for p in params))
    except _Unpinned:
        return None
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def source_key(fingerprint: str, specialization, constexprs: dict, target: str, version: str) -> str | None:
    """The launch's alias key: the kernel fingerprint, the specialization (Kernel.bind's key: argument
    types, constexpr values, launch options), the target and the compiler version; None when a
    constexpr value cannot be pinned down across processes."""
    try:
        consts = tuple((k, _value(v, (), 0, set())) for k, v in sorted(constexprs.items()))
    except _Unpinned:
        return None
    text = repr((fingerprint, tuple(specialization), consts, target, version))
    return hashlib.sha256(("tilec-source-key\0" + text).encode()).hexdigest()
