"""Wave schedules for the MFMA loops of AMD CDNA (after HipKittens), in place of NVIDIA's warp
specialization: CDNA has no asynchronous copies or register reallocation between waves, so memory
latency is hidden by how the waves on one SIMD take turns, not by producer and consumer roles.

A kernel asks with `tile.range(..., schedule="pingpong" | "interleave")`; the front end records
`schedule` on the `for`. This pass checks the request against the target and the function and
records what codegen needs (`phases`); codegen (codegen/lower_mfma.py) carries it out on the MFMA
dots directly in the loop's body. The interpreter and the other targets ignore the attribute: a
schedule changes the order in which waves issue instructions, never what the kernel computes.

* `pingpong` (8 waves: two groups of 4, one wave of each on every SIMD). Each dot's k steps are cut
  into `phases` clusters. A group's turn at a cluster is: read its operands from LDS, barrier, issue
  its MFMAs at raised priority (`s_setprio 1`), priority back to 0. The second group passes one
  extra workgroup barrier before the dot and the first group one after it, so the barriers pair
  cluster j of the first group's MFMAs with cluster j's LDS reads of the second group: on every
  SIMD one wave feeds the matrix core while the other reads LDS, and the roles swap at each
  barrier. The offset is opened and closed inside each dot, where the waves only read LDS and
  multiply, so the loop's own barriers (before and after its LDS writes) still pair as written --
  the single LDS buffer per operand stays race-free. (HipKittens keeps the offset for the whole
  loop over double-buffered LDS; that needs a second buffer this pipeline does not have.)
  `phases` defaults to 2, at most the dot's number of k steps.
* `interleave` (4 waves, one per SIMD): each k step's MFMAs are issued between the LDS reads of
  the next k step (reads one step ahead, placed by `llvm.amdgcn.sched.group.barrier`: one MFMA,
  then a share of the next step's ds_reads, ...), so the one wave on a SIMD overlaps its own LDS
  latency with its MFMAs.

Errors (located at the loop): a schedule on a function with the wrong number of waves, or on a
loop without an MFMA dot directly in its body (an FMA dot, or none).
"""
from __future__ import annotations

import linecache

from ..ir.core import Function, Module, Operation
from ..ir.errors import VerifyError
from ..ir.ops import LOOP_SCHEDULE_WAVES as WAVES
from ..ir.targets import Target
from .manager import register

__all__ = ["schedule_amd", "WAVES", "DEFAULT_PHASES"]

DEFAULT_PHASES = 2


class ScheduleError(VerifyError):
    """A schedule the function cannot take; the message shows the loop's source line."""

    def __init__(self, op, rule: str):
        loc = getattr(op, "loc", None)
        text = linecache.getline(loc.file, loc.line).rstrip("\n") if loc else ""
        if text:
            rule += f"\n    {text}\n    {' ' * max(loc.col - 1, 0)}^"
        super().__init__(op, rule)


def mfma_dots(loop: Operation) -> list:
    """The dots directly in the loop's body that instruction selection put on MFMA."""
    return [o for o in loop.regions[0].ops if o.name == "dot" and str(o.attrs.get("atom", "")).startswith("mfma.")]


def k_steps(dot: Operation, target: Target) -> int:
    return dot.operands[0].type.shape[1] // target.mma_atom(dot.attrs["atom"]).k


def _check(fn: Function, loop: Operation, target: Target) -> None:
    sched = loop.attrs["schedule"]
    nw = int(fn.attrs.get("num_warps", 4))
    if nw != WAVES[sched]:
        raise ScheduleError(loop, f"schedule = {sched!r} is made for {WAVES[sched]} waves per workgroup; this "
                                  f"kernel has num_warps = {nw} (launch it with num_warps={WAVES[sched]})")
    dots = mfma_dots(loop)
    if not dots:
        got = [o.attrs.get("atom", "?") for o in loop.regions[0].ops if o.name == "dot"]
        raise ScheduleError(loop, f"schedule = {sched!r} orders the MFMAs of the dots directly in the loop's "
                                  f"body, and this loop has " + (f"none on MFMA (atoms: {got})" if got else "no dot"))
    if sched == "interleave":
        if "phases" in loop.attrs:
            raise ScheduleError(loop, "phases applies to schedule = 'pingpong' only")
        return
    phases = int(loop.attrs.setdefault("phases", DEFAULT_PHASES))
    fewest = min(k_steps(d, target) for d in dots)
    if phases > fewest:
        raise ScheduleError(loop, f"phases = {phases}: a dot of this loop has only {fewest} k steps of "
                                  f"{dots[0].attrs['atom']} to cut into MFMA clusters")


@register("schedule_amd")
def schedule_amd(m: Module, target: Target) -> Module:
    """Check and complete every loop's `schedule` request (see the module doc)."""
    for fn in m.functions:
        for op in fn.walk():
            if op.name == "for" and "schedule" in op.attrs:
                _check(fn, op, target)
    return m
