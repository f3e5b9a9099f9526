"""PyTorch integration: a tilec kernel as a `torch.library` custom op (`tile.torch_op`), so it runs
inside `torch.compile(fullgraph=True)` graphs (no graph break: the compiler sees an opaque op with a
fake implementation that gives the outputs' shapes and dtypes) and inside CUDA-graph capture (the
launch goes on torch's current stream, which is the capturing stream).

    gemm_op = tile.torch_op(gemm, "mylib::gemm",
                            grid=lambda m: (tile.cdiv(m["A"].shape[0], m["BM"]), tile.cdiv(m["B"].shape[1], m["BN"])),
                            outputs={"C": lambda m: (m["A"].shape[0], m["B"].shape[1])},
                            constexprs={"HAS_BIAS": True, "ACT": "gelu"})
    C = gemm_op(A, B, bias, 1.5)          # also torch.ops.mylib.gemm(A, B, bias, 1.5)

tilec does not depend on torch: this module imports it only inside `torch_op` (`import tile` and
`tile.torch_op` itself load no torch). See docs/torch.md.
"""
from __future__ import annotations

import keyword

__all__ = ["torch_op"]

# ops of the front-end IR that write their first operand (a tensor parameter)
_WRITES = frozenset({"store", "store_scalar", "atomic", "scatter"})


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError("tile.torch_op needs PyTorch (>= 2.4), which tilec does not depend on: "
                          f"install torch first ({e})") from None
    lib = getattr(torch, "library", None)
    if lib is None or not hasattr(lib, "custom_op") or not hasattr(lib, "register_fake"):
        raise ImportError(f"tile.torch_op needs torch.library.custom_op (PyTorch >= 2.4); this is torch "
                          f"{torch.__version__}")
    return torch


def torch_op(kernel=None, name: str | None = None, *, grid=None, outputs=None, fake=None, constexprs=None,
             scalars=None, mutates_args=(), device_types=None, check_writes: bool = True):
    """Register a tilec kernel as the torch custom op `name` ("namespace::op") and return it (a
    `torch.library.CustomOpDef`: call it, or `torch.ops.namespace.op`).

    The op's inputs are the kernel's runtime parameters (tensors and scalars, in order) less those in
    `outputs` and `scalars`; it returns the `outputs` (one tensor, a tuple of them, or None).

    grid        a tuple of ints, or a function of `meta` -- a dict of every argument of the launch
                (inputs, the allocated outputs, the constexprs with the kernel's defaults, `scalars`)
                -- returning one, like a tilec grid function.
    outputs     the kernel's tensor parameters the op allocates and returns: a name, a list of names
                (then `fake` allocates them), or a dict name -> spec, a spec being
                  "like X" (or "X")  an empty tensor like input X (shape, dtype, device; contiguous),
                  a function of meta returning a shape (the dtype is the parameter's annotation),
                  (shape, dtype) or a tensor; dtypes are torch dtypes or tilec names ("bf16"),
                  a (shape, dtype) pair.
                The same allocation serves the real run and the fake (meta) implementation, so they
                agree; specs see the inputs and the fixed constexprs, not `scalars`.
    fake        instead of specs: a function of the op's inputs returning its output tensors
                (`torch.empty(..., device=A.device)`, as for `torch.library.register_fake`); it is
                registered as the fake implementation and also allocates the outputs of a real run.
    constexprs  the kernel's compile-time parameters: a dict, or a function of meta (inputs and
                outputs) returning one, called per real run (e.g. tile sizes chosen by shape).
    scalars     {parameter: function of meta}: scalar parameters computed per launch (a size, a
                stride), not inputs of the op.
    mutates_args  input tensors the kernel writes in place (torch must know; see check_writes).
    device_types  passed to torch.library.custom_op (default: every device type; CUDA tensors run on
                the GPU, CPU tensors in the tilec interpreter, meta/fake tensors the fake implementation).
    check_writes  on the first run of each specialization, raise a TypeError if the kernel stores to
                a tensor that is neither an output nor in mutates_args (torch.compile would reorder
                or drop such writes).

    `kernel` may also be a plain Python function (a launch wrapper with torch type annotations): it
    is registered with torch.library.custom_op as it is, `fake` as its fake implementation. With
    `kernel` left out (or a name first), torch_op returns a decorator.

    torch is imported here, not when tilec is imported. Autograd is not registered: use
    `op.register_autograd(...)` on the result."""
    if isinstance(kernel, str) and name is None:
        kernel, name = None, kernel
    if kernel is None:
        def decorate(k):
            return torch_op(k, name, grid=grid, outputs=outputs, fake=fake, constexprs=constexprs,
                            scalars=scalars, mutates_args=mutates_args, device_types=device_types,
                            check_writes=check_writes)
        return decorate
    if not isinstance(name, str) or name.count("::") != 1 or not all(p.isidentifier() for p in name.split("::")):
        raise ValueError(f"tile.torch_op: name must be 'namespace::op' (identifiers), got {name!r}")
    torch = _torch()
    from .kernel import Kernel
    if not isinstance(kernel, Kernel):
        if not callable(kernel):
            raise TypeError(f"tile.torch_op: expected a @tile.kernel or a launch wrapper function, got {kernel!r}")
        if grid is not None or outputs is not None or constexprs is not None or scalars is not None:
            raise TypeError("tile.torch_op: grid/outputs/constexprs/scalars describe a @tile.kernel; a launch "
                            "wrapper function launches by itself (give it torch type annotations, and `fake`)")
        op = torch.library.custom_op(name, kernel, mutates_args=tuple(mutates_args), device_types=device_types)
        if fake is not None:
            op.register_fake(fake)
        return op
    return _KernelOp(torch, kernel, name, grid, outputs, fake, constexprs, scalars, mutates_args,
                     device_types, check_writes).op


