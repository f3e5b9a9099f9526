"""`@tile.kernel`: the user-facing kernel object — argument binding, specialization, caching, launch.

    k = tile.kernel(fn)
    k[grid](*args, **constexprs)                 # compile (cached per specialization) and run
    ck = k.compile(*args, target="cpu", **constexprs)
    ck.ir, ck.ir_after["canonicalize"], ck.module

A kernel is specialized on (constexpr values, each tensor's dtype and rank, each scalar's kind) and the
target; compiled kernels are cached in memory per key. Launches run in the NumPy interpreter (the only
launcher so far; `_launch` is the seam where the GPU launch goes, and TILEC_TARGET=cpu keeps it there).
"""
from __future__ import annotations

import functools
import inspect
import os
from math import prod

from .ir.dtypes import DType, bool_, f32, i32
from .ir.targets import UnknownTargetError, get_target
from .ir.types import ScalarType, TensorType
from .dsl.errors import CompileError
from .dsl.language import TensorSpec, Tensor
from .dsl.signature import Param, parse_params
from . import compiler
from .compiler import gpu_arch
# the front end (dsl/frontend.py), the IR printer and the passes are imported when a kernel is
# compiled: a launch whose code is in the kernel cache needs none of them (Kernel._from_index)

__all__ = ["kernel", "Kernel", "CompiledKernel", "current_target"]


def current_target() -> str:
    """The target launches compile for: $TILEC_TARGET if set, else the GPU's arch if there is an NVIDIA
    or AMD GPU, else 'cpu' (the NumPy interpreter)."""
    return compiler.resolve().name


class CompiledKernel:
    """One specialization of a kernel, compiled for one target.

    .ir        the IR text right after the front end
    .module    the IR Module after the target's pass pipeline (.function: its kernel)
    .ir_after  pass name -> IR text after that pass (empty when no pipeline ran)
    .passes    the pass names, in order
    .target    the target name
    .signature parameter name -> IR type (tensor and scalar parameters); .constexprs name -> value
    """

    def __init__(self, name, target, ir, module, ir_after, signature, constexprs, params, lower=None, *,
                 frontend=None, make_frontend=None):
        self.name = name
        self.target = target
        self._ir = ir
        self._make_frontend = make_frontend  # () -> the front end's Module (when `ir` is None)
        self._module = module
        self._ir_after = ir_after
        self._lower = lower     # () -> (module, ir_after): when built from a cached artifact, run on first read
        self._frontend = frontend       # the front end's Module, not yet through the pipeline (or None)
        self.lower_target = None        # the Target (restrictions included) a lazy pipeline runs for
        self.signature = signature
        self.constexprs = constexprs
        self.params = params
        self.asm: dict = {}
        self.artifact = None    # GPU targets: the compiled artifact (ir/artifact.py)
        self.any_strides = ()   # tensors compiled without TMA (their strides allow no tensor map)

    def _lowered(self):
        if self._lower is not None:
            lower, self._lower = self._lower, None
            self._module, self._ir_after = lower()
        return self._module, self._ir_after

    @property
    def ir(self) -> str:
        """The IR text right after the front end. A launch whose code came from the kernel cache by
        its source key (tile/source_key.py) ran no front end: it runs here, on first use."""
        if self._ir is None:
            from .ir.printer import print_module
            m = self._make_frontend()
            if self._module is None:
                self._frontend = m
            self._ir = print_module(m)
        return self._ir

    @property
    def module(self):
        """The IR Module after the target's pass pipeline. A launch whose code came from the kernel
        cache (or an autotuner's compile worker, `lower=`) ran no pass: the pipeline runs here, on
        first use."""
        self._lowered()
        if self._module is None:
            self._run_pipeline()
        return self._module

    @module.setter
    def module(self, value):
        self._module, self._lower = value, None

    @property
    def ir_after(self) -> dict:
        """Pass name -> the IR text after it. Launches do not print the IR after every pass: the
        pipeline runs again here, recording, on first use."""
        self._lowered()
        if self._ir_after is None:
            self._run_pipeline()
        return self._ir_after

    @ir_after.setter
    def ir_after(self, value):
        self._lowered()
        self._ir_after = value

    def _run_pipeline(self) -> None:
        from .ir.parser import parse_module
        ir = self.ir
        m = self._frontend if self._module is None and self._frontend is not None else parse_module(ir)
        self._frontend = None
        module, ir_after = compiler.lower(m, self.lower_target or self.target, name=self.name)
        if self._module is None:
            self._module = module
        self._ir_after = ir_after

    @property
    def ptx(self) -> str | None:
        """The PTX (NVIDIA targets), else None."""
        return self.artifact.ptx if self.artifact is not None else None

    @property
    def cubin(self) -> bytes | None:
        """The cubin when the artifact holds one (the runtime otherwise builds it from the PTX)."""
        return self.artifact.cubin if self.artifact is not None else None

    @property
    def hsaco(self) -> bytes | None:
        """The AMD code object (gfx* targets)."""
        return self.artifact.hsaco if self.artifact is not None else None

    @property
    def extra(self) -> dict:
        """Facts the code generator kept (AMD: the assembly text, register and segment sizes)."""
        return self.artifact.extra if self.artifact is not None else {}

    @property
    def meta(self):
        """ir.artifact.KernelMeta (threads, shared memory, parameters) for GPU targets, else None."""
        return self.artifact.meta if self.artifact is not None else None

    @property
    def passes(self) -> list[str]:
        return list(self.ir_after)

    @property
    def function(self):
        return self.module.get(self.name)

    def __repr__(self) -> str:
        sig = ", ".join(f"{k}: {t}" for k, t in self.signature.items())
        cs = ", ".join(f"{k}={v!r}" for k, v in self.constexprs.items())
        return f"<CompiledKernel {self.name}({sig}){' [' + cs + ']' if cs else ''} for {self.target}>"


