"""The compiled-artifact contract: what code generation produces, the kernel cache stores, `tilec
compile -o K.tilec` writes, and the runtime loads and launches -- without the compiler.

An `Artifact` holds
* the code: `ptx` (text) and/or `cubin` (NVIDIA), `hsaco` (AMD code object);
* the target name;
* the kernel ABI (`meta.params`): how the IR parameters become machine parameters (below);
* the launch facts (`meta`): threads per block, dynamic shared memory bytes, cluster shape,
  the alignment the code assumes for tensor base addresses, the tensors it assumes `divisible`
  (`divisible_ok`: a launch whose argument is not is refused with an error naming the parameter);
* the IR signature (`signature`: [(name, printed IR type)]) the launcher checks arguments against;
* `extra`: facts worth keeping, JSON values only: `ptxas` (the resource report: registers, spills,
  its log), `pass_warnings` (the passes' PerformanceWarning texts, shown again on a cache hit), ...
Debugging views (`llvm_ir`, `optimized_ir`, `tile_ir`, `ir_after`) ride along in the process that
compiled it and are not serialized.

Kernel parameters, in IR parameter order:
* a TensorType parameter of rank r becomes 1 + 2r machine parameters: the base address (u64, a
  global pointer, 16-byte aligned unless `KernelMeta.align` says less), then r sizes (i32), then r
  strides in elements (i32). Sub-byte tensors are densely packed: element i of the flattened tensor
  lives at bit i * bits, LSB-first (see ir/numerics.py); their strides still count elements.
* a ScalarType parameter becomes one machine parameter: i1 as i32 (0/1); other ints as their width
  rounded up to 32 bits (i64 stays 64); f32 as f32, f64 as f64; f16/bf16 as their 16-bit code in
  an i32.
* after all of those, one `tmap` parameter per distinct (tensor, box, swizzle) that the kernel's
  TMA copies (`async_copy {copy = "tma", box = [...], swizzle = S}`) read, in program order: a
  128-byte CUDA tensor map (`CUtensorMap`, `.param .align 64 .b8 name[128]`, grid-constant) that
  the launcher builds from the tensor argument (`cuTensorMapEncodeTiled`: its base, sizes and
  strides, element type `dtype`, box `box` -- outermost dim first, one entry per tensor dim --,
  shared-memory swizzle span `swizzle` bytes, out-of-bounds elements zero). Such a tensor must have
  a unit innermost stride and its other strides multiples of 16 bytes (`tensor_map_ok`); a launch
  whose argument does not is refused with an error naming the parameter (a launch through
  `@tile.kernel` compiles a specialization without TMA for such an argument instead: function
  attribute `any_strides`).
Block ids map to `ctaid.{x,y,z}` (NVIDIA) / `workgroup.id.{x,y,z}` (AMD) for grid axes 0, 1, 2.
"""
from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field

__all__ = ["ParamABI", "KernelMeta", "Artifact", "flatten_params", "kernarg_layout", "tensor_map_ok",
           "tensor_map_params", "divisible_elems", "divisible_ok", "FORMAT", "TMAP_BYTES", "TMAP_ALIGN"]

FORMAT = "tilec-artifact-1"


@dataclass(frozen=True)
class ParamABI:
    """One machine-level kernel parameter."""
    name: str       # e.g. "A", "A.shape0", "A.stride1", "n", "A.tmap"
    kind: str       # "ptr" | "i32" | "i64" | "f32" | "f64" | "tmap"
    source: str     # the IR parameter's name
    role: str       # "ptr" | "shape" | "stride" | "scalar" | "tmap"
    axis: int = -1  # for shape/stride
    box: tuple = ()     # tmap: the box copied, outermost dim first, one entry per tensor dim
    swizzle: int = 0    # tmap: shared-memory swizzle span in bytes (0 = none, 32, 64, 128)
    dtype: str = ""     # tmap: the tensor's element type


