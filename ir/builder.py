"""Build IR: an insertion point, a current source location, and `create`."""
from __future__ import annotations

from contextlib import contextmanager

from .core import Block, Loc, Operation, Value
from .errors import VerifyError
from .ops import OPS, infer_results
from .verifier import verify_op


class Builder:
    """Appends ops to the current block. `loc` is stamped on every op created while it is set.

    Each op is verified as it is created, so a mistake surfaces at the line that made it. Result
    types may be left out where the op's definition infers them.
    """

    def __init__(self, block: Block | None = None, loc: Loc | None = None, check: bool = True):
        self.block = block
        self.loc = loc
        self.check = check

    @contextmanager
    def at(self, block: Block):
        """Temporarily append to `block` (e.g. a loop body)."""
        saved, self.block = self.block, block
        try:
            yield self
        finally:
            self.block = saved

    @contextmanager
    def located(self, loc: Loc | None):
        saved, self.loc = self.loc, loc if loc is not None else self.loc
        try:
            yield self
        finally:
            self.loc = saved

    def create(self, name: str, operands=(), result_types=None, attrs=None, regions=(), names=None) -> Operation:
        """Append op `name`. Without `result_types` (None) they are inferred from the operands and
        attributes (`OpDef.infer` in ir/ops.py); an op without inference then has no results."""
        if name not in OPS:
            raise KeyError(f"unknown op '{name}'")
        if result_types is None:
            result_types = infer_results(name, operands, attrs) or ()
        op = Operation(name, operands, result_types, attrs, regions, self.loc, names)
        if self.check:
            verify_op(op)
        self.block.append(op)
        return op

    def value(self, name: str, operands=(), result_type=None, attrs=None, hint: str | None = None) -> Value:
        """Create a one-result op and return its result (its type inferred if not given)."""
        if result_type is None:
            rts = infer_results(name, operands, attrs)
            if rts is None or len(rts) != 1:
                op = Operation(name, operands, (), attrs, (), self.loc)
                if OPS[name].infer is not None:
                    verify_op(op)            # the operands do not fit: say why
                raise VerifyError(op, "the result type cannot be inferred: give it")
            result_type = rts[0]
        return self.create(name, operands, [result_type], attrs, names=[hint]).results[0]