class _Bound:
    """A call's arguments matched to the kernel's parameters."""

    def __init__(self):
        self.values: dict = {}          # every parameter -> the value given (or its default)
        self.types: dict = {}           # runtime parameter -> IR type
        self.constexprs: dict = {}      # constexpr parameter -> value
        self.key: list = []
        self.runtime_args: list = []    # one per IR parameter (None when compiling from a signature)
        self.options: dict = {}         # launch options (num_warps) -> value
        self.stream = None              # the CUDA stream of a launch (torch/cupy stream or handle); None: torch's
                                        # current stream if a torch tensor is passed, else the legacy default


# keyword arguments of a launch (and of compile()) that are not kernel parameters: the warps per block,
# the pipeline depth of the kernel's `tile.range` loops that do not give `stages=` themselves, and the
# thread-block cluster shape (NVIDIA sm_90; function attribute `cluster`)
LAUNCH_OPTIONS = ("num_warps", "num_stages", "cluster")
MAX_CLUSTER = 8                 # blocks per cluster a launch may ask for on every sm_90 GPU (the portable limit)


def cluster_dims(v) -> list:
    """Launch option `cluster` as [x, y, z]: an int n (n blocks along axis 0) or 1 to 3 positive ints, at
    most MAX_CLUSTER blocks in all (ValueError otherwise)."""
    dims = [v] if isinstance(v, int) and not isinstance(v, bool) else list(v) if isinstance(v, (tuple, list)) else None
    if not dims or len(dims) > 3 or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in dims) \
            or prod(dims) > MAX_CLUSTER:
        raise ValueError(f"launch option 'cluster' must be a positive int or 1 to 3 positive ints with at most "
                         f"{MAX_CLUSTER} blocks in all, got {v!r}")
    return dims + [1] * (3 - len(dims))


def _is_user_error(e) -> bool:
    """Errors about the user's kernel or arguments: re-raised with a short traceback (no compiler frames)."""
    if isinstance(e, CompileError):
        return not e.internal
    if isinstance(e, UnknownTargetError):
        return True
    return getattr(e, "_tile_user_error", False)


def _user_error(exc):
    exc._tile_user_error = True
    return exc


