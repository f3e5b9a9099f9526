"""Mutations of printed IR and the contract for them (tests/test_verifier_fuzz.py).

Contract: compiling a mutated text (`parse_module` -> `tile.compiler.compile(m, "sm_90a")` -> ptxas)
either raises a LOCATED error -- ParseError (line, column), VerifyError / CompileError / TileError
whose message carries `file:line:col` or `line N` -- or gives PTX that ptxas assembles. Never an
"internal error while lowering", never another exception type.
"""
from __future__ import annotations

import random
import re
import time

from tile.ir.errors import ParseError, TileError

DTYPES = ["f32", "f16", "bf16", "f64", "i1", "i8", "i16", "i32", "i64", "u8", "u32", "int4", "uint4", "int3",
          "f8e4m3fn", "f8e5m2", "f4e2m1"]
ATOMS = ["wgmma.m64n128k16.ss", "wgmma.m64n64k16.ss", "wgmma.m64n128k16.rs", "wgmma.m64n32k16.rs",
         "wgmma.m64n256k16.ss", "wgmma.m64n8k16.ss", "mma.m16n8k16", "mma.m16n8k8", "fma", "mma.m16n8k32", "bogus"]
COPIES = ["smem.desc", "ldmatrix.k", "ldmatrix", "ldmatrix.trans", "ldmatrix.trans.k", "ld.shared", "cp.async",
          "tma", "ld.global", "bogus"]
OPNAMES = ["add", "sub", "mul", "div", "rem", "max", "min", "exp", "neg", "cast", "bitcast", "load", "store",
           "dot", "reduce", "select", "cmp", "broadcast", "reshape", "transpose", "shared_load", "shared_store",
           "subview", "convert_layout", "cumsum", "async_copy", "barrier", "splat", "full", "constant", "yield",
           "block_id", "dim", "atomic", "gather", "scatter", "nope"]
NUMBERS = [0, 1, -1, 2, 3, 4, 7, 8, 16, 31, 32, 64, 127, 128, 255, 256, 1000, 4096, 65536, 2 ** 31, -(2 ** 31)]
KINDS = ["number", "dtype", "opname", "atom", "vec", "copy", "attr", "layout", "operands", "warps"]

_NUM = re.compile(r"(?<![\w.%#^])-?\d+(?![\w.])")
_DT = re.compile(r"\b(" + "|".join(sorted(DTYPES, key=len, reverse=True)) + r")\b")
_OP = re.compile(r"^(\s*(?:%[\w.]+(?:, %[\w.]+)* = )?)([a-z_]+)\b", re.M)
_LAYOUT = re.compile(r'layout="[^"]*"')
_OPERAND = re.compile(r"%[\w.]+")
_ATTR_NUM = re.compile(r"\b(\w+) = (-?\d+)")


def _sub_nth(pattern, text, n, repl):
    ms = list(pattern.finditer(text))
    m = ms[n % len(ms)]
    return text[:m.start()] + repl(m) + text[m.end():]


