"""Global memory: load, store, atomic, gather, scatter, load_scalar, store_scalar.

Every thread accesses the elements its layout gives it, at
``base + sum_j (index_j + coord_j) * stride_j`` (runtime sizes and strides, ir/artifact.py), with a
bounds mask per element and the op's optional mask.

Vectorization: where the layout gives a thread runs of consecutive elements along the last dim,
the access is done 16 bytes (or less) at a time -- but only after a runtime check that makes it
exact: last stride 1, the run starts (tile index, the other strides, the tensor size along the last
dim) multiples of the vector length, and an aligned base address. Otherwise the same elements go
one at a time. Both versions are emitted; the check picks one (uniform across the block) -- unless
the op carries `vec_exact = true` (passes/divisibility.py: the launch guarantees the tensor's facts
and the index is a known multiple), where only the vector path is emitted.

Sub-byte tensors (1..7 bits, packed LSB-first, ir/numerics.py): loads read the containing bytes and
shift/mask; stores write whole bytes when a thread owns them (vector path) and otherwise update
single elements with atomic and/or on the containing 32-bit words, so no other element is touched.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..ir.dtypes import DType
from ..ir.thread_maps import vector_elems
from ..ir.types import TileType

from .values import RTile, WordCode
from .table import lowers
from .llvm_util import gptr, i1, i8, i16, i32, i64, reg_type

TRUE = ir.Constant(i1, 1)


def _and(b, x, y):
    if x is None or (isinstance(x, ir.Constant) and x.constant == 1):
        return y
    if y is None or (isinstance(y, ir.Constant) and y.constant == 1):
        return x
    return b.and_(x, y)


def _words(total_bits: int):
    """(word bits, count) for one vector access of total_bits: 8..128-bit power-of-two widths as
    b8/b16/b32/v2/v4 words; other whole-byte widths as single bytes."""
    if total_bits & (total_bits - 1) == 0 and total_bits >= 8:
        if total_bits >= 32:
            n = total_bits // 32
            return (32, n) if n <= 4 else (64, total_bits // 64)
        return total_bits, 1
    return 8, total_bits // 8


class MemoryLowering:
    # ------------------------------------------------------------------ addressing helpers
    def as_i32(self, x):
        t = x.type
        if t == i32:
            return x
        if isinstance(t, ir.IntType):
            return self.b.trunc(x, i32) if t.width > 32 else self.b.sext(x, i32)
        raise self.error(f"index of type {t} is not an integer")

    def elem_ptr(self, T, off64, b=None):
        """Pointer to element offset `off64` (i64, in elements) of a byte-addressable tensor."""
        b = b or self.b
        nbytes = T.dtype.bits // 8
        return b.gep(T.ptr, [off64], source_etype=ir.IntType(8 * nbytes), inbounds=False)

    def byte_ptr(self, T, byte64, b=None):
        b = b or self.b
        return b.gep(T.ptr, [byte64], source_etype=i8)

    def _sext64(self, x):
        if isinstance(x, ir.Constant):
            return ir.Constant(i64, x.constant)
        return self.b.sext(x, i64)

    def _tile_access_info(self, T, idx, shape):
        """For a tile right-aligned in tensor T at index operands idx: (lead, per-tile-dim bases
        (i32 LLVM values = index operand), uniform in-bounds predicate of the leading dims, uniform
        i64 element offset of the leading dims)."""
        b = self.b
        R, r = T.rank, len(shape)
        lead = R - r
        pred, off = None, ir.Constant(i64, 0)
        for j in range(lead):
            pred = _and(b, pred, b.icmp_unsigned("<", idx[j], T.shape[j]))
            off = b.add(off, b.mul(self._sext64(idx[j]), self._sext64(T.strides[j])))
        return lead, pred, off

    def _fast_cond(self, T, vec: int, first_last_index):
        """Runtime condition under which every aligned run of `vec` elements along the last dim is
        one aligned vector, entirely inside or entirely outside the tensor."""
        b = self.b
        if vec <= 1:
            return None
        R = T.rank
        c = b.icmp_unsigned("==", T.strides[-1], ir.Constant(i32, 1))
        m = ir.Constant(i32, vec - 1)
        z = ir.Constant(i32, 0)
        c = b.and_(c, b.icmp_unsigned("==", b.and_(first_last_index, m), z))
        c = b.and_(c, b.icmp_unsigned("==", b.and_(T.shape[-1], m), z))
        for j in range(R - 1):
            c = b.and_(c, b.icmp_unsigned("==", b.and_(T.strides[j], m), z))
        vbytes = (vec * T.dtype.bits + 7) // 8
        if vbytes > self.align:
            p = b.ptrtoint(T.ptr, i64)
            c = b.and_(c, b.icmp_unsigned("==", b.and_(p, ir.Constant(i64, vbytes - 1)), ir.Constant(i64, 0)))
        return c

    def vector_guard(self, op, T, vec: int, first_last_index):
        """When the vector path runs: always where the divisibility pass recorded `vec_exact = true`
        (the launch guarantees the tensor's facts, the index is a known multiple of `vec`: only the
        vector path is emitted), else under `_fast_cond` (None: vec 1, the element path only)."""
        if vec <= 1:
            return None
        if op.attrs.get("vec_exact"):
            t = op.tensor
            if (t.name or f"arg{t.index}") not in (self.fn.attrs.get("divisible") or ()):
                raise self.error(f"vec_exact = true on a tensor the launch does not check: add "
                                 f"'{t.name or f'arg{t.index}'}' to the function attribute `divisible` "
                                 f"(or drop vec_exact)")
            return TRUE
        return self._fast_cond(T, vec, first_last_index)

    def _vec_len(self, m, dt: DType) -> int:
        return vector_elems(m, dt.bits)

    def chosen_vec(self, op, m, dt: DType) -> int:
        """The vector width (elements per access) instruction selection recorded on `op` (attribute
        `vec`), checked against what the layout allows."""
        vec = op.attrs.get("vec")
        if vec is None:
            raise self.error("no vector width chosen (attribute `vec`): run the select_instructions pass")
        limit = vector_elems(m, dt.bits)
        if isinstance(vec, bool) or not isinstance(vec, int) or vec < 1 or vec & (vec - 1) or vec > limit \
                or (dt.bits < 8 and vec > 1 and (vec * dt.bits) % 8):
            raise self.error(f"vec = {vec!r} cannot be used here: the layout {m} allows a power of two up to "
                             f"{limit} elements per access" + (" (whole bytes)" if dt.bits < 8 else ""))
        return vec

    def _groups(self, m, vec):
        """Value slots in vector groups: [(first slot, [slots...])]; slots of one group hold
        consecutive elements along the last dim."""
        if vec <= 1:
            return [(v, [v]) for v in range(m.nvals)]
        return [(g, list(range(g, g + vec))) for g in range(0, m.nvals, vec)]

    def _branch2(self, cond, fast_fn, slow_fn, types):
        """if cond: fast_fn() else slow_fn(); both return lists of values of `types` (merged by
        phis). With cond None only slow_fn runs."""
        b = self.b
        if cond is None:
            return slow_fn()
        if cond is TRUE:                        # vec_exact: the vector path alone
            return fast_fn()
        fastb = self.llfn.append_basic_block("vec")
        slowb = self.llfn.append_basic_block("scalar")
        join = self.llfn.append_basic_block("join")
        b.cbranch(cond, fastb, slowb)
        b.position_at_end(fastb)
        fv = fast_fn()
        fend = b.block
        b.branch(join)
        b.position_at_end(slowb)
        sv = slow_fn()
        send = b.block
        b.branch(join)
        b.position_at_end(join)
        out = []
        for x, y in zip(fv or [], sv or []):
            if x is y:
                out.append(x)
                continue
            p = b.phi(x.type)
            p.add_incoming(x, fend)
            p.add_incoming(y, send)
            out.append(p)
        return out

    # ------------------------------------------------------------------ element reads
    def _read_elems(self, T, dt, m, info, vec, fast, other, mask_vals):
        """Read this thread's elements. info(v) -> (in-bounds i1, element offset i64)."""
        b = self.b
        uniq = set(m.unique_values())
        src = m.dup_source()

        def finish(vals):
            return [vals[v] if vals[v] is not None else vals[src[v]] for v in range(m.nvals)]

        def scalar_path():
            vals = [None] * m.nvals
            for v in range(m.nvals):
                if v not in uniq:
                    continue
                inb, off = info(v)
                pred = _and(b, inb, mask_vals[v] if mask_vals else None)
                vals[v] = self._load_one(T, dt, off, pred, other)
            return finish(vals)

        def vector_path():
            vals = [None] * m.nvals
            for g, slots in self._groups(m, vec):
                inb, off = info(g)
                loaded = self._load_vec(T, dt, off, vec, inb, other)
                for k, v in enumerate(slots):
                    x = loaded[k]
                    if mask_vals:
                        x = b.select(mask_vals[v], x, other)
                    vals[v] = x
            return finish(vals)
        if fast is None:
            return scalar_path()
        if self._packable(dt, mask_vals, other):
            return finish(self._read_packed(T, dt, m, info, vec, fast, other))
        return self._branch2(fast, vector_path, scalar_path, None)

    def _packable(self, dt, mask_vals, other):
        """Narrow codes read whole words that can stay packed: no per-element mask, `other` is code 0
        (what a predicated-off word load gives already)."""
        return (dt.bits <= 8 and dt.kind != "bool" and not mask_vals and isinstance(other, ir.Constant)
                and other.constant in (0, 0.0))

    def _read_packed(self, T, dt, m, info, vec, fast, other):
        """The vector/scalar branch of `_read_elems` merged on the packed words, not on the codes: the
        scalar path packs its codes into the same words, the codes are split off after the join and
        their `WordCode` recorded -- so a `cast` of them can decode straight from the words."""
        b = self.b
        groups = self._groups(m, vec)
        wbits, n = _words(vec * dt.bits)

        def fast_words():
            out = []
            for g, _ in groups:
                inb, off = info(g)
                if dt.bits >= 8:
                    ptr = self.elem_ptr(T, off)
                else:
                    ptr = self.byte_ptr(T, b.lshr(b.mul(off, ir.Constant(i64, dt.bits)), ir.Constant(i64, 3)))
                zero = ir.Constant(ir.IntType(wbits), 0)
                if wbits == 8 and n > 1:
                    ws = [self.tgt.pred_load(b, b.gep(ptr, [ir.Constant(i64, k)], source_etype=i8), 8, 1,
                                             inb if inb is not None else TRUE, [zero])[0] for k in range(n)]
                else:
                    ws = self.tgt.pred_load(b, ptr, wbits, n, inb if inb is not None else TRUE, [zero] * n)
                out.extend(ws)
            return out

        def slow_words():
            out = []
            for g, slots in groups:
                codes = []
                for v in slots:
                    inb, off = info(v)
                    codes.append(self.to_code(self._load_one(T, dt, off, inb, other), dt))
                out.extend(self._join_words(codes, dt.bits, wbits, n))
            return out
        words = self._branch2(fast, fast_words, slow_words, None)
        vals = [None] * m.nvals
        for k, (g, slots) in enumerate(groups):
            origins = []
            codes = self._split_words(words[k * n:(k + 1) * n], wbits, dt.bits, vec, origins)
            for v, c, o in zip(slots, codes, origins):
                vals[v] = self.from_code(c, dt)
                self.word_codes[vals[v]] = o
        return vals

    def _load_one(self, T, dt: DType, off, pred, other):
        b = self.b
        pred = pred if pred is not None else TRUE
        if dt.bits >= 8:
            bits = dt.bits
            ptr = self.elem_ptr(T, off)
            oc = self.to_code(other, dt)
            if bits == 8:
                w = self.tgt.pred_load(b, ptr, 8, 1, pred, [oc])[0]
            else:
                w = self.tgt.pred_load(b, ptr, bits, 1, pred, [oc])[0]
            return self.from_code(w, dt)
        # sub-byte: the byte(s) holding the element
        bits = dt.bits
        bo = b.mul(off, ir.Constant(i64, bits))
        byte = b.lshr(bo, ir.Constant(i64, 3))
        sh = b.trunc(b.and_(bo, ir.Constant(i64, 7)), i32)
        lo = self.tgt.pred_load(b, self.byte_ptr(T, byte), 8, 1, pred, [ir.Constant(i8, 0)])[0]
        word = b.zext(lo, i32)
        if 8 % bits:
            need2 = b.icmp_unsigned(">", b.add(sh, ir.Constant(i32, bits)), ir.Constant(i32, 8))
            hi = self.tgt.pred_load(b, self.byte_ptr(T, b.add(byte, ir.Constant(i64, 1))), 8, 1,
                                    b.and_(pred, need2), [ir.Constant(i8, 0)])[0]
            word = b.or_(word, b.shl(b.zext(hi, i32), ir.Constant(i32, 8)))
        code = b.trunc(b.and_(b.lshr(word, sh), ir.Constant(i32, (1 << bits) - 1)), i8)
        return b.select(pred, self.from_code(code, dt), other)

    def _load_vec(self, T, dt: DType, off, vec: int, pred, other):
        """Load `vec` consecutive elements starting at element offset `off` (aligned) as one
        vector; `other` where pred is false."""
        b = self.b
        total = vec * dt.bits
        if dt.bits >= 8:
            ptr = self.elem_ptr(T, off)
        else:
            ptr = self.byte_ptr(T, b.lshr(b.mul(off, ir.Constant(i64, dt.bits)), ir.Constant(i64, 3)))
        wbits, n = _words(total)
        zero = ir.Constant(ir.IntType(wbits), 0)
        if wbits == 8 and n > 1:            # a run of whole bytes that is no power-of-two wide
            words = [self.tgt.pred_load(b, b.gep(ptr, [ir.Constant(i64, k)], source_etype=i8), 8, 1,
                                        pred if pred is not None else TRUE, [zero])[0] for k in range(n)]
        else:
            words = self.tgt.pred_load(b, ptr, wbits, n, pred if pred is not None else TRUE, [zero] * n)
        codes = self._split_words(words, wbits, dt.bits, vec)
        out = []
        for c in codes:
            x = self.from_code(c, dt)
            out.append(b.select(pred, x, other) if pred is not None else x)
        return out

    def _split_words(self, words, wbits, bits, count, origins=None):
        """Little-endian words -> `count` codes of `bits` bits (as iN, N = max(8, bits)); `origins`,
        a list, receives each code's `WordCode`."""
        b = self.b
        ct = ir.IntType(max(8, bits))
        origins = [] if origins is None else origins
        if bits >= 8 and wbits % bits == 0:
            per = wbits // bits
            out = []
            for w in words:
                for k in range(per):
                    x = b.lshr(w, ir.Constant(w.type, k * bits)) if k else w
                    out.append(b.trunc(x, ct) if w.type.width > ct.width else x)
                    origins.append(WordCode(w, k * bits))
            del origins[count:]
            return out[:count]
        total = wbits * len(words)
        big = ir.IntType(total)
        acc = None
        for k, w in enumerate(words):
            x = b.zext(w, big) if total > wbits else w
            if k:
                x = b.shl(x, ir.Constant(big, k * wbits))
            acc = x if acc is None else b.or_(acc, x)
        out = []
        for e in range(count):
            x = b.lshr(acc, ir.Constant(big, e * bits)) if e else acc
            x = b.trunc(x, ct) if total > ct.width else x
            if bits < 8:
                x = b.and_(x, ir.Constant(ct, (1 << bits) - 1))
            out.append(x)
            origins.append(WordCode(acc, e * bits))
        return out

    # ------------------------------------------------------------------ element writes
    def _write_elems(self, T, dt, m, vals, info, vec, fast, mask_vals, kind="store"):
        b = self.b
        uniq = set(m.unique_values())
        own = self.owner(m)

        def scalar_path():
            for v in range(m.nvals):
                if v not in uniq:
                    continue
                inb, off = info(v)
                pred = _and(b, _and(b, own, inb), mask_vals[v] if mask_vals else None)
                self._store_one(T, dt, off, vals[v], pred)
            return []

        def vector_path():
            for g, slots in self._groups(m, vec):
                inb, off = info(g)
                pred = _and(b, own, inb)
                if mask_vals:
                    allm = None
                    for v in slots:
                        allm = _and(b, allm, mask_vals[v])
                    if dt.bits < 8:
                        # partial bytes: element-wise atomic updates
                        for k, v in enumerate(slots):
                            self._store_one(T, dt, b.add(off, ir.Constant(i64, k)), vals[v],
                                            _and(b, pred, mask_vals[v]))
                        continue
                    self._store_vec(T, dt, off, [vals[v] for v in slots], _and(b, pred, allm))
                    notall = b.not_(allm)
                    for k, v in enumerate(slots):
                        self._store_one(T, dt, b.add(off, ir.Constant(i64, k)), vals[v],
                                        _and(b, _and(b, pred, notall), mask_vals[v]))
                else:
                    self._store_vec(T, dt, off, [vals[v] for v in slots], pred)
            return []
        if fast is None:
            scalar_path()
        else:
            self._branch2(fast, vector_path, scalar_path, None)

    def _store_one(self, T, dt: DType, off, val, pred):
        b = self.b
        pred = pred if pred is not None else TRUE
        if dt.bits >= 8:
            code = self.to_code(val, dt)
            self.tgt.pred_store(b, self.elem_ptr(T, off), dt.bits, [code], pred)
            return
        self._subbyte_rmw(T, dt, off, val, pred)

    def _subbyte_rmw(self, T, dt, off, val, pred):
        """Write one sub-byte element with atomic and/or on its 32-bit word(s)."""
        b = self.b
        bits = dt.bits
        thenb = self.llfn.append_basic_block("sb.store")
        endb = self.llfn.append_basic_block("sb.end")
        b.cbranch(pred, thenb, endb)
        b.position_at_end(thenb)
        code = b.zext(self.to_code(val, dt), i64)
        bo = b.mul(off, ir.Constant(i64, bits))
        # 32-bit words relative to the base (the base is at least 4-byte aligned: KernelMeta.align)
        word = b.lshr(bo, ir.Constant(i64, 5))
        sh = b.and_(bo, ir.Constant(i64, 31))
        mask = ir.Constant(i64, (1 << bits) - 1)
        wptr = b.gep(T.ptr, [word], source_etype=i32)
        m64 = b.shl(mask, sh)
        v64 = b.shl(code, sh)
        lo_m = b.trunc(m64, i32)
        lo_v = b.trunc(v64, i32)
        b.atomic_rmw("and", wptr, b.not_(lo_m), "monotonic")
        b.atomic_rmw("or", wptr, lo_v, "monotonic")
        if 32 % bits:
            hi_m = b.trunc(b.lshr(m64, ir.Constant(i64, 32)), i32)
            hi_v = b.trunc(b.lshr(v64, ir.Constant(i64, 32)), i32)
            spill = b.icmp_unsigned("!=", hi_m, ir.Constant(i32, 0))
            sb = self.llfn.append_basic_block("sb.hi")
            b.cbranch(spill, sb, endb)
            b.position_at_end(sb)
            wptr2 = b.gep(T.ptr, [b.add(word, ir.Constant(i64, 1))], source_etype=i32)
            b.atomic_rmw("and", wptr2, b.not_(hi_m), "monotonic")
            b.atomic_rmw("or", wptr2, hi_v, "monotonic")
        b.branch(endb)
        b.position_at_end(endb)

    def _store_vec(self, T, dt: DType, off, vals, pred):
        b = self.b
        vec = len(vals)
        total = vec * dt.bits
        if dt.bits >= 8:
            ptr = self.elem_ptr(T, off)
        else:
            ptr = self.byte_ptr(T, b.lshr(b.mul(off, ir.Constant(i64, dt.bits)), ir.Constant(i64, 3)))
        codes = [self.to_code(x, dt) for x in vals]
        wbits, n = _words(total)
        words = self._join_words(codes, dt.bits, wbits, n)
        if wbits == 8 and n > 1:
            for k, w in enumerate(words):
                self.tgt.pred_store(b, b.gep(ptr, [ir.Constant(i64, k)], source_etype=i8), 8, [w],
                                    pred if pred is not None else TRUE)
        else:
            self.tgt.pred_store(b, ptr, wbits, words, pred if pred is not None else TRUE)

    def _join_words(self, codes, bits, wbits, n):
        b = self.b
        W = ir.IntType(wbits)
        if bits >= 8 and wbits % bits == 0:
            per = wbits // bits
            out = []
            for k in range(n):
                acc = None
                for e in range(per):
                    x = codes[k * per + e]
                    x = b.zext(x, W) if x.type.width < wbits else x
                    if e:
                        x = b.shl(x, ir.Constant(W, e * bits))
                    acc = x if acc is None else b.or_(acc, x)
                out.append(acc)
            return out
        total = wbits * n
        big = ir.IntType(total)
        acc = None
        for e, c in enumerate(codes):
            x = b.zext(c, big) if c.type.width < total else c
            if bits < 8:
                x = b.and_(x, ir.Constant(big, (1 << bits) - 1))
            if e:
                x = b.shl(x, ir.Constant(big, e * bits))
            acc = x if acc is None else b.or_(acc, x)
        out = []
        for k in range(n):
            x = b.lshr(acc, ir.Constant(big, k * wbits)) if k else acc
            out.append(b.trunc(x, W) if total > wbits else x)
        return out

    # ------------------------------------------------------------------ tile ops
    def _tile_info_fn(self, T, idx, m, shape):
        """info(v) for a tile right-aligned at idx."""
        b = self.b
        lead, upred, uoff = self._tile_access_info(T, idx, shape)
        r = len(shape)
        tb = self.tbase(m)
        bases = [b.add(idx[lead + d], tb[d]) if not (isinstance(tb[d], ir.Constant) and tb[d].constant == 0)
                 else idx[lead + d] for d in range(r)]
        row = uoff
        for d in range(r):
            row = b.add(row, b.mul(self._sext64(bases[d]), self._sext64(T.strides[lead + d])))
        vcs = m.vcoord_list()
        stride64 = [self._sext64(T.strides[lead + d]) for d in range(r)]

        def info(v):
            vc = vcs[v]
            off = row
            for d in range(r):
                if vc[d]:
                    off = b.add(off, b.mul(ir.Constant(i64, vc[d]), stride64[d]))
            pred = upred
            for d in range(r):
                cd = bases[d] if vc[d] == 0 else b.add(bases[d], ir.Constant(i32, vc[d]))
                pred = _and(b, pred, b.icmp_unsigned("<", cd, T.shape[lead + d]))
            return pred, off
        return info, bases

    def load_operands(self, op):
        """(tensor, i32 indices, mask tile or None, result type, its thread map, dtype, `other` constant)
        of a load -- what every load lowering (generic, AMD buffer) starts from."""
        T = self.get(op.tensor)
        idx = [self.as_i32(self.get(v)) for v in op.indices]
        mask = self.rtile(op.mask) if op.mask is not None else None
        rt: TileType = op.results[0].type
        m = self.tmap(rt)
        dt = rt.dtype
        other = self.constant(dt, op.attrs.get("other", 0))
        if mask is not None and not mask.map.same(m):
            raise self.error(f"load: the mask's layout {mask.map} differs from the tile's {m}")
        return T, idx, mask, rt, m, dt, other

    def store_operands(self, op):
        """(tensor, i32 indices, value tile, mask tile or None) of a store, the mask checked against the
        value's layout."""
        T = self.get(op.tensor)
        idx = [self.as_i32(self.get(v)) for v in op.indices]
        val = self.rtile(op.value)
        mask = self.rtile(op.mask) if op.mask is not None else None
        if mask is not None:
            self._check_same_layout(val, mask, "store: mask")
        return T, idx, val, mask

    @lowers("load")
    def op_load(self, op):
        T, idx, mask, rt, m, dt, other = self.load_operands(op)
        info, bases = self._tile_info_fn(T, idx, m, rt.shape)
        vec = self.chosen_vec(op, m, dt)
        fast = self.vector_guard(op, T, vec, idx[-1])
        vals = self._read_elems(T, dt, m, info, vec, fast, other, mask.vals if mask else None)
        self.set(op.results[0], RTile(m, vals, dt))

    @lowers("store")
    def op_store(self, op):
        if op.attrs.get("copy") == "tma":                # Hopper: staged, bulk tensor stores
            return self.store_tma(op)
        T, idx, val, mask = self.store_operands(op)
        m, dt = val.map, val.dtype
        if dt.bits < 8 and (self._vec_len(m, dt) * dt.bits) % 8:
            raise self.error(f"storing a {dt} tile needs each thread to own whole bytes, but its layout "
                             f"{m} gives threads runs of {m.runs(-1)} elements along the last dim "
                             f"(annotate a layout with longer runs)")
        info, bases = self._tile_info_fn(T, idx, m, op.value.type.shape)
        vec = self.chosen_vec(op, m, dt)
        fast = self.vector_guard(op, T, vec, idx[-1])
        self._write_elems(T, dt, m, val.vals, info, vec, fast, mask.vals if mask else None)

    @lowers("atomic")
    def op_atomic(self, op):
        b = self.b
        T = self.get(op.tensor)
        idx = [self.as_i32(self.get(v)) for v in op.indices]
        val = self.rtile(op.value)
        mask = self.rtile(op.mask) if op.mask is not None else None
        m, dt = val.map, val.dtype
        kind = op.attrs["kind"]
        if dt.bits < 8 or (dt.is_float and dt.name not in ("f32", "f64", "f16", "bf16")):
            raise self.error(f"atomic {kind} on {dt} tensors is not supported by the GPU back end")
        info, _ = self._tile_info_fn(T, idx, m, op.value.type.shape)
        own = self.owner(m)
        uniq = set(m.unique_values())
        for v in range(m.nvals):
            if v not in uniq:
                continue
            inb, off = info(v)
            pred = _and(b, _and(b, own, inb), mask.vals[v] if mask else None)
            self._atomic_one(T, dt, kind, off, val.vals[v], pred)

    def _atomic_one(self, T, dt, kind, off, x, pred):
        b = self.b
        ptr = self.elem_ptr(T, off)
        if dt.is_float:
            opn = {"add": "fadd", "max": "fmax", "min": "fmin"}[kind]
        elif dt.kind == "bool":
            opn = {"add": "xor", "max": "or", "min": "and"}[kind]
        else:
            signed = dt.kind == "int"
            opn = {"add": "add", "max": "max" if signed else "umax", "min": "min" if signed else "umin"}[kind]
        thenb = self.llfn.append_basic_block("atomic")
        endb = self.llfn.append_basic_block("atomic.end")
        b.cbranch(pred if pred is not None else TRUE, thenb, endb)
        b.position_at_end(thenb)
        if dt.kind == "bool":
            x = b.zext(x, i8)
        b.atomic_rmw(opn, ptr, x, "monotonic")
        b.branch(endb)
        b.position_at_end(endb)

    @lowers("load_scalar")
    def op_load_scalar(self, op):
        b = self.b
        T = self.get(op.operands[0])
        idx = [self.as_i32(self.get(v)) for v in op.operands[1:]]
        off = ir.Constant(i64, 0)
        for j in range(T.rank):
            off = b.add(off, b.mul(self._sext64(idx[j]), self._sext64(T.strides[j])))
        dt = T.dtype
        if dt.bits >= 8:
            w = b.load(self.elem_ptr(T, off), typ=ir.IntType(dt.bits))
            self.set(op.results[0], self.from_code(w, dt))
        else:
            self.set(op.results[0], self._load_one(T, dt, off, TRUE, self.constant(dt, 0)))

    @lowers("store_scalar")
    def op_store_scalar(self, op):
        b = self.b
        T = self.get(op.operands[0])
        idx = [self.as_i32(self.get(v)) for v in op.operands[1:-1]]
        x = self.get(op.operands[-1])
        off = ir.Constant(i64, 0)
        for j in range(T.rank):
            off = b.add(off, b.mul(self._sext64(idx[j]), self._sext64(T.strides[j])))
        first = b.icmp_unsigned("==", self.tid, ir.Constant(i32, 0))
        self._store_one(T, T.dtype, off, x, first)

    def _rows_info(self, T, rows, col0, m, ncols):
        """info(v) for gather/scatter: element (rows[r], col0 + c)."""
        b = self.b
        tb = self.tbase(m)
        cbase = b.add(col0, tb[1]) if not (isinstance(tb[1], ir.Constant) and tb[1].constant == 0) else col0
        vcs = m.vcoord_list()
        s0, s1 = self._sext64(T.strides[0]), self._sext64(T.strides[1])
        rvi = rows.map.value_index()
        rowv = [rows.vals[rvi[(c[0],)]] for c in vcs]     # the row index of each slot of m

        def info(v):
            r = rowv[v]
            r64 = b.sext(r, i64) if r.type.width < 64 else r
            if rows.dtype.kind == "uint" and r.type.width < 64:
                r64 = b.zext(r, i64)
            ok_r = b.icmp_unsigned("<", r64, b.zext(T.shape[0], i64))
            c = cbase if vcs[v][1] == 0 else b.add(cbase, ir.Constant(i32, vcs[v][1]))
            ok_c = b.icmp_unsigned("<", c, T.shape[1])
            off = b.add(b.mul(r64, s0), b.mul(self._sext64(c), s1))
            return b.and_(ok_r, ok_c), off
        return info

    def _rows_operand(self, op, rows_v, m):
        rows = self.rtile(rows_v)
        need = m.project(1)
        if not rows.map.same(need):
            raise self.error(f"the row indices must have layout {need} (the slice of the value's layout); "
                             f"got {rows.map}: layout inference should have inserted a convert_layout")
        if rows.dtype.kind == "bool" or rows.dtype.bits < 8:
            b = self.b
            vals = [b.zext(x, i32) if rows.dtype.kind != "int" else b.sext(x, i32) for x in rows.vals]
            from ..ir.dtypes import i32 as I32
            return RTile(rows.map, vals, I32)
        return rows

    @lowers("gather")
    def op_gather(self, op):
        T = self.get(op.operands[0])
        rt = op.results[0].type
        m = self.tmap(rt)
        rows = self._rows_operand(op, op.operands[1], m)
        col0 = self.as_i32(self.get(op.operands[2]))
        dt = rt.dtype
        other = self.constant(dt, op.attrs.get("other", 0))
        info = self._rows_info(T, rows, col0, m, rt.shape[1])
        vec = self.chosen_vec(op, m, dt)
        fast = self.vector_guard(op, T, vec, col0)
        vals = self._read_elems(T, dt, m, info, vec, fast, other, None)
        self.set(op.results[0], RTile(m, vals, dt))

    @lowers("scatter")
    def op_scatter(self, op):
        T = self.get(op.operands[0])
        val = self.rtile(op.operands[3])
        m, dt = val.map, val.dtype
        rows = self._rows_operand(op, op.operands[1], m)
        col0 = self.as_i32(self.get(op.operands[2]))
        if dt.bits < 8 and (self._vec_len(m, dt) * dt.bits) % 8:
            raise self.error(f"scattering a {dt} tile needs each thread to own whole bytes (layout {m})")
        info = self._rows_info(T, rows, col0, m, op.operands[3].type.shape[1])
        vec = self.chosen_vec(op, m, dt)
        fast = self.vector_guard(op, T, vec, col0)
        self._write_elems(T, dt, m, val.vals, info, vec, fast, None)

