"""The NVIDIA back end: tile IR (after the sm_* pipeline's passes) -> LLVM IR -> O3 -> PTX.

Targets: sm_80 (PTX ISA 7.0), sm_89 (7.8), sm_90a (8.0). The LLVM work (parse, verify, O3, PTX
emission) runs in a worker process (codegen/llvm_isolated.py) so that an LLVM abort can never take
the caller down. `ptxas` (tests) or nvJitLink (runtime) turn the PTX into a cubin.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile


from ..ir.core import Function
from ..ir.targets import Target, get_target

from ..ir.artifact import Artifact, KernelMeta, flatten_params, signature_of_function
from .errors import CompileError
from .llvm_isolated import LLVMJob, run_llvm
from .nvptx_intrinsics import NVPTXIntrinsics

class NVPTXBackend:
    """The NVIDIA code generator's hooks for codegen/lower_tile.py (the facts live on the Target)."""
    kernel_cc = "ptx_kernel"

    def __init__(self, target: Target):
        if target.family != "nvidia":
            raise CompileError(f"the NVIDIA back end cannot compile for {target.name}")
        self.target = target

    def make_intrinsics(self, decls):
        return NVPTXIntrinsics(decls, self.target)

    def add_function_attributes(self, llfn, nthreads: int, options: dict):
        # string attributes print verbatim after the signature (llvmlite rejects them in .add())
        set.add(llfn.attributes, f'"nvvm.reqntid"="{nthreads}"')
        if options.get("min_blocks_per_sm"):
            set.add(llfn.attributes, f'"nvvm.minctasm"="{int(options["min_blocks_per_sm"])}"')
        if options.get("maxnreg"):
            set.add(llfn.attributes, f'"nvvm.maxnreg"="{int(options["maxnreg"])}"')

    def grid_constant_params(self, module, llfn, indices):
        """Mark byval parameters (0-based `indices`) grid-constant: the kernel reads them in place in
        the parameter space (TMA takes a tensor map's generic address) instead of copying them to
        local memory (codegen-notes.md §3). The annotation is upgraded to "nvvm.grid_constant"."""
        import llvmlite.ir as ir
        i32 = ir.IntType(32)
        module.add_named_metadata("nvvm.annotations", [llfn, ir.MetaDataString(module, "grid_constant"),
                                                       module.add_metadata([ir.Constant(i32, k + 1) for k in indices])])


def assemble(art: Artifact, use: str = "auto") -> bytes:
    """PTX -> cubin for the artifact's target: nvJitLink in process (`use="nvjitlink"`), or ptxas
    (`use="ptxas"`); "auto" tries nvJitLink, then ptxas. The cubin is kept on the artifact."""
    if art.cubin:
        return art.cubin
    errors = []
    if use in ("auto", "nvjitlink"):
        try:
            art.cubin = _nvjitlink(art.ptx, art.target, art.name)
            return art.cubin
        except Exception as e:            # noqa: BLE001
            errors.append(f"nvJitLink: {e}")
            if use == "nvjitlink":
                raise CompileError(errors[-1], kernel=art.name) from None
    if use in ("auto", "ptxas"):
        art.cubin, _ = run_ptxas(art.ptx, art.target)
        return art.cubin
    raise CompileError("no PTX assembler available: " + "; ".join(errors), kernel=art.name)


def ptxas_report(art: Artifact) -> dict:
    """Run `ptxas -v` on the artifact's PTX and parse its resource report (registers, spills,
    shared memory, stack)."""
    _, log = run_ptxas(art.ptx, art.target)
    return parse_ptxas_report(log)


def _nvjitlink(ptx: str, arch: str, name: str) -> bytes:
    from cuda.bindings import nvjitlink as nj
    data = ptx.encode()
    h = nj.create(2, [f"-arch={arch}", "-O3"])
    try:
        nj.add_data(h, nj.InputType.PTX, data, len(data), f"{name}.ptx")
        nj.complete(h)
        buf = bytearray(nj.get_linked_cubin_size(h))
        nj.get_linked_cubin(h, buf)
        return bytes(buf)
    finally:
        nj.destroy(h)