class Kernel:
    """A kernel function. Launch with `kernel[grid](*args, **constexprs)`; inspect with `kernel.compile(...)`."""

    def __init__(self, fn):
        if not inspect.isfunction(fn):
            raise TypeError(f"@tile.kernel decorates a function, got {fn!r}")
        self.fn = fn
        self.name = fn.__name__
        self.params: list[Param] = parse_params(fn)
        self._sig = inspect.Signature([inspect.Parameter(
            p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=p.default if p.has_default else inspect.Parameter.empty) for p in self.params])
        self.cache: dict = {}
        self._fast = _FastTable()       # call signature -> (target, CompiledKernel, FastLauncher)
        self._last = Launcher(self, _NO_GRID)   # the Launcher __getitem__ made last (immutable, shared)
        self._fingerprint = _UNSET       # tile/source_key.py kernel_fingerprint, computed on first compile
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<tile.kernel {self.name}>"

    def __call__(self, *args, **kwargs):
        raise TypeError(f"launch a kernel with a grid: {self.name}[grid](*args); "
                        f"to compile without running use {self.name}.compile(*args)")

    def __getitem__(self, grid) -> "Launcher":
        last = self._last                        # `k[grid]` in a loop with the same grid object: reused
        if last.grid is grid:
            return last
        last = self._last = Launcher(self, grid)
        return last

    # ------------------------------------------------------------ binding
    def bind(self, args, kwargs, signature_ok: bool = False) -> _Bound:
        kwargs = dict(kwargs)
        options = {k: kwargs.pop(k) for k in LAUNCH_OPTIONS if k in kwargs and k not in self._sig.parameters}
        if "stream" in kwargs and "stream" not in self._sig.parameters:
            b_stream = kwargs.pop("stream")       # where to launch; not part of the specialization
        else:
            b_stream = None
        try:
            ba = self._sig.bind(*args, **kwargs)
        except TypeError as e:
            raise _user_error(TypeError(f"{self.name}(): {e}")) from None
        ba.apply_defaults()
        b = _Bound()
        for p in self.params:
            v = ba.arguments[p.name]
            b.values[p.name] = v
            if p.kind == "constexpr":
                if isinstance(v, list):
                    v = tuple(v)
                b.constexprs[p.name] = v
                b.key.append(("c", p.name, _const_key(v)))
                continue
            t, rt = self._arg_type(p, v, signature_ok)
            b.types[p.name] = t
            b.runtime_args.append(rt)
            b.key.append(("t", p.name, str(t)))
        for k, v in sorted(options.items()):
            if k == "cluster":
                v = self._cluster_option(v)
                if v == [1, 1, 1]:
                    continue                     # no cluster: the same specialization as without the option
                b.options[k] = v
                b.key.append(("o", k, tuple(v)))
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0 or (k == "num_warps" and v & (v - 1)):
                raise _user_error(ValueError(f"{self.name}(): launch option '{k}' must be a positive "
                                             f"{'power of two' if k == 'num_warps' else 'int'}, got {v!r}"))
            b.options[k] = v
            b.key.append(("o", k, v))
        b.stream = b_stream
        return b

    def _cluster_option(self, v) -> list:
        try:
            return cluster_dims(v)
        except ValueError as e:
            raise _user_error(ValueError(f"{self.name}(): {e}")) from None

    def _err(self, p: Param, got: str, cls=TypeError):
        return _user_error(cls(f"{self.name}(): argument '{p.name}' expects {p.describe()}, got {got}"))

    def _arg_type(self, p: Param, v, signature_ok):
        """(IR type, runtime value) of argument v for parameter p."""
        kind = p.kind
        spec = _as_spec(v) if signature_ok else None
        if kind == "infer":
            if spec is not None:
                if isinstance(spec, (TensorSpec, TensorType)):
                    kind = "tensor"
                else:
                    p = Param(p.name, "scalar", spec.dtype if isinstance(spec, ScalarType) else spec,
                              default=p.default)
                    kind = "scalar"
            elif _is_array(v):
                kind = "tensor"
            elif _is_scalar(v):
                p = Param(p.name, "scalar", _scalar_dtype(v), default=p.default)
                kind = "scalar"
            else:
                raise self._err(p, _describe_obj(v))
        if kind == "tensor":
            if spec is not None:
                if isinstance(spec, TensorType):
                    dt, rank = spec.dtype, spec.rank
                elif isinstance(spec, TensorSpec) and spec.rank is not None and (spec.dtype or p.dtype):
                    dt, rank = spec.dtype or p.dtype, spec.rank
                else:
                    raise self._err(p, f"{spec!r} (a signature needs a dtype and a rank: tile.Tensor[dtype, rank])")
                rt = None
            else:
                if not _is_array(v):
                    raise self._err(p, _describe_obj(v))
                dt, rank = _array_dtype(v), _array_rank(v)
                if dt is None:
                    raise self._err(p, _describe_obj(v) + " (its dtype has no tilec equivalent)")
                rt = v
            if p.dtype is not None and dt != p.dtype:
                raise self._err(p, _describe_obj(v) if rt is not None else f"a tensor of {dt}")
            if p.rank is not None and rank != p.rank:
                raise self._err(p, f"a rank-{rank} " + ("array" if rt is not None else "tensor"), ValueError)
            if rank < 1:
                raise self._err(p, "a 0-d array (pass a Python scalar for a scalar parameter)", ValueError)
            return TensorType(dt, (None,) * rank), rt
        # scalar
        dt = p.dtype
        if spec is not None:
            sdt = spec.dtype if isinstance(spec, ScalarType) else spec
            if not isinstance(sdt, DType) or sdt != dt:
                raise self._err(p, repr(spec))
            return ScalarType(dt), None
        return ScalarType(dt), self._scalar_value(p, v)

    def _scalar_value(self, p: Param, v):
        dt = p.dtype
        if _is_array(v) and getattr(v, "shape", None) != ():
            raise self._err(p, _describe_obj(v))
        if hasattr(v, "item") and getattr(v, "shape", None) == ():
            v = v.item()
        if dt.kind == "bool":
            if isinstance(v, bool):
                return v
            raise self._err(p, _describe_obj(v))
        if dt.is_int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise self._err(p, _describe_obj(v))
            if not dt.min_value <= v <= dt.max_value:
                raise _user_error(ValueError(f"{self.name}(): argument '{p.name}' = {v} does not fit {dt} "
                                             f"(range {dt.min_value}..{dt.max_value})"))
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self._err(p, _describe_obj(v))
        return float(v)

    # ------------------------------------------------------------ compile
    def compile(self, *args, target: str | None = None, **kwargs) -> CompiledKernel:
        """Compile for `target` (default: the current one). Arguments are launch arguments or a signature:
        tile.Tensor[dtype, rank] (or a TensorType) for tensors, int/float/bool/a dtype for scalars."""
        __tracebackhide__ = True
        try:
            b = self.bind(args, kwargs, signature_ok=True)
            return self._compile(b, compiler.resolve(target))
        except Exception as e:
            if _is_user_error(e):
                raise e.with_traceback(None) from None
            raise

    @staticmethod
    def _target(target):
        return target if not isinstance(target, str) else compiler.resolve(target)

    @classmethod
    def _cache_key(cls, b: _Bound, target) -> tuple:
        """The key of `self.cache` (compiled kernels in memory) for a binding and a target (a Target or
        its name; a restricted one, `Target.without`, is a specialization of its own). On a target with
        TMA the tensor arguments whose strides a tensor map cannot describe are a part of it too, and
        where the pipeline specializes on it the tensor arguments that are `divisible`."""
        target = cls._target(target)
        return (target.key, tuple(b.key), _any_strides(b, target), _divisible(b, target))

    def _frontend(self, b: _Bound, target=None):
        """The front end for one binding: (IR module, its printed text) -- the text keys the kernel cache.
        With a target: its `any_strides` (function attribute: those tensors are copied by cp.async) and
        `divisible` (function attribute: those tensors' vector accesses need no run-time check)."""
        t = self._target(target) if target is not None else None
        any_strides = _any_strides(b, t) if t is not None else ()
        divisible = _divisible(b, t) if t is not None else ()
        self._check_constexprs(b)
        module = self._front_module(b.types, b.constexprs, b.options, any_strides, divisible)
        from .ir.printer import print_module
        return module, print_module(module)

    def _check_constexprs(self, b: _Bound) -> None:
        for p in self.params:
            if p.kind == "constexpr" and not _is_const_ok(b.constexprs[p.name]):
                raise _user_error(TypeError(f"{self.name}(): constexpr '{p.name}' must be a compile-time value "
                                            f"(a number, bool, string, dtype, None or a tuple of them), got "
                                            f"{_describe_obj(b.constexprs[p.name])}"))

    def _front_module(self, types, constexprs, options, any_strides=(), divisible=()):
        """The front end's Module of one specialization: launch options, `any_strides` and `divisible`
        become function attributes, num_stages the depth of the loops that do not choose one."""
        from .dsl.frontend import compile_kernel
        module = compile_kernel(self.fn, self.params, types, constexprs, self.name)
        stages = options.get("num_stages")
        for f in module.functions:
            f.attrs.update({k: v for k, v in options.items() if k != "num_stages"})
            if any_strides:
                f.attrs["any_strides"] = list(any_strides)
            if divisible:
                f.attrs["divisible"] = list(divisible)
            if stages is not None:               # the default depth of loops that do not choose one
                for op in f.walk():
                    if op.name == "for" and op.attrs.get("stages") is None:
                        op.attrs["stages"] = stages
        return module

    def _compile(self, b: _Bound, target) -> CompiledKernel:
        """The specialization of `b` for `target` (a Target or its name), compiled once and cached."""
        target = self._target(target)
        key = self._cache_key(b, target)
        ck = self.cache.get(key)
        if ck is not None:
            return ck
        any_strides, divisible = key[2], key[3]
        self._check_constexprs(b)
        skey = self._source_key(b, target, any_strides, divisible)
        if skey is not None:                       # in the disk cache by its source: no front end
            art = compiler.cached_by_source(skey)
            if art is not None:
                types, consts, opts = dict(b.types), dict(b.constexprs), dict(b.options)
                ck = CompiledKernel(self.name, target.name, None, None, None, types, consts, self.params,
                                    make_frontend=lambda: self._front_module(types, consts, opts, any_strides,
                                                                                             divisible))
                ck.lower_target = target
                ck.any_strides = any_strides
                ck.artifact = art
                ck.asm["ptx"] = art.ptx
                self.cache[key] = ck
                return ck
        module, ir = self._frontend(b, target)
        front = module
        module, ir_after, binary = compiler.build(module, ir, target, name=self.name, source_key=skey)
        ck = CompiledKernel(self.name, target.name, ir, module, ir_after, dict(b.types), dict(b.constexprs),
                            self.params, frontend=front if module is None else None)
        ck.lower_target = target
        ck.any_strides = any_strides
        if binary is not None:
            ck.artifact = binary
            ck.asm["ptx"] = ck.artifact.ptx
        self.cache[key] = ck
        return ck

    def _source_key(self, b: _Bound, target, any_strides=(), divisible=()) -> str | None:
        """The kernel-cache alias of this specialization computed from the Python source
        (tile/source_key.py), for GPU targets with a kernel cache; None where it does not apply. It
        names the target by its key (restrictions included), the tensors compiled without TMA and the
        tensors compiled `divisible`."""
        if not target.is_gpu or not compiler.source_keys_enabled():
            return None
        fp = self._fingerprint
        if fp is _UNSET:
            from .source_key import kernel_fingerprint
            fp = self._fingerprint = kernel_fingerprint(self.fn, self.params)
        if fp is None:
            return None
        from .runtime.cache import compiler_version
        from .source_key import source_key
        return source_key(fp, (*b.key, ("any_strides", tuple(any_strides)), ("divisible", tuple(divisible))),
                          b.constexprs, target.key, compiler_version())

    # ------------------------------------------------------------ launch
    def run(self, grid, *args, **kwargs):
        __tracebackhide__ = True
        # the fast path: a call signature seen before (each argument's type, and dtype for tensors;
        # the constexpr keywords) -> the launcher generated for it checks the grid, the arguments and
        # the target, packs in place and makes one driver call (runtime/launch.py FastLauncher).
        # Launcher.__call__ tries the signature launched last first, without building this key.
        fast = self._fast
        if fast:
            try:
                key = (len(args), *map(_arg_key, args), *kwargs.items(), *map(type, kwargs.values()))
                ent = fast.get(key)
            except TypeError:                          # an unhashable constexpr
                ent = None
            if ent is not None:
                ck = ent[2].fast(grid, args, kwargs)
                if ck is not None:
                    fast.hot = ent[2].fast
                    return ck
        try:
            b = self.bind(args, kwargs)
            target = compiler.resolve()
            ck = self._compile(b, target)
            g = _grid(self.name, grid, b.values)
            cl = b.options.get("cluster")
            if cl is not None and any(gi % ci for gi, ci in zip(tuple(g) + (1,) * (3 - len(g)), cl)):
                raise _user_error(ValueError(f"kernel '{self.name}': grid {tuple(g)} must be a multiple of the "
                                             f"cluster shape {tuple(cl)}"))
            if 0 not in g:
                _launch(ck, g, b.runtime_args, b.stream)
                if b.stream is None and not callable(grid) and ck.artifact is not None:
                    self._remember_fast(target, ck, args, kwargs, b)
        except Exception as e:
            if _is_user_error(e):
                raise e.with_traceback(None) from None
            raise
        return ck

    def _remember_fast(self, target, ck, args, kwargs, b) -> None:
        """After a general-path GPU launch: a FastLauncher for this call signature, when the positional
        arguments are exactly the runtime parameters (so the key's types fix the specialization) and
        the keywords are constexprs or launch options with plain values (their values are in the key).
        It becomes the one tried first."""
        if os.environ.get("TILEC_FAST_LAUNCH", "1").strip() == "0":      # the escape hatch: general path only
            return
        if gpu_arch() is None:
            return
        n = len(args)
        if any(p.kind == "constexpr" for p in self.params[:n]) or \
                any(p.kind != "constexpr" for p in self.params[n:]):
            return
        if any(k == "stream" or type(v) not in (int, float, bool, str, type(None), DType)
               for k, v in kwargs.items()):
            return
        key = (n, *map(_arg_key, args), *kwargs.items(), *map(type, kwargs.values()))
        try:
            hash(key)
        except TypeError:
            return
        old = self._fast.get(key, False)
        if old is None or (old and old[0] is target and old[1] is ck):   # not eligible, or built already
            return
        if old is False and len(self._fast) >= 64:
            return
        # (a different specialization for the same call signature replaces the old one: arguments
        # whose strides now allow TMA, or no longer do)
        from .runtime.launch import fast_launcher
        fl = fast_launcher(ck, list(args), kwargs=kwargs, guard=compiler.target_guard(target), result=ck,
                           any_strides=getattr(ck, "any_strides", ()), divisible_key=_specializes_divisible(target))
        self._fast[key] = (target, ck, fl) if fl is not None else None
        if fl is not None:
            self._fast.hot = fl.fast


