"""dot on AMD: MFMA atoms where the layouts are the MFMA fragments, the FMA loop otherwise.

Instruction selection (passes/select_instructions.py) wrote the atom: `mfma.32x32x8`,
`mfma.16x16x16` (CDNA2/3), `mfma.32x32x16`, `mfma.16x16x32` (CDNA4), with `warps = [wm, wn]`, or
`fma`. For an MFMA atom layout inference gave the operands and the accumulator the MFMA fragment
layouts tiled over the waves (ir/thread_maps.py `mfma_a/mfma_b/mfma_c`); which register slot feeds
which atom input is looked up by tile coordinate in those layouts, from the fragment tables of
ir/fragments.py -- nothing is assumed about slot order.

Operands whose producer has `copy = "ds_read.k"` (a shared_load, or a convert_layout staged through
scratch LDS; `ds_read.trans.k`: a shared_load read through the transpose that follows) stay in LDS
as lazy fragments: the dot reads each k step's inputs just before its MFMAs, as vector LDS reads
where the layout keeps a lane's k elements contiguous, so only the accumulator and one k step of
the operands are live in registers.
"""
from __future__ import annotations

import llvmlite.ir as ir

from ..ir.ops import LOOP_SCHEDULE_WAVES
from ..ir.shared_layouts import smem_vector_elems, transpose_layout
from ..ir.thread_maps import MMA_IN, ThreadMap, mfma_dot_grid

from .lower_shared import _atoms, transposed_view
from .table import lowers
from .values import DS_READ, LazyFrag, RTile


