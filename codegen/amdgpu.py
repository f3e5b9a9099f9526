"""The AMD back end: tile IR (after the gfx* pipeline's passes) -> LLVM IR -> O3 -> AMDGPU ELF
object -> (ld.lld -shared) -> .hsaco code object.

Targets: gfx90a, gfx942 (MI300), gfx950 (MI350); wave64. The LLVM work runs in the isolated worker
(codegen/llvm_isolated.py, emit "both": the object and the assembly text); linking uses LLD, found
in this order: ROCm's (`$ROCM_PATH/llvm/bin`, `/opt/rocm/llvm/bin`), an `ld.lld` >= 19 on PATH, the
`ziglang` wheel's (`python -m ziglang ld.lld`; `pip install ziglang`, in the `test` extra).

The kernel ABI is the one of ir/artifact.py, laid out as the C ABI does (natural alignment; what
HIP's kernelParams launch copies into the kernarg segment); code object v5, whose hidden arguments
(after the explicit ones) the runtime fills. Shared memory is LDS: the kernel's one buffer is
dynamic LDS (`extern __shared__`), sized at launch from `meta.shared_bytes`.

UNTESTED ON HARDWARE: code objects are compiled, linked, disassembled and their metadata checked;
none has run on an AMD GPU.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

from ..ir.artifact import Artifact, KernelMeta, flatten_params, signature_of_function
from ..ir.core import Function
from ..ir.targets import Target, get_target
from .amdgpu_intrinsics import AMDGPUIntrinsics
from .errors import CompileError
from .llvm_isolated import LLVMJob, run_llvm

__all__ = ["AMDGPUBackend", "compile_function", "find_lld", "link", "code_object_metadata", "kernel_metadata"]

CODE_OBJECT_VERSION = 500          # COV5: what ROCm 6.x loads; LLVM 22 defaults to v6


class AMDGPUBackend:
    """The AMD code generator's hooks for codegen/lower_tile.py (the facts live on the Target)."""
    kernel_cc = "amdgpu_kernel"

    def __init__(self, target: Target):
        if target.family != "amd":
            raise CompileError(f"the AMD back end cannot compile for {target.name}")
        self.target = target

    def make_intrinsics(self, decls):
        return AMDGPUIntrinsics(decls, self.target)

    def add_function_attributes(self, llfn, nthreads: int, options: dict):
        # exactly the launch's block size; string attributes print verbatim (llvmlite rejects them in .add())
        set.add(llfn.attributes, f'"amdgpu-flat-work-group-size"="{nthreads},{nthreads}"')
        if options.get("waves_per_eu"):
            set.add(llfn.attributes, f'"amdgpu-waves-per-eu"="{int(options["waves_per_eu"])}"')


# ------------------------------------------------------------------------------------ linking
def _lld_version(exe: str) -> int | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"LLD (\d+)", out)
    return int(m.group(1)) if m else None


_LLD: list | None = None


def find_lld() -> list:
    """The command that runs LLD (a list: argv prefix). Order: ROCm's ld.lld, an ld.lld >= 19 on
    PATH, the ziglang wheel's. Raises CompileError naming the options when none is found."""
    global _LLD
    if _LLD is not None:
        return _LLD
    tried = []
    for root in (os.environ.get("ROCM_PATH"), "/opt/rocm"):
        if root:
            exe = os.path.join(root, "llvm", "bin", "ld.lld")
            if os.access(exe, os.X_OK):
                _LLD = [exe]
                return _LLD
            tried.append(f"{exe} (absent)")
    for name in ("ld.lld", "ld.lld-22", "ld.lld-21", "ld.lld-20", "ld.lld-19"):
        exe = shutil.which(name)
        if exe:
            v = _lld_version(exe)
            if v is not None and v >= 19:
                _LLD = [exe]
                return _LLD
            tried.append(f"{exe} (LLD {v}: too old, need >= 19)")
    try:
        import ziglang  # noqa: F401
        _LLD = [sys.executable, "-m", "ziglang", "ld.lld"]
        return _LLD
    except ImportError:
        tried.append("the ziglang wheel (not installed)")
    raise CompileError("no linker for AMD code objects: install ROCm (/opt/rocm/llvm/bin/ld.lld), put an "
                       "ld.lld >= 19 on PATH (e.g. apt-get install lld-19), or `pip install ziglang`; tried: "
                       + "; ".join(tried))