def run_ptxas(ptx: str, arch: str, extra=()) -> tuple[bytes, str]:
    """Assemble PTX with `ptxas -arch=<arch> -v`; returns (cubin bytes, ptxas log). Raises
    CompileError with the log if ptxas rejects it, or if ptxas is not installed."""
    exe = shutil.which("ptxas")
    if exe is None:
        raise CompileError("ptxas is not on PATH")
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "k.ptx"), os.path.join(d, "k.cubin")
        with open(src, "w") as f:
            f.write(ptx)
        p = subprocess.run([exe, f"-arch={arch}", "-v", *extra, src, "-o", out], capture_output=True, text=True)
        log = p.stdout + p.stderr
        if p.returncode != 0:
            raise CompileError(f"ptxas rejected the PTX:\n{log}")
        with open(out, "rb") as f:
            return f.read(), log


_REPORT = {
    "registers": re.compile(r"Used (\d+) registers"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
    "smem": re.compile(r"(\d+) bytes smem"),
}


def parse_ptxas_report(log: str) -> dict:
    out = {}
    for k, rx in _REPORT.items():
        m = rx.search(log)
        out[k] = int(m.group(1)) if m else 0
    out["log"] = log
    return out


def raise_ptx_version(ptx: str, need: int) -> str:
    """The PTX with its `.version` raised to ISA need/10 (84 -> 8.4) where it is lower: an inline-asm
    instruction of a newer ISA (the fp8 mma.sync, ISA 8.4) in a module LLVM emitted for the
    target's default ISA (sm_89: 7.8, sm_90a: 8.0). A later ISA accepts the older code as is (Triton
    rewrites the line the same way); the driver must know the ISA (CUDA 12.4+)."""
    if not need:
        return ptx
    m = re.search(r"^\.version (\d+)\.(\d+)\s*$", ptx, re.M)
    if m is None or int(m.group(1)) * 10 + int(m.group(2)) >= need:
        return ptx
    return ptx[:m.start(1)] + f"{need // 10}.{need % 10}" + ptx[m.end(2):]


def _shared_bytes(t) -> int:
    n = 1
    for d in getattr(t, "shape", ()):
        n *= int(d)
    return (n * t.dtype.bits + 7) // 8


def compile_function(fn: Function, target: Target | str = "sm_90a", options: dict | None = None,
                     tile_ir: str = "", ir_after: dict | None = None) -> Artifact:
    """Lower one IR function that has been through the target's passes (layouts, instruction
    selection and shared memory planned) to PTX."""
    from .lower_tile import KernelLowering
    options = dict(options or {})
    target = get_target(target)
    low = KernelLowering(fn, target, NVPTXBackend(target), options)
    module = low.build()
    text = str(module)
    shared = int(fn.attrs.get("shared_bytes", 0))
    limit = target.limits.shared_bytes
    if shared > limit:
        # blamed on the largest shared buffer (a pipelined loop's ring, usually): the line to change
        allocs = [(_shared_bytes(op.results[0].type), op) for op in fn.walk() if op.name == "alloc_shared"]
        big, op = max(allocs, key=lambda x: x[0]) if allocs else (0, None)
        raise CompileError(f"needs {shared} bytes of shared memory; {target.name} allows at most {limit} per "
                           f"block (use smaller tiles or fewer stages)"
                           + (f"; the largest buffer, this one, takes {big}" if op is not None else ""),
                           op=op, kernel=fn.name)
    opts = ("--nvptx-short-ptr",)
    job = LLVMJob(text, target.llvm_triple, target.llvm_cpu, target.llvm_features, int(options.get("opt", 3)),
                  opts, "asm", fn.name)
    res = run_llvm(job, timeout=float(options.get("llvm_timeout", 600)))
    meta = KernelMeta(name=fn.name, target=target.name, num_threads=low.launch_threads, shared_bytes=shared,
                      params=flatten_params(fn), align=low.align, cluster=low.cluster_dims(),
                      divisible=tuple(fn.attrs.get("divisible") or ()))     # the launch checks these facts
    ptx = raise_ptx_version(res["asm"], getattr(low.tgt, "ptx_isa_needed", 0))
    return Artifact(meta=meta, ptx=ptx, signature=signature_of_function(fn), llvm_ir=text,
                    optimized_ir=res.get("optimized_ir", ""), tile_ir=tile_ir, ir_after=dict(ir_after or {}))
