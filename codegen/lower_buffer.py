"""load / store through a buffer resource (AMD): `copy = "buffer.load"` / `"buffer.store"`, chosen
by instruction selection (passes/select_amd.py); other loads and stores take the generic lowering
(codegen/lower_memory.py).

The tile's origin (the index operands' element, a uniform 64-bit address) is the base of a buffer
resource (V#) in SGPRs; each lane's accesses are 32-bit byte offsets from it. A masked-off or
out-of-bounds element gets the offset RSRC_MASKED, past the resource's records, where the hardware's
range check reads 0 and drops writes: masking costs one v_cndmask per access instead of a branch,
and with `other` 0 the loaded value needs no select either.

The offsets are exact only when they fit: the tile's strides are non-negative and its extent
(sum of (size - 1) * stride over the tile's dims, in bytes, plus one access) stays below
RSRC_RECORDS -- a uniform run-time check, true for any tensor whose tile rows are less than 2 GB
apart. Vector accesses also need the check of lower_memory.py (unit last stride, aligned runs).
Where either fails, the generic element-by-element path runs instead.
"""
from __future__ import annotations

import math

import llvmlite.ir as ir

from .llvm_util import i1, i8, i32, i64
from .lower_memory import _and
from .table import lowers
from .values import RTile


class BufferLowering:
    def _buffer_access(self, T, idx, m, shape, vec: int):
        """(resource, uniform i1 "offsets fit", info) for a tile right-aligned at idx in T; info(v) ->
        (in-bounds i1, i32 byte offset of slot v from the tile's origin)."""
        b = self.b
        tg = self.tgt
        lead, upred, uoff = self._tile_access_info(T, idx, shape)
        r = len(shape)
        nbytes = T.dtype.bits // 8
        origin = uoff
        for d in range(r):
            origin = b.add(origin, b.mul(self._sext64(idx[lead + d]), self._sext64(T.strides[lead + d])))
        rsrc = tg.make_buffer_rsrc(b, b.gep(T.ptr, [b.mul(origin, ir.Constant(i64, nbytes))], source_etype=i8))
        ext = ir.Constant(i64, vec * nbytes)
        fits = ir.Constant(i1, 1)
        for d in range(r):
            st = T.strides[lead + d]
            fits = b.and_(fits, b.icmp_signed(">=", st, ir.Constant(i32, 0)))
            ext = b.add(ext, b.mul(self._sext64(st), ir.Constant(i64, (shape[d] - 1) * nbytes)))
        fits = b.and_(fits, b.icmp_signed("<=", ext, ir.Constant(i64, tg.RSRC_RECORDS)))
        tb = self.tbase(m)
        rel = ir.Constant(i32, 0)
        for d in range(r):
            if not (isinstance(tb[d], ir.Constant) and tb[d].constant == 0):
                rel = b.add(rel, b.mul(tb[d], T.strides[lead + d]))
        vcs = m.vcoord_list()
        masked = ir.Constant(i32, tg.RSRC_MASKED)

        def info(v):
            vc = vcs[v]
            off = rel
            pred = upred
            for d in range(r):
                if vc[d]:
                    off = b.add(off, b.mul(ir.Constant(i32, vc[d]), T.strides[lead + d]))
                base = b.add(idx[lead + d], tb[d]) if not (isinstance(tb[d], ir.Constant) and tb[d].constant == 0) \
                    else idx[lead + d]
                cd = base if vc[d] == 0 else b.add(base, ir.Constant(i32, vc[d]))
                pred = _and(b, pred, b.icmp_unsigned("<", cd, T.shape[lead + d]))
            return pred, b.mul(off, ir.Constant(i32, nbytes)), masked
        return rsrc, fits, info

    def _buffer_choice(self, op, name):
        c = op.attrs.get("copy")
        if c != name:
            raise self.error(f"copy = {c!r} is not a mechanism of '{op.name}'; one of: {name}, or none (global)")
        if self.target.copy_atom(name) is None:
            raise self.error(f"copy = {c!r}: target {self.target.name} has no buffer instructions")
        if op.results and op.results[0].type.dtype.bits < 8 or not op.results and op.value.type.dtype.bits < 8:
            raise self.error(f"copy = {c!r} moves whole bytes: not for sub-byte dtypes")

    @lowers("load", family="amd")
    def op_load_amd(self, op):
        """A load with `copy = "buffer.load"` through a buffer resource; any other the generic way."""
        if "copy" not in op.attrs:
            return self.op_load(op)
        self._buffer_choice(op, "buffer.load")
        b = self.b
        T, idx, mask, rt, m, dt, other = self.load_operands(op)
        oth = op.attrs.get("other", 0)
        zero_other = oth == 0 and not (isinstance(oth, float) and math.copysign(1.0, oth) < 0)   # what OOB reads
        vec = self.chosen_vec(op, m, dt)
        rsrc, fits, binfo = self._buffer_access(T, idx, m, rt.shape, vec)
        cond = fits if vec == 1 else b.and_(fits, self._fast_cond(T, vec, idx[-1]))
        uniq = set(m.unique_values())
        src = m.dup_source()

        def buffer_path():
            vals = [None] * m.nvals
            for g, slots in self._groups(m, vec):
                if vec == 1 and g not in uniq:
                    continue
                inb, off, masked = binfo(g)
                pred = inb
                if mask is not None and vec == 1:
                    pred = _and(b, pred, mask.vals[g])
                voff = b.select(pred, off, masked) if pred is not None else off
                words = self.tgt.buffer_load(b, rsrc, voff, dt.bits, vec)
                for k, v in enumerate(slots):
                    x = self.from_code(words[k], dt)
                    if mask is not None and vec > 1:
                        x = b.select(mask.vals[v], x, other)
                    elif not zero_other and pred is not None:
                        x = b.select(pred, x, other)
                    vals[v] = x
            return [vals[v] if vals[v] is not None else vals[src[v]] for v in range(m.nvals)]

        def generic_path():
            info, _ = self._tile_info_fn(T, idx, m, rt.shape)
            return self._read_elems(T, dt, m, info, 1, None, other, mask.vals if mask else None)
        vals = self._branch2(cond, buffer_path, generic_path, None)
        self.set(op.results[0], RTile(m, vals, dt))

    @lowers("store", family="amd")
    def op_store_amd(self, op):
        """A store with `copy = "buffer.store"` through a buffer resource; any other the generic way."""
        if "copy" not in op.attrs:
            return self.op_store(op)
        self._buffer_choice(op, "buffer.store")
        b = self.b
        T, idx, val, mask = self.store_operands(op)
        m, dt = val.map, val.dtype
        vec = self.chosen_vec(op, m, dt)
        rsrc, fits, binfo = self._buffer_access(T, idx, m, op.value.type.shape, vec)
        cond = fits if vec == 1 else b.and_(fits, self._fast_cond(T, vec, idx[-1]))
        uniq = set(m.unique_values())
        own = self.owner(m)

        def put(pred, off, masked, vals):
            voff = b.select(pred, off, masked) if pred is not None else off
            self.tgt.buffer_store(b, rsrc, voff, dt.bits, [self.to_code(x, dt) for x in vals])

        def buffer_path():
            for g, slots in self._groups(m, vec):
                if vec == 1 and g not in uniq:
                    continue
                inb, off, masked = binfo(g)
                pred = _and(b, own, inb)
                if mask is None:
                    put(pred, off, masked, [val.vals[v] for v in slots])
                    continue
                if vec == 1:
                    put(_and(b, pred, mask.vals[g]), off, masked, [val.vals[g]])
                    continue
                allm = None
                for v in slots:
                    allm = _and(b, allm, mask.vals[v])
                put(_and(b, pred, allm), off, masked, [val.vals[v] for v in slots])
                notall = b.not_(allm)           # partly masked runs: element by element
                for k, v in enumerate(slots):
                    put(_and(b, _and(b, pred, notall), mask.vals[v]), b.add(off, ir.Constant(i32, k * dt.bits // 8)),
                        masked, [val.vals[v]])
            return []

        def generic_path():
            info, _ = self._tile_info_fn(T, idx, m, op.value.type.shape)
            self._write_elems(T, dt, m, val.vals, info, 1, None, mask.vals if mask else None)
            return []
        self._branch2(cond, buffer_path, generic_path, None)