_NO_GRID = object()
_UNSET = object()


class _FastTable(dict):
    """Kernel._fast: call signature -> (target, CompiledKernel, FastLauncher), or None where the fast
    path does not apply. `.hot` is the generated launch function of the signature launched last:
    `kernel[grid](...)` calls it first (it returns None, launching nothing, for any other call)."""
    __slots__ = ("hot",)

    def __init__(self):
        super().__init__()
        self.hot = None

    def clear(self):
        super().clear()
        self.hot = None

    def __delitem__(self, key):
        super().__delitem__(key)
        self.hot = None


class Launcher:
    """`kernel[grid]`: call it with the kernel's arguments."""
    __slots__ = ("kernel", "grid")

    def __init__(self, kernel: Kernel, grid):
        self.kernel = kernel
        self.grid = grid

    def __call__(self, *args, **kwargs):
        __tracebackhide__ = True
        hot = self.kernel._fast.hot                # the launcher of the call signature launched last
        if hot is not None:
            ck = hot(self.grid, args, kwargs)
            if ck is not None:
                return ck
        try:
            return self.kernel.run(self.grid, *args, **kwargs)
        except Exception as e:
            if _is_user_error(e):
                raise e.with_traceback(None) from None
            raise


def kernel(fn=None):
    """Decorator: make a Python function a tile kernel (`@tile.kernel`)."""
    if fn is None:
        return kernel
    return Kernel(fn)


