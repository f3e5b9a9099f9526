"""The compiled-artifact contract: what code generation produces, the kernel cache stores, `tilec
compile -o K.tilec` writes, and the runtime loads and launches -- without the compiler.

An `Artifact` holds
* the code: `ptx` (text) and/or `cubin` (NVIDIA), `hsaco` (AMD code object);
* the target name;
* the kernel ABI (`meta.params`): how the IR parameters become machine parameters (below);
* the launch facts (`meta`): threads per block, dynamic shared memory bytes, cluster shape,
  the alignment the code assumes for tensor base addresses;
* the IR signature (`signature`: [(name, printed IR type)]) the launcher checks arguments against;
* `extra`: facts worth keeping (resource usage, ...), JSON values only.
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
Block ids map to `ctaid.{x,y,z}` (NVIDIA) / `workgroup.id.{x,y,z}` (AMD) for grid axes 0, 1, 2.
"""
from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field

__all__ = ["ParamABI", "KernelMeta", "Artifact", "flatten_params", "kernarg_layout", "FORMAT"]

FORMAT = "tilec-artifact-1"


@dataclass(frozen=True)
class ParamABI:
    """One machine-level kernel parameter."""
    name: str       # e.g. "A", "A.shape0", "A.stride1", "n"
    kind: str       # "ptr" | "i32" | "i64" | "f32" | "f64"
    source: str     # the IR parameter's name
    role: str       # "ptr" | "shape" | "stride" | "scalar"
    axis: int = -1  # for shape/stride


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

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["cluster"] = list(self.cluster)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "KernelMeta":
        names = {f.name for f in dataclasses.fields(cls)}
        pnames = {f.name for f in dataclasses.fields(ParamABI)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["params"] = [ParamABI(**{k: v for k, v in p.items() if k in pnames}) for p in d.get("params", [])]
        if "cluster" in kw:
            kw["cluster"] = tuple(kw["cluster"])
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
    return out


PARAM_BYTES = {"ptr": 8, "i32": 4, "i64": 8, "f32": 4, "f64": 8}


def kernarg_layout(params) -> tuple[list, int]:
    """Byte offsets of the machine parameters in a kernel-argument buffer laid out as the C ABI
    does (each at its natural alignment), and the buffer's size: the explicit kernarg segment of
    an AMD code object, what a HIP launch copies the kernelParams values into."""
    offs, pos = [], 0
    for p in params:
        n = PARAM_BYTES[p.kind]
        pos = (pos + n - 1) // n * n
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