class _KernelOp:
    """What a registered kernel op needs at run time (built once by torch_op)."""

    def __init__(self, torch, kernel, name, grid, outputs, fake, constexprs, scalars, mutates_args, device_types,
                 check_writes):
        self.torch, self.kernel, self.name = torch, kernel, name
        where = f"tile.torch_op({kernel.name}, {name!r})"
        params = {p.name: p for p in kernel.params}
        if grid is None:
            raise TypeError(f"{where}: grid= is required (a tuple of ints or a function of meta)")
        self.grid = grid

        # ------------------------------------------------------------ outputs
        if outputs is None:
            outputs = {}
        elif isinstance(outputs, str):
            outputs = {outputs: None}
        elif isinstance(outputs, (list, tuple)):
            outputs = {o: None for o in outputs}
        elif not isinstance(outputs, dict):
            raise TypeError(f"{where}: outputs must be a name, a list of names or a dict name -> spec, got {outputs!r}")
        for o in outputs:
            p = params.get(o)
            if p is None:
                raise ValueError(f"{where}: output {o!r} is not a parameter of the kernel ({', '.join(params)})")
            if p.kind not in ("tensor", "infer"):
                raise ValueError(f"{where}: output {o!r} must be a tensor parameter, it is a {p.kind}")
        if fake is not None and any(s is not None for s in outputs.values()):
            raise TypeError(f"{where}: give either output specs or fake=, not both")
        missing = [o for o, s in outputs.items() if s is None]
        if missing and fake is None:
            raise TypeError(f"{where}: output{'s' * (len(missing) > 1)} {', '.join(missing)} need a spec "
                            f"(outputs={{name: 'like X' | function of meta | (shape, dtype)}}) or fake=")
        self.out_names = tuple(outputs)
        self.specs = outputs
        self.fake_fn = fake

        # ------------------------------------------------------------ constexprs, scalars
        self.cx_defaults = {p.name: p.default for p in kernel.params if p.kind == "constexpr" and p.has_default}
        if constexprs is None:
            constexprs = {}
        if isinstance(constexprs, dict):
            for c in constexprs:
                if c not in params or params[c].kind != "constexpr":
                    raise ValueError(f"{where}: constexprs: {c!r} is not a constexpr parameter of the kernel")
            self.cx_fixed, self.cx_fn = dict(constexprs), None
        elif callable(constexprs):
            self.cx_fixed, self.cx_fn = {}, constexprs
        else:
            raise TypeError(f"{where}: constexprs must be a dict or a function of meta, got {constexprs!r}")
        scalars = dict(scalars or {})
        for s_, f in scalars.items():
            if s_ not in params or params[s_].kind not in ("scalar", "infer"):
                raise ValueError(f"{where}: scalars: {s_!r} is not a scalar parameter of the kernel")
            if not callable(f):
                raise TypeError(f"{where}: scalars[{s_!r}] must be a function of meta")
        self.scalars = tuple(scalars.items())

        # ------------------------------------------------------------ the op's inputs
        self.runtime_names = tuple(p.name for p in kernel.params if p.kind != "constexpr")
        self.inputs = []                           # (name, annotation text, default or _NO)
        for p in kernel.params:
            if p.kind == "constexpr" or p.name in outputs or p.name in scalars:
                continue
            kind = p.kind
            if kind == "infer":
                if isinstance(p.default, (bool, int, float)):
                    kind = "scalar"
                else:
                    raise TypeError(f"{where}: parameter {p.name!r} has no annotation: annotate it "
                                    f"(tile.Tensor[dtype, rank], int, float, bool) so the op's schema can be "
                                    f"written, or compute it with scalars=")
            if kind == "tensor":
                ann = "Tensor"
            elif isinstance(p.default, bool) or (p.dtype is not None and p.dtype.kind == "bool"):
                ann = "bool"
            elif (p.dtype is not None and p.dtype.is_int) or (p.dtype is None and isinstance(p.default, int)):
                ann = "int"
            else:
                ann = "float"
            if keyword.iskeyword(p.name):
                raise ValueError(f"{where}: parameter name {p.name!r} is a Python keyword")
            self.inputs.append((p.name, ann, p.default if p.has_default and kind != "tensor" else _NO))
        self.in_names = tuple(n for n, _, _ in self.inputs)
        for m in mutates_args:
            if m not in self.in_names or dict((n, a) for n, a, _ in self.inputs)[m] != "Tensor":
                raise ValueError(f"{where}: mutates_args: {m!r} is not a tensor input of the op "
                                 f"(inputs: {', '.join(self.in_names)})")
        self.allowed_writes = set(self.out_names) | set(mutates_args)
        self.check_writes = check_writes
        self.checked: set = set()
        self.out_dtypes = {o: params[o].dtype for o in self.out_names}
        self.base_meta = dict(self.cx_defaults)
        self.base_meta.update(self.cx_fixed)
        self.first_tensor = next((n for n, a, _ in self.inputs if a == "Tensor"), self.out_names[0] if self.out_names
                                 else None)      # its device picks GPU launch or interpreter

        # ------------------------------------------------------------ register
        run, fake_impl = self._functions(name.split("::")[1])
        op = torch.library.custom_op(name, run, mutates_args=tuple(mutates_args), device_types=device_types)
        op.register_fake(fake_impl)
        op.tile_kernel = kernel
        self.op = op

    def _functions(self, fname):
        """The op's implementation and fake implementation, with the op's exact signature (torch
        infers the schema from it)."""
        args, required = [], False
        for n, ann, d in reversed(self.inputs):        # defaults only on a trailing run of parameters
            if d is _NO or not isinstance(d, (bool, int, float)):
                required = True
            args.append(f"{n}: {ann}" + ("" if required else f" = {d!r}"))
        args.reverse()
        call = ", ".join(self.in_names) + ("," if len(self.in_names) == 1 else "")
        ret = {0: "None", 1: "Tensor"}.get(len(self.out_names), f"tuple[{', '.join(['Tensor'] * len(self.out_names))}]")
        src = (f"def {fname}({', '.join(args)}) -> {ret}:\n    return _run(({call}))\n"
               f"def {fname}_fake({', '.join(args)}):\n    return _fake(({call}))\n")
        env = {"Tensor": self.torch.Tensor, "_run": self.run, "_fake": self.fake}
        exec(compile(src, f"<tile.torch_op {self.name}>", "exec"), env)
        run, fake = env[fname], env[fname + "_fake"]
        run.__doc__ = f"The tilec kernel {self.kernel.name} as the torch op {self.name}."
        return run, fake

    # ---------------------------------------------------------------- allocation (real and fake)
    def _meta(self, inputs) -> dict:
        meta = dict(self.base_meta)
        meta.update(zip(self.in_names, inputs))
        return meta

    def _alloc(self, inputs, meta=None):
        if not self.out_names:
            return ()
        if self.fake_fn is not None:
            outs = self.fake_fn(*inputs)
            outs = (outs,) if isinstance(outs, self.torch.Tensor) else tuple(outs)
            if len(outs) != len(self.out_names):
                raise ValueError(f"{self.name}: fake returned {len(outs)} tensors for the outputs "
                                 f"{', '.join(self.out_names)}")
            return outs
        if meta is None:
            meta = self._meta(inputs)
        return tuple(self._one(o, meta, inputs) for o in self.out_names)

    def _one(self, o, meta, inputs):
        torch, spec = self.torch, self.specs[o]
        if isinstance(spec, str):
            src = spec[5:].strip() if spec.startswith("like ") else spec
            x = meta.get(src)
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"{self.name}: output {o!r} is declared like {src!r}, which is not a tensor input "
                                 f"(inputs: {', '.join(self.in_names)})")
            return torch.empty_like(x, memory_format=torch.contiguous_format)
        r = spec(meta) if callable(spec) else spec
        if isinstance(r, torch.Tensor):
            return r
        if isinstance(r, (tuple, list)) and len(r) == 2 and _is_dtype(torch, r[1]):
            shape, dt = r
        else:
            shape, dt = r, self.out_dtypes[o]
            if dt is None:
                raise TypeError(f"{self.name}: output {o!r} has no dtype annotation: its spec must return "
                                f"(shape, dtype)")
        if isinstance(shape, int) or hasattr(shape, "__index__"):
            shape = (shape,)
        device = next((x.device for x in inputs if isinstance(x, torch.Tensor)), None)
        return torch.empty(tuple(shape), dtype=_torch_dtype(torch, dt), device=device)

    def fake(self, inputs):
        outs = self._alloc(inputs)
        return None if not outs else outs[0] if len(outs) == 1 else outs

    # ---------------------------------------------------------------- the real run
    def run(self, inputs):
        meta = self._meta(inputs)
        outs = self._alloc(inputs, meta)                  # the specs see the inputs and fixed constexprs
        meta.update(zip(self.out_names, outs))
        if self.cx_fn is not None:
            cx = dict(self.cx_fn(dict(meta)))
            meta.update(cx)
        else:
            cx = self.cx_fixed
        for n, f in self.scalars:
            meta[n] = f(meta)
        g = self.grid(meta) if callable(self.grid) else self.grid
        if isinstance(g, list):
            g = tuple(g)
        args = [meta[n] for n in self.runtime_names]
        first = meta[self.first_tensor] if self.first_tensor is not None else None
        if first is None or first.is_cuda:
            ck = self.kernel[g](*args, **cx)      # torch's current stream; the fast path from the 2nd call
        else:
            ck = _run_in_interpreter(self.kernel, g, args, cx)
        if self.check_writes and id(ck) not in self.checked:
            self._check(ck)
        return None if not outs else outs[0] if len(outs) == 1 else outs

    def _check(self, ck):
        """Every tensor the kernel stores to must be an output or declared in mutates_args."""
        written = _written_params(ck)
        bad = [n for n in written if n not in self.allowed_writes]
        if bad:
            raise TypeError(f"{self.name}: kernel {self.kernel.name} writes {', '.join(repr(b) for b in bad)}, which "
                            f"the op neither returns (outputs=) nor declares in mutates_args: torch would not know "
                            f"the tensor changed")
        self.checked.add(id(ck))