# ---------------------------------------------------------------- launch
_WARNED: set = set()


def _launch(compiled: CompiledKernel, grid: tuple, args: list, stream=None):
    """Run a compiled kernel on the grid: on the GPU for GPU targets (falling back to the interpreter,
    with a one-line notice, where there is no GPU), in the NumPy interpreter for 'cpu'."""
    if compiled.target != "cpu":
        gpu = gpu_arch()
        family = get_target(compiled.target).family
        if gpu is not None and ("amd" if gpu.startswith("gfx") else "nvidia") == family:
            from .runtime.launch import launch
            launch(compiled, grid, args, stream)      # reads .ptx/.cubin/.hsaco, .meta and .signature
            return
        if compiled.target not in _WARNED:
            _WARNED.add(compiled.target)
            import sys
            print(f"tilec: no {'AMD GPU/ROCm' if family == 'amd' else 'NVIDIA GPU/driver'} found: running "
                  f"{compiled.name} for {compiled.target} in the CPU interpreter", file=sys.stderr)
        from .ir.parser import parse_module
        compiled = CompiledKernel(compiled.name, "cpu", compiled.ir, parse_module(compiled.ir), {},
                                  compiled.signature, compiled.constexprs, compiled.params)
    args, views = list(args), {}
    for i, ((pname, t), v) in enumerate(zip(compiled.signature.items(), args)):
        if isinstance(t, TensorType) and not _is_host_array(v) and _is_torch_cpu(v):
            if id(v) not in views:                        # one view per tensor: the interpreter sees aliasing
                from .runtime.device import torch_host_view
                views[id(v)] = torch_host_view(v, pname)   # the interpreter writes into the tensor's memory
            v = args[i] = views[id(v)]
        if isinstance(t, TensorType) and not _is_host_array(v):
            raise _user_error(TypeError(f"{compiled.name}(): argument '{pname}' is {_describe_obj(v)}: the "
                                        f"interpreter (target cpu) needs a NumPy array, a tile.Array or a CPU "
                                        f"torch tensor"))
    from .runtime import interpreter
    interpreter.run(compiled.function, grid, args)