def mutate(text: str, rnd: random.Random, kind: str | None = None) -> tuple[str, str]:
    """One random edit of `text`; returns (new text, description)."""
    kind = kind or rnd.choice(KINDS)
    lines = text.split("\n")
    body = [i for i, l in enumerate(lines) if l.strip() and not l.lstrip().startswith(("}", "kernel", "^"))]

    def on_line(pattern, repl):
        cand = [i for i in body if pattern.search(lines[i].split(" loc(")[0])]
        if not cand:
            return None
        i = rnd.choice(cand)
        head, sep, tail = lines[i].partition(" loc(")
        n = len(list(pattern.finditer(head)))
        lines[i] = _sub_nth(pattern, head, rnd.randrange(n), repl) + sep + tail
        return i

    def q(s):
        return f'"{s}"'

    done = None
    if kind == "number":
        done = on_line(_NUM, lambda m: str(rnd.choice(NUMBERS + [int(m.group()) * 2, int(m.group()) + 1])))
    elif kind == "dtype":
        done = on_line(_DT, lambda m: rnd.choice(DTYPES))
    elif kind == "opname":
        done = on_line(_OP, lambda m: m.group(1) + rnd.choice(OPNAMES))
    elif kind == "atom":
        done = on_line(re.compile(r'atom = "[^"]*"'), lambda m: "atom = " + q(rnd.choice(ATOMS)))
    elif kind == "vec":
        done = on_line(re.compile(r"vec = \d+"), lambda m: f"vec = {rnd.choice([0, 1, 2, 3, 4, 8, 16, 32, 64])}")
    elif kind == "copy":
        done = on_line(re.compile(r'copy = "[^"]*"'), lambda m: "copy = " + q(rnd.choice(COPIES)))
    elif kind == "warps":
        done = on_line(re.compile(r"warps = \[\d+, \d+\]"),
                       lambda m: f"warps = [{rnd.choice([0, 1, 2, 4, 8])}, {rnd.choice([0, 1, 2, 4, 8])}]")
    elif kind == "attr":
        done = on_line(_ATTR_NUM, lambda m: f"{m.group(1)} = {rnd.choice(NUMBERS)}")
    elif kind == "layout":
        ms = list(_LAYOUT.finditer(text))
        if len(ms) >= 2:
            a, b = rnd.sample(ms, 2)
            if rnd.random() < 0.5:       # swap the two
                if a.start() > b.start():
                    a, b = b, a
                text2 = text[:a.start()] + b.group() + text[a.end():b.start()] + a.group() + text[b.end():]
            else:                        # one replaced by the other
                text2 = text[:a.start()] + b.group() + text[a.end():]
            return text2, f"layout {a.group()[:60]} <-> {b.group()[:60]}"
    elif kind == "operands":
        cand = [i for i in body if len(_OPERAND.findall(lines[i].split(" = ", 1)[-1].split(" {")[0].split(" :")[0])) >= 2]
        if cand:
            i = rnd.choice(cand)
            l = lines[i]
            lhs, eq, rhs = l.partition(" = ") if " = " in l.split("{")[0] else ("", "", l)
            ops_part = rhs.split(" {")[0].split(" :")[0]
            names = _OPERAND.findall(ops_part)
            if rnd.random() < 0.5:
                x, y = rnd.sample(range(len(names)), 2)
                names[x], names[y] = names[y], names[x]
            else:                        # an operand replaced by another value defined earlier
                defined = [n for j in range(i) for n in _OPERAND.findall(lines[j].split(" = ")[0])]
                if defined:
                    names[rnd.randrange(len(names))] = rnd.choice(defined)
            it = iter(names)
            new_ops = _OPERAND.sub(lambda m: next(it), ops_part)
            lines[i] = lhs + eq + rhs.replace(ops_part, new_ops, 1)
            done = i
    if done is None:
        return text, "(no edit)"
    return "\n".join(lines), f"{kind} at line {done + 1}: {lines[done].strip()[:160]}"


LOCATED = re.compile(r"(:\d+:\d+)|(\bline \d+)")


def check(text: str, target: str = "sm_90a", **options) -> str:
    """Apply the contract to one text; returns 'parse', 'verify', 'compile-error' or 'ptx'. Raises
    AssertionError for a violation."""
    from tile import compiler
    from tile.codegen import run_ptxas
    from tile.ir.errors import VerifyError
    from tile.ir.parser import parse_module
    try:
        m = parse_module(text)
    except ParseError:
        return "parse"
    except VerifyError as e:
        assert LOCATED.search(str(e)), f"VerifyError without a location: {e}"
        return "verify"
    except TileError as e:
        assert LOCATED.search(str(e)), f"{type(e).__name__} without a location: {e}"
        return "verify"
    try:
        art = compiler.compile(m, target, **options)
    except TileError as e:
        msg = str(e)
        assert "internal error" not in msg, f"internal error: {msg}"
        assert LOCATED.search(msg), f"{type(e).__name__} without a location: {msg}"
        return "compile-error"
    try:
        run_ptxas(art.ptx, target)
    except TileError as e:
        raise AssertionError(f"compiled, but ptxas rejects the PTX: {str(e)[:2000]}") from None
    return "ptx"