_NO = object()


def _run_in_interpreter(kernel, grid, args, constexprs):
    """CPU tensors: the kernel compiled for the tilec interpreter (whatever the current target), which
    reads and writes the tensors' memory in place."""
    from .kernel import _grid, _launch
    b = kernel.bind(args, constexprs)
    ck = kernel._compile(b, "cpu")
    g = _grid(kernel.name, grid, b.values)
    if 0 not in g:
        _launch(ck, g, b.runtime_args)
    return ck


def _written_params(ck) -> list:
    """Names of the tensor parameters a compiled kernel writes (stores, atomics, scatters), from the IR
    the front end produced."""
    from .ir.parser import parse_module
    f = parse_module(ck.ir).get(ck.name)
    args = {id(a): n for a, n in zip(f.args, ck.signature)}
    out = []
    for op in f.walk():
        if op.name in _WRITES and op.operands:
            n = args.get(id(op.operands[0]))
            if n is not None and n not in out:
                out.append(n)
    return out


def _is_dtype(torch, d) -> bool:
    from .ir.dtypes import DType
    return isinstance(d, (torch.dtype, str, DType))


_TORCH_NAMES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "f64": "float64", "i8": "int8",
                "i16": "int16", "i32": "int32", "i64": "int64", "u8": "uint8", "u16": "uint16", "u32": "uint32",
                "u64": "uint64", "f8e4m3fn": "float8_e4m3fn", "f8e5m2": "float8_e5m2",
                "f8e8m0fnu": "float8_e8m0fnu"}


def _torch_dtype(torch, d):
    """A torch dtype from a torch dtype, a tilec DType or a tilec dtype name."""
    if isinstance(d, torch.dtype):
        return d
    from .ir.dtypes import dtype as _dtype
    name = _dtype(d).name if not isinstance(d, str) or d not in _TORCH_NAMES else d
    if name not in _TORCH_NAMES:
        raise TypeError(f"tilec dtype {name} has no torch equivalent (torch tensors hold {', '.join(_TORCH_NAMES)})")
    return getattr(torch, _TORCH_NAMES[name])
