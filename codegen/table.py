"""The lowering table: (target family, op name) -> the function that lowers that op.

    @lowers("load")                      # every GPU family (the rule is written against the target's
    def op_load(ctx, op): ...            #   intrinsics object, ctx.tgt, so it serves NVIDIA and AMD)
    @lowers("dot", family="nvidia")      # one family only: found before the "gpu" entry

A lowering takes the lowering context (codegen/lower_tile.py `KernelLowering`: values, layouts,
builders, the target's intrinsics) and the op. Adding an op to code generation is one entry here per
target family; `lowering_for` is how the context finds it (a family entry first, then "gpu").
"""
from __future__ import annotations

from typing import Callable

__all__ = ["LOWERINGS", "lowers", "lowering_for"]

LOWERINGS: dict[tuple[str, str], Callable] = {}


def lowers(*ops: str, family: str = "gpu"):
    """Register the decorated function as the lowering of `ops` for `family` ("gpu": all GPUs)."""
    def deco(fn):
        for name in ops:
            key = (family, name)
            if key in LOWERINGS and LOWERINGS[key] is not fn:
                raise ValueError(f"two lowerings of '{name}' for {family}")
            LOWERINGS[key] = fn
        return fn
    return deco


def lowering_for(family: str, op_name: str) -> Callable | None:
    return LOWERINGS.get((family, op_name)) or LOWERINGS.get(("gpu", op_name))
