"""Python AST -> tile IR. The kernel function is never executed: its source is parsed and walked.

`compile_kernel(fn, params, arg_types, constexprs)` returns an IR Module with one Function whose
parameters are the kernel's tensor and scalar parameters (in order) and whose attributes are the
constexpr values. Expressions evaluate to runtime IR values or to compile-time Python values
(`dsl/values.py`); compile-time arithmetic folds in Python, and constants turn into IR where they meet
runtime values. Statements follow docs/language.md: runtime `for`/`while`/`if` become IR regions
carrying the variables they assign, constant conditions and `static_range` unroll or fold, `@tile.inline`
helpers are inlined. Every op carries the source location of the expression that made it; every
mistake is a `CompileError` pointing at it.

This file holds the walk itself (statements, expressions, calls, inlining); the rest is split by idea:
`source.py` (reading a function's AST), `control.py` (runtime loops and branches), `subscripts.py`,
`pybuiltins.py` (min/max/int/...), `builtins.py` (the IR of each `tile.*` builtin), `arith.py` (promotion,
broadcasting, constants), `values.py` (what expressions evaluate to).
"""
from __future__ import annotations

import ast
import builtins as _py
import inspect
import os
import types

from ..ir.builder import Builder
from ..ir.core import Function, Loc, Module, Value
from ..ir.dtypes import DType, i32
from ..ir.errors import VerifyError
from ..ir.ops import LOOP_SCHEDULE
from ..ir.printer import format_attr
from ..ir.types import ScalarType, TensorType, TileType
from . import builtins as B
from . import language as L
from .arith import Arith, fold_binary
from .control import ControlFlow
from .errors import CompileError, SemanticError
from .pybuiltins import PyBuiltins, _PY_ALLOWED, _is_py_builtin
from .signature import Param
from .source import Source, source_of
from .subscripts import Subscripts
from .values import (Method, TensorShape, Undefined, describe, is_number, is_scalar, is_shared, is_tensor, is_tile,
                     normalize_const)

LOOP_SCHEDULES = LOOP_SCHEDULE["schedule"].choices     # what tile.range(schedule=) takes

BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "truediv", ast.FloorDiv: "floordiv",
          ast.Mod: "rem", ast.Pow: "pow", ast.BitAnd: "and", ast.BitOr: "or", ast.BitXor: "xor",
          ast.LShift: "shl", ast.RShift: "shr"}
BINOP_TEXT = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
              ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>",
              ast.MatMult: "@"}
