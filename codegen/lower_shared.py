"""Shared memory: alloc_shared / subview / shared_load / shared_store / async_copy / async_commit /
async_wait / barrier, and every op that moves register-tile elements between threads through a
scratch buffer (convert_layout, reshape, slice, concat, tile bitcast, and the general cases of
transpose and broadcast).

All shared tiles live in ONE dynamic shared buffer (`@tile_smem`); their byte offsets come from
passes/shared_memory_planning.py (`smem_offset` on alloc_shared, `smem_scratch` on ops that need
scratch). A shared tile's layout (its type's, or row-major) maps coordinates to element offsets;
a swizzled layout (`sw<B,M,S> o L`) XORs element-offset bits.

Moving elements between threads: barrier; every owner writes its elements (vectorized along
contiguous runs); barrier; every thread reads what its destination layout needs. Destinations that
are mma.sync operand fragments of a 16-bit type are read with ldmatrix (.trans where the stored
matrix is transposed) from a swizzled scratch layout, which avoids bank conflicts.
"""
from __future__ import annotations

from math import prod

import llvmlite.ir as ir

from ..ir.dtypes import DType
from ..ir.layout import ComposedLayout, Layout, Swizzle, row_major
from ..ir.types import TileType
from ..ir.shared_layouts import (conversion_scratch_layout, default_shared_layout, ldmatrix_chunk_dim,
                                    leaves as _leaves, smem_vector_elems, transpose_layout)
from ..ir.targets import LAZY_COPIES
from ..ir.thread_maps import ThreadMap, blocked, mma_operand_kind

from .table import lowers
from .llvm_util import i1, i8, i16, i32, i64, sptr
from .lower_memory import _and
from .values import DS_READ, LazyFrag, RTile, SView, WordCode

TRUE = ir.Constant(i1, 1)