def _grid(name: str, grid, meta: dict) -> tuple:
    g = grid(dict(meta)) if callable(grid) else grid
    if hasattr(g, "__index__"):
        g = (g,)
    if not isinstance(g, (tuple, list)) or not 1 <= len(g) <= 3:
        raise _user_error(TypeError(f"{name}[grid]: the grid must be a tuple of 1 to 3 ints "
                                    f"(or a function of the arguments returning one), got {g!r}"))
    out = []
    for d in g:
        if isinstance(d, bool) or not hasattr(d, "__index__"):
            raise _user_error(TypeError(f"{name}[grid]: grid sizes must be ints, got {d!r}"))
        d = d.__index__()
        if d < 0:
            raise _user_error(ValueError(f"{name}[grid]: grid sizes must be >= 0, got {d}"))
        out.append(d)
    return tuple(out) + (1,) * (3 - len(out))


# ---------------------------------------------------------------- argument inspection
def _any_strides(b: _Bound, target) -> tuple:
    """On a target with TMA: the tensor parameters whose launch argument has strides a TMA tensor
    map cannot describe (ir.artifact.tensor_map_ok: a unit innermost stride, the others multiples of
    16 bytes), or whose strides cannot be read cheaply (objects known only through DLPack). A
    signature (no argument) promises nothing: the kernel then assumes tensor-map strides and its
    launch checks them."""
    if not target.has("tma"):
        return ()
    from .ir.artifact import tensor_map_ok
    out = []
    for (name, t), v in zip(b.types.items(), b.runtime_args):
        if v is None or not isinstance(t, TensorType) or t.dtype.bits not in (8, 16, 32, 64):
            continue
        lay = _shape_strides(v)
        if lay is None or not tensor_map_ok(lay[0], lay[1], t.dtype.bits):
            out.append(name)
    return tuple(out)


