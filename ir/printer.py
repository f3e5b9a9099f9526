"""The textual IR. `ir/grammar.lark` + `ir/parser.py` read exactly this text back.

    kernel @name(%A: tensor<?x?xbf16>, %n: i32) attributes {BM = 128} {
      %bm = block_id {axis = 0} : i32 loc("gemm.py":12:10)
      %acc = for %lo, %hi, %step, %init {stages = 3} : tile<128x128xf32> {
      ^(%k: i32, %acc_1: tile<128x128xf32>):
        ...
        yield %x
      }
      store %C, %i, %j, %acc
    }

Every op has this one generic form: results, name, operands, `{attributes}`, `: result types`,
regions in braces, `loc(...)`. Value names come from Python variable names where the front end
knew them, made unique; printing the parse of printed text gives the same text.
"""
from __future__ import annotations

import math

from .core import Block, Function, Module, Operation, Value
from .dtypes import DType

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quote(s: str) -> str:
    """A string literal of the IR: backslash and quote escaped, newline/tab/CR as \\n \\t \\r, any other
    non-printable character as \\xHH, \\uHHHH or \\UHHHHHHHH; the rest verbatim (UTF-8 text).
    `ir.parser` undoes exactly this."""
    out = []
    for c in s:
        e = _ESCAPES.get(c)
        if e is None and not c.isprintable() and c != " ":
            o = ord(c)
            e = f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"
        out.append(e or c)
    return '"' + "".join(out) + '"'


def format_attr(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, DType):
        return v.name
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_attr(x) for x in v) + "]"
    if v is None:
        return "none"
    raise TypeError(f"cannot print attribute value {v!r}")


def format_attrs(attrs: dict) -> str:
    if not attrs:
        return ""
    return "{" + ", ".join(f"{k} = {format_attr(v)}" for k, v in attrs.items()) + "}"


class _Namer:
    def __init__(self):
        self.names: dict[int, str] = {}
        self.used: set[str] = set()
        self.counter = 0

    def define(self, v: Value) -> str:
        base = _clean(v.name)
        if base is None:
            while str(self.counter) in self.used:
                self.counter += 1
            name = str(self.counter)
            self.counter += 1
        else:
            name, k = base, 1
            while name in self.used:
                name = f"{base}_{k}"
                k += 1
        self.used.add(name)
        self.names[id(v)] = name
        return "%" + name

    def __call__(self, v: Value) -> str:
        try:
            return "%" + self.names[id(v)]
        except KeyError:
            return "%<undefined>"


def _clean(name):
    if not name:
        return None
    s = "".join(c if ((c.isascii() and c.isalnum()) or c in "_.") else "_" for c in name)
    if s.isdigit() or not s[0].isalpha() and s[0] != "_":
        s = "v" + s
    return s


def print_module(m: Module) -> str:
    return "\n".join(print_function(f) for f in m.functions)


def print_function(f: Function) -> str:
    namer = _Namer()
    params = ", ".join(f"{namer.define(a)}: {a.type}" for a in f.args)
    head = f"kernel @{f.name}({params})"
    if f.attrs:
        head += " attributes " + format_attrs(f.attrs)
    if f.loc is not None:
        head += f" {format_loc(f.loc)}"
    lines = [head + " {"]
    _print_block_ops(f.body, namer, lines, 1)
    lines.append("}")
    return "\n".join(lines) + "\n"


def format_loc(loc) -> str:
    return f"loc({quote(loc.file)}:{loc.line}:{loc.col})"


def _print_block_ops(b: Block, namer: _Namer, lines: list, depth: int):
    for op in b.ops:
        _print_op(op, namer, lines, depth)


def _print_op(op: Operation, namer: _Namer, lines: list, depth: int):
    ind = "  " * depth
    operands = ", ".join(namer(v) for v in op.operands)
    res = ", ".join(namer.define(r) for r in op.results)
    s = ind + (res + " = " if res else "") + op.name
    if operands:
        s += " " + operands
    if op.attrs:
        s += " " + format_attrs(op.attrs)
    if op.results:
        s += " : " + ", ".join(str(r.type) for r in op.results)
    if not op.regions:
        if op.loc is not None:
            s += " " + format_loc(op.loc)
        lines.append(s)
        return
    lines.append(s + " {")
    for i, region in enumerate(op.regions):
        if i:
            lines.append(ind + "} {")
        if region.args:
            lines.append(ind + "^(" + ", ".join(f"{namer.define(a)}: {a.type}" for a in region.args) + "):")
        _print_block_ops(region, namer, lines, depth + 1)
    lines.append(ind + "}" + (" " + format_loc(op.loc) if op.loc is not None else ""))