class SharedLowering:
    # ------------------------------------------------------------------ the buffer
    def smem(self):
        if self._smem is None:
            g = ir.GlobalVariable(self.module, ir.ArrayType(i8, 0), "tile_smem", addrspace=3)
            g.linkage = "external"
            g.align = 1024
            self._smem = g
        return self._smem

    def sptr(self, byte_off, b=None):
        b = b or self.b
        p = b.gep(self.smem(), [byte_off], source_etype=i8)
        p.type = sptr                  # opaque `ptr addrspace(3)` (llvmlite types it as [0 x i8]*)
        return p

    def _i(self, x):
        return ir.Constant(i32, x) if isinstance(x, int) else x

    def _add(self, x, y, b=None):
        b = b or self.b
        if isinstance(x, int) and isinstance(y, int):
            return x + y
        if isinstance(x, int) and x == 0:
            return y
        if isinstance(y, int) and y == 0:
            return x
        return b.add(self._i(x), self._i(y))

    def _mul(self, x, k: int, b=None):
        b = b or self.b
        if isinstance(x, int):
            return x * k
        if k == 1:
            return x
        if k == 0:
            return 0
        return b.mul(x, ir.Constant(i32, k))

    def layout_offset(self, layout, coords, b=None):
        """Element offset of a coordinate (ints or i32 values) under a shared layout."""
        b = b or self.b
        lay = layout.layout if isinstance(layout, ComposedLayout) else layout
        modes = [lay] if isinstance(lay.shape, int) or lay.rank == 1 and len(coords) == 1 else list(lay)
        if len(modes) != len(coords):
            if isinstance(lay.shape, int) and len(coords) == 1:
                modes = [lay]
            else:
                raise self.error(f"shared layout {layout} does not match a rank-{len(coords)} tile")
        off = 0
        for mode, c in zip(modes, coords):
            leaves = _leaves(mode.shape, mode.stride)
            if len(leaves) == 1:
                off = self._add(off, self._mul(c, leaves[0][1], b), b)
                continue
            div = 1
            for k, (s, d) in enumerate(leaves):
                if isinstance(c, int):
                    dig = (c // div) % s if k < len(leaves) - 1 else c // div
                else:
                    dig = b.udiv(c, ir.Constant(i32, div)) if div > 1 else c
                    if k < len(leaves) - 1:
                        dig = b.urem(dig, ir.Constant(i32, s))
                off = self._add(off, self._mul(dig, d, b), b)
                div *= s
        if isinstance(layout, ComposedLayout):
            off = self._add(off, layout.offset, b)
            sw = layout.swizzle
            if isinstance(off, int):
                off = sw(off)
            else:
                y = b.and_(off, ir.Constant(i32, sw.yyy_mask))
                y = b.lshr(y, ir.Constant(i32, sw.shift)) if sw.shift >= 0 else b.shl(y, ir.Constant(i32, -sw.shift))
                off = b.xor(off, y)
        return off

    def sview_addr(self, sv, coords, b=None):
        """i32 byte offset (in the dynamic buffer) of element `coords` of shared view sv (>= 8-bit)."""
        b = b or self.b
        e = self.layout_offset(sv.layout, coords, b)
        byte = self._mul(e, sv.dtype.bits // 8, b)
        return self._add(sv.off, byte, b)

    # ------------------------------------------------------------------ shared ops
    @lowers("alloc_shared")
    def op_alloc_shared(self, op):
        t = op.results[0].type
        if "smem_offset" not in op.attrs:
            raise self.error("shared tile has no offset: run the shared_memory_planning pass first")
        lay = t.layout if t.layout is not None else default_shared_layout(t.shape)
        off = int(op.attrs["smem_offset"])
        self.set(op.results[0], SView(ir.Constant(i32, off), tuple(t.shape), t.dtype, lay, _align_of(off)))

    @lowers("subview")
    def op_subview(self, op):
        s = self.get(op.operands[0])
        i = self.as_i32(self.get(op.operands[1]))
        lay = s.layout
        inner = lay.layout if isinstance(lay, ComposedLayout) else lay
        modes = list(inner)
        m0 = _leaves(modes[0].shape, modes[0].stride)
        if len(m0) != 1:
            raise self.error(f"subview of shared layout {lay}: the stage mode must be one leaf")
        stage_stride = m0[0][1]
        rest = modes[1:]
        sub = rest[0] if len(rest) == 1 else Layout(tuple(m.shape for m in rest), tuple(m.stride for m in rest))
        if isinstance(lay, ComposedLayout):
            if (stage_stride % lay.swizzle.period) or lay.offset:
                raise self.error(f"subview of swizzled layout {lay}: stages must be whole swizzle periods")
            sub = ComposedLayout(lay.swizzle, 0, sub)
        bits = s.dtype.bits
        if (stage_stride * bits) % 8:
            raise self.error("subview stages must start on whole bytes")
        stage_bytes = stage_stride * bits // 8
        off = self.b.add(s.off, self.b.mul(i, ir.Constant(i32, stage_bytes)))
        self.set(op.results[0], SView(off, tuple(op.results[0].type.shape), s.dtype, sub,
                                      min(s.align, _align_of(stage_bytes))))

    @lowers("barrier")
    def op_barrier(self, op):
        self.named_barrier_of(op)              # a role's barrier is named; the intrinsics know the role
        self.tgt.barrier(self.b)

    @lowers("async_commit")
    def op_async_commit(self, op):
        self.tgt.cp_async_commit(self.b)

    @lowers("async_wait")
    def op_async_wait(self, op):
        self.tgt.cp_async_wait(self.b, int(op.attrs["pending"]))
        if self.target.has("async_proxy"):
            self.tgt.fence_proxy_async(self.b)       # wgmma reads these bytes through the async proxy

    def _smem_vec(self, sv, m, dt):
        """How many consecutive elements (along the last dim) of layout m can go as one shared
        access under shared view sv's layout: a power of two <= 16 bytes, else 1."""
        if dt.bits < 8 or not m.rank:
            return 1
        return smem_vector_elems(sv.layout, self.vec_len_runs(m, dt))

    def vec_len_runs(self, m, dt):
        r = m.runs(-1)
        cap = max(1, 128 // dt.bits)
        v = 1
        while v * 2 <= min(r, cap):
            v *= 2
        return v

    def _sload(self, addr, dt: DType, n: int = 1):
        """Load n consecutive elements (>= 8-bit) at byte offset addr."""
        b = self.b
        p = self.sptr(self._i(addr))
        if n == 1:
            w = b.load(p, typ=ir.IntType(dt.bits))
            return [self.from_code(w, dt)]
        if dt.bits == 8 and n % 4 == 0 and n <= 16:
            # 8-bit codes as i32 words (recorded as WordCodes: a cast decodes them from the words)
            ld = b.load(p, typ=ir.VectorType(i32, n // 4))
            ld.align = n
            out = []
            for k in range(n):
                w = b.extract_element(ld, ir.Constant(i32, k // 4))
                x = self.from_code(b.trunc(b.lshr(w, ir.Constant(i32, 8 * (k % 4))) if k % 4 else w, i8), dt)
                self.word_codes[x] = WordCode(w, 8 * (k % 4))
                out.append(x)
            return out
        vt = ir.VectorType(ir.IntType(dt.bits), n)
        ld = b.load(p, typ=vt)
        ld.align = n * dt.bits // 8
        return [self.from_code(b.extract_element(ld, ir.Constant(i32, k)), dt) for k in range(n)]

    def _sstore(self, addr, dt: DType, vals):
        b = self.b
        p = self.sptr(self._i(addr))
        codes = [self.to_code(x, dt) for x in vals]
        if len(vals) == 1:
            b.store(codes[0], p)
            return
        vt = ir.VectorType(ir.IntType(dt.bits), len(vals))
        vec = ir.Constant(vt, ir.Undefined)
        for k, c in enumerate(codes):
            vec = b.insert_element(vec, c, ir.Constant(i32, k))
        st = b.store(vec, p)
        st.align = len(vals) * dt.bits // 8

    def _groups_of(self, m, vec):
        if vec <= 1:
            return [(v, [v]) for v in range(m.nvals)]
        return [(g, list(range(g, g + vec))) for g in range(0, m.nvals, vec)]

    def write_tile_smem(self, sv, tile, owner_only=True):
        """Every owner thread writes its elements of register tile `tile` into shared view sv."""
        b = self.b
        m, dt = tile.map, tile.dtype
        if dt.bits < 8:
            return self._write_subbyte_smem(sv, tile)
        own = self.owner(m) if owner_only else None
        vec = self._smem_vec(sv, m, dt)
        if vec == 1 and m.rank == 2 and self.target.family == "amd":
            # runs along dim 0 into a column-major tile (an MFMA B operand's k): the same bytes
            # seen transposed are written row by row (NVIDIA: unchanged)
            svt, mt = transposed_view(sv), m.permute([1, 0])
            if self._smem_vec(svt, mt, dt) > 1:
                sv, m, vec = svt, mt, self._smem_vec(svt, mt, dt)
        uniq = set(m.unique_values())
        body = self._guarded(own)
        for g, slots in self._groups_of(m, vec):
            if vec == 1 and g not in uniq:
                continue
            c = self.coords(m, g)
            self._sstore(self.sview_addr(sv, c), dt, [tile.vals[v] for v in slots])
        self._end_guard(body)

    def _guarded(self, pred):
        if pred is None:
            return None
        b = self.b
        thenb = self.llfn.append_basic_block("owner")
        endb = self.llfn.append_basic_block("owner.end")
        b.cbranch(pred, thenb, endb)
        b.position_at_end(thenb)
        return endb

    def _end_guard(self, endb):
        if endb is not None:
            self.b.branch(endb)
            self.b.position_at_end(endb)

    def _write_subbyte_smem(self, sv, tile):
        """Sub-byte tiles: each thread must own whole bytes (runs along the last dim)."""
        b = self.b
        m, dt = tile.map, tile.dtype
        bits = dt.bits
        r = m.runs(-1)
        from math import gcd
        per = 8 // gcd(8, bits)
        if r % per:
            raise self.error(f"writing a {dt} tile to shared memory needs each thread to own whole bytes; "
                             f"its layout {m} gives runs of {r}")
        own = self.owner(m)
        endb = self._guarded(own)
        nbytes = per * bits // 8
        for g in range(0, m.nvals, per):
            c = self.coords(m, g)
            e = self.layout_offset(sv.layout, c)
            bo = self._mul(e, bits)
            byte = b.lshr(self._i(bo), ir.Constant(i32, 3)) if not isinstance(bo, int) else bo // 8
            codes = [self.to_code(tile.vals[g + k], dt) for k in range(per)]
            base = self._add(sv.off, byte)
            if nbytes == 1:
                words = self._join_words(codes, bits, 8, 1)
            else:                       # a group of 3/5/6/7 bytes: no alignment, store byte by byte
                words = self._join_words(codes, bits, 8, nbytes)
            for k, w in enumerate(words):
                b.store(w, self.sptr(self._i(self._add(base, k))))
        self._end_guard(endb)

    def read_tile_smem(self, sv, m: ThreadMap, dt: DType, op=None, ldmatrix: bool = True):
        """Read register tile of layout m from shared view sv (ldmatrix for mma operands, unless
        `ldmatrix` is False)."""
        lm = self._ldmatrix_plan(sv, m, dt) if ldmatrix else None
        if lm is not None:
            return self._read_ldmatrix(sv, m, dt, *lm)
        b = self.b
        if dt.bits < 8:
            return self._read_subbyte_smem(sv, m, dt)
        vec = self._smem_vec(sv, m, dt)
        vals = [None] * m.nvals
        uniq = set(m.unique_values())
        src = m.dup_source()
        for g, slots in self._groups_of(m, vec):
            if vec == 1 and g not in uniq:
                continue
            c = self.coords(m, g)
            got = self._sload(self.sview_addr(sv, c), dt, len(slots))
            for v, x in zip(slots, got):
                vals[v] = x
        return [vals[v] if vals[v] is not None else vals[src[v]] for v in range(m.nvals)]

    def _subbyte_read_plan(self, sv, m, dt):
        """(elements per access, bytes per word) for reading runs of a packed sub-byte tile from
        shared memory as whole aligned words, or None (element by element)."""
        bits = dt.bits
        lay = sv.layout
        if isinstance(lay, ComposedLayout) or not m.rank:
            return None
        r = m.runs(-1)
        vec = 1
        while vec * 2 <= r and vec * 2 * bits <= 128:
            vec *= 2
        if (vec * bits) % 8 or vec * bits < 16:
            return None
        modes = list(lay) if not isinstance(lay.shape, int) else [lay]
        last = _leaves(modes[-1].shape, modes[-1].stride)
        if last[0][1] != 1 or last[0][0] % vec:
            return None
        others = [d for md in modes[:-1] for _, d in _leaves(md.shape, md.stride)] + [d for _, d in last[1:]]
        nbytes = vec * bits // 8
        for w in (16, 8, 4, 2):
            if nbytes % w == 0 and sv.align % w == 0 and all((d * bits) % (8 * w) == 0 for d in others):
                return vec, w
        return None

    def _codes_of_words32(self, words, bits, count, signed=False, origins=None):
        """Little-endian i32 words -> `count` packed codes of `bits` bits as i8 (signed: sign-extended,
        which from_code's own sign extension then folds into). A code inside one word takes a
        shift pair (bfe); one straddling two words a funnel shift first. `origins`, a list, receives
        each code's `WordCode` (the word, or the funnel-shifted word of a straddling code)."""
        b = self.b
        out = []
        for e in range(count):
            p = e * bits
            wi, sh = divmod(p, 32)
            x = words[wi]
            if sh + bits > 32:
                x = b.or_(b.lshr(x, ir.Constant(i32, sh)), b.shl(words[wi + 1], ir.Constant(i32, 32 - sh)))
                sh = 0
            if origins is not None:
                origins.append(WordCode(x, sh))
            if signed:
                if 32 - bits - sh:
                    x = b.shl(x, ir.Constant(i32, 32 - bits - sh))
                x = b.ashr(x, ir.Constant(i32, 32 - bits))
            else:
                if sh:
                    x = b.lshr(x, ir.Constant(i32, sh))
                x = b.and_(x, ir.Constant(i32, (1 << bits) - 1))
            out.append(b.trunc(x, i8))
        return out

    def _read_subbyte_smem(self, sv, m, dt):
        b = self.b
        bits = dt.bits
        plan = self._subbyte_read_plan(sv, m, dt)
        if plan is not None:
            vec, w = plan
            nbytes = vec * bits // 8
            n = nbytes // w
            W = ir.IntType(8 * w)
            vals = [None] * m.nvals
            src = m.dup_source()
            for g, slots in self._groups_of(m, vec):
                if src[g] != g:
                    continue
                c = self.coords(m, g)
                e = self._i(self.layout_offset(sv.layout, c))
                byte = b.add(sv.off, b.lshr(b.mul(e, ir.Constant(i32, bits)), ir.Constant(i32, 3)))
                if w >= 4:                        # as 32-bit words: codes come out with one or two shifts
                    n32 = nbytes // 4
                    words = []
                    k = 0
                    while k < n32:
                        q = 4 if (n32 - k >= 4 and w >= 16) else (2 if (n32 - k >= 2 and w >= 8) else 1)
                        p = self.sptr(b.add(byte, ir.Constant(i32, 4 * k)) if k else byte)
                        if q == 1:
                            ld = b.load(p, typ=i32)
                            ld.align = 4
                            words.append(ld)
                        else:
                            ld = b.load(p, typ=ir.VectorType(i32, q))
                            ld.align = 4 * q
                            words += [b.extract_element(ld, ir.Constant(i32, j)) for j in range(q)]
                        k += q
                    origins = []
                    codes = self._codes_of_words32(words, bits, vec, signed=dt.kind == "int", origins=origins)
                elif n in (2, 4) and n * w <= 16:
                    vt = ir.VectorType(W, n)
                    ld = b.load(self.sptr(byte), typ=vt)
                    ld.align = n * w
                    words = [b.extract_element(ld, ir.Constant(i32, k)) for k in range(n)]
                    codes = self._split_words(words, 8 * w, bits, vec)
                else:
                    words = []
                    for k in range(n):
                        ld = b.load(self.sptr(b.add(byte, ir.Constant(i32, k * w))), typ=W)
                        ld.align = w
                        words.append(ld)
                    codes = self._split_words(words, 8 * w, bits, vec)
                for v, cd in zip(slots, codes):
                    vals[v] = self.from_code(cd, dt)
                if w >= 4:                        # a cast can decode these from the words
                    for v, o in zip(slots, origins):
                        self.word_codes[vals[v]] = o
            return [vals[v] if vals[v] is not None else vals[src[v]] for v in range(m.nvals)]
        vals = [None] * m.nvals
        src = m.dup_source()
        for v in m.unique_values():
            c = self.coords(m, v)
            e = self._i(self.layout_offset(sv.layout, c))
            bo = b.mul(e, ir.Constant(i32, bits))
            byte = b.add(sv.off, b.lshr(bo, ir.Constant(i32, 3)))
            sh = b.and_(bo, ir.Constant(i32, 7))
            w = b.zext(b.load(self.sptr(byte), typ=i8), i32)
            if 8 % bits:
                w2 = b.zext(b.load(self.sptr(b.add(byte, ir.Constant(i32, 1))), typ=i8), i32)
                w = b.or_(w, b.shl(w2, ir.Constant(i32, 8)))
            code = b.trunc(b.and_(b.lshr(w, sh), ir.Constant(i32, (1 << bits) - 1)), i8)
            vals[v] = self.from_code(code, dt)
        return [vals[v] if vals[v] is not None else vals[src[v]] for v in range(m.nvals)]

    @lowers("shared_load")
    def op_shared_load(self, op):
        """Carries out the `copy` instruction selection chose: `ld.shared` / `ldmatrix` (a register
        tile now), or a lazy fragment that the consuming dot reads itself (`smem.desc`,
        `ldmatrix.k`, `ldmatrix.trans.k` through the transpose that follows)."""
        sv = self.get(op.operands[0])
        rt = op.results[0].type
        m = self.tmap(rt)
        copy = self.copy_choice(op, ("ld.shared", "ldmatrix") + LAZY_COPIES)
        if copy.startswith("ds_read"):              # AMD: the MFMA dot reads LDS one k step at a time
            self.set(op.results[0], self.ds_read_frag(sv, m, rt.dtype, copy == "ds_read.trans.k"))
        elif copy == "ldmatrix.trans.k":
            svt, mt = transposed_view(sv), m.permute([1, 0])
            self.set(op.results[0], LazyFrag(svt, mt, rt.dtype, self.ldmatrix_plan_or_error(svt, mt, rt.dtype), True))
        elif copy in LAZY_COPIES:
            self.set(op.results[0], LazyFrag(sv, m, rt.dtype, self.ldmatrix_plan_or_error(sv, m, rt.dtype)))
        elif copy == "ldmatrix":
            vals = self._read_ldmatrix(sv, m, rt.dtype, *self.ldmatrix_plan_or_error(sv, m, rt.dtype))
            self.set(op.results[0], RTile(m, vals, rt.dtype))
        else:
            self.set(op.results[0], RTile(m, self.read_tile_smem(sv, m, rt.dtype, op, ldmatrix=False), rt.dtype))

    def copy_choice(self, op, allowed) -> str:
        """The `copy` attribute of op (instruction selection's choice), checked."""
        c = op.attrs.get("copy")
        if c is None:
            raise self.error("no copy mechanism chosen (attribute `copy`): run the select_instructions pass")
        if c not in allowed:
            raise self.error(f"copy = {c!r} is not a mechanism of '{op.name}'; one of: {', '.join(allowed)}")
        if c.startswith("ldmatrix") and self.target.copy_atom("ldmatrix") is None or \
                c == "smem.desc" and self.target.copy_atom("smem.desc") is None or \
                c == "tma" and self.target.copy_atom("tma") is None or \
                c.startswith("ds_read") and self.target.copy_atom(c) is None or \
                c == "cp.async" and not self.target.has("cp.async"):
            raise self.error(f"copy = {c!r}: target {self.target.name} has no such instruction")
        return c

    def ldmatrix_plan_or_error(self, sv, m, dt):
        plan = self._ldmatrix_plan(sv, m, dt)
        if plan is None:
            raise self.error(f"ldmatrix cannot read this tile: it needs 16-bit elements in an mma operand "
                             f"fragment layout and 16-byte chunks in shared layout {sv.layout} (got {dt}, {m})")
        return plan

    def materialize(self, x):
        """A LazyFrag as an RTile (all fragments read)."""
        if isinstance(x, LazyFrag) and x.plan == DS_READ:
            return RTile(x.map, self.read_tile_smem(x.sv, x.map, x.dtype, ldmatrix=False), x.dtype)
        if isinstance(x, LazyFrag):
            return RTile(x.map, self._read_ldmatrix(x.sv, x.map, x.dtype, *x.plan), x.dtype)
        return x

    @lowers("shared_store")
    def op_shared_store(self, op):
        sv = self.get(op.operands[0])
        tile = self.rtile(op.operands[1])
        self.write_tile_smem(sv, tile)

    # ------------------------------------------------------------------ ldmatrix
    def _mma_operand_kind(self, m: ThreadMap, bits: int = 16):
        """('a'|'b', wm, wn) if m is an mma.sync operand fragment (inputs of `bits` bits) tiled
        over this kernel's warps."""
        key = ("mmakind", m.key(), bits)
        if key not in self._owner_cache:
            self._owner_cache[key] = mma_operand_kind(m, self.num_warps, bits)
        return self._owner_cache[key]

    def _ldmatrix_plan(self, sv, m, dt):
        """(operand kind, contiguous dim) when fragments of layout m can be read from shared view sv
        with ldmatrix: m an mma.sync operand fragment, and 16-byte chunks contiguous and 16-byte
        aligned in sv's layout (swizzles move whole chunks) -- along either dim for 16-bit elements
        (.trans for the other), along the operand's K dim for 8-bit ones (their m16n8k32 fragment
        registers hold the bytes the b16 ldmatrix delivers; .trans would swap 2-byte units)."""
        if dt.bits not in (8, 16) or getattr(self.tgt, "ldmatrix", None) is None:
            return None
        kind = self._mma_operand_kind(m, dt.bits)
        if kind is None:
            return None
        info = ldmatrix_chunk_dim(sv.layout, dt.bits)
        if info is None or (dt.bits == 8 and info != (1 if kind[0] == "a" else 0)):
            return None
        return kind, info

    def _read_ldmatrix(self, sv, m, dt, kind, cd, ks_only=None, partial=False):
        """Read the fragments of layout m with ldmatrix; `ks_only`: just the atoms of that k step
        (with `partial`, slots of other steps stay None).

        Each 8x8 b16 matrix is 8 rows of 16 bytes; a fragment register holds e = 32 // bits
        consecutive k elements (2 bf16, 4 bytes), so one matrix spans 4e elements along k and 8
        along m (A) or n (B): the m16n8k16 atom (16-bit) or m16n8k32 atom (8-bit) is 2x2 (A) or
        2x1 (B) matrices."""
        which, wm, wn = kind
        b, eb = self.b, self.eb
        R, C = m.shape
        e = 32 // dt.bits
        kd = 1 if which == "a" else 0               # the operand's k dim
        step = (4 * e if kd == 0 else 8, 4 * e if kd == 1 else 8)    # one matrix's extent per dim
        trans = (which == "a" and cd == 0) or (which == "b" and cd == 1)
        if trans and e != 2:
            raise self.error(f"internal: ldmatrix.trans cannot read {dt} fragments")
        # warp base coordinate and the per-lane row offset (computed once, in the entry block)
        key = ("ldm", m.key(), cd, e)
        cached = self._tbase_cache.get(key)
        if cached is None:
            warp_tid = eb.and_(self.tid, ir.Constant(i32, ~31 & 0xFFFFFFFF))
            wb = self.tbase_of(m, warp_tid)
            lane = eb.and_(self.tid, ir.Constant(i32, 31))
            row_i = eb.and_(lane, ir.Constant(i32, 7))
            j0 = eb.and_(eb.lshr(lane, ir.Constant(i32, 3)), ir.Constant(i32, 1))
            j1 = eb.and_(eb.lshr(lane, ir.Constant(i32, 4)), ir.Constant(i32, 1))
            # matrix j: origin + step0*(j&1) along dim 0 + step1*(j>>1) along dim 1; stored row i
            # along the non-contiguous dim
            l0 = eb.add(eb.mul(j0, ir.Constant(i32, step[0])), row_i if cd == 1 else ir.Constant(i32, 0))
            l1 = eb.add(eb.mul(j1, ir.Constant(i32, step[1])), row_i if cd == 0 else ir.Constant(i32, 0))
            c0 = eb.add(wb[0], l0)
            c1 = eb.add(wb[1], l1)
            l0x2 = eb.add(eb.mul(j0, ir.Constant(i32, step[0])), row_i if cd == 1 else ir.Constant(i32, 0))
            cached = (c0, c1, eb.add(wb[0], l0x2), eb.add(wb[1], row_i if cd == 0 else ir.Constant(i32, 0)))
            self._tbase_cache[key] = cached
        c0, c1, c0x2, c1x2 = cached
        vi = m.value_index()
        vals = [None] * m.nvals
        ve = ir.VectorType(ir.IntType(dt.bits), e)

        def put(coord_lists, regs):
            for reg, coords in zip(regs, coord_lists):
                v2 = b.bitcast(reg, ve)
                for h, cc in enumerate(coords):
                    slot = vi.get(cc)
                    if slot is None:
                        raise self.error(f"internal: ldmatrix slot {cc} not in layout {m}")
                    vals[slot] = self.from_code(b.extract_element(v2, ir.Constant(i32, h)), dt)
        if which == "a":
            for o0, o1 in _atoms(m, (16, 8 * e)):
                if ks_only is not None and o1 != ks_only:
                    continue
                addr = self.sview_addr(sv, [self._add(c0, o0), self._add(c1, o1)])
                regs = self.tgt.ldmatrix(b, self.sptr(self._i(addr)), 4, trans)
                lists = []
                for j in range(4):
                    r_, k_ = o0 + 8 * (j & 1), o1 + 4 * e * (j >> 1)
                    lists.append([(r_, k_ + h) for h in range(e)])
                put(lists, regs)
        else:
            atoms = _atoms(m, (8 * e, 8))
            have = set(atoms)
            done = set()
            for o0, o1 in atoms:
                if ks_only is not None and o0 != ks_only:
                    continue
                if (o0, o1) in done:
                    continue
                if (o0, o1 + 8) in have and (o0, o1 + 8) not in done:
                    addr = self.sview_addr(sv, [self._add(c0, o0), self._add(c1, o1)])
                    regs = self.tgt.ldmatrix(b, self.sptr(self._i(addr)), 4, trans)
                    blocks = [(0, 0), (4 * e, 0), (0, 8), (4 * e, 8)]
                    done |= {(o0, o1), (o0, o1 + 8)}
                else:
                    addr = self.sview_addr(sv, [self._add(c0x2, o0), self._add(c1x2, o1)])
                    regs = self.tgt.ldmatrix(b, self.sptr(self._i(addr)), 2, trans)
                    blocks = [(0, 0), (4 * e, 0)]
                    done.add((o0, o1))
                lists = []
                for dk, dn in blocks:
                    lists.append([(o0 + dk + h, o1 + dn) for h in range(e)])
                put(lists, regs)
        src = m.dup_source()
        for v in range(m.nvals):
            if vals[v] is None:
                vals[v] = vals[src[v]]
            if vals[v] is None and not partial:
                raise self.error(f"internal: ldmatrix left slot {v} of {m} unset")
        return vals

    def tbase_of(self, m: ThreadMap, tid):
        """Per dim, the coordinate offset of thread `tid` (an i32 value) in layout m (entry block)."""
        eb = self.eb
        c = [ir.Constant(i32, 0)] * m.rank
        div = 1
        for s, cs in m.tmodes:
            if any(cs):
                dig = eb.urem(eb.udiv(tid, ir.Constant(i32, div)), ir.Constant(i32, s))
                for d, k in enumerate(cs):
                    if k:
                        c[d] = eb.add(c[d], eb.mul(dig, ir.Constant(i32, k)))
            div *= s
        return c

    # ------------------------------------------------------------------ scratch and conversions
    def scratch(self, op, shape, dt: DType, layout=None):
        if "smem_scratch" not in op.attrs:
            raise self.error("this op needs scratch shared memory: run the shared_memory_planning pass first")
        lay = layout if layout is not None else default_shared_layout(shape)
        off = int(op.attrs["smem_scratch"])
        return SView(ir.Constant(i32, off), tuple(shape), dt, lay, _align_of(off))

    def scratch_layout_for(self, src: ThreadMap, dst: ThreadMap, dt: DType):
        """The scratch layout of a conversion src -> dst (ir/shared_layouts.py)."""
        return conversion_scratch_layout(src, dst, dt.bits, self.num_warps)

    def _codes_tile(self, tile):
        """A sub-byte register tile as a tile of u8 codes (for staging through scratch)."""
        from ..ir.dtypes import u8
        if tile.dtype.bits >= 8:
            return tile
        return RTile(tile.map, [self.to_code(x, tile.dtype) for x in tile.vals], u8)

    def _stage_dtype(self, dt):
        from ..ir.dtypes import u8
        return u8 if dt.bits < 8 else dt

    @lowers("convert_layout")
    def op_convert_layout(self, op):
        a = self.rtile(op.operands[0])
        rt = op.results[0].type
        dm = self.tmap(rt)
        if a.map.same(dm):
            self.set(op.results[0], RTile(dm, list(a.vals), rt.dtype))
            return
        # same threads hold the same elements: a permutation of registers
        if a.map.nthreads == dm.nthreads and (a.map.tcoords() == dm.tcoords()).all():
            vi = a.map.value_index()
            if all(c in vi for c in dm.vcoord_list()):
                self.set(op.results[0], RTile(dm, [a.vals[vi[c]] for c in dm.vcoord_list()], rt.dtype))
                return
        sdt = self._stage_dtype(rt.dtype)
        sv = self.scratch(op, rt.shape, sdt, self.scratch_layout_for(a.map, dm, sdt))
        self.tgt.barrier(self.b)
        self.write_tile_smem(sv, self._codes_tile(a))
        lazy = op.attrs.get("copy") in LAZY_COPIES
        if lazy and self.target.has("async_proxy"):
            self.tgt.fence_proxy_async(self.b)      # a wgmma may read these bytes through the async proxy
        self.tgt.barrier(self.b)
        if lazy and op.attrs["copy"].startswith("ds_read"):
            self.set(op.results[0], self.ds_read_frag(sv, dm, rt.dtype))
            return
        if lazy:                            # the dot(s) read the fragments k step by k step
            self.set(op.results[0], LazyFrag(sv, dm, rt.dtype, self.ldmatrix_plan_or_error(sv, dm, sdt)))
            return
        vals = self.read_tile_smem(sv, dm, sdt, op)
        if sdt is not rt.dtype:
            vals = [self.from_code(x, rt.dtype) for x in vals]
        self.set(op.results[0], RTile(dm, vals, rt.dtype))

    def move_through_smem(self, op, a, rm: ThreadMap, src_coord):
        """Result value at coordinate c = source element at src_coord(c) (lists of i32 values)."""
        rt = op.results[0].type
        sdt = self._stage_dtype(a.dtype)
        sv = self.scratch(op, a.map.shape, sdt)
        self.tgt.barrier(self.b)
        self.write_tile_smem(sv, self._codes_tile(a))
        self.tgt.barrier(self.b)

        def rd(v):
            x = self._read_elem(sv, src_coord(self.coords(rm, v)), sdt)
            return self.from_code(x, a.dtype) if sdt is not a.dtype else x
        vals = self.map_values(rm, rd)
        self.set(op.results[0], RTile(rm, vals, rt.dtype))

    def _read_elem(self, sv, coords, dt):
        if dt.bits >= 8:
            return self._sload(self.sview_addr(sv, coords), dt, 1)[0]
        b = self.b
        e = self._i(self.layout_offset(sv.layout, coords))
        bo = b.mul(e, ir.Constant(i32, dt.bits))
        byte = b.add(sv.off, b.lshr(bo, ir.Constant(i32, 3)))
        sh = b.and_(bo, ir.Constant(i32, 7))
        w = b.zext(b.load(self.sptr(byte), typ=i8), i32)
        if 8 % dt.bits:
            w2 = b.zext(b.load(self.sptr(b.add(byte, ir.Constant(i32, 1))), typ=i8), i32)
            w = b.or_(w, b.shl(w2, ir.Constant(i32, 8)))
        code = b.trunc(b.and_(b.lshr(w, sh), ir.Constant(i32, (1 << dt.bits) - 1)), i8)
        return self.from_code(code, dt)

    def _unravel(self, lin, shape):
        """Row-major linear index (i32 value) -> coordinates."""
        b = self.b
        out = []
        for d in reversed(range(len(shape))):
            if d == 0:
                out.append(lin)
            else:
                out.append(b.urem(lin, ir.Constant(i32, shape[d])))
                lin = b.udiv(lin, ir.Constant(i32, shape[d]))
        return list(reversed(out))

    def _ravel(self, coords, shape):
        b = self.b
        lin = ir.Constant(i32, 0)
        for c, s in zip(coords, shape):
            lin = b.add(b.mul(lin, ir.Constant(i32, s)), c)
        return lin

    @lowers("reshape")
    def op_reshape(self, op):
        a = self.rtile(op.operands[0])
        rs = op.results[0].type.shape
        ash = op.operands[0].type.shape
        rm = self.tmap(op.results[0].type)
        view = a.map.reshape(rs)
        if view is not None and view.same(rm):
            self.set(op.results[0], RTile(rm, list(a.vals), a.dtype))
            return
        self.move_through_smem(op, a, rm, lambda c: self._unravel(self._ravel(c, rs), ash))

    @lowers("slice")
    def op_slice(self, op):
        a = self.rtile(op.operands[0])
        st = list(op.attrs["start"])
        rm = self.tmap(op.results[0].type)
        self.move_through_smem(op, a, rm, lambda c: [self._add(x, s) for x, s in zip(c, st)])

    @lowers("concat")
    def op_concat(self, op):
        rt = op.results[0].type
        rm = self.tmap(rt)
        ax = int(op.attrs["axis"])
        if rt.dtype.bits < 8:
            raise self.error("concat of sub-byte tiles is not supported by the GPU back end (cast first)")
        sv = self.scratch(op, rt.shape, rt.dtype)
        self.tgt.barrier(self.b)
        start = 0
        for v in op.operands:
            a = self.rtile(v)
            sub_off = [0] * rt.rank
            sub_off[ax] = start
            # a view of the result-shaped scratch shifted to this operand's slot
            base = self.layout_offset(sv.layout, sub_off)
            lay = sv.layout
            inner = lay.layout if isinstance(lay, ComposedLayout) else lay
            part = SView(self._add(sv.off, self._mul(base, rt.dtype.bits // 8) if rt.dtype.bits >= 8 else 0),
                         tuple(v.type.shape), rt.dtype,
                         Layout(tuple(v.type.shape), inner.stride) if rt.rank > 1 else Layout(v.type.shape[0], 1))
            if rt.dtype.bits < 8:
                raise self.error("concat of sub-byte tiles is not supported by the GPU back end")
            self.write_tile_smem(part, a)
            start += v.type.shape[ax]
        self.tgt.barrier(self.b)
        self.set(op.results[0], RTile(rm, self.read_tile_smem(sv, rm, rt.dtype, op), rt.dtype))

    def bitcast_tile(self, op):
        """Tile bitcast that changes the last dim: through shared memory as raw bits."""
        a = self.rtile(op.operands[0])
        rt = op.results[0].type
        rm = self.tmap(rt)
        at = op.operands[0].type
        sv_in = self.scratch(op, at.shape, at.dtype)
        self.tgt.barrier(self.b)
        self.write_tile_smem(sv_in, a)
        self.tgt.barrier(self.b)
        sv_out = SView(sv_in.off, tuple(rt.shape), rt.dtype, default_shared_layout(rt.shape))
        vals = self.map_values(rm, lambda v: self._read_elem(sv_out, self.coords(rm, v), rt.dtype))
        self.set(op.results[0], RTile(rm, vals, rt.dtype))

    # ------------------------------------------------------------------ async copies
    @lowers("async_copy")
    def op_async_copy(self, op):
        if self.copy_choice(op, ("cp.async", "ld.global", "tma")) == "tma":
            return self.async_copy_tma(op)           # codegen/lower_tma.py
        b = self.b
        sv = self.get(op.dst)
        T = self.get(op.tensor)
        idx = [self.as_i32(self.get(v)) for v in op.indices]
        st: TileType = op.operands[0].type
        dt = st.dtype
        if dt.bits < 8:
            return self._async_copy_packed(sv, T, idx, st)
        m = blocked(st.shape, self.nthreads, dt.bits)
        info, _ = self._tile_info_fn(T, idx, m, st.shape)
        vec = self.chosen_vec(op, m, dt)
        nbytes = vec * dt.bits // 8
        use_async = self.copy_choice(op, ("cp.async", "ld.global")) == "cp.async"
        if use_async and not (vec > 1 and nbytes in (4, 8, 16) and self._smem_vec(sv, m, dt) >= vec):
            raise self.error(f"cp.async needs 4, 8 or 16-byte chunks contiguous in shared layout {sv.layout} "
                             f"(vec = {vec} elements of {dt})")
        uniq = set(m.unique_values())
        own = self.owner(m)
        fast = self.vector_guard(op, T, vec, idx[-1])

        def async_path():
            for g, slots in self._groups(m, vec):
                inb, off = info(g)
                c = self.coords(m, g)
                dst = self._smem_byte_addr(sv, c, dt)
                if dt.bits >= 8:
                    srcp = self.elem_ptr(T, b.select(inb, off, ir.Constant(i64, 0)))
                else:
                    boff = b.lshr(b.mul(off, ir.Constant(i64, dt.bits)), ir.Constant(i64, 3))
                    srcp = self.byte_ptr(T, b.select(inb, boff, ir.Constant(i64, 0)))
                size = b.select(inb, ir.Constant(i32, nbytes), ir.Constant(i32, 0))
                self.tgt.cp_async(b, self.sptr(self._i(dst)), srcp, nbytes, size)
            return []

        def sync_path():
            zero = self.constant(dt, 0)
            endb = self._guarded(own)
            if dt.bits >= 8:
                self._copy_loop(sv, T, idx, m, dt, zero)
            else:
                vals = [None] * m.nvals
                for v in range(m.nvals):
                    inb, off = info(v)
                    vals[v] = self._load_one(T, dt, off, inb, zero)
                self._end_guard(endb)
                endb = None
                self._write_subbyte_smem(sv, RTile(m, vals, dt))
            self._end_guard(endb)
            return []
        if use_async and fast is not None:
            self._branch2(fast, async_path, sync_path, None)
        else:
            sync_path()

    @lowers("async_gather")
    def op_async_gather(self, op):
        """s[r, c] = T[rows[r], col0 + c]: 16-byte (or narrower) cp.async chunks along the contiguous
        dim, each thread using the row index of its chunk (the blocked copy layout; the row indices
        are converted to its projection by layout inference); element by element when the runtime
        check fails or the type is sub-byte."""
        b = self.b
        sv = self.get(op.operands[0])
        T = self.get(op.operands[1])
        st: TileType = op.operands[0].type
        dt = st.dtype
        m = blocked(st.shape, self.nthreads, dt.bits)
        rows = self._rows_operand(op, op.operands[2], m)
        col0 = self.as_i32(self.get(op.operands[3]))
        info = self._rows_info(T, rows, col0, m, st.shape[1])
        vec = self.chosen_vec(op, m, dt)
        nbytes = vec * dt.bits // 8
        use_async = self.copy_choice(op, ("cp.async", "ld.global")) == "cp.async"
        if use_async and not (dt.bits >= 8 and vec > 1 and nbytes in (4, 8, 16) and self._smem_vec(sv, m, dt) >= vec):
            raise self.error(f"cp.async needs 4, 8 or 16-byte chunks contiguous in shared layout {sv.layout} "
                             f"(vec = {vec} elements of {dt})")
        fast = self.vector_guard(op, T, vec, col0) if use_async else None

        def async_path():
            for g, slots in self._groups(m, vec):
                inb, off = info(g)
                dst = self._smem_byte_addr(sv, self.coords(m, g), dt)
                srcp = self.elem_ptr(T, b.select(inb, off, ir.Constant(i64, 0)))
                size = b.select(inb, ir.Constant(i32, nbytes), ir.Constant(i32, 0))
                self.tgt.cp_async(b, self.sptr(self._i(dst)), srcp, nbytes, size)
            return []

        def sync_path():
            vals = self._read_elems(T, dt, m, info, 1, None, self.constant(dt, 0), None)
            self.write_tile_smem(sv, RTile(m, vals, dt))
            return []
        self._branch2(fast, async_path, sync_path, None)

    def _async_copy_packed(self, sv, T, idx, st):
        """A sub-byte tile copied as bytes: in shared memory it is packed exactly like a row of
        global memory (LSB-first, rows of shape[-1] * bits / 8 whole bytes), so each row is one
        contiguous byte span in both places, independent of element boundaries. Threads take
        16/8/4-byte chunks of the row spans (cp.async, zero fill outside the tensor) when a runtime
        check makes that exact (unit last stride; the tile start, the row pitch and the tensor's
        last size multiples of the chunk); otherwise groups of whole bytes are assembled from
        element loads (zero outside the tensor) and stored, a runtime loop per thread."""
        b = self.b
        dt = st.dtype
        bits = dt.bits
        shape = tuple(int(x) for x in st.shape)
        r, R = len(shape), T.rank
        lead = R - r
        if (shape[-1] * bits) % 8:
            raise self.error(f"async copy of a {dt} tile {shape}: its rows are not whole bytes "
                             f"({shape[-1]} x {bits} bits); load it synchronously")
        RB = shape[-1] * bits // 8
        rshape = shape[:-1]
        nrows = prod(rshape) if rshape else 1
        lay = sv.layout
        inner = lay.layout if isinstance(lay, ComposedLayout) else lay
        modes = list(inner) if not isinstance(inner.shape, int) else [inner]
        last = _leaves(modes[-1].shape, modes[-1].stride)
        if isinstance(lay, ComposedLayout) or len(last) != 1 or last[0][1] != 1:
            raise self.error(f"async copy of a {dt} tile: shared layout {lay} is not packed row by row")

        def unravel_static(i):
            out = []
            for d in reversed(range(len(rshape))):
                out.append(i % rshape[d])
                i //= rshape[d]
            return list(reversed(out))
        row_bits = [self.layout_offset(lay, unravel_static(i) + [0]) * bits for i in range(nrows)]
        if any(x % 8 for x in row_bits):
            raise self.error(f"async copy of a {dt} tile: shared rows of layout {lay} do not start on bytes")
        chunk = 0
        for c in (16, 8, 4):
            if RB % c == 0 and all((x // 8) % c == 0 for x in row_bits) and sv.align % c == 0:
                chunk = c
                break
        nt = self.nthreads
        z64 = ir.Constant(i64, 0)

        def row_coords(row):
            """Runtime row index -> coordinates of the leading tile dims (i32)."""
            out = []
            for d in reversed(range(len(rshape))):
                if d == 0:
                    out.append(row)
                else:
                    out.append(b.urem(row, ir.Constant(i32, rshape[d])))
                    row = b.udiv(row, ir.Constant(i32, rshape[d]))
            return list(reversed(out))

        lead_pred, lead_off = self._tile_access_info(T, idx, shape)[1:]

        def row_access(rc):
            """(in-bounds of the row (leading dims), i64 element offset of the row's first element)."""
            pred, off = lead_pred, lead_off
            for d in range(r - 1):
                tc = b.add(idx[lead + d], rc[d])
                pred = _and(b, pred, b.icmp_unsigned("<", tc, T.shape[lead + d]))
                off = b.add(off, b.mul(self._sext64(tc), self._sext64(T.strides[lead + d])))
            return pred, off

        def smem_row_byte(rc):
            e = self.layout_offset(lay, list(rc) + [ir.Constant(i32, 0)])
            eb_ = self._mul(e, bits)
            return b.lshr(self._i(eb_), ir.Constant(i32, 3)) if not isinstance(eb_, int) else eb_ // 8

        def async_path():
            cpr = RB // chunk
            nch = nrows * cpr
            lim = b.mul(self._sext64(T.shape[-1]), ir.Constant(i64, bits))
            col0 = b.mul(self._sext64(idx[-1]), ir.Constant(i64, bits))
            for k in range((nch + nt - 1) // nt):
                c = b.add(self.tid, ir.Constant(i32, k * nt))
                row = b.udiv(c, ir.Constant(i32, cpr)) if cpr > 1 else c
                cb = b.urem(c, ir.Constant(i32, cpr)) if cpr > 1 else ir.Constant(i32, 0)
                rc = row_coords(row) if r > 1 else []
                pred, off = row_access(rc)
                cbit = b.add(col0, b.mul(b.zext(cb, i64), ir.Constant(i64, chunk * 8)))
                pred = _and(b, pred, b.icmp_unsigned("<", cbit, lim))
                off = b.add(off, self._sext64(idx[-1]))                  # unit last stride here
                gbyte = b.add(b.lshr(b.mul(off, ir.Constant(i64, bits)), ir.Constant(i64, 3)),
                              b.mul(b.zext(cb, i64), ir.Constant(i64, chunk)))
                sbyte = self._add(self._add(sv.off, smem_row_byte(rc)), b.mul(cb, ir.Constant(i32, chunk)))
                srcp = self.byte_ptr(T, b.select(pred, gbyte, z64))
                size = b.select(pred, ir.Constant(i32, chunk), ir.Constant(i32, 0))
                if nch % nt and (k + 1) * nt > nch:
                    endb = self._guarded(b.icmp_unsigned("<", c, ir.Constant(i32, nch)))
                    self.tgt.cp_async(b, self.sptr(self._i(sbyte)), srcp, chunk, size)
                    self._end_guard(endb)
                else:
                    self.tgt.cp_async(b, self.sptr(self._i(sbyte)), srcp, chunk, size)
            return []

        def sync_path():
            from math import gcd
            per = 8 // gcd(8, bits)
            nb = per * bits // 8
            gpr = shape[-1] // per
            ng = nrows * gpr
            zero = self.constant(dt, 0)

            def body(g):
                row = b.udiv(g, ir.Constant(i32, gpr)) if gpr > 1 else g
                cg = b.urem(g, ir.Constant(i32, gpr)) if gpr > 1 else ir.Constant(i32, 0)
                rc = row_coords(row) if r > 1 else []
                pred, off = row_access(rc)
                codes = []
                for e in range(per):
                    col = b.add(b.add(idx[-1], b.mul(cg, ir.Constant(i32, per))), ir.Constant(i32, e))
                    inb = _and(b, pred, b.icmp_unsigned("<", col, T.shape[-1]))
                    eoff = b.add(off, b.mul(self._sext64(col), self._sext64(T.strides[-1])))
                    codes.append(self.to_code(self._load_one(T, dt, eoff, inb, zero), dt))
                base = self._add(self._add(sv.off, smem_row_byte(rc)), b.mul(cg, ir.Constant(i32, nb)))
                for k2, w in enumerate(self._join_words(codes, bits, 8, nb)):
                    b.store(w, self.sptr(self._i(self._add(base, k2))))
            self._thread_loop((ng + nt - 1) // nt, lambda k: b.add(self.tid, b.mul(k, ir.Constant(i32, nt))),
                              ng, body)
            return []

        if not chunk:
            sync_path()
            return
        fast = b.icmp_unsigned("==", T.strides[-1], ir.Constant(i32, 1))
        am = ir.Constant(i64, 8 * chunk - 1)
        z = ir.Constant(i64, 0)

        def aligned(x32):
            return b.icmp_unsigned("==", b.and_(b.mul(self._sext64(x32), ir.Constant(i64, bits)), am), z)
        fast = b.and_(fast, aligned(idx[-1]))
        fast = b.and_(fast, aligned(T.shape[-1]))
        for j in range(R - 1):
            fast = b.and_(fast, aligned(T.strides[j]))
        if chunk > self.align:
            p = b.ptrtoint(T.ptr, i64)
            fast = b.and_(fast, b.icmp_unsigned("==", b.and_(p, ir.Constant(i64, chunk - 1)), z))
        self._branch2(fast, async_path, sync_path, None)

    def _thread_loop(self, count: int, index_of, limit: int, body):
        """for k in 0..count-1: g = index_of(k); if g < limit: body(g) -- a runtime loop."""
        b = self.b
        pre = b.block
        head = self.llfn.append_basic_block("tl.head")
        bodyb = self.llfn.append_basic_block("tl.body")
        work = self.llfn.append_basic_block("tl.work")
        latch = self.llfn.append_basic_block("tl.latch")
        done = self.llfn.append_basic_block("tl.done")
        b.branch(head)
        b.position_at_end(head)
        k = b.phi(i32)
        k.add_incoming(ir.Constant(i32, 0), pre)
        b.cbranch(b.icmp_unsigned("<", k, ir.Constant(i32, count)), bodyb, done)
        b.position_at_end(bodyb)
        g = index_of(k)
        b.cbranch(b.icmp_unsigned("<", g, ir.Constant(i32, limit)), work, latch)
        b.position_at_end(work)
        body(g)
        b.branch(latch)
        b.position_at_end(latch)
        nk = b.add(k, ir.Constant(i32, 1))
        k.add_incoming(nk, latch)
        b.branch(head)
        b.position_at_end(done)

    def _copy_loop(self, sv, T, idx, m, dt, zero):
        """Element-by-element global -> shared copy as a runtime loop over this thread's value
        slots (compact code: the fallback of async_copy)."""
        b = self.b
        pre = b.block
        head = self.llfn.append_basic_block("copy.head")
        body = self.llfn.append_basic_block("copy.body")
        done = self.llfn.append_basic_block("copy.done")
        b.branch(head)
        b.position_at_end(head)
        v = b.phi(i32)
        v.add_incoming(ir.Constant(i32, 0), pre)
        b.cbranch(b.icmp_unsigned("<", v, ir.Constant(i32, m.nvals)), body, done)
        b.position_at_end(body)
        tb = self.tbase(m)
        c = list(tb)
        div = 1
        for s_, cs in m.vmodes:
            dig = b.urem(b.udiv(v, ir.Constant(i32, div)), ir.Constant(i32, s_))
            for d, k in enumerate(cs):
                if k:
                    c[d] = b.add(c[d], b.mul(dig, ir.Constant(i32, k)))
            div *= s_
        lead, upred, uoff = self._tile_access_info(T, idx, m.shape)
        pred, off = upred, uoff
        for d in range(m.rank):
            tc = b.add(idx[lead + d], c[d])
            ok = b.icmp_unsigned("<", tc, T.shape[lead + d])
            pred = ok if pred is None else b.and_(pred, ok)
            off = b.add(off, b.mul(self._sext64(tc), self._sext64(T.strides[lead + d])))
        x = self._load_one(T, dt, off, pred, zero)
        self._sstore(self.sview_addr(sv, c), dt, [x])
        nv = b.add(v, ir.Constant(i32, 1))
        v.add_incoming(nv, b.block)
        b.branch(head)
        b.position_at_end(done)

    def _smem_byte_addr(self, sv, coords, dt):
        if dt.bits >= 8:
            return self.sview_addr(sv, coords)
        e = self.layout_offset(sv.layout, coords)
        bo = self._mul(e, dt.bits)
        byte = self.b.lshr(self._i(bo), ir.Constant(i32, 3)) if not isinstance(bo, int) else bo // 8
        return self._add(sv.off, byte)


def _align_of(off: int) -> int:
    return (off & -off) if off else 1 << 20


def _atoms(m, size):
    """Origins (multiples of `size`) of the fragment atoms thread 0 holds, in slot order."""
    seen, out = set(), []
    for c in m.vcoord_list():
        o = (c[0] - c[0] % size[0], c[1] - c[1] % size[1])
        if o not in seen:
            seen.add(o)
            out.append(o)
    return out


def transposed_view(sv):
    """The same shared bytes viewed as the transposed 2-D tile."""
    return SView(sv.off, (sv.shape[1], sv.shape[0]), sv.dtype, transpose_layout(sv.layout), sv.align)
