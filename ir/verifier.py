"""Module verification: every op's own rules (from `ir/ops.py`: operand signature, attribute types, the op's
verify function, result types against its type inference) plus the structural ones — known op names,
operands defined before use in an enclosing scope, terminators where they belong, well-formed types
(a layout annotation must fit its tile) of parameters, results and region arguments."""
from __future__ import annotations

from .core import Block, Function, Module, Operation
from .errors import VerifyError
from .ops import OPS, check_op, type_problem


def verify(m: Module | Function) -> None:
    """Raise VerifyError naming the op, its location and the broken rule; return None if the IR is valid."""
    for f in (m.functions if isinstance(m, Module) else [m]):
        for a in f.args:
            p = type_problem(a.type)
            if p:
                raise VerifyError(f, f"parameter %{a.name or a.index}: {a.type}: {p}")
        _verify_function_attrs(f)
        _verify_block(f.body, set(), top=True)


def _verify_function_attrs(f: Function) -> None:
    """`divisible` (and `any_strides`): lists of tensor parameter names -- the launch checks their facts."""
    from .types import TensorType
    tensors = {a.name or f"arg{a.index}" for a in f.args if isinstance(a.type, TensorType)}
    for key in ("divisible", "any_strides"):
        v = f.attrs.get(key)
        if v is None:
            continue
        if not isinstance(v, list) or any(not isinstance(x, str) or x not in tensors for x in v):
            raise VerifyError(f, f"function attribute {key} = {v!r} must list tensor parameters "
                                 f"(of {sorted(tensors)})")


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
            for a in r.args:
                p = type_problem(a.type)
                if p:
                    raise VerifyError(op, f"region argument {a.type}: {p}")
            _verify_block(r, visible)
        verify_op(op)
        visible |= {id(r) for r in op.results}


def verify_op(op: Operation) -> None:
    """The op's own rules (ir/ops.py `check_op`); any other exception of a malformed op becomes a
    located VerifyError too."""
    try:
        check_op(op)
    except VerifyError:
        raise
    except Exception as e:     # a malformed op (wrong operand kinds) must still give a located error
        raise VerifyError(op, f"malformed op ({type(e).__name__}: {e})") from None