@dataclass
class KernelMeta:
    """The ABI and launch facts of a compiled kernel."""
    name: str
    target: str
    num_threads: int
    shared_bytes: int = 0                    # dynamic shared memory to request at launch
    params: list = field(default_factory=list)   # list[ParamABI]
    align: int = 16                          # alignment the code assumes for tensor base addresses
    cluster: tuple = (1, 1, 1)
    divisible: tuple = ()                    # tensor parameters whose launch must be `divisible_ok`

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["cluster"] = list(self.cluster)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "KernelMeta":
        names = {f.name for f in dataclasses.fields(cls)}
        pnames = {f.name for f in dataclasses.fields(ParamABI)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["params"] = [ParamABI(**{k: (tuple(v) if k == "box" else v) for k, v in p.items() if k in pnames})
                        for p in d.get("params", [])]
        if "cluster" in kw:
            kw["cluster"] = tuple(kw["cluster"])
        if "divisible" in kw:
            kw["divisible"] = tuple(kw["divisible"])
        return cls(**kw)


def flatten_params(fn) -> list:
    """The machine parameters of an IR function, per the rules above."""
    from .types import TensorType
    out = []
    for a in fn.args:
        name = a.name or f"arg{a.index}"
        t = a.type
        if isinstance(t, TensorType):
            out.append(ParamABI(name, "ptr", name, "ptr"))
            out += [ParamABI(f"{name}.shape{i}", "i32", name, "shape", i) for i in range(t.rank)]
            out += [ParamABI(f"{name}.stride{i}", "i32", name, "stride", i) for i in range(t.rank)]
        else:
            dt = t.dtype
            kind = ("f32" if dt.name == "f32" else "f64" if dt.name == "f64" else
                    "i64" if dt.bits == 64 else "i32")
            out.append(ParamABI(name, kind, name, "scalar"))
    return out + tensor_map_params(fn)


def tensor_map_params(fn) -> list:
    """The `tmap` parameters of an IR function (see the module docstring): one per distinct
    (tensor, box, swizzle) of its `async_copy {copy = "tma"}` and `store {copy = "tma"}` ops, in
    program order (a tensor both loaded and stored with the same box and swizzle shares one map)."""
    out, seen, count = [], set(), {}
    for op in fn.walk():
        if op.name not in ("async_copy", "store") or op.attrs.get("copy") != "tma":
            continue
        T = op.operands[1] if op.name == "async_copy" else op.operands[0]
        name = T.name or f"arg{T.index}"
        box = tuple(int(x) for x in op.attrs.get("box") or ())
        box = (1,) * (T.type.rank - len(box)) + box
        sw = int(op.attrs.get("swizzle", 0))
        key = (name, box, sw)
        if key in seen:
            continue
        seen.add(key)
        k = count.get(name, 0)
        count[name] = k + 1
        out.append(ParamABI(f"{name}.tmap" + (str(k) if k else ""), "tmap", name, "tmap", box=box, swizzle=sw,
                            dtype=T.type.dtype.name))
    return out


def tensor_map_ok(shape, strides, bits: int) -> bool:
    """Whether a TMA tensor map can describe a tensor of these sizes and strides (in elements) and
    element width: 1 to 5 dims, whole-byte elements, a unit innermost stride, every other stride a
    non-negative multiple of 16 bytes -- dims of size 1 excepted, whose stride is never used. (The
    base address is 16-byte aligned already: KernelMeta.align.) What a `tmap` parameter needs of
    its tensor; the launcher and the specialization of `@tile.kernel` launches both ask this."""
    n = len(shape)
    if bits not in (8, 16, 32, 64) or not 1 <= n <= 5:
        return False
    if shape[-1] != 1 and strides[-1] != 1:
        return False
    eb = bits // 8
    return all(d == 1 or (s >= 0 and (s * eb) % 16 == 0) for d, s in zip(shape[:-1], strides[:-1]))


DIVISIBLE_BYTES = 16                        # what a `divisible` tensor's sizes and strides are multiples of


def divisible_elems(bits: int) -> int:
    """Elements of `bits` bits in the smallest whole number of 16-byte units (a power of two)."""
    g = 128
    while bits % g:
        g //= 2
    return 128 // g


def divisible_ok(ptr, shape, strides, bits: int) -> bool:
    """The facts a `divisible` tensor parameter promises (function attribute `divisible`, KernelMeta
    .divisible): a 16-byte aligned base address (`ptr`; None: a host array, copied to an aligned
    allocation), a unit last stride, and its last size and every other stride multiples of 16 bytes'
    worth of elements (`divisible_elems`). A tensor with no elements has them all: nothing of it is
    accessed, and its strides are whatever the array library chose -- (0, 1) for a 64 x 0 NumPy
    array, (1, 1) for its device copy, which made a K = 0 GEMM launch refuse its own specialization.
    Code compiled for them has vector accesses without a run-time check (passes/divisibility.py);
    the launchers refuse arguments without them."""
    if shape and 0 in shape:
        return True
    e = divisible_elems(bits)
    if (ptr is not None and ptr % DIVISIBLE_BYTES) or not shape or strides[-1] != 1 or shape[-1] % e:
        return False
    return all(s % e == 0 for s in strides[:-1])


TMAP_BYTES, TMAP_ALIGN = 128, 64            # a CUtensorMap: 128 bytes, 64-byte aligned
PARAM_BYTES = {"ptr": 8, "i32": 4, "i64": 8, "f32": 4, "f64": 8, "tmap": TMAP_BYTES}
PARAM_ALIGN = {"tmap": TMAP_ALIGN}


def kernarg_layout(params) -> tuple[list, int]:
    """Byte offsets of the machine parameters in a kernel-argument buffer laid out as the C ABI
    does (each at its natural alignment; a tensor map at 64), and the buffer's size: the explicit
    kernarg segment of an AMD code object, what a HIP launch copies the kernelParams values into."""
    offs, pos = [], 0
    for p in params:
        n = PARAM_BYTES[p.kind]
        a = PARAM_ALIGN.get(p.kind, n)
        pos = (pos + a - 1) // a * a
        offs.append(pos)
        pos += n
    return offs, pos


def signature_of_function(fn) -> list:
    """[(name, printed IR type)] of an IR function's parameters."""
    return [[a.name or f"arg{a.index}", str(a.type)] for a in fn.args]


@dataclass
class Artifact:
    """One compiled kernel (see the module docstring)."""
    meta: KernelMeta
    ptx: str | None = None
    cubin: bytes | None = None
    hsaco: bytes | None = None
    signature: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    # in-process views (not serialized)
    llvm_ir: str = ""
    optimized_ir: str = ""
    tile_ir: str = ""
    ir_after: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def target(self) -> str:
        return self.meta.target

    @property
    def code(self):
        """What a driver loads: the cubin when there is one, else the PTX (NVIDIA), or the code object."""
        return self.cubin or self.ptx or self.hsaco

    # ---------------------------------------------------------------- serialization
    def to_json(self) -> dict:
        b64 = (lambda x: base64.b64encode(x).decode() if x else None)
        return {"format": FORMAT, "meta": self.meta.to_json(), "ptx": self.ptx, "cubin": b64(self.cubin),
                "hsaco": b64(self.hsaco), "signature": [list(x) for x in self.signature], "extra": self.extra}

    @classmethod
    def from_json(cls, d: dict) -> "Artifact":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not a tilec artifact (format {d.get('format') if isinstance(d, dict) else None!r}, "
                             f"expected {FORMAT!r})")
        unb64 = (lambda x: base64.b64decode(x, validate=True) if x else None)
        if not isinstance(d.get("ptx"), (str, type(None))):
            raise ValueError("the artifact's ptx is not text")
        art = cls(meta=KernelMeta.from_json(d["meta"]), ptx=d.get("ptx"), cubin=unb64(d.get("cubin")),
                  hsaco=unb64(d.get("hsaco")), signature=[list(x) for x in d.get("signature") or []],
                  extra=dict(d.get("extra") or {}))
        if art.code is None:
            raise ValueError("the artifact holds no code")
        return art

    def save(self, path) -> None:
        from pathlib import Path
        Path(path).write_text(json.dumps(self.to_json(), sort_keys=True))

    @classmethod
    def load(cls, path) -> "Artifact":
        from pathlib import Path
        return cls.from_json(json.loads(Path(path).read_text()))