def link(obj: bytes, kernel: str = "?") -> bytes:
    """Relocatable AMDGPU object -> shared code object (.hsaco) with `ld.lld -shared`."""
    cmd = find_lld()
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "k.o"), os.path.join(d, "k.hsaco")
        with open(src, "wb") as f:
            f.write(obj)
        p = subprocess.run(cmd + ["-shared", src, "-o", out], capture_output=True, text=True)
        if p.returncode != 0:
            raise CompileError(f"ld.lld failed ({' '.join(cmd)}):\n{p.stdout}{p.stderr}", kernel=kernel)
        with open(out, "rb") as f:
            return f.read()


# ------------------------------------------------------------------------ code-object metadata
def _msgpack(buf: bytes, pos: int = 0):
    """A minimal MessagePack decoder (the AMDGPU metadata note): returns (value, next position)."""
    c = buf[pos]
    pos += 1

    def take(n):
        return buf[pos:pos + n], pos + n
    if c <= 0x7F:
        return c, pos
    if c >= 0xE0:
        return c - 0x100, pos
    if 0x80 <= c <= 0x8F:
        return _map(buf, pos, c & 0x0F)
    if 0x90 <= c <= 0x9F:
        return _arr(buf, pos, c & 0x0F)
    if 0xA0 <= c <= 0xBF:
        n = c & 0x1F
        return buf[pos:pos + n].decode(), pos + n
    if c == 0xC0:
        return None, pos
    if c in (0xC2, 0xC3):
        return c == 0xC3, pos
    fixed = {0xCC: "B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: "b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
             0xCA: ">f", 0xCB: ">d"}
    if c in fixed:
        fmt = fixed[c]
        n = struct.calcsize(fmt)
        return struct.unpack(fmt, buf[pos:pos + n])[0], pos + n
    lens = {0xD9: (">B", "str"), 0xDA: (">H", "str"), 0xDB: (">I", "str"), 0xC4: (">B", "bin"),
            0xC5: (">H", "bin"), 0xC6: (">I", "bin"), 0xDC: (">H", "arr"), 0xDD: (">I", "arr"),
            0xDE: (">H", "map"), 0xDF: (">I", "map")}
    if c in lens:
        fmt, kind = lens[c]
        k = struct.calcsize(fmt)
        n = struct.unpack(fmt, buf[pos:pos + k])[0]
        pos += k
        if kind == "str":
            return buf[pos:pos + n].decode(), pos + n
        if kind == "bin":
            return bytes(buf[pos:pos + n]), pos + n
        return (_arr if kind == "arr" else _map)(buf, pos, n)
    raise ValueError(f"msgpack: unsupported byte 0x{c:02x}")


def _arr(buf, pos, n):
    out = []
    for _ in range(n):
        v, pos = _msgpack(buf, pos)
        out.append(v)
    return out, pos


def _map(buf, pos, n):
    out = {}
    for _ in range(n):
        k, pos = _msgpack(buf, pos)
        v, pos = _msgpack(buf, pos)
        out[k] = v
    return out, pos