CMPOPS = {ast.Eq: "eq", ast.NotEq: "ne", ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge"}
PY_CMP = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
          "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b}

UNSUPPORTED_STMT = {
    ast.With: "`with` blocks are not supported in kernels",
    ast.AsyncWith: "`async with` is not supported in kernels",
    ast.Try: "`try` is not supported in kernels",
    ast.Raise: "`raise` is not supported in kernels (use tile.static_assert for compile-time checks)",
    ast.Break: "`break` is not supported in kernels (loops run their full range; use a `while` loop with a "
               "condition instead)",
    ast.Continue: "`continue` is not supported in kernels (put the rest of the body under an `if`)",
    ast.Delete: "`del` is not supported in kernels",
    ast.Global: "`global` is not supported in kernels",
    ast.Nonlocal: "`nonlocal` is not supported in kernels",
    ast.Import: "`import` inside a kernel is not supported (import at module level)",
    ast.ImportFrom: "`import` inside a kernel is not supported (import at module level)",
    ast.FunctionDef: "functions cannot be defined inside a kernel: define helpers at module level with @tile.inline",
    ast.AsyncFunctionDef: "async functions are not supported in kernels",
    ast.ClassDef: "classes cannot be defined inside a kernel",
    ast.AsyncFor: "`async for` is not supported in kernels",
}
if hasattr(ast, "TryStar"):
    UNSUPPORTED_STMT[ast.TryStar] = "`try` is not supported in kernels"
if hasattr(ast, "Match"):
    UNSUPPORTED_STMT[ast.Match] = "`match` is not supported in kernels (use if/elif)"

UNSUPPORTED_EXPR = {
    ast.Lambda: "lambda is not supported in kernels: define a helper at module level with @tile.inline",
    ast.ListComp: "list comprehensions are not supported in kernels (use tile.static_range or a tuple)",
    ast.SetComp: "set comprehensions are not supported in kernels",
    ast.DictComp: "dict comprehensions are not supported in kernels",
    ast.GeneratorExp: "generator expressions are not supported in kernels",
    ast.Dict: "dicts are not supported in kernels",
    ast.Set: "sets are not supported in kernels",
    ast.Await: "`await` is not supported in kernels",
    ast.Yield: "`yield` is not supported in kernels",
    ast.YieldFrom: "`yield` is not supported in kernels",
    ast.NamedExpr: "the walrus operator `:=` is not supported in kernels",
}


# ---------------------------------------------------------------- environment
class Env:
    """Variables in scope: name -> value, and name -> the AST node that last assigned it."""

    def __init__(self, vals=None, nodes=None):
        self.vals: dict = dict(vals or {})
        self.nodes: dict = dict(nodes or {})

    def copy(self) -> "Env":
        return Env(self.vals, self.nodes)

    def defined(self, name) -> bool:
        return name in self.vals and not isinstance(self.vals[name], Undefined)


class _Return(Exception):
    def __init__(self, value, node):
        self.value = value
        self.node = node


# ---------------------------------------------------------------- the front end
class FrontEnd(ControlFlow, Subscripts, PyBuiltins):
    def __init__(self, src: Source):
        self.src = src
        self.b = Builder(check=True)
        self.arith = Arith(self.b)
        self.env = Env()
        self.rt_depth = 0           # nesting depth of runtime control flow (regions)
        self.ret_depth = 0          # rt_depth at the start of the current function (kernel or inline helper)
        self.inline_stack: list = []
        self.node = None

    # ------------------------------------------------------------ errors and locations
    def loc(self, node) -> Loc:
        return Loc(self.src.short, node.lineno, node.col_offset + 1)

    def error(self, msg: str, node=None) -> CompileError:
        node = node or self.node
        if node is None or not hasattr(node, "lineno"):
            return CompileError(msg, self.src.file)
        end = node.end_col_offset + 1 if getattr(node, "end_lineno", None) == node.lineno else None
        return CompileError(msg, self.src.file, node.lineno, node.col_offset + 1, end)

    def _wrap(self, fn, node):
        """Run fn() for `node`: located ops, and every failure below it turned into a CompileError here."""
        saved = self.node
        self.node = node
        try:
            with self.b.located(self.loc(node)):
                return fn()
        except (CompileError, _Return):
            raise
        except SemanticError as e:
            raise self.error(e.msg, e.node or node) from None
        except VerifyError as e:
            raise self.error(f"invalid IR for op '{e.op.name}': {e.rule}", node) from None
        except RecursionError:
            raise self.error("the expression is nested too deeply", node) from None
        except Exception as e:   # a front-end bug: still point at the source, keep the cause for debugging
            err = self.error(f"internal compiler error: {type(e).__name__}: {e}", node)
            err.internal = True
            raise err from e
        finally:
            self.node = saved

    # ------------------------------------------------------------ the kernel
    def compile(self, params: list[Param], arg_types: dict, constexprs: dict, name: str | None = None) -> Module:
        node = self.src.node
        rt = [p for p in params if p.kind != "constexpr"]
        attrs = {}
        for p in params:
            if p.kind == "constexpr":
                attrs[p.name] = _attr_value(constexprs[p.name])
        f = Function(name or self.src.name, [arg_types[p.name] for p in rt], [p.name for p in rt], attrs,
                     self.loc(node))
        for p, v in zip(rt, f.args):
            self.env.vals[p.name] = v
        for p in params:
            if p.kind == "constexpr":
                self.env.vals[p.name] = normalize_const(constexprs[p.name])
        self.b.block = f.body
        try:
            self.stmts(node.body)
        except _Return as r:
            if r.value is not None:
                raise self.error("a kernel cannot return a value: write results with tile.store", r.node) from None
        from ..ir.verifier import verify
        try:
            verify(f)
        except VerifyError as e:
            loc = e.op.loc
            raise CompileError(f"internal compiler error: the front end made invalid IR: {e.rule} (op '{e.op.name}')",
                               self.src.file if loc else None, loc.line if loc else None,
                               loc.col if loc else None) from None
        return Module([f])

    # ------------------------------------------------------------ statements
    def stmts(self, body):
        for s in body:
            self.stmt(s)

    def stmt(self, node):
        self._wrap(lambda: self._stmt(node), node)

    def _stmt(self, node):
        m = getattr(self, "stmt_" + type(node).__name__, None)
        if m is None:
            msg = UNSUPPORTED_STMT.get(type(node), f"`{type(node).__name__}` statements are not supported in kernels")
            raise SemanticError(msg, node)
        m(node)

    def stmt_Pass(self, node):
        pass

    def stmt_Expr(self, node):
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return                                      # a docstring or a comment string
        self.expr(node.value)

    def stmt_Assign(self, node):
        v = self.expr(node.value)
        for t in node.targets:
            self.assign(t, v, node)

    def stmt_AnnAssign(self, node):
        if node.value is None:
            raise SemanticError("a declaration without a value is not supported (give it a value)", node)
        v = normalize_const(self.expr(node.value))
        ann = self.expr(node.annotation)
        if isinstance(ann, DType):             # `x: tile.f32 = 0` makes a runtime value of that dtype
            v = self._wrap(lambda: self.arith.const(v, ann) if is_number(v) else self.arith.cast(v, ann), node.value)
        self.assign(node.target, v, node)

    def stmt_AugAssign(self, node):
        t = node.target
        if isinstance(t, ast.Name):
            cur = self.lookup(t.id, t)
            rhs = self.expr(node.value)
            v = self._wrap(lambda: self.binop(node.op, cur, rhs, node), node)
            self.assign(t, v, node)
        elif isinstance(t, ast.Subscript):
            obj = self.expr(t.value)
            if not is_tensor(obj):
                raise SemanticError(f"cannot update an element of {describe(obj)} in place"
                                    + (": tiles are values (use tile.where or build a new tile)" if is_tile(obj) else ""), t)
            idx = self.index_tuple(t.slice)
            cur = self._wrap(lambda: self.load_element(obj, idx, t), t)
            rhs = self.expr(node.value)
            v = self._wrap(lambda: self.binop(node.op, cur, rhs, node), node)
            self._wrap(lambda: self.store_element(obj, idx, v, t), node)
        else:
            raise SemanticError("only variables and tensor elements can be updated in place", t)

    def stmt_Assert(self, node):
        c = self.expr(node.test)
        if isinstance(c, Value):
            raise SemanticError("`assert` needs a compile-time condition (runtime asserts are not supported); "
                                "for constants use tile.static_assert", node.test)
        if not c:
            msg = self.expr(node.msg) if node.msg is not None else None
            raise SemanticError("assertion failed" + (f": {msg}" if msg is not None else ""), node.test)

    def stmt_Return(self, node):
        if self.rt_depth != self.ret_depth:
            raise SemanticError("`return` inside a runtime `if`/loop is not supported: return at the end", node)
        v = self.expr(node.value) if node.value is not None else None
        raise _Return(v, node)

    def stmt_If(self, node):
        c = normalize_const(self.expr(node.test))
        if not isinstance(c, Value):
            try:
                taken = bool(c)
            except Exception:
                raise SemanticError(f"cannot use {describe(c)} as a condition", node.test) from None
            self.stmts(node.body if taken else node.orelse)
            return
        cond = self._wrap(lambda: self.scalar_cond(c, "the condition of `if`"), node.test)
        self.runtime_if(node, cond)

    def stmt_For(self, node):
        if node.orelse:
            raise SemanticError("`for ... else` is not supported in kernels", node.orelse[0])
        it = node.iter
        if isinstance(it, ast.Call):
            f = self.expr(it.func)
            if f is _py.range or getattr(f, "__tile_builtin__", None) in ("range", "static_range"):
                args, kwargs, anodes, knodes = self.call_args(it)
                if f is _py.range:
                    if kwargs or not 1 <= len(args) <= 3:
                        raise SemanticError("range() takes 1 to 3 positional arguments", it)
                    a = B.bind("range", B.STUB_SIGS["static_range"], it, args, {}, anodes, {})
                    kind = "range"
                else:
                    kind = f.__tile_builtin__
                    a = B.bind(kind, B.STUB_SIGS[kind], it, args, kwargs, anodes, knodes)
                lo, hi, step = a["lo"], a["hi"], a["step"]
                if hi is None:
                    lo, hi = 0, lo
                if kind == "static_range":
                    for k in ("lo", "hi", "step"):
                        v = normalize_const(a[k])
                        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                            raise a.err(k, f"static_range needs compile-time integer bounds, got {describe(v)}"
                                        + (" (use tile.range for a runtime loop)" if isinstance(v, Value) else ""))
                    lo, hi, step = normalize_const(lo), normalize_const(hi), normalize_const(step)
                    if step == 0:
                        raise a.err("step", "step must not be zero")
                    self.unrolled_for(node, _py.range(lo, hi, step))
                    return
                stages = a.get("stages")
                if stages is not None:
                    stages = B.const_int(a, "stages")
                    if stages < 1:
                        raise a.err("stages", f"stages must be >= 1, got {stages}")
                ws = normalize_const(a.get("warp_specialize", False))
                if not isinstance(ws, bool):
                    raise a.err("warp_specialize", f"warp_specialize must be a compile-time bool, got {describe(ws)}")
                if ws and (stages is None or stages < 2):
                    raise a.err("warp_specialize", "warp_specialize=True needs a pipelined loop (stages >= 2)")
                pingpong = normalize_const(a.get("pingpong", False))
                if not isinstance(pingpong, bool):
                    raise a.err("pingpong", f"pingpong must be a compile-time bool, got {describe(pingpong)}")
                if pingpong and not ws:
                    raise a.err("pingpong", "pingpong=True is a schedule of warp-specialized consumer warpgroups: "
                                            "it needs warp_specialize=True")
                schedule = normalize_const(a.get("schedule"))
                if schedule is not None and schedule not in LOOP_SCHEDULES:
                    raise a.err("schedule", f"schedule must be one of {', '.join(map(repr, LOOP_SCHEDULES))} "
                                            f"or None, got {describe(schedule)}")
                self.runtime_for(node, a, lo, hi, step, stages, ws, schedule, pingpong)
                return
        seq = self.expr(it)
        if isinstance(seq, TensorShape):
            seq = self._wrap(seq.items, it)
        if isinstance(seq, (tuple, list)):
            self.unrolled_for(node, seq)
            return
        raise SemanticError(f"cannot iterate over {describe(seq)}: loop with range/tile.range (runtime) or "
                            f"tile.static_range (unrolled), or over a tuple", it)

    def stmt_While(self, node):
        if node.orelse:
            raise SemanticError("`while ... else` is not supported in kernels", node.orelse[0])
        self.runtime_while(node)

    # ------------------------------------------------------------ assignment
    def assign(self, target, v, stmt_node):
        if isinstance(target, ast.Name):
            if isinstance(v, Value) and v.name is None and not is_tensor(v):
                v.name = target.id
            self.env.vals[target.id] = v
            self.env.nodes[target.id] = stmt_node
        elif isinstance(target, (ast.Tuple, ast.List)):
            if any(isinstance(e, ast.Starred) for e in target.elts):
                raise SemanticError("starred assignment is not supported", target)
            if isinstance(v, TensorShape):
                v = self._wrap(v.items, target)
            if not isinstance(v, (tuple, list)):
                raise SemanticError(f"cannot unpack {describe(v)}", target)
            if len(v) != len(target.elts):
                raise SemanticError(f"cannot unpack {len(v)} values into {len(target.elts)} names", target)
            for t, x in zip(target.elts, v):
                self.assign(t, x, stmt_node)
        elif isinstance(target, ast.Subscript):
            obj = self.expr(target.value)
            if is_tensor(obj):
                idx = self.index_tuple(target.slice)
                self._wrap(lambda: self.store_element(obj, idx, v, target), stmt_node)
            elif is_shared(obj):
                idx = self.expr(target.slice)
                def go():
                    s = self.subview(obj, idx)
                    fn, sig = B.METHODS[("shared", "store")]
                    fn(self, B.Args("store", target, {"value": v}, {}, s))
                self._wrap(go, stmt_node)
            elif is_tile(obj):
                raise SemanticError("tiles are values and cannot be assigned element by element: "
                                    "build the new tile with tile.where", target)
            else:
                raise SemanticError(f"cannot assign into {describe(obj)}", target)
        elif isinstance(target, ast.Attribute):
            raise SemanticError("cannot assign to an attribute in a kernel", target)
        else:
            raise SemanticError(f"cannot assign to {type(target).__name__}", target)

    # ------------------------------------------------------------ expressions
    def expr(self, node):
        return self._wrap(lambda: self._expr(node), node)

    def _expr(self, node):
        m = getattr(self, "expr_" + type(node).__name__, None)
        if m is None:
            msg = UNSUPPORTED_EXPR.get(type(node), f"`{type(node).__name__}` expressions are not supported in kernels")
            raise SemanticError(msg, node)
        return m(node)

    def expr_Constant(self, node):
        return node.value

    def expr_Name(self, node):
        return self.lookup(node.id, node)

    def lookup(self, name, node):
        if name in self.env.vals:
            v = self.env.vals[name]
            if isinstance(v, Undefined):
                raise SemanticError(v.msg, node)
            return v
        if name in self.src.closure:
            return normalize_const(self.src.closure[name])
        if name in self.src.globals:
            return normalize_const(self.src.globals[name])
        if hasattr(_py, name):
            if name in _PY_ALLOWED:
                return getattr(_py, name)
            raise SemanticError(f"the Python builtin '{name}' is not supported in kernels", node)
        raise SemanticError(f"name '{name}' is not defined", node)

    def starred(self, e: ast.Starred):
        """The values `*x` spreads: a tuple, a list or a tensor's shape."""
        v = self.expr(e.value)
        if isinstance(v, TensorShape):
            v = self._wrap(v.items, e)
        if not isinstance(v, (tuple, list)):
            raise SemanticError(f"cannot unpack {describe(v)} with *", e)
        return v

    def expr_Tuple(self, node):
        out = []
        for e in node.elts:
            if isinstance(e, ast.Starred):
                out.extend(self.starred(e))
            else:
                out.append(self.expr(e))
        return tuple(out)

    expr_List = expr_Tuple

    def expr_JoinedStr(self, node):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            else:
                x = self.expr(v.value)
                spec = self.expr(v.format_spec) if v.format_spec is not None else ""
                if v.conversion == ord("r"):
                    x = repr(x)
                parts.append(format(self.show(x), spec) if isinstance(x, Value) else format(x, spec))
        return "".join(parts)

    def show(self, x) -> str:
        """A compile-time rendering (static_print, f-strings): values show their type."""
        if isinstance(x, Value):
            return f"<{x.name or 'value'}: {x.type}>"
        if isinstance(x, tuple):
            return "(" + ", ".join(self.show(e) for e in x) + ("," if len(x) == 1 else "") + ")"
        return str(x)

    def expr_BinOp(self, node):
        a = self.expr(node.left)
        b = self.expr(node.right)
        return self.binop(node.op, a, b, node)

    def binop(self, op, a, b, node):
        a, b = normalize_const(a), normalize_const(b)
        if isinstance(op, ast.MatMult):
            raise SemanticError("`@` is not supported: use tile.dot(a, b) (it accumulates in f32)", node)
        name = BINOPS[type(op)]
        if isinstance(a, TensorShape):
            a = a.items()
        if isinstance(b, TensorShape):
            b = b.items()
        if isinstance(a, tuple) or isinstance(b, tuple):
            if name == "add" and isinstance(a, tuple) and isinstance(b, tuple):
                return a + b
            if name == "mul" and isinstance(a, tuple) and isinstance(b, int):
                return a * b
            raise SemanticError(f"unsupported operand types for {BINOP_TEXT[type(op)]}: {describe(a)} and {describe(b)}",
                                node)
        if isinstance(a, str) and isinstance(b, str) and name == "add":
            return a + b
        for x in (a, b):
            if not (is_number(x) or is_scalar(x) or is_tile(x)):
                extra = ": load it into registers first (.load())" if is_shared(x) else \
                    ": load from it with tile.load" if is_tensor(x) else ""
                raise SemanticError(f"unsupported operand for {BINOP_TEXT[type(op)]}: {describe(x)}{extra}", node)
        if is_number(a) and is_number(b):
            return fold_binary(name, a, b)
        if name == "pow" and isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 3:
            r = a
            for _ in range(b - 1):
                r = self.arith.binary("mul", r, a)
            (r,) = self.arith.unify(r)
            return r
        try:
            return self.arith.binary(name, a, b)
        except SemanticError as e:
            if "do not broadcast" in e.msg:
                raise SemanticError(f"{BINOP_TEXT[type(op)]}: the shapes {_shape(a)} and {_shape(b)} do not "
                                    f"broadcast", node) from None
            raise

    def expr_UnaryOp(self, node):
        x = normalize_const(self.expr(node.operand))
        op = node.op
        if isinstance(op, ast.Not):
            if not isinstance(x, Value):
                return not x
            return self.arith.compare("eq", self.scalar_cond(x, "the operand of `not`"), False)
        if isinstance(x, TensorShape) or not (is_number(x) or is_scalar(x) or is_tile(x)):
            raise SemanticError(f"bad operand for unary operator: {describe(x)}", node)
        if isinstance(op, ast.UAdd):
            return x
        if isinstance(op, ast.USub):
            return -x if is_number(x) else self.arith.unary("neg", x)
        if isinstance(op, ast.Invert):
            if isinstance(x, bool):
                return not x
            if isinstance(x, int):
                return ~x
            if isinstance(x, float):
                raise SemanticError("~ needs an integer or a mask", node)
            return self.arith.unary("not", x)
        raise SemanticError("unsupported unary operator", node)

    def expr_BoolOp(self, node):
        is_and = isinstance(node.op, ast.And)
        result = None
        for i, e in enumerate(node.values):
            v = normalize_const(self.expr(e))
            if not isinstance(v, Value):
                if result is None:
                    # Python semantics while everything so far is constant
                    if is_and and not v:
                        return v
                    if not is_and and v:
                        return v
                    if i == len(node.values) - 1:
                        return v
                    continue
                # runtime so far: a constant that decides, or one that drops out
                if is_and and not v:
                    return False
                if not is_and and v:
                    return True
                continue
            if is_tile(v):
                raise SemanticError(f"`and`/`or` need scalars, got {v.type}: combine masks with & and |", e)
            c = self._wrap(lambda: self.scalar_cond(v, "an operand of `and`/`or`"), e)
            result = c if result is None else self.arith.binary("and" if is_and else "or", result, c)
        return result

    def expr_Compare(self, node):
        left = self.expr(node.left)
        out = None
        for op, right_node in zip(node.ops, node.comparators):
            right = self.expr(right_node)
            r = self.compare(op, left, right, node)
            if out is None:
                out = r
            elif isinstance(out, Value) or isinstance(r, Value):
                if not isinstance(out, Value):
                    out = r if out else False
                elif not isinstance(r, Value):
                    out = out if r else False
                else:
                    out = self.arith.binary("and", out, r)
            else:
                out = out and r
            left = right
        return out

    def compare(self, op, a, b, node):
        a, b = normalize_const(a), normalize_const(b)
        if isinstance(op, (ast.Is, ast.IsNot)):
            r = a is b
            return r if isinstance(op, ast.Is) else not r
        if isinstance(op, (ast.In, ast.NotIn)):
            if isinstance(a, Value) or isinstance(b, Value):
                raise SemanticError("`in` works on compile-time values only", node)
            if isinstance(b, TensorShape):
                raise SemanticError("`in` on a tensor's shape is not supported", node)
            r = a in b
            return r if isinstance(op, ast.In) else not r
        pred = CMPOPS[type(op)]
        if not isinstance(a, Value) and not isinstance(b, Value):
            if isinstance(a, TensorShape) or isinstance(b, TensorShape):
                raise SemanticError("cannot compare a tensor's shape at compile time (its sizes are runtime values)",
                                    node)
            try:
                return PY_CMP[pred](a, b)
            except TypeError:
                raise SemanticError(f"cannot compare {describe(a)} and {describe(b)}", node) from None
        for x in (a, b):
            if not (is_number(x) or is_scalar(x) or is_tile(x)):
                raise SemanticError(f"cannot compare {describe(x)}", node)
        try:
            return self.arith.compare(pred, a, b)
        except SemanticError as e:
            if "do not broadcast" in e.msg:
                raise SemanticError(f"comparison: the shapes {_shape(a)} and {_shape(b)} do not broadcast", node) from None
            raise

    def expr_IfExp(self, node):
        c = normalize_const(self.expr(node.test))
        if not isinstance(c, Value):
            return self.expr(node.body if c else node.orelse)
        cond = self._wrap(lambda: self.scalar_cond(c, "the condition of `x if c else y`"), node.test)
        a = normalize_const(self.expr(node.body))
        b = normalize_const(self.expr(node.orelse))
        return self.arith.select(cond, a, b)

    def expr_Attribute(self, node):
        obj = self.expr(node.value)
        return self.attribute(obj, node.attr, node)

    def attribute(self, obj, attr, node):
        if isinstance(obj, Value):
            t = obj.type
            if attr == "dtype":
                return t.dtype
            if attr == "shape":
                if isinstance(t, TensorType):
                    return TensorShape(obj, lambda ax: self.b.value("dim", [obj], ScalarType(i32), {"axis": ax}))
                return tuple(t.shape) if isinstance(t, TileType) else ()
            if attr == "ndim":
                return t.rank if isinstance(t, (TensorType, TileType)) else 0
            if attr == "T":
                if not is_tile(obj):
                    raise SemanticError(f".T needs a register tile, got {describe(obj)}", node)
                return B.transpose(self, obj, reversed(range(t.rank)))
            kind = B.receiver_kind(obj)
            if (kind, attr) in B.METHODS:
                return Method(obj, attr)
            raise SemanticError(f"{describe(obj)} has no attribute '{attr}'", node)
        if isinstance(obj, TensorShape):
            raise SemanticError(f"a tensor's shape has no attribute '{attr}'", node)
        if isinstance(obj, (Method, Undefined)):
            raise SemanticError(f"{describe(obj)} has no attribute '{attr}'", node)
        try:
            return normalize_const(getattr(obj, attr))
        except AttributeError:
            what = f"module '{obj.__name__}'" if isinstance(obj, types.ModuleType) else describe(obj)
            raise SemanticError(f"{what} has no attribute '{attr}'{_did_you_mean(obj, attr)}", node) from None

    # ------------------------------------------------------------ calls
    def call_args(self, node):
        args, anodes, kwargs, knodes = [], [], {}, {}
        starred = False
        for e in node.args:
            if isinstance(e, ast.Starred):
                args.extend(self.starred(e))
                starred = True
            else:
                args.append(self.expr(e))
                anodes.append(e)
        for k in node.keywords:
            if k.arg is None:
                raise SemanticError("**kwargs in calls is not supported in kernels", k)
            kwargs[k.arg] = self.expr(k.value)
            knodes[k.arg] = k.value
        return args, kwargs, (None if starred else anodes), knodes

    def expr_Call(self, node):
        f = self.expr(node.func)
        args, kwargs, anodes, knodes = self.call_args(node)
        return self.call(f, node, args, kwargs, anodes, knodes)

    def call(self, f, node, args, kwargs, anodes, knodes):
        name = getattr(f, "__tile_builtin__", None)
        if name is not None:
            emit = B.BUILTINS.get(name)
            if emit is None:
                raise SemanticError(f"tile.{name}() is not supported yet", node)
            a = B.bind(name, B.STUB_SIGS[name], node, args, kwargs, anodes, knodes)
            return emit(self, a)
        if isinstance(f, Method):
            emit, sig = B.METHODS[(B.receiver_kind(f.recv), f.name)]
            a = B.bind(f.name, sig, node, args, kwargs, anodes, knodes, recv=f.recv)
            return emit(self, a)
        if isinstance(f, L.InlineFunction):
            return self.inline(f, node, args, kwargs)
        if f is _py.range:
            raise SemanticError("range() can only be the iterable of a `for` loop", node)
        if _is_py_builtin(f):
            return self.py_builtin(f, node, args, kwargs)
        if isinstance(f, DType):
            raise SemanticError(f"a dtype is not callable: convert with x.astype(tile.{f.name})", node)
        if isinstance(f, TensorShape) or isinstance(f, Value):
            raise SemanticError(f"{describe(f)} is not callable", node)
        mod = getattr(f, "__module__", "") or ""
        consts = [normalize_const(x) for x in args] + [normalize_const(x) for x in kwargs.values()]
        if callable(f) and (mod == "math" or mod.startswith("tile.ir.layout")) and \
                not any(isinstance(x, Value) for x in consts):
            try:
                return normalize_const(f(*args, **kwargs))
            except Exception as e:
                raise SemanticError(f"{getattr(f, '__name__', 'call')}() failed at compile time: {e}", node) from None
        fname = getattr(f, "__name__", None)
        if inspect.isfunction(f):
            raise SemanticError(f"cannot call the plain Python function '{fname}' in a kernel: mark it @tile.inline "
                                f"to inline it", node)
        raise SemanticError(f"cannot call {describe(f) if fname is None else repr(fname)} in a kernel", node)

    def inline(self, f: L.InlineFunction, node, args, kwargs):
        if f in self.inline_stack:
            raise SemanticError(f"recursive call of the inline function '{f.fn.__name__}'", node)
        src = source_of(f.fn)
        sig = inspect.signature(f.fn)
        try:
            ba = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise SemanticError(f"{f.fn.__name__}(): {e}", node) from None
        ba.apply_defaults()
        saved = (self.src, self.env, self.ret_depth, self.node)
        self.inline_stack.append(f)
        self.src, self.env, self.ret_depth = src, Env(), self.rt_depth
        for k, v in ba.arguments.items():
            self.env.vals[k] = v
            self.env.nodes[k] = src.node
        try:
            self.stmts(src.node.body)
            return None
        except _Return as r:
            return r.value
        except CompileError as e:
            # point at the call too: the error is inside the helper
            e.args = (str(e) + f"\n  (inlined at {_loc_text(saved[0], node)})",)
            raise
        finally:
            self.inline_stack.pop()
            self.src, self.env, self.ret_depth, self.node = saved


# ---------------------------------------------------------------- helpers
def _loc_text(src: Source, node) -> str:
    return f"{os.path.basename(src.file)}:{node.lineno}:{node.col_offset + 1}"


def _shape(x):
    if is_tile(x):
        return x.type.shape
    return ()


def _did_you_mean(obj, attr: str) -> str:
    """"; did you mean 'load'?" for a misspelled name of the language namespace (the `tile` module,
    or tile.dsl.language), from the builtin, dtype and other public names; else ""."""
    if not isinstance(obj, types.ModuleType) or obj.__name__ not in ("tile", L.__name__):
        return ""
    import difflib
    names = set(L.BUILTIN_NAMES) | set(L.DTYPE_NAMES) | {"constexpr", "Tensor", "inline", "cdiv", "dtype"}
    close = [n for n in sorted(names) if n.lower() == attr.lower()] or \
        difflib.get_close_matches(attr, sorted(names), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _attr_value(v):
    """A constexpr value as a function attribute (printable IR); others are recorded by repr."""
    v = normalize_const(v)
    if isinstance(v, tuple):
        v = list(v)
    try:
        format_attr(v)
        return v
    except TypeError:
        return repr(v)


def compile_kernel(fn, params: list[Param], arg_types: dict, constexprs: dict, name: str | None = None) -> Module:
    """Compile the Python kernel `fn` for the given parameter types and constexpr values."""
    fe = FrontEnd(source_of(fn))
    return fe.compile(params, arg_types, constexprs, name)
