"""The IR's data structures: values, operations, blocks, functions, modules, source locations.

An operation has operands, results, attributes and regions; a region is one `Block` with arguments
(structured control flow: `for`, `if`, `while` carry their bodies as regions). What each op name
means — its verifier, interpreter rule and lowering — hangs off its definition in `ir/ops.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from .types import Type


@dataclass(frozen=True)
class Loc:
    """A source location: file, 1-based line and column."""
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class Value:
    """An SSA value: the result of an op or an argument of a block."""
    __slots__ = ("type", "name", "owner", "index")

    def __init__(self, type: Type, name: str | None = None, owner=None, index: int = 0):
        self.type = type
        self.name = name          # a hint for the printer (a Python variable name); not identity
        self.owner = owner        # the defining Operation, or the Block for block arguments
        self.index = index

    def __repr__(self) -> str:
        return f"Value({self.name or '?'}: {self.type})"


class Operation:
    """One op. `name` selects its definition in `ir.ops.OPS`, which also names its operands:
    `op.tensor`, `op.indices`, `op.mask` ... read the flat `op.operands` list by those names."""
    __slots__ = ("name", "operands", "results", "attrs", "regions", "loc", "parent")

    def __init__(self, name: str, operands=(), result_types=(), attrs=None, regions=(), loc: Loc | None = None,
                 result_names=None):
        self.name = name
        self.operands: list[Value] = list(operands)
        names = list(result_names or [None] * len(result_types))
        self.results: list[Value] = [Value(t, n, self, i) for i, (t, n) in enumerate(zip(result_types, names))]
        self.attrs: dict = dict(attrs or {})
        self.regions: list[Block] = list(regions)
        for r in self.regions:
            r.parent = self
        self.loc = loc
        self.parent: Block | None = None

    def __getattr__(self, key: str):
        """A named operand of the op's definition (`op.mask`, `op.indices`, ...; see ir/ops.py): a
        Value, a list for a variadic group, None for an absent optional operand."""
        if key.startswith("_") or key in Operation.__slots__:
            raise AttributeError(key)
        from .ops import OPS, OperandError
        d = OPS.get(self.name)
        if d is None:
            raise AttributeError(f"op '{self.name}' is not a defined op: it has no operand '{key}'")
        if key not in d.operand_names:
            raise AttributeError(f"op '{self.name}' has no operand '{key}'; its operands are ({d.signature})")
        try:
            return d.bind(self.operands, [v.type for v in self.operands])[key]
        except OperandError as e:
            raise ValueError(f"{self.where()}{e}") from None

    @property
    def result(self) -> Value:
        if len(self.results) != 1:
            raise ValueError(f"op '{self.name}' has {len(self.results)} results, not 1")
        return self.results[0]

    def where(self) -> str:
        return f"{self.loc}: " if self.loc else ""

    def walk(self) -> Iterator["Operation"]:
        """This op and every op nested in its regions, in program order (iterative, no recursion limit)."""
        stack = [self]
        while stack:
            op = stack.pop()
            yield op
            for region in reversed(op.regions):
                stack.extend(reversed(region.ops))

    def __repr__(self) -> str:
        return f"<op {self.name} at {self.loc}>"


class Block:
    """A straight-line list of ops with typed arguments; the body of a function or a region."""
    __slots__ = ("args", "ops", "parent")

    def __init__(self, arg_types=(), arg_names=None):
        names = list(arg_names or [None] * len(arg_types))
        self.args: list[Value] = [Value(t, n, self, i) for i, (t, n) in enumerate(zip(arg_types, names))]
        self.ops: list[Operation] = []
        self.parent: Operation | Function | None = None

    def append(self, op: Operation) -> Operation:
        op.parent = self
        self.ops.append(op)
        return op

    def insert(self, index: int, op: Operation) -> Operation:
        op.parent = self
        self.ops.insert(index, op)
        return op

    def add_arg(self, t: Type, name: str | None = None) -> Value:
        v = Value(t, name, self, len(self.args))
        self.args.append(v)
        return v

    def walk(self) -> Iterator[Operation]:
        for op in self.ops:
            yield from op.walk()


class Function:
    """A kernel: named, with typed parameters (the body block's arguments) and attributes
    (the compile-time constants it was specialized on, the number of warps, ...)."""

    def __init__(self, name: str, arg_types=(), arg_names=None, attrs=None, loc: Loc | None = None):
        self.name = name
        self.body = Block(arg_types, arg_names)
        self.body.parent = self
        self.attrs: dict = dict(attrs or {})
        self.loc = loc

    @property
    def args(self) -> list[Value]:
        return self.body.args

    def walk(self) -> Iterator[Operation]:
        return self.body.walk()


class Module:
    """A list of functions (kernels)."""

    def __init__(self, functions=()):
        self.functions: list[Function] = list(functions)

    def get(self, name: str) -> Function:
        for f in self.functions:
            if f.name == name:
                return f
        raise KeyError(f"no kernel named {name!r} in the module")

    def __str__(self) -> str:
        from .printer import print_module
        return print_module(self)