def code_object_metadata(elf: bytes) -> dict:
    """The AMDGPU metadata note (NT_AMDGPU_METADATA, owner "AMDGPU") of a code object or
    relocatable object, decoded: `amdhsa.version`, `amdhsa.target`, `amdhsa.kernels` (per kernel
    `.kernarg_segment_size`, `.args`, `.private_segment_fixed_size`, `.group_segment_fixed_size`,
    `.vgpr_count`, `.agpr_count`, `.sgpr_count`, `.wavefront_size`, ...)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    for i in range(shnum):
        sh = shoff + i * shentsize
        sh_type, = struct.unpack_from("<I", elf, sh + 4)
        if sh_type != 7:                         # SHT_NOTE
            continue
        off, size = struct.unpack_from("<QQ", elf, sh + 0x18)
        p, end = off, off + size
        while p + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, p)
            name = elf[p + 12:p + 12 + namesz].rstrip(b"\0")
            desc = p + 12 + ((namesz + 3) & ~3)
            if name == b"AMDGPU" and ntype == 32:
                return _msgpack(elf[desc:desc + descsz])[0]
            p = desc + ((descsz + 3) & ~3)
    raise ValueError("no AMDGPU metadata note in the code object")


def kernel_metadata(elf: bytes, name: str | None = None) -> dict:
    """One kernel's entry of the metadata note, plus `explicit_kernarg_size` (the bytes of its
    non-hidden arguments: what the launch passes)."""
    md = code_object_metadata(elf)
    ks = md.get("amdhsa.kernels", [])
    k = next((x for x in ks if name is None or x.get(".name") == name), None)
    if k is None:
        raise ValueError(f"kernel {name!r} not in the code object ({[x.get('.name') for x in ks]})")
    k = dict(k)
    explicit = [a for a in k.get(".args", []) if not str(a.get(".value_kind", "")).startswith("hidden_")]
    k["explicit_kernarg_size"] = max((a[".offset"] + a[".size"] for a in explicit), default=0)
    return k


# -------------------------------------------------------------------------------------- compile
def compile_function(fn: Function, target: Target | str = "gfx942", options: dict | None = None,
                     tile_ir: str = "", ir_after: dict | None = None) -> Artifact:
    """Lower one IR function that has been through the target's passes to an AMD code object
    (`Artifact.hsaco`; the assembly text in `extra["asm"]`)."""
    import llvmlite.ir as ir
    from .lower_tile import KernelLowering
    options = dict(options or {})
    target = get_target(target)
    low = KernelLowering(fn, target, AMDGPUBackend(target), options)
    module = low.build()
    i32 = ir.IntType(32)
    module.add_named_metadata("llvm.module.flags", [ir.Constant(i32, 1),
                                                    ir.MetaDataString(module, "amdhsa_code_object_version"),
                                                    ir.Constant(i32, CODE_OBJECT_VERSION)])
    text = str(module)
    shared = int(fn.attrs.get("shared_bytes", 0))
    limit = target.limits.shared_bytes
    if shared > limit:
        raise CompileError(f"needs {shared} bytes of LDS; {target.name} allows at most {limit} per workgroup "
                           f"(use smaller tiles or fewer stages)", kernel=fn.name)
    job = LLVMJob(text, target.llvm_triple, target.llvm_cpu, target.llvm_features, int(options.get("opt", 3)),
                  (), "both", fn.name)
    res = run_llvm(job, timeout=float(options.get("llvm_timeout", 600)))
    hsaco = link(res["obj"], fn.name)
    km = kernel_metadata(hsaco, fn.name)
    extra = {"asm": res["asm"],
             "kernarg_segment_size": int(km.get(".kernarg_segment_size", 0)),
             "explicit_kernarg_size": int(km["explicit_kernarg_size"]),
             "private_segment_size": int(km.get(".private_segment_fixed_size", 0)),
             "group_segment_size": int(km.get(".group_segment_fixed_size", 0)),
             "vgpr_count": int(km.get(".vgpr_count", 0)), "agpr_count": int(km.get(".agpr_count", 0)),
             "sgpr_count": int(km.get(".sgpr_count", 0)),
             "vgpr_spill_count": int(km.get(".vgpr_spill_count", 0)),
             "sgpr_spill_count": int(km.get(".sgpr_spill_count", 0))}
    if extra["group_segment_size"] + shared > limit:
        raise CompileError(f"needs {extra['group_segment_size'] + shared} bytes of LDS; {target.name} allows "
                           f"at most {limit}", kernel=fn.name)
    meta = KernelMeta(name=fn.name, target=target.name, num_threads=low.nthreads, shared_bytes=shared,
                      params=flatten_params(fn), align=low.align)
    return Artifact(meta=meta, hsaco=hsaco, signature=signature_of_function(fn), llvm_ir=text,
                    optimized_ir=res.get("optimized_ir", ""), tile_ir=tile_ir, ir_after=dict(ir_after or {}),
                    extra=extra)
