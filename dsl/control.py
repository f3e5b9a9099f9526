"""Runtime control flow: `for`/`while` loops and `if` on runtime values become IR regions.

A variable assigned in a runtime loop and defined before it is carried: a region argument, yielded by
the body, a result of the loop. Its type must not change across iterations; a Python number carried in
is given the type the body makes of it (the body is compiled again with that guess). A runtime `if`
yields every variable either branch assigns (constants are materialized in the branch that has them).
Variables first assigned inside a loop, or in one branch only, are unavailable afterwards: using one is
an error naming the loop or `if`. Tuples are carried leaf by leaf; other compile-time values (dtypes,
strings, None) may not change in a runtime region.
"""
from __future__ import annotations

import ast

from ..ir.core import Block, Value
from ..ir.dtypes import bool_, i32
from ..ir.types import ScalarType, TileType, Type
from .analysis import assigned_names
from .arith import default_dtype
from .errors import SemanticError
from .values import Undefined, describe, is_number, is_scalar, is_tile, normalize_const

MAX_UNROLL = 4096


class ControlFlow:
    """Mixed into the FrontEnd: the compilation of loops and branches."""

    def unrolled_for(self, node, seq):
        if len(seq) > MAX_UNROLL:
            raise SemanticError(f"static loop of {len(seq)} iterations is too long to unroll (limit {MAX_UNROLL})",
                                node.iter)
        for x in seq:
            self.assign(node.target, x, node)
            self.stmts(node.body)

    def runtime_for(self, node, a, lo, hi, step, stages, warp_specialize=False, schedule=None, pingpong=False):
        if not isinstance(node.target, ast.Name):
            raise SemanticError("the variable of a runtime loop must be a single name", node.target)
        bounds = []
        for k, v in (("lo", lo), ("hi", hi), ("step", step)):
            v = normalize_const(v)
            if isinstance(v, int) and not isinstance(v, bool):
                bounds.append(v)
            elif is_scalar(v) and v.type.dtype.is_int and v.type.dtype != bool_:
                bounds.append(v)
            else:
                raise a.err(k if k != "lo" or a["hi"] is not None else "lo",
                            f"loop bounds must be integer scalars, got {describe(v)}")
        if isinstance(bounds[2], int) and bounds[2] <= 0:
            raise a.err("step", f"the step of a runtime loop must be positive, got {bounds[2]}")
        iv_dt = self.arith.result_dtype(*bounds)
        if not iv_dt.is_int or iv_dt == bool_:
            iv_dt = i32
        iv_name = node.target.id

        def header():
            return [self.arith.scalar(x, iv_dt) for x in bounds]

        attrs = {"stages": stages} if stages is not None else {}
        if warp_specialize:
            attrs["warp_specialize"] = True
        if pingpong:
            attrs["pingpong"] = True
        if schedule is not None:
            attrs["schedule"] = schedule
        self.carried_region(node, kind="for", iv=(iv_name, ScalarType(iv_dt)), header=header, attrs=attrs)

    def runtime_while(self, node):
        self.carried_region(node, kind="while")

    def carried_region(self, node, kind, iv=None, header=None, attrs=None):
        """Compile a runtime `for` (iv, header) or `while` whose body may reassign variables of the enclosing
        scope: every variable assigned in the body and defined before the loop is carried (a loop argument,
        yielded by the body, a result of the loop). Python numbers carried in are retyped as needed."""
        body_names = assigned_names(node.body)
        exclude = {iv[0]} if iv else set()
        names = [n for n in body_names if n not in exclude and self.env.defined(n)]
        pre = {n: self.env.vals[n] for n in names}
        specs = {n: _flatten(pre[n]) for n in names}
        # leaf slots: (name, index in leaves) for runtime leaves
        slots = []
        guess = []
        for n in names:
            leaves, _ = specs[n]
            for i, x in enumerate(leaves):
                t = _leaf_type(x)
                if t is not None:
                    slots.append((n, i))
                    guess.append(t)
        for attempt in range(len(slots) + 2):
            result = self._try_loop(node, kind, iv, names, pre, specs, slots, guess)
            if isinstance(result, list):        # new guesses: retry
                guess = result
                continue
            break
        else:
            raise SemanticError("internal: loop-carried types do not settle", node)
        (regions,) = result
        # initial values, in the enclosing block
        inits = []
        for (n, i), t in zip(slots, guess):
            x = specs[n][0][i]
            try:
                inits.append(self.arith.to_type(x, t))
            except SemanticError:
                raise SemanticError(f"loop-carried variable '{n}' changes type: {describe(x)} before the loop, "
                                    f"{t} in the loop", self.env.nodes.get(n, node)) from None
        rnames = [n for n, _ in slots]
        if kind == "for":
            ops = header() + inits
            op = self.b.create("for", ops, guess, attrs or {}, [regions[0]], names=rnames)
        else:
            op = self.b.create("while", inits, guess, {}, regions, names=rnames)
        results = list(op.results)
        # rebind: carried names to results, names first assigned in the body become unavailable
        it = iter(results)
        res_by_slot = {s: next(it) for s in slots}
        for n in names:
            leaves, tree = specs[n]
            new = [res_by_slot.get((n, i), x) for i, x in enumerate(leaves)]
            self.env.vals[n] = _unflatten(tree, new)
        where = f"line {node.lineno}"
        for n in body_names:
            if n in exclude:
                self.env.vals[n] = Undefined(f"'{n}' is the variable of the runtime loop at {where}; it is not "
                                             f"available after the loop")
            elif n not in names:
                self.env.vals[n] = Undefined(f"'{n}' is first assigned inside the loop at {where}, so it is not "
                                             f"available after it: assign it before the loop to carry it")

    def _try_loop(self, node, kind, iv, names, pre, specs, slots, guess):
        """Build the loop's region(s) with the guessed carried types. Returns (regions,) on success, or a new
        list of guesses when a carried Python number must take another type."""
        saved_env, saved_block = self.env, self.b.block
        arg_names = [n for n, _ in slots]

        def bind_args(env, args):
            it = iter(args)
            by_slot = {s: next(it) for s in slots}
            for n in names:
                leaves, tree = specs[n]
                env.vals[n] = _unflatten(tree, [by_slot.get((n, i), x) for i, x in enumerate(leaves)])

        regions = []
        self.rt_depth += 1
        try:
            if kind == "while":
                before = Block(guess, arg_names)
                self.env = saved_env.copy()
                bind_args(self.env, before.args)
                self.b.block = before
                c = normalize_const(self.expr(node.test))
                if not isinstance(c, Value):
                    raise SemanticError(f"the condition of a runtime `while` must be a runtime value, got "
                                        f"{describe(c)}" + (" (an endless loop: `break` is not supported)" if c else
                                                            " (the loop never runs: remove it)"), node.test)
                cv = self._wrap(lambda: self.scalar_cond(c, "the condition of `while`"), node.test)
                self.b.create("condition", [cv, *before.args])
                regions.append(before)
                body = Block(guess, arg_names)
            else:
                body = Block([iv[1]] + guess, [iv[0]] + arg_names)
            self.env = saved_env.copy()
            if kind == "for":
                self.env.vals[iv[0]] = body.args[0]
                self.env.nodes[iv[0]] = node
                bind_args(self.env, body.args[1:])
            else:
                bind_args(self.env, body.args)
            self.b.block = body
            self.stmts(node.body)
            after = self.env
            # the values the body yields, checked against the carried types
            new_guess = list(guess)
            retry = False
            outs = []
            for k, ((n, i), t) in enumerate(zip(slots, guess)):
                leaves, tree = _flatten(after.vals.get(n))
                if tree != specs[n][1]:
                    raise SemanticError(f"loop-carried variable '{n}' changes from {describe(pre[n])} to "
                                        f"{describe(after.vals.get(n))} in the loop", after.nodes.get(n, node))
                x = leaves[i]
                if isinstance(x, Value) and x.type != t:
                    init = specs[n][0][i]
                    if is_number(init) and isinstance(x.type, (ScalarType, TileType)) and x.type.space == "reg" \
                            and x.type.layout is None:
                        new_guess[k] = x.type
                        retry = True
                        continue
                    raise SemanticError(f"loop-carried variable '{n}' changes type: {t} before the loop, {x.type} "
                                        f"after an iteration (convert it with .astype to keep one type)",
                                        after.nodes.get(n, node))
                outs.append((n, x, t))
            # compile-time leaves must not change
            carried = set(slots)
            for n in names:
                leaves, _ = _flatten(after.vals.get(n))
                for i, (x0, x1) in enumerate(zip(specs[n][0], leaves)):
                    if (n, i) not in carried and not _same_static(x0, x1):
                        raise SemanticError(f"'{n}' is a compile-time value ({describe(x0)}) that the loop changes to "
                                            f"{describe(x1)}; only numbers and tiles can be carried by a runtime loop",
                                            after.nodes.get(n, node))
            if retry:
                return new_guess
            ys = []
            for n, x, t in outs:
                ys.append(self._wrap(lambda: self.arith.to_type(x, t), after.nodes.get(n, node)))
            self.b.create("yield", ys)
            regions.append(body)
            return (regions,)
        finally:
            self.rt_depth -= 1
            self.env, self.b.block = saved_env, saved_block

    def runtime_if(self, node, cond: Value):
        names = assigned_names(node.body + node.orelse)
        saved_env, saved_block = self.env, self.b.block
        envs, blocks = [], []
        self.rt_depth += 1
        try:
            for body in (node.body, node.orelse):
                blk = Block()
                self.env = saved_env.copy()
                self.b.block = blk
                self.stmts(body)
                envs.append(self.env)
                blocks.append(blk)
        finally:
            self.rt_depth -= 1
            self.env, self.b.block = saved_env, saved_block
        then_env, else_env = envs
        merged = {}                  # name -> (tree, [leaf merge spec])
        yields = ([], [])
        types = []
        results_for = []             # (name, leaf index)
        for n in names:
            a, b = then_env.vals.get(n), else_env.vals.get(n)
            da, db = then_env.defined(n), else_env.defined(n)
            if not (da and db):
                if da or db:
                    branch = "then" if da else "else"
                    self.env.vals[n] = Undefined(
                        f"'{n}' is assigned only in the {branch}-branch of the `if` at line {node.lineno} and used "
                        f"after it: assign it in both branches or before the `if`")
                else:
                    self.env.vals[n] = Undefined(f"'{n}' is not available after the `if` at line {node.lineno}")
                continue
            la, ta = _flatten(a)
            lb, tb = _flatten(b)
            where = then_env.nodes.get(n) or else_env.nodes.get(n) or node
            if ta != tb:
                raise SemanticError(f"'{n}' is {describe(a)} after the then-branch but {describe(b)} after the "
                                    f"else-branch", where)
            out = []
            for i, (x, y) in enumerate(zip(la, lb)):
                if x is y or (_same_static(x, y) and not isinstance(x, Value)):
                    out.append(("static", x))
                    continue
                t = self._merge_type(n, x, y, where)
                out.append(("result", len(types)))
                types.append(t)
                yields[0].append((x, t, then_env.nodes.get(n, node)))
                yields[1].append((y, t, else_env.nodes.get(n, node)))
                results_for.append(n)
            merged[n] = (ta, out)
        for blk, ys in zip(blocks, yields):
            saved = self.b.block
            self.b.block = blk
            try:
                vals = [self._wrap(lambda: self.arith.to_type(x, t), nd) for x, t, nd in ys]
                self.b.create("yield", vals)
            finally:
                self.b.block = saved
        op = self.b.create("if", [cond], types, {}, blocks, names=results_for)
        for n, (tree, out) in merged.items():
            leaves = [op.results[v] if k == "result" else v for k, v in out]
            self.env.vals[n] = _unflatten(tree, leaves)
            self.env.nodes[n] = then_env.nodes.get(n) or else_env.nodes.get(n) or node

    def _merge_type(self, n, x, y, where) -> Type:
        xv, yv = isinstance(x, Value), isinstance(y, Value)
        if xv and yv:
            if x.type != y.type:
                raise SemanticError(f"'{n}' is {x.type} after the then-branch but {y.type} after the else-branch "
                                    f"(convert one with .astype)", where)
            return x.type
        if xv and is_number(y):
            return self._check_carry_type(n, x, where)
        if yv and is_number(x):
            return self._check_carry_type(n, y, where)
        if is_number(x) and is_number(y):
            return ScalarType(self.arith.result_dtype(x, y))
        raise SemanticError(f"'{n}' gets different compile-time values in the branches of a runtime `if` "
                            f"({describe(x)} and {describe(y)})", where)

    def _check_carry_type(self, n, x, where):
        if isinstance(x.type, ScalarType) or (isinstance(x.type, TileType) and x.type.space == "reg"):
            return x.type
        raise SemanticError(f"'{n}' ({describe(x)}) cannot be merged with a constant", where)

    def scalar_cond(self, c, what) -> Value:
        if is_tile(c):
            raise SemanticError(f"{what} must be a scalar, got {c.type}: reduce it first (tile.max / tile.sum) or "
                                f"use tile.where for elementwise choices")
        return self.arith.truth(c, what)


def _flatten(x):
    """(leaves, tree) of nested tuples; a leaf is anything that is not a tuple."""
    if isinstance(x, tuple):
        leaves, trees = [], []
        for e in x:
            l, t = _flatten(e)
            leaves += l
            trees.append(t)
        return leaves, tuple(trees)
    return [x], None


def _unflatten(tree, leaves):
    it = iter(leaves)

    def go(t):
        if t is None:
            return next(it)
        return tuple(go(s) for s in t)
    return go(tree)


def _leaf_type(x) -> Type | None:
    """The carried type of a leaf that a runtime loop can carry (None: a compile-time value that must not change)."""
    if isinstance(x, Value):
        if isinstance(x.type, (ScalarType, TileType)):
            return x.type
        return None
    if is_number(x):
        return ScalarType(default_dtype(x))
    return None


def _same_static(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, Value) or isinstance(b, Value):
        return False
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False
