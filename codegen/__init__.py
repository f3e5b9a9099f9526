"""Code generation: tile IR -> LLVM IR (llvmlite) -> PTX (NVIDIA).

Entry point (the driver, tile/compiler.py, calls it for IR that has been through the target's
pipeline)::

    from tile.codegen.nvptx import compile_function
    ck = compile_function(fn, target, options)     # an ir.artifact.Artifact
    ck.ptx        # PTX text: cuModuleLoadData(ptx + b"\\0") or nvJitLink -> cubin
    ck.meta       # ir.artifact.KernelMeta: name, target, num_threads, shared_bytes, params, align
    assemble(ck)  # cubin bytes (nvJitLink in process, else ptxas); kept as ck.cubin
    ck.llvm_ir    # the generated LLVM IR (before O3); ck.optimized_ir after O3
    ck.tile_ir    # the tile IR after the target's pipeline; ck.ir_after[pass] per pass

Code generation carries out what the IR says: every register tile has a layout, every dot its
atom, every copy its mechanism and vector width (passes/select_instructions.py), every shared tile
its offset. It re-derives none of these; a choice it cannot honour is a located CompileError.

Options: `num_warps` (default: the function attribute `num_warps`, else 4), `align` (the
alignment, in bytes, the code may assume for tensor base addresses; default 16 = KernelMeta.align),
`opt` (LLVM level, 3), `maxnreg`, `min_blocks_per_sm`, `kernel`, `run_passes`, `wgmma` (False:
use mma.sync on sm_90a too; the driver removes wgmma from the target before selection).

Async copies of pipelined loops: cp.async on sm_80/sm_89; on sm_90a TMA bulk tensor copies where the
ring buffer's layout is what TMA writes, completing on one mbarrier per stage (codegen/lower_tma.py).

What runs where: sm_80/sm_89 dots with bf16/f16 inputs and an f32 accumulator use mma.sync
m16n8k16 with ldmatrix from swizzled shared memory; on sm_90a the same dots use wgmma when the
accumulator has whole warpgroups along M and B comes from shared memory (a pipelined loop's ring
buffer or a staged conversion) in a canonical wgmma layout: with A from shared memory too (SS), or
A from registers in the mma A-fragment layout (RS; e.g. attention's p @ v, p converted in-thread
from the previous wgmma's accumulator); else mma.sync.
Other dots use an FMA loop. The function attribute `target` (set by `compile`/`prepare` before
the pipeline runs) lets the passes pick per-generation layouts and pipelining depth.

How a runtime launches the result (contract of ir/artifact.py):
* block = (meta.num_threads, 1, 1); grid = the user's grid, axes 0, 1, 2 -> ctaid.x, y, z;
* dynamic shared memory = meta.shared_bytes (opt in with cuFuncSetAttribute(
  CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) when it exceeds 48 KB);
* parameters in `meta.params` order: per tensor its 16-byte-aligned base pointer (u64), its sizes
  (i32) and strides in elements (i32); per scalar one value (i1 as i32; f16/bf16 as their 16-bit
  code in an i32); then one 128-byte TMA tensor map per (tensor, box, swizzle) the kernel's TMA
  copies read (sm_90a; `.param .align 64 .b8 [128]`, grid-constant, built by the runtime). The
  kernel is correct for any strides, except that a tensor read by TMA needs a unit innermost stride
  and the others multiples of 16 bytes (the launcher checks it); unit last strides and 16-byte-aligned
  rows take the vectorized path, chosen at run time.

Targets: "sm_80", "sm_89", "sm_90a". Failures raise `CompileError` (codegen/errors.py) naming the
kernel and the op; a crash inside LLVM becomes a CompileError too (LLVM runs in a child process).
"""
from __future__ import annotations

from .errors import CompileError
from .nvptx import assemble, compile_function, parse_ptxas_report, ptxas_report, run_ptxas

__all__ = ["CompileError", "compile_function", "assemble", "run_ptxas", "parse_ptxas_report", "ptxas_report"]
