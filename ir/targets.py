"""Targets as data: what each GPU (or the CPU interpreter) offers, in one table.

A `Target` is resolved once (an argument, `TILEC_TARGET`, or the GPU in use) and passed explicitly
to the pass pipeline and to code generation. Passes and lowerings ask it questions -- its warp size,
its limits, whether it has a feature, which MMA and copy atoms it offers -- and never compare target
names. Adding a GPU generation is adding an entry to `TARGETS`; adding an instruction is adding an
atom (with its fragment layouts from `ir/fragments.py`) to the targets that have it.

    from tile.ir.targets import get_target
    t = get_target("sm_90a")
    t.warp_size, t.limits.shared_bytes, t.has("wgmma"), t.mma_atom("wgmma")

Atoms are named the way the IR prints them (instruction selection writes `atom = "<name>"` on each
`dot`; a user may edit that text): `mma.m16n8k16`, `mma.m16n8k32` (8-bit inputs), `wgmma.m64nNk16` /
`wgmma.m64nNk32` (16-bit / 8-bit inputs; N chosen per dot), `mfma.32x32x8`, `fma`. Copy mechanisms likewise: `ld.global` (a vector width in elements beside it), `cp.async`,
`ldmatrix`, `ldmatrix.trans`, `smem.desc` (read by the consuming wgmma through a matrix descriptor),
`ld.shared`, `tma` (a bulk tensor copy of a whole box, Hopper); on AMD `ds_read.k` / `ds_read.trans.k` (the MFMA dot reads its operand from LDS one k
step at a time, directly or through the transpose that follows) and `buffer.load`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from . import fragments
from .errors import TileError

__all__ = ["Target", "Limits", "MmaAtom", "CopyAtom", "TARGETS", "get_target", "target_names",
           "UnknownTargetError", "resolve_target", "disabled_features", "LAZY_COPIES"]


class UnknownTargetError(TileError, ValueError):
    """A target name tilec does not know; the message lists the valid ones (one line)."""


@dataclass(frozen=True)
class Limits:
    """Per-block resource limits."""
    threads: int                 # threads per block
    shared_bytes: int            # dynamic shared memory (LDS) a block may use
    registers: int               # 32-bit registers per thread
    vector_bits: int = 128       # widest single global / shared access


@dataclass(frozen=True)
class MmaAtom:
    """A matrix instruction: D[m,n] += A[m,k] @ B[k,n] per `group` threads.

    `inputs`: element types it multiplies; `acc`: accumulator types; `a`/`b`/`c`: callables giving
    the fragment TVLayouts (from ir/fragments.py; None where an operand comes from shared memory
    through a descriptor); `n_range`: for wgmma, the N sizes one instruction can take."""
    name: str
    m: int
    n: int
    k: int
    group: int                               # threads that execute one atom together
    inputs: tuple
    acc: tuple
    a: object = None
    b: object = None
    c: object = None
    n_range: tuple = ()
    operands: tuple = ("reg",)               # where A may come from: "reg", "smem"
    pairs: tuple = ()                        # (input, accumulator) pairs it takes, where not every
                                             # input goes with every accumulator (8-bit atoms)
    k_major_only: bool = False               # wgmma: both shared operands must be K-major (8-bit)

    def supports(self, in_dtype: str, acc_dtype: str) -> bool:
        if self.pairs:
            return (in_dtype, acc_dtype) in self.pairs
        return in_dtype in self.inputs and acc_dtype in self.acc


@dataclass(frozen=True)
class CopyAtom:
    """A data-movement instruction between memory spaces (src -> dst)."""
    name: str
    src: str                                 # "global" | "shared"
    dst: str                                 # "reg" | "shared"
    sizes: tuple                             # bytes one thread moves per instruction
    fragment: object = None                  # ldmatrix: the TVLayout one x1 instruction yields
    elem_bits: tuple = ()                    # element widths it serves (empty: any)


FMA = MmaAtom("fma", 1, 1, 1, 1, inputs=("*",), acc=("f32", "f16", "i32"))

MMA_M16N8K16 = MmaAtom("mma.m16n8k16", 16, 8, 16, 32, inputs=("bf16", "f16"), acc=("f32",),
                       a=fragments.mma_m16n8k16_a, b=fragments.mma_m16n8k16_b, c=fragments.mma_m16n8k16_c)
WGMMA = MmaAtom("wgmma", 64, 0, 16, 128, inputs=("bf16", "f16"), acc=("f32",),
                a=fragments.wgmma_a, c=fragments.wgmma_acc, n_range=tuple(range(8, 257, 8)),
                operands=("reg", "smem"))
# 8-bit inputs, k = 32 per instruction: integers accumulate exactly in s32, fp8 in f32. The PTX ISA
# puts the fp8 mma.sync on sm_89+ (PTX ISA 8.4), the integer one on sm_80+; wgmma takes both on
# sm_90a, its shared operands K-major only (no transpose bits for 8-bit types), and the integer
# form a narrower set of N (multiples of 16 from 32 up).
_INT8_PAIRS = (("i8", "i32"), ("u8", "i32"))
_FP8_PAIRS = (("f8e4m3fn", "f32"), ("f8e5m2", "f32"))
MMA_M16N8K32_INT = MmaAtom("mma.m16n8k32", 16, 8, 32, 32, inputs=("i8", "u8"), acc=("i32",),
                           a=fragments.mma_m16n8k32_a, b=fragments.mma_m16n8k32_b, c=fragments.mma_m16n8k32_c,
                           pairs=_INT8_PAIRS)
MMA_M16N8K32 = MmaAtom("mma.m16n8k32", 16, 8, 32, 32, inputs=("i8", "u8", "f8e4m3fn", "f8e5m2"),
                       acc=("i32", "f32"), a=fragments.mma_m16n8k32_a, b=fragments.mma_m16n8k32_b,
                       c=fragments.mma_m16n8k32_c, pairs=_INT8_PAIRS + _FP8_PAIRS)
WGMMA_FP8 = MmaAtom("wgmma", 64, 0, 32, 128, inputs=("f8e4m3fn", "f8e5m2"), acc=("f32",),
                    a=fragments.wgmma_a8, c=fragments.wgmma_acc, n_range=tuple(range(8, 257, 8)),
                    operands=("reg", "smem"), pairs=_FP8_PAIRS, k_major_only=True)
WGMMA_INT8 = MmaAtom("wgmma", 64, 0, 32, 128, inputs=("i8", "u8"), acc=("i32",),
                     a=fragments.wgmma_a8, c=fragments.wgmma_acc,
                     n_range=(8, 16, 24) + tuple(range(32, 257, 16)),
                     operands=("reg", "smem"), pairs=_INT8_PAIRS, k_major_only=True)
MFMA_32X32X8 = MmaAtom("mfma.32x32x8", 32, 32, 8, 64, inputs=("bf16", "f16"), acc=("f32",),
                       a=fragments.mfma_32x32x8_a, b=fragments.mfma_32x32x8_b, c=fragments.mfma_32x32x8_c)
MFMA_16X16X16 = MmaAtom("mfma.16x16x16", 16, 16, 16, 64, inputs=("bf16", "f16"), acc=("f32",),
                        a=fragments.mfma_16x16x16_a, b=fragments.mfma_16x16x16_b, c=fragments.mfma_16x16x16_c)
MFMA_32X32X16 = MmaAtom("mfma.32x32x16", 32, 32, 16, 64, inputs=("bf16", "f16"), acc=("f32",),
                        a=fragments.mfma_32x32x16_a, b=fragments.mfma_32x32x16_b, c=fragments.mfma_32x32x16_c)
MFMA_16X16X32 = MmaAtom("mfma.16x16x32", 16, 16, 32, 64, inputs=("bf16", "f16"), acc=("f32",),
                        a=fragments.mfma_16x16x32_a, b=fragments.mfma_16x16x32_b, c=fragments.mfma_16x16x32_c)

# shared -> register copies whose bytes the consuming dot reads itself, when it needs them (no
# register tile is materialized): through a wgmma matrix descriptor, or ldmatrix one k step at a time;
# on AMD, LDS reads (ds_read_b64/b128) of one k step's MFMA fragments
LAZY_COPIES = ("smem.desc", "ldmatrix.k", "ldmatrix.trans.k", "ds_read.k", "ds_read.trans.k")

LD_GLOBAL = CopyAtom("ld.global", "global", "reg", (1, 2, 4, 8, 16))
LD_SHARED = CopyAtom("ld.shared", "shared", "reg", (1, 2, 4, 8, 16))
CP_ASYNC = CopyAtom("cp.async", "global", "shared", (4, 8, 16))
# (8-bit elements: the b16 ldmatrix without .trans reads K-contiguous m16n8k32 fragments, whose
# registers hold the same bytes as the 16-bit ones; .trans would swap 2-byte units, so 16-bit only)
LDMATRIX = CopyAtom("ldmatrix", "shared", "reg", (16,), fragment=fragments.ldmatrix_x1, elem_bits=(8, 16))
LDMATRIX_T = CopyAtom("ldmatrix.trans", "shared", "reg", (16,), fragment=lambda: fragments.ldmatrix_x1(True),
                      elem_bits=(16,))
SMEM_DESC = CopyAtom("smem.desc", "shared", "reg", (), elem_bits=(8, 16))
# Hopper's tensor memory accelerator: one thread copies a whole box of a tensor (described by a
# tensor map, a kernel parameter) into shared memory, completing on an mbarrier
TMA = CopyAtom("tma", "global", "shared", (), elem_bits=(8, 16, 32, 64))
# ... and the other way: a staged box of shared memory to the tensor (cp.async.bulk.tensor stores)
TMA_STORE = CopyAtom("tma.store", "shared", "global", (), elem_bits=(8, 16, 32))
BUFFER_LOAD = CopyAtom("buffer.load", "global", "reg", (1, 2, 4, 8, 16))
DS_READ_K = CopyAtom("ds_read.k", "shared", "reg", (2, 4, 8, 16))
DS_READ_TRANS_K = CopyAtom("ds_read.trans.k", "shared", "reg", (2, 4, 8, 16))
BUFFER_STORE = CopyAtom("buffer.store", "reg", "global", (1, 2, 4, 8, 16))
_AMD_COPIES = (LD_GLOBAL, LD_SHARED, BUFFER_LOAD, BUFFER_STORE, DS_READ_K, DS_READ_TRANS_K)


@dataclass(frozen=True)
class Target:
    """One compilation target. `family` picks the code generator ("nvidia", "amd", "cpu");
    `llvm` holds what LLVM needs (triple, cpu, features)."""
    name: str
    family: str
    arch: str
    warp_size: int
    limits: Limits
    features: frozenset = frozenset()
    mma_atoms: tuple = ()
    copy_atoms: tuple = ()
    llvm_triple: str = ""
    llvm_cpu: str = ""
    llvm_features: str = ""
    description: str = ""
    pipeline: tuple = ()                     # pass names, in order (passes/manager.py runs them)
    removed: tuple = ()                      # features/atoms `without` took away (sorted)
    xcds: int = 1                            # chiplets with their own L2 that blocks are dealt to round-robin

    # ---------------------------------------------------------------- questions passes ask
    def has(self, feature: str) -> bool:
        return feature in self.features

    @property
    def is_gpu(self) -> bool:
        return self.family != "cpu"

    def threads(self, num_warps: int) -> int:
        """Threads of a block of `num_warps` warps (waves on AMD)."""
        return self.warp_size * int(num_warps)

    def mma_atom(self, name: str, in_dtype: str | None = None, acc_dtype: str | None = None) -> MmaAtom | None:
        """The MMA atom named `name` (for wgmma, the family name and its k: "wgmma.m64n128k16" ->
        the 16-bit wgmma, "wgmma.m64n128k32.ss" -> an 8-bit one); with dtypes, the one that
        multiplies `in_dtype` into `acc_dtype` (several atoms share a name: "mma.m16n8k32" takes
        integers on sm_80, integers and fp8 from sm_89; the 8-bit wgmma atoms)."""
        k = None
        base = name
        if name.startswith("wgmma"):
            base = name.split(".m64n")[0]
            rest = name[len(base):]
            if "k" in rest:
                digits = rest.split("k", 1)[1].split(".")[0]
                k = int(digits) if digits.isdigit() else None
        for a in self.mma_atoms:
            if a.name != base or (k is not None and a.k != k):
                continue
            if in_dtype is not None and acc_dtype is not None and not a.supports(in_dtype, acc_dtype):
                continue
            return a
        return None

    def copy_atom(self, name: str) -> CopyAtom | None:
        for a in self.copy_atoms:
            if a.name == name:
                return a
        return None

    @property
    def mma_names(self) -> tuple:
        return tuple(a.name for a in self.mma_atoms)

    @property
    def copy_names(self) -> tuple:
        return tuple(a.name for a in self.copy_atoms)

    def without(self, *names: str) -> "Target":
        """This target with the named features and atoms removed (e.g. `without("wgmma")`: Hopper
        compiled with mma.sync only; `without("tma")`: async copies by cp.async, for comparison).
        The name stays; `key` tells the restricted target apart (caches key on it)."""
        from dataclasses import replace
        names = set(names)
        gone = names & (set(self.features) | {a.name for a in self.mma_atoms} | {a.name for a in self.copy_atoms})
        if not gone:
            return self
        return replace(self, features=self.features - names,
                       mma_atoms=tuple(a for a in self.mma_atoms if a.name not in names),
                       copy_atoms=tuple(a for a in self.copy_atoms if a.name not in names),
                       removed=tuple(sorted(set(self.removed) | gone)))

    @property
    def key(self) -> str:
        """The name, plus what `without` removed ("sm_90a-tma"): what compilation caches key on."""
        return self.name + "".join(f"-{r}" for r in self.removed)

    def __str__(self) -> str:
        return self.name


# The pass pipelines, by family: what runs between the front end and code generation.
CPU_PIPELINE = ("canonicalize", "dce")
NVIDIA_PIPELINE = ("canonicalize", "dce", "fold_dot_accumulator", "layout_inference", "pipeline_loads",
                   "select_instructions", "warp_specialize", "pingpong", "divisibility", "shared_memory_planning")
# on AMD pipeline_loads stages the next iteration's loads in registers (no asynchronous copies:
# passes/pipeline_registers.py); schedule_amd checks the loops' wave schedules (ping-pong, interleave);
# pingpong (Hopper's warpgroup turns) only warns there that it does not apply
AMD_PIPELINE = ("canonicalize", "dce", "fold_dot_accumulator", "layout_inference", "pipeline_loads",
                "select_instructions", "schedule_amd", "pingpong", "shared_memory_planning")

_NV_COPIES = (LD_GLOBAL, LD_SHARED, CP_ASYNC, LDMATRIX, LDMATRIX_T)
_NV = "nvptx64-nvidia-cuda"
_AMD = "amdgcn-amd-amdhsa"

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("cpu", "cpu", "cpu", 1, Limits(1, 1 << 62, 1 << 30, 1 << 30), frozenset(), (FMA,), (),
           description="the NumPy interpreter (the reference semantics)", pipeline=CPU_PIPELINE),
    Target("sm_80", "nvidia", "sm_80", 32, Limits(1024, 166912, 255),
           frozenset({"cp.async", "ldmatrix", "mma.sync", "bf16"}), (MMA_M16N8K16, MMA_M16N8K32_INT, FMA),
           _NV_COPIES, _NV, "sm_80", "+ptx70", "NVIDIA Ampere (A100)", NVIDIA_PIPELINE),
    Target("sm_89", "nvidia", "sm_89", 32, Limits(1024, 101376, 255),
           frozenset({"cp.async", "ldmatrix", "mma.sync", "bf16", "fp8"}), (MMA_M16N8K16, MMA_M16N8K32, FMA),
           _NV_COPIES, _NV, "sm_89", "+ptx78", "NVIDIA Ada (L4, L40, RTX 40)", NVIDIA_PIPELINE),
    # never +ptx78 with sm_90a: LLVM exits the process
    Target("sm_90a", "nvidia", "sm_90a", 32, Limits(1024, 232448, 255),
           frozenset({"cp.async", "ldmatrix", "mma.sync", "bf16", "fp8", "wgmma", "tma", "clusters",
                      "setmaxnreg", "async_proxy"}),
           (WGMMA, WGMMA_FP8, WGMMA_INT8, MMA_M16N8K16, MMA_M16N8K32, FMA), _NV_COPIES + (SMEM_DESC, TMA, TMA_STORE), _NV,
           "sm_90a", "+ptx80",
           "NVIDIA Hopper (H100, H200), arch-specific features on", NVIDIA_PIPELINE),
    Target("gfx90a", "amd", "gfx90a", 64, Limits(1024, 65536, 512),
           frozenset({"mfma", "mfma.cdna2", "buffer_load", "bf16"}), (MFMA_32X32X8, MFMA_16X16X16, FMA),
           _AMD_COPIES, _AMD, "gfx90a", "", "AMD CDNA2 (MI200)", AMD_PIPELINE),
    Target("gfx942", "amd", "gfx942", 64, Limits(1024, 65536, 512),
           frozenset({"mfma", "mfma.cdna3", "buffer_load", "bf16", "fp8"}), (MFMA_32X32X8, MFMA_16X16X16, FMA),
           _AMD_COPIES, _AMD, "gfx942", "", "AMD CDNA3 (MI300)", AMD_PIPELINE, xcds=8),
    Target("gfx950", "amd", "gfx950", 64, Limits(1024, 163840, 512),
           frozenset({"mfma", "mfma.cdna4", "buffer_load", "bf16", "fp8"}),
           (MFMA_32X32X16, MFMA_16X16X32, MFMA_32X32X8, MFMA_16X16X16, FMA),
           _AMD_COPIES, _AMD, "gfx950", "", "AMD CDNA4 (MI350)", AMD_PIPELINE, xcds=8),
)}

FAMILIES = {"nvidia": tuple(n for n, t in TARGETS.items() if t.family == "nvidia"),
            "amd": tuple(n for n, t in TARGETS.items() if t.family == "amd"),
            "cpu": ("cpu",)}


def target_names() -> tuple:
    return tuple(TARGETS)


def get_target(target) -> Target:
    """The Target for a name (or a Target, returned as is). An unknown name raises
    UnknownTargetError with a one-line message listing the valid ones."""
    if isinstance(target, Target):
        return target
    t = TARGETS.get(str(target).strip()) if target is not None else None
    if t is None:
        hint = ""
        s = str(target)
        for n in TARGETS:          # sm90a -> sm_90a, SM_80 -> sm_80
            if n.replace("_", "").lower() == s.replace("_", "").lower():
                hint = f" (did you mean {n!r}?)"
        raise UnknownTargetError(f"unknown target {target!r}{hint}; valid targets: {', '.join(TARGETS)}")
    return t


def disabled_features() -> tuple:
    """The features $TILEC_DISABLE takes away from every target (comma-separated, e.g. "tma" or
    "tma,wgmma"): to compare the code with and without an instruction on the same GPU."""
    env = os.environ.get("TILEC_DISABLE", "")
    return tuple(sorted({x.strip() for x in env.split(",") if x.strip()}))


def resolve_target(explicit=None, detect=None) -> Target:
    """The target of a compilation, resolved once: `explicit` (an argument) if given, else
    $TILEC_TARGET, else `detect()` (the GPU in use, from the runtime) when it returns a name, else
    the CPU interpreter; less the features $TILEC_DISABLE names. Errors say where the bad name
    came from."""
    off = disabled_features()
    if explicit is not None:
        return get_target(explicit).without(*off)
    env = os.environ.get("TILEC_TARGET")
    if env:
        try:
            return get_target(env).without(*off)
        except UnknownTargetError as e:
            raise UnknownTargetError(f"TILEC_TARGET: {e}") from None
    name = detect() if detect is not None else None
    return get_target(name or "cpu").without(*off)
