"""The contract between code generators and runtimes: how a kernel's IR parameters become machine
kernel parameters, and what else a launch must know.

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

from dataclasses import dataclass, field


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
    """What a runtime needs to launch a compiled kernel."""
    name: str
    target: str
    num_threads: int
    shared_bytes: int = 0                    # dynamic shared memory to request at launch
    params: list = field(default_factory=list)   # list[ParamABI]
    align: int = 16                          # alignment the code assumes for tensor base addresses
    cluster: tuple = (1, 1, 1)


def flatten_params(fn) -> list:
    """The machine parameters of an IR function, per the rules above."""
    from tile.ir.types import TensorType
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