class MfmaLowering:
    @lowers("dot", family="amd")
    def op_dot_amd(self, op):
        a, bt, acc, (M, N, K), rm, atom = self.dot_operands(op)       # (lower_dot.py)
        rt = op.results[0].type
        if atom.startswith("mfma."):
            vals = self._dot_mfma(op, atom, a, bt, acc, M, N, K)
        else:
            vals = self._dot_fma(op, self.materialize(a), self.materialize(bt), acc, M, N, K)
        self.set(op.results[0], RTile(rm, vals, rt.dtype))

    # ------------------------------------------------------------------ operands in LDS
    def ds_read_frag(self, sv, m, dt, transposed=False):
        """The lowered value of a shared_load / convert_layout with copy = "ds_read.k" (or
        "ds_read.trans.k": the IR value is the transpose of `sv`, and the transpose op that follows
        passes the view on): the MFMA dot reads it one k step at a time (`ds_read_k_step`)."""
        if dt.bits not in (8, 16) or len(sv.shape) != 2:
            raise self.error(f"copy = 'ds_read.k' reads 8/16-bit 2-D MFMA operands, not a {dt} tile {sv.shape}")
        if transposed:
            return LazyFrag(transposed_view(sv), m.permute([1, 0]), dt, DS_READ, True)
        return LazyFrag(sv, m, dt, DS_READ)

    def ds_read_k_step(self, frag, slots, kdim):
        """This lane's values of `slots` (consecutive along dim `kdim`, the k run of one MFMA
        input) read from LDS: vector reads (ds_read_b64 / b128) where the run is contiguous and
        aligned in the shared layout, element reads otherwise."""
        sv, m, dt = frag.sv, frag.map, frag.dtype
        n = len(slots)
        lay = sv.layout if kdim == 1 else transpose_layout(sv.layout)
        vec = smem_vector_elems(lay, n)
        while vec > 1 and sv.align % (vec * dt.bits // 8):
            vec //= 2
        c0 = self.coords(m, slots[0])
        out = []
        for j in range(0, n, vec):
            c = list(c0)
            if j:
                c[kdim] = self._add(c[kdim], j)
            out += self._sload(self.sview_addr(sv, c), dt, vec) if vec > 1 else \
                [self._sload(self.sview_addr(sv, c), dt, 1)[0]]
        return out

    def _dot_mfma(self, op, atom, a, bt, acc, M, N, K):
        """One MFMA per (row atom, column atom, k step) of this thread's wave: the A atom of its
        rows meets the B atom of its columns. Atom origins and register slots come from the layouts
        (thread 0's tile coordinates); the order of an atom's accumulator registers is the fragment's
        (ir/fragments.py, through the Target's atom). An operand left in LDS (`ds_read.k`) is read
        one k step at a time, just before its MFMAs."""
        if isinstance(a, LazyFrag) and a.plan != DS_READ or isinstance(bt, LazyFrag) and bt.plan != DS_READ:
            raise self.error(f"atom = {atom!r}: an operand is an NVIDIA lazy fragment (ldmatrix / smem.desc)")
        at = self.target.mma_atom(atom)
        if a.dtype.name not in MMA_IN or a.dtype != bt.dtype or acc.dtype.name != "f32":
            raise self.error(f"atom = {atom!r} multiplies bf16/f16 into f32, not {a.dtype} x {bt.dtype} into {acc.dtype}")
        g = op.attrs.get("warps")
        got = mfma_dot_grid(a.map, bt.map, acc.map, self.num_warps, [(at.name, at.m, at.n, at.k)])
        if not (isinstance(g, list) and len(g) == 2) or got is None or list(got[1:]) != list(g):
            raise self.error(f"atom = {atom!r} with warps = {g}: the operands are not the {atom} fragments of that "
                             f"wave grid (layout inference gave "
                             f"{'no MFMA layouts' if got is None else 'warps = ' + str(list(got[1:]))})")
        b = self.b
        kper = at.k * at.m // at.group                     # consecutive k elements per lane
        creg = ThreadMap.from_tv(at.c()).vcoord_list()     # accumulator register r -> (i, j) in the atom
        via, vib, vic = a.map.value_index(), bt.map.value_index(), acc.map.value_index()

        def slot(vi, c):
            s_ = vi.get(c)
            if s_ is None:
                raise self.error(f"internal: fragment coordinate {c} missing from the layout")
            return s_
        out = list(acc.vals)
        lazy_a, lazy_b = isinstance(a, LazyFrag), isinstance(bt, LazyFrag)
        c_atoms = _atoms(acc.map, (at.m, at.n))
        k_steps = sorted({o[1] for o in _atoms(a.map, (at.m, at.k))})

        def read(k0):
            """This lane's A and B inputs of k step k0 (from LDS where an operand is lazy)."""
            A, B = {}, {}
            for r0, n0 in c_atoms:
                if r0 not in A:
                    sl = [slot(via, (r0, k0 + e)) for e in range(kper)]
                    A[r0] = self.ds_read_k_step(a, sl, 1) if lazy_a else [a.vals[s_] for s_ in sl]
                if n0 not in B:
                    sl = [slot(vib, (k0 + e, n0)) for e in range(kper)]
                    B[n0] = self.ds_read_k_step(bt, sl, 0) if lazy_b else [bt.vals[s_] for s_ in sl]
            return A, B

        def multiply(A, B):
            for r0, n0 in c_atoms:
                cs = [slot(vic, (r0 + i, n0 + j)) for i, j in creg]
                d = self.tgt.mfma(b, atom, a.dtype.name, A[r0], B[n0], [out[s_] for s_ in cs])
                for s_, x in zip(cs, d):
                    out[s_] = x
        sched = self._loop_schedule(op)
        if sched is not None and self.num_warps != LOOP_SCHEDULE_WAVES[sched]:
            raise self.error(f"the loop's schedule = {sched!r} is made for {LOOP_SCHEDULE_WAVES[sched]} waves, "
                             f"this kernel has {self.num_warps}")
        if sched == "interleave":
            self._interleave(k_steps, read, multiply, len(c_atoms))
        elif sched == "pingpong":
            self._pingpong(k_steps, read, multiply, int(op.parent.parent.attrs.get("phases", 2)))
        else:
            for k0 in k_steps:
                multiply(*read(k0))
        src = acc.map.dup_source()
        return [out[src[v]] for v in range(len(out))]

    # ------------------------------------------------------------------ wave schedules
    def _loop_schedule(self, op):
        """The `schedule` of the `for` whose body holds this dot directly (passes/schedule_amd.py)."""
        loop = getattr(op.parent, "parent", None)
        if getattr(loop, "name", None) == "for":
            return loop.attrs.get("schedule")
        return None

    def _loads_since(self, n0: int) -> int:
        return sum(1 for i in self.b.block.instructions[n0:] if i.opname == "load")

    def _interleave(self, k_steps, read, multiply, n_mfma: int):
        """schedule = "interleave": the next k step's LDS reads are issued before this step's MFMAs,
        and sched_group_barriers deal them out between the MFMAs (one MFMA, a share of the reads,
        one MFMA, ...), so one wave per SIMD overlaps its LDS latency with its matrix work."""
        b, t = self.b, self.tgt
        cur = read(k_steps[0])
        for i in range(len(k_steps)):
            nxt, nreads = None, 0
            if i + 1 < len(k_steps):
                n0 = len(b.block.instructions)
                nxt = read(k_steps[i + 1])
                nreads = self._loads_since(n0)
            multiply(*cur)
            for j in range(n_mfma):
                t.sched_group_barrier(b, 0x8, 1, 0)                          # one MFMA
                share = nreads * (j + 1) // n_mfma - nreads * j // n_mfma
                if share:
                    t.sched_group_barrier(b, 0x100, share, 0)                # then DS reads
            cur = nxt

    def _pingpong(self, k_steps, read, multiply, phases: int):
        """schedule = "pingpong" (8 waves, two groups of 4): the k steps in `phases` clusters; each
        cluster is LDS reads, barrier, MFMAs at priority 1, barrier. The second group passes one
        barrier before the dot and the first one after it, so the MFMAs of one group meet the LDS
        reads of the other at every barrier (passes/schedule_amd.py: why this is race-free)."""
        b, t = self.b, self.tgt
        wave0 = t.readfirstlane(b, t.thread_id(b))
        second = b.icmp_unsigned(">=", wave0, ir.Constant(wave0.type, 4 * self.target.warp_size))

        def turn():                      # the groups swap roles; nothing moves across the swap
            t.sched_barrier(b, 0)
            t.s_barrier(b)
            t.sched_barrier(b, 0)
        with b.if_then(second):
            t.s_barrier(b)
        t.sched_barrier(b, 0)
        n = len(k_steps)
        chunks = [k_steps[n * p // phases:n * (p + 1) // phases] for p in range(phases)]
        for p, chunk in enumerate(chunks):
            if p:
                turn()
            ops = [read(k0) for k0 in chunk]
            turn()
            t.s_setprio(b, 1)
            for A, B in ops:
                multiply(A, B)
            t.s_setprio(b, 0)
        t.sched_barrier(b, 0)
        with b.if_then(b.not_(second)):
            t.s_barrier(b)
