"""Module verification: every op's own rules (from `ir/ops.py`) plus the structural ones —
known op names, operands defined before use in an enclosing scope, terminators where they belong."""
from __future__ import annotations

from .core import Block, Function, Module, Operation
from .errors import VerifyError
from .ops import OPS


def verify(m: Module | Function) -> None:
    """Raise VerifyError naming the op, its location and the broken rule; return None if the IR is valid."""
    for f in (m.functions if isinstance(m, Module) else [m]):
        _verify_block(f.body, set(), top=True)


def _verify_block(b: Block, visible: set, top: bool = False):
    visible = set(visible) | {id(a) for a in b.args}
    for i, op in enumerate(b.ops):
        d = OPS.get(op.name)
        if d is None:
            raise VerifyError(op, "unknown op")
        for k, v in enumerate(op.operands):
            if id(v) not in visible:
                raise VerifyError(op, f"operand {k} ({v.name or '?'}: {v.type}) is used before it is defined "
                                      f"or outside its scope")
        if len(op.regions) != d.regions:
            raise VerifyError(op, f"expects {d.regions} regions, got {len(op.regions)}")
        if d.terminator and (top or i != len(b.ops) - 1):
            raise VerifyError(op, "a terminator must be the last op of a region")
        for r in op.regions:
            _verify_block(r, visible)
        try:
            d.verify(op)
        except VerifyError:
            raise
        except Exception as e:     # a malformed op (wrong operand kinds) must still give a located error
            raise VerifyError(op, f"malformed op ({type(e).__name__}: {e})") from None
        visible |= {id(r) for r in op.results}


def verify_op(op: Operation) -> None:
    OPS[op.name].verify(op)
