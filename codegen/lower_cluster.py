"""Thread-block clusters (NVIDIA sm_90): the launch's cluster shape (function attribute `cluster`, from
the `cluster=` launch option), the cluster ids, the cluster barrier, and the two pieces of the
warp-specialized main loop that talk to the other blocks of a cluster (passes/warp_specialize.py
decides where):

* a TMA copy with `cluster = n` (a tile every block of the cluster loads, `load(..., multicast=True)`):
  block r of the cluster issues the boxes i with i % n == r, each multicast to all n blocks
  (`.multicast::cluster`, mask (1 << n) - 1): every block receives the whole tile, its bytes completing
  on its own mbarrier of the stage (the same shared-memory offsets in every block), and expects the
  whole tile's bytes there as before;
* `mbarrier_arrive {per = "warp", cluster = n}` (a consumer releasing a stage that is multicast into
  all n blocks): lane r < n of each warp arrives on that mbarrier in block r (`mapa` + a remote arrive),
  so a stage's `empty` mbarrier completes when every block's consumers are done with it -- only then
  may any block's producer multicast into it again.

Targets without clusters (sm_80, AMD) lower the ids as a cluster of one block (cluster_id = block_id)
and refuse a launch that asks for a cluster larger than one block.
"""
from __future__ import annotations

from math import prod

import llvmlite.ir as ir

from .table import lowers
from .llvm_util import i32


class ClusterLowering:
    def cluster_dims(self) -> tuple:
        c = tuple(int(x) for x in (self.fn.attrs.get("cluster") or ()))
        return c + (1,) * (3 - len(c))

    def cluster_size(self) -> int:
        return prod(self.cluster_dims())

    def check_cluster(self):
        """A cluster of more than one block needs a target with clusters (one line, naming the kernel)."""
        if self.cluster_size() > 1 and not self.target.has("clusters"):
            raise self.error(f"launch option cluster = {list(self.cluster_dims())}: target {self.target.name} has no "
                             f"thread-block clusters (NVIDIA sm_90 and later do)")

    @lowers("cluster_id", "num_clusters", "block_in_cluster", "cluster_shape")
    def op_cluster_ids(self, op):
        ax = op.attrs["axis"]
        if self.cluster_dims()[ax] == 1:               # no cluster along this axis: grid values, constants
            v = {"cluster_id": lambda: self.tgt.block_id(self.b, ax),
                 "num_clusters": lambda: self.tgt.num_blocks(self.b, ax),
                 "block_in_cluster": lambda: ir.Constant(i32, 0),
                 "cluster_shape": lambda: ir.Constant(i32, 1)}[op.name]()
        elif op.name == "cluster_shape":
            v = ir.Constant(i32, self.cluster_dims()[ax])
        else:
            v = self.tgt.cluster_sreg(self.b, op.name, ax)
        self.set(op.results[0], v)

    @lowers("cluster_barrier")
    def op_cluster_barrier(self, op):
        if self.role_barrier is not None:
            raise self.error("cluster_barrier belongs at the kernel's top level (every thread of the block arrives)")
        if self.cluster_size() > 1:
            self.tgt.cluster_barrier(self.b)
        else:
            self.tgt.barrier(self.b)

    def cluster_rank(self):
        """i32: this block's rank in its cluster (%cluster_ctarank), read once in the entry."""
        c = self._tbase_cache.get("cluster_rank")
        if c is None:
            c = self._tbase_cache["cluster_rank"] = self.tgt.cluster_sreg(self.eb, "cluster_rank", 0)
        return c