def _specializes_divisible(target) -> bool:
    """Whether the target's pipeline uses the `divisible` facts (passes/divisibility.py): only then are
    they a part of the specialization (elsewhere they would only split the caches)."""
    return "divisibility" in target.pipeline


def _divisible(b: _Bound, target) -> tuple:
    """Where the target specializes on it: the tensor parameters whose launch argument is `divisible`
    (ir.artifact.divisible_ok: 16-byte aligned base, unit last stride, last size and other strides
    multiples of 16 bytes' worth of elements), read through cheap attributes (a host array is copied
    to a fresh, aligned device allocation). A signature (no argument) promises nothing."""
    if not _specializes_divisible(target):
        return ()
    from .ir.artifact import divisible_ok
    out = []
    for (name, t), v in zip(b.types.items(), b.runtime_args):
        if v is None or not isinstance(t, TensorType):
            continue
        lay = _shape_strides(v)
        if lay is not None and divisible_ok(_data_ptr(v), lay[0], lay[1], t.dtype.bits):
            out.append(name)
    return tuple(out)


def _data_ptr(v):
    """A tensor argument's device address, or None for a host array (or where it cannot be read
    cheaply: then 1, which no alignment check passes)."""
    if _is_host_array(v):
        return None
    if type(v).__name__ == "DeviceArray":
        return int(v.ptr)
    if callable(getattr(v, "data_ptr", None)):                                          # torch
        return int(v.data_ptr())
    try:
        return int(v.__cuda_array_interface__["data"][0])
    except Exception:                             # noqa: BLE001 - none, or torch bf16 raising
        return 1


