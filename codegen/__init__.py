"""Code generation: tile IR -> LLVM IR (llvmlite) -> PTX (NVIDIA).

Entry point::

    from tile.codegen import compile
    ck = compile(module_or_fn, target="sm_90a", **options)
    ck.ptx        # PTX text: cuModuleLoadData(ptx + b"\\0") or nvJitLink -> cubin
    ck.meta       # codegen.abi.KernelMeta: name, target, num_threads, shared_bytes, params, align
    ck.cubin()    # cubin bytes (nvJitLink in process, else ptxas)
    ck.llvm_ir    # the generated LLVM IR (before O3); ck.optimized_ir after O3
    ck.tile_ir    # the tile IR after the target's pipeline; ck.ir_after[pass] per pass

`module_or_fn`: an `ir.core.Module` (one kernel, or pick one with `kernel="name"`), an
`ir.core.Function`, or any object with an `.ir` attribute holding one of those. The input is not
modified: compile() works on a copy, runs the target's pass pipeline on it (passes/manager.py:
`run_pipeline(module, target)`, which includes layout inference, software pipelining and shared
memory planning), then lowers it. Pass `run_passes=False` for IR that has already been through the
pipeline (every register tile has a layout, shared memory is planned).

Options: `num_warps` (default: the function attribute `num_warps`, else 4), `align` (the
alignment, in bytes, the code may assume for tensor base addresses; default 16 = KernelMeta.align),
`opt` (LLVM level, 3), `maxnreg`, `min_blocks_per_sm`, `kernel`, `run_passes`, `wgmma` (False:
use mma.sync on sm_90a too).

What runs where: sm_80/sm_89 dots with bf16/f16 inputs and an f32 accumulator use mma.sync
m16n8k16 with ldmatrix from swizzled shared memory; on sm_90a the same dots use wgmma when the
accumulator has whole warpgroups along M and B comes from shared memory (a pipelined loop's ring
buffer or a staged conversion) in a canonical wgmma layout: with A from shared memory too (SS), or
A from registers in the mma A-fragment layout (RS; e.g. attention's p @ v, p converted in-thread
from the previous wgmma's accumulator); else mma.sync.
Other dots use an FMA loop. The function attribute `target` (set by `compile`/`prepare` before
the pipeline runs) lets the passes pick per-generation layouts and pipelining depth.

How a runtime launches the result (contract of codegen/abi.py):
* block = (meta.num_threads, 1, 1); grid = the user's grid, axes 0, 1, 2 -> ctaid.x, y, z;
* dynamic shared memory = meta.shared_bytes (opt in with cuFuncSetAttribute(
  CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) when it exceeds 48 KB);
* parameters in `meta.params` order: per tensor its 16-byte-aligned base pointer (u64), its sizes
  (i32) and strides in elements (i32); per scalar one value (i1 as i32; f16/bf16 as their 16-bit
  code in an i32). The kernel is correct for any strides; unit last strides and 16-byte-aligned
  rows take the vectorized path, chosen at run time.

Targets: "sm_80", "sm_89", "sm_90a". Failures raise `CompileError` (codegen/errors.py) naming the
kernel and the op; a crash inside LLVM becomes a CompileError too (LLVM runs in a child process).
"""
from __future__ import annotations

import copy

from .errors import CompileError
from .nvptx import TARGETS as NVIDIA_TARGETS, Compiled, compile_function, parse_ptxas_report, run_ptxas

__all__ = ["compile", "Compiled", "CompileError", "NVIDIA_TARGETS", "run_ptxas", "parse_ptxas_report",
           "prepare"]


def _as_function(module_or_fn, kernel: str | None):
    from tile.ir.core import Function, Module
    obj = module_or_fn
    if not isinstance(obj, (Module, Function)) and hasattr(obj, "ir"):
        obj = obj.ir
    if isinstance(obj, Function):
        return Module([obj]), obj
    if isinstance(obj, Module):
        if kernel is not None:
            return obj, obj.get(kernel)
        if len(obj.functions) != 1:
            raise CompileError(f"the module holds {len(obj.functions)} kernels: pass kernel='name'")
        return obj, obj.functions[0]
    raise CompileError(f"compile() needs an IR Module or Function, got {type(module_or_fn).__name__}")


def _is_prepared(fn) -> bool:
    from tile.ir.types import TileType
    if "shared_bytes" not in fn.attrs:
        return False
    for op in fn.walk():
        for v in op.results:
            if isinstance(v.type, TileType) and v.type.space == "reg" and v.type.layout is None:
                return False
        if op.name == "alloc_shared" and "smem_offset" not in op.attrs:
            return False
    return True


def prepare(module, target: str = "sm_90a", num_warps: int | None = None):
    """Run the target's pass pipeline on `module` in place; returns (module, ir_after).

    Records the target in each function's attribute `target` first: layout inference then picks
    warp grids for the GPU generation (warpgroup-shaped on Hopper) and software pipelining keeps
    one wgmma group in flight on sm_90a. A caller that runs `passes.manager.run_pipeline` itself
    should set that attribute the same way."""
    from tile.passes.manager import run_pipeline
    for f in module.functions:
        f.attrs.setdefault("target", target)
        if num_warps is not None:
            f.attrs["num_warps"] = int(num_warps)
    return run_pipeline(module, target)


def compile(module_or_fn, target: str = "sm_90a", **options) -> Compiled:
    """Compile one kernel for an NVIDIA target; see the module docstring."""
    if target not in NVIDIA_TARGETS:
        raise CompileError(f"unknown target {target!r}; this back end compiles for {', '.join(NVIDIA_TARGETS)}")
    kernel = options.pop("kernel", None)
    run_passes = options.pop("run_passes", None)
    module, fn = _as_function(module_or_fn, kernel)
    module = clone_module(Module_of(module, fn))
    fn = module.functions[0]
    if "num_warps" in options:
        fn.attrs["num_warps"] = int(options["num_warps"])
    fn.attrs.setdefault("target", target)              # layout choices differ per GPU generation
    ir_after = {}
    if run_passes or (run_passes is None and not _is_prepared(fn)):
        module, ir_after = prepare(module, target)
        fn = module.functions[0]
    from tile.ir.printer import print_module
    return compile_function(fn, target, options, tile_ir=print_module(module), ir_after=ir_after)


def clone_module(m):
    """A structural copy of a module (ops, blocks, values; types and attribute values shared)."""
    from tile.ir.core import Block, Function, Module, Operation
    vmap = {}

    def clone_block(b, nb):
        for a, na in zip(b.args, nb.args):
            vmap[id(a)] = na
        for op in b.ops:
            regions = []
            for r in op.regions:
                nr = Block([a.type for a in r.args], [a.name for a in r.args])
                regions.append((r, nr))
            nop = Operation(op.name, [vmap.get(id(v), v) for v in op.operands], [r.type for r in op.results],
                            copy.copy(op.attrs), [nr for _, nr in regions], op.loc, [r.name for r in op.results])
            for r, nr in zip(op.results, nop.results):
                vmap[id(r)] = nr
            nb.append(nop)
            for r, nr in regions:
                clone_block(r, nr)
    out = []
    for f in m.functions:
        nf = Function(f.name, [a.type for a in f.args], [a.name for a in f.args], dict(f.attrs), f.loc)
        clone_block(f.body, nf.body)
        out.append(nf)
    return Module(out)


def Module_of(module, fn):
    """A module holding only `fn` (the copy keeps the input untouched)."""
    from tile.ir.core import Module
    if len(module.functions) == 1:
        return module
    return Module([fn])
