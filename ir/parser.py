"""Parse the textual IR (`ir/grammar.lark`) back into a Module.

Malformed text raises ParseError with line and column (never a traceback from inside lark);
the parsed module is verified unless `verify=False`.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import lark

from .core import Block, Function, Loc, Module, Operation
from .dtypes import dtype as _dtype
from .errors import ParseError, VerifyError
from .ops import OPS
from .types import ScalarType, TensorType, TileType, SPACES


@lru_cache(maxsize=2)
def _lark(positions: bool) -> lark.Lark:
    text = (Path(__file__).with_name("grammar.lark")).read_text()
    return lark.Lark(text, parser="lalr", propagate_positions=positions, maybe_placeholders=True)


def parse_module(text: str, verify: bool = True) -> Module:
    """Parse IR text; raise ParseError (line, column) on malformed input."""
    try:
        # Tree positions cost a third of the parse; valid text (nearly all of it) never needs them.
        return _parse(text, verify, positions=False)
    except ParseError:
        return _parse(text, verify, positions=True)      # raises again, with every position known


def _parse(text: str, verify: bool, positions: bool) -> Module:
    if not text.endswith("\n"):
        text += "\n"
    lines = text.splitlines()
    try:
        tree = _lark(positions).parse(text)
    except lark.exceptions.UnexpectedInput as e:
        line, col = getattr(e, "line", 0) or 0, getattr(e, "column", 0) or 0
        src = lines[line - 1] if 0 < line <= len(lines) else None
        raise ParseError(_describe(e), line, col, src) from None
    except lark.exceptions.LarkError as e:      # any other lark failure still gets a ParseError
        raise ParseError(str(e).splitlines()[0], 0, 0) from None
    b = _Builder(lines)
    m = b.module(tree)
    if verify:
        try:
            from .verifier import verify as _verify
            _verify(m)
        except VerifyError as e:
            line, col = b.positions.get(id(e.op), (0, 0))
            raise ParseError(f"invalid IR: {e}", line, col,
                             lines[line - 1] if 0 < line <= len(lines) else None) from None
    return m


def _describe(e) -> str:
    if isinstance(e, lark.exceptions.UnexpectedCharacters):
        return f"unexpected character {e.char!r}"
    if isinstance(e, lark.exceptions.UnexpectedToken):
        tok = e.token
        what = "end of input" if tok.type == "$END" else repr(str(tok).strip() or tok.type)
        exp = sorted(x for x in e.expected if not x.startswith("_") and x != "NEWLINE")
        return f"unexpected {what}" + (f"; expected one of {', '.join(exp[:8])}" if exp else "")
    if isinstance(e, lark.exceptions.UnexpectedEOF):
        return "unexpected end of input"
    return str(e).splitlines()[0]


_SHAPED = re.compile(r'^(tile|tensor)<(.*)>$', re.S)


class _Builder:
    def __init__(self, lines):
        self.lines = lines
        self.positions: dict[int, tuple[int, int]] = {}   # id(op) -> (line, column) in the text

    def err(self, node, msg):
        meta = getattr(node, "meta", None)
        line = getattr(node, "line", None) or (getattr(meta, "line", 0) if meta else 0)
        col = getattr(node, "column", None) or (getattr(meta, "column", 0) if meta else 0)
        src = self.lines[line - 1] if 0 < line <= len(self.lines) else None
        return ParseError(msg, line, col, src)

    # ---------------------------------------------------------------- structure
    def module(self, tree) -> Module:
        return Module([self.function(f) for f in tree.children if isinstance(f, lark.Tree)])

    def function(self, t) -> Function:
        name_tok, *rest = t.children
        params = [c for c in rest if isinstance(c, lark.Tree) and c.data == "param"]
        attrs = next((c for c in rest if isinstance(c, lark.Tree) and c.data == "attrdict"), None)
        loc = next((c for c in rest if isinstance(c, lark.Tree) and c.data == "loc"), None)
        ops = [c for c in rest if isinstance(c, lark.Tree) and c.data == "op"]
        names, types = zip(*[self.param(p) for p in params]) if params else ((), ())
        f = Function(str(name_tok)[1:], types, [_hint(n) for n in names], self.attrdict(attrs) if attrs else {},
                     self.loc(loc) if loc else None)
        scope = {}
        for tok, v in zip([p.children[0] for p in params], f.args):
            self.bind(scope, tok, v)
        for o in ops:
            self.op(o, f.body, scope)
        return f

    def bind(self, scope, tok, v):
        if str(tok) in scope:
            raise self.err(tok, f"value {tok} is defined twice")
        scope[str(tok)] = v

    def param(self, p):
        return str(p.children[0]), self.type(p.children[1])

    def op(self, t, block: Block, scope: dict):
        results, name, operands, attrs, types, regions, loc = t.children
        opname = str(name)
        if opname not in OPS:
            raise self.err(name, f"unknown op '{opname}'")
        res_toks = list(results.children) if results else []
        rtypes = [self.type(x) for x in types.children] if types else []
        if len(res_toks) != len(rtypes):
            raise self.err(name, f"op '{opname}' names {len(res_toks)} results but gives {len(rtypes)} types")
        ops_v = []
        for tok in (operands.children if operands else []):
            if str(tok) not in scope:
                raise self.err(tok, f"value {tok} is not defined here")
            ops_v.append(scope[str(tok)])
        region_blocks = []
        inner_scopes = []
        for r in (regions.children if regions else []):
            bargs, *rops = r.children
            params = [self.param(p) for p in bargs.children if p is not None] if bargs else []
            blk = Block([ty for _, ty in params], [_hint(n) for n, _ in params])
            sc = dict(scope)
            for p, v in zip(bargs.children if bargs else [], blk.args):
                self.bind(sc, p.children[0], v)
            region_blocks.append(blk)
            inner_scopes.append((blk, sc, rops))
        for blk, sc, rops in inner_scopes:
            for o in rops:
                self.op(o, blk, sc)
        op = Operation(opname, ops_v, rtypes, self.attrdict(attrs) if attrs else {}, region_blocks,
                       self.loc(loc) if loc else None, [_hint(x) for x in map(str, res_toks)])
        block.append(op)
        self.positions[id(op)] = (name.line, name.column)
        for tok, v in zip(res_toks, op.results):
            self.bind(scope, tok, v)

    # ---------------------------------------------------------------- leaves
    def loc(self, t) -> Loc:
        f, line, col = t.children
        return Loc(self.unquote(f), int(line), int(col))

    def unquote(self, tok) -> str:
        try:
            return _unquote(str(tok))
        except ValueError as e:             # \\U escape beyond U+10FFFF
            raise self.err(tok, f"bad escape in string: {e}") from None

    def attrdict(self, t) -> dict:
        out = {}
        for a in t.children:
            if a is None:
                continue
            k, v = a.children
            if str(k) in out:
                raise self.err(k, f"attribute '{k}' given twice")
            out[str(k)] = self.value(v)
        return out

    def value(self, v):
        if isinstance(v, lark.Token):       # pragma: no cover - every value is a tree by the grammar's aliases
            raise self.err(v, "bad attribute value")
        kind = v.data
        if kind == "list":
            return [self.value(x) for x in v.children if x is not None]
        tok = v.children[0]
        s = str(tok)
        if kind == "int":
            return int(s)
        if kind == "float":
            return float(s)
        if kind == "string":
            return self.unquote(tok)
        if s == "true":
            return True
        if s == "false":
            return False
        if s == "none":
            return None
        try:
            return _dtype(s)
        except ValueError:
            raise self.err(tok, f"unknown attribute word {s!r} (a dtype, true, false or none)") from None

    def type(self, t):
        tok = t.children[0]
        s = str(tok)
        if tok.type == "OPNAME":
            try:
                return ScalarType(_dtype(s))
            except ValueError as e:
                raise self.err(tok, str(e)) from None
        kind, body = _SHAPED.match(s).groups()
        try:
            return _shaped(kind, body)
        except (ValueError, TypeError) as e:
            raise self.err(tok, f"bad {kind} type {s}: {e}") from None


def _hint(name: str):
    """%acc -> 'acc'; printer-made numeric names (%3) carry no hint."""
    return None if name[1:].isdigit() else name[1:]


_UNESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)', re.S)
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r"}


def _unescape(m) -> str:
    e = m.group(1)
    if len(e) > 1:
        return chr(int(e[1:], 16))
    return _SIMPLE.get(e, e)


def _unquote(s: str) -> str:
    """The inverse of `ir.printer.quote` (`\\n \\t \\r \\xHH \\uHHHH \\UHHHHHHHH`; any other escaped char is itself)."""
    return _UNESCAPE.sub(_unescape, s[1:-1])


def _split_top(body: str):
    """Split on commas outside quotes."""
    parts, cur, q, esc = [], "", False, False
    for c in body:
        if esc:
            cur += c
            esc = False
        elif c == "\\" and q:
            cur += c
            esc = True
        elif c == '"':
            cur += c
            q = not q
        elif c == "," and not q:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += c
    parts.append(cur.strip())
    return parts


def _shaped(kind: str, body: str):
    parts = _split_top(body)
    dims = parts[0].split("x")
    if len(dims) < 2:
        raise ValueError("expected DIMxDIMx...xDTYPE")
    dt = _dtype(dims[-1])
    if kind == "tensor":
        if len(parts) != 1:
            raise ValueError("tensor<...> takes only a shape and dtype")
        return TensorType(dt, tuple(None if d == "?" else _posint(d) for d in dims[:-1]))
    shape = tuple(_posint(d) for d in dims[:-1])
    space, layout = "reg", None
    for p in parts[1:]:
        if p.startswith("layout="):
            from .layout import parse_layout
            layout = parse_layout(_unquote(p[len("layout="):]))
        elif p in SPACES:
            space = p
        else:
            raise ValueError(f"unknown tile property {p!r}")
    return TileType(dt, shape, space, layout)


def _posint(d: str) -> int:
    if not d.isdigit() or int(d) <= 0:
        raise ValueError(f"bad dimension {d!r}")
    return int(d)