def _shape_strides(v):
    """(shape, strides in elements) of a tensor argument as the kernel will see it, or None when
    that takes more than reading attributes. Host arrays are copied contiguously to the device."""
    if _is_host_array(v):
        return _shape_strides_contiguous(tuple(v.shape))
    strides = getattr(v, "strides", None)
    if type(v).__name__ == "DeviceArray":
        return tuple(v.shape), tuple(strides)
    if callable(getattr(v, "stride", None)) and callable(getattr(v, "data_ptr", None)):      # torch
        return tuple(v.shape), tuple(v.stride())
    try:
        cai = v.__cuda_array_interface__
    except Exception:                             # noqa: BLE001 - none, or torch bf16 raising
        return None
    shape = tuple(int(d) for d in cai["shape"])
    if cai.get("strides") is None:
        return _shape_strides_contiguous(shape)
    import numpy as np
    item = np.dtype(cai["typestr"]).itemsize
    return shape, tuple(int(s) // item for s in cai["strides"])


def _shape_strides_contiguous(shape):
    st, acc = [], 1
    for d in reversed(shape):
        st.append(acc)
        acc *= d
    return shape, tuple(reversed(st))


def _arg_key(a):
    """What of an argument selects its specialization cheaply: its type, and a tensor's dtype."""
    t = type(a)
    if t is int or t is float or t is bool:
        return t
    return t, getattr(a, "dtype", None)


_ARRAYS: list = []      # memo of the runtime.arrays module (looked up on every argument of every launch)


def _arrays():
    if not _ARRAYS:
        try:
            from .runtime import arrays
        except ImportError:
            arrays = None
        _ARRAYS.append(arrays)
    return _ARRAYS[0]


def _is_array(v) -> bool:
    """A tensor argument: a NumPy array, a tile.Array, or a GPU array (CUDA array interface / DLPack)."""
    if _is_host_array(v):
        return True
    if type(v).__module__ == "numpy" or isinstance(v, type):
        return False
    return _has(v, "__cuda_array_interface__") or _has(v, "__dlpack__")


def _has(v, attr) -> bool:
    """hasattr that survives properties raising other errors (torch bf16's __cuda_array_interface__)."""
    try:
        return hasattr(v, attr)
    except Exception:                             # noqa: BLE001
        return True


def _is_host_array(v) -> bool:
    arrays = _arrays()
    return (arrays is not None and isinstance(v, arrays.Array)) or \
        (type(v).__module__ == "numpy" and type(v).__name__ == "ndarray")


def _is_torch_cpu(v) -> bool:
    t = type(v)
    return (t.__module__, t.__name__) in (("torch", "Tensor"), ("torch.nn.parameter", "Parameter")) and not v.is_cuda


def _is_scalar(v) -> bool:
    if isinstance(v, (bool, int, float)):
        return True
    return type(v).__module__ == "numpy" and getattr(v, "shape", None) == () and hasattr(v, "item")


def _scalar_dtype(v) -> DType:
    if hasattr(v, "item") and not isinstance(v, (bool, int, float)):
        v = v.item()
    if isinstance(v, bool):
        return bool_
    return i32 if isinstance(v, int) else f32


def _array_dtype(v) -> DType | None:
    if not _is_host_array(v):                     # GPU arrays: DeviceArray, torch, CUDA array interface
        try:
            from .runtime.device import gpu_tensor_dtype
            dt = gpu_tensor_dtype(v)
            if dt is not None:
                return dt
        except ImportError:
            pass
    arrays = _arrays()
    if arrays is not None:
        try:
            return arrays.dtype_of(v)
        except (TypeError, ValueError):
            return None
    from .ir.dtypes import dtype
    try:
        return dtype(v.dtype.name)
    except (ValueError, AttributeError):
        return None


def _array_rank(v) -> int:
    if hasattr(v, "ndim"):
        return int(v.ndim)
    if _has(v, "__cuda_array_interface__"):
        return len(v.__cuda_array_interface__["shape"])
    return len(v.shape)


def _describe_obj(v) -> str:
    arrays = _arrays()
    if arrays is not None and isinstance(v, arrays.Array):
        return f"a tile.Array of {v.dtype} with shape {tuple(v.shape)}"
    if type(v).__module__ == "numpy" and type(v).__name__ == "ndarray":
        return f"numpy {v.dtype} array of shape {v.shape}"
    if type(v).__module__ == "numpy" and hasattr(v, "dtype"):
        return f"numpy {v.dtype} scalar {v!r}"
    if isinstance(v, (bool, int, float)):
        return f"{type(v).__name__} {v!r}"
    if v is None:
        return "None"
    return f"{type(v).__module__}.{type(v).__qualname__}" if type(v).__module__ != "builtins" else type(v).__name__


def _as_spec(v):
    """A signature entry given to compile() instead of an argument, or None."""
    if isinstance(v, (TensorSpec, TensorType, ScalarType, DType)):
        return v
    if v is Tensor:
        return TensorSpec()
    if v is int:
        return i32
    if v is float:
        return f32
    if v is bool:
        return bool_
    return None


def _is_const_ok(v) -> bool:
    if isinstance(v, tuple):
        return all(_is_const_ok(x) for x in v)
    if _is_array(v) and not _is_scalar(v):
        return False
    return True


def _const_key(v):
    """A hashable key telling constexpr values apart (1, 1.0 and True are different specializations)."""
    if isinstance(v, tuple):
        return ("tuple", tuple(_const_key(x) for x in v))
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        v = v.item()
    try:
        hash(v)
        return (type(v).__qualname__, v)
    except TypeError:
        return (type(v).__qualname__, id(v))
