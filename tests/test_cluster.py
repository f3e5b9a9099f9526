"""Thread-block clusters (launch option `cluster`, NVIDIA sm_90) and TMA multicast (`load(...,
multicast=True)` in a warp-specialized loop; passes/warp_specialize.py "Clusters", codegen/lower_cluster.py).

CPU: the cluster ids in the interpreter; the multicast promise checked there (a block of a cluster reading
another tile is a located error); bad `cluster` options and grids; the gallery GEMM with 2-block clusters
(persistent and not, warp-specialized and not, an odd number of row tiles) against float64 and bit for
bit against the kernel without clusters, in the interpreter -- the front end's IR and the specialized IR
after the pipeline; the IR after warp_specialize (the empty mbarriers count both blocks' warps, the
consumers release to both blocks, B's copy is split over the cluster and A's is not, cluster barriers
around the roles, the mbarriers invalidated after the second) and its round trip; the PTX (multicast
copies, mapa + remote arrives, cluster barriers; ptxas: no spills); the targets without clusters refuse
them in one line. GPU (marked gpu): the same GEMMs on the H100 against float64 and bit for bit against
the kernel without clusters; the cluster ids on the GPU equal the interpreter's."""
import shutil
import warnings

import ml_dtypes
import numpy as np
import pytest

import tile
from tile import bf16, f32, i32
from tile import compiler
from tile.ir.parser import parse_module
from tile.ir.printer import print_module
from tile.runtime.interpreter import InterpreterError, run

from helpers import LazyExample, assemble

needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not on PATH")
T2 = tile.Tensor[bf16, 2]
SIG = (T2, T2, T2, tile.Tensor[f32, 1], f32)


GEMM = LazyExample("gemm")


@tile.kernel
def ids(Y: tile.Tensor[i32, 2]):
    b = tile.block_id(1) * tile.num_blocks(0) + tile.block_id(0)
    for ax in tile.static_range(2):
        Y[b, 4 * ax + 0] = tile.cluster_id(ax)
        Y[b, 4 * ax + 1] = tile.num_clusters(ax)
        Y[b, 4 * ax + 2] = tile.block_in_cluster(ax)
        Y[b, 4 * ax + 3] = tile.cluster_shape(ax)


@tile.kernel
def shared_rows(X: tile.Tensor[f32, 2], Z: tile.Tensor[f32, 2], PER_BLOCK: tile.constexpr = False):
    b = tile.block_id(0)
    row = b if PER_BLOCK else tile.cluster_id(0)
    tile.store(Z, (b * 2, 0), tile.load(X, (row * 2, 0), (2, 4), multicast=True))


def _expected_ids(grid, cl):
    out = []
    for y in range(grid[1]):
        for x in range(grid[0]):
            row = []
            for ax, (g, c, i) in enumerate(zip(grid, cl, (x, y))):
                row += [i // c, g // c, i % c, c]
            out.append(row)
    return np.array(out, np.int32)


# ------------------------------------------------------------------------------ the interpreter
@pytest.mark.parametrize("grid, cluster", [((6, 2), None), ((6, 2), 2), ((6, 2), (3, 1)), ((4, 4), (2, 2, 1)),
                                           ((6, 2), (1, 2))])
def test_cluster_ids_in_the_interpreter(monkeypatch, grid, cluster):
    monkeypatch.setenv("TILEC_TARGET", "cpu")
    Y = np.full((grid[0] * grid[1], 8), -1, np.int32)
    kw = {} if cluster is None else {"cluster": cluster}
    ids[grid](Y, **kw)
    cl = (1, 1) if cluster is None else ((cluster, 1) if isinstance(cluster, int) else tuple(cluster)[:2])
    np.testing.assert_array_equal(Y, _expected_ids(grid, cl))


def test_multicast_promise_is_checked(monkeypatch):
    """Every block of a cluster reading the same tile passes (each gets it); a block reading another
    tile is an error at the load's line, naming both blocks' indices."""
    monkeypatch.setenv("TILEC_TARGET", "cpu")
    X = np.random.default_rng().standard_normal((16, 4)).astype(np.float32)
    Z = np.full((16, 4), np.nan, np.float32)
    shared_rows[(8,)](X, Z, cluster=2)
    np.testing.assert_array_equal(Z, np.concatenate([X[2 * (b // 2):2 * (b // 2) + 2] for b in range(8)]))
    shared_rows[(8,)](X, Z, PER_BLOCK=True)                   # no cluster: every block is its own
    with pytest.raises(InterpreterError, match=r"test_cluster\.py:\d+:\d+.*multicast load must read the same tile "
                                               r"in every block of a cluster: block \(0, 0, 0\) read X at \[0, 0\], "
                                               r"this block reads X at \[2, 0\]"):
        shared_rows[(8,)](X, Z, PER_BLOCK=True, cluster=2)


@pytest.mark.parametrize("cluster, msg", [(0, "positive int"), ((3, 3), "at most 8 blocks"), ((1, 1, 1, 1), "1 to 3"),
                                          (True, "positive int"), ("2", "positive int")])
def test_bad_cluster_option(monkeypatch, cluster, msg):
    monkeypatch.setenv("TILEC_TARGET", "cpu")
    with pytest.raises(ValueError, match=rf"ids\(\): launch option 'cluster' must be .*{msg}"):
        ids[(4,)](np.zeros((4, 8), np.int32), cluster=cluster)
    with pytest.raises(ValueError, match="tile.Config: launch option 'cluster'"):
        tile.Config(BM=1, cluster=cluster)


def test_grid_must_be_whole_clusters(monkeypatch):
    monkeypatch.setenv("TILEC_TARGET", "cpu")
    with pytest.raises(ValueError, match=r"kernel 'ids': grid \(5, 1, 1\) must be a multiple of the cluster shape "
                                         r"\(2, 1, 1\)"):
        ids[(5,)](np.zeros((5, 8), np.int32), cluster=2)


def test_config_carries_the_cluster():
    assert tile.Config(BM=1, cluster=2).all_kwargs() == {"BM": 1, "cluster": (2, 1, 1)}
    assert tile.Config(BM=1, cluster=(1, 1)).all_kwargs() == {"BM": 1}


# ------------------------------------------------------------------------------ the gallery GEMM, interpreted
def _run_gemm(M, N, K, **kw):
    rng = np.random.default_rng(7)
    A = tile.asarray(rng.standard_normal((M, K)), bf16)
    B = tile.asarray(rng.standard_normal((K, N)) / np.sqrt(K), bf16)
    C = tile.asarray(np.full((M, N), np.nan), bf16)
    grid = GEMM.grid(M, N, kw["BM"], kw["BN"], kw.get("PERSISTENT", False), kw.pop("sms", 132), kw.get("cluster", 1))
    GEMM.gemm[grid](A, B, C, np.zeros(N, np.float32), 1.0, **kw)
    return C.numpy()


@pytest.mark.parametrize("persistent, ws, sms", [(False, False, 0), (False, True, 0), (True, True, 4), (True, False, 6)])
def test_gemm_with_clusters_in_the_interpreter(monkeypatch, persistent, ws, sms):
    """5 row tiles (the last cluster's second block has none: it still takes part, reading zeros) x 3
    column tiles; persistent on 2 or 3 clusters (several work units each): the same bits as without
    clusters, and float64's values to bf16 accuracy."""
    monkeypatch.setenv("TILEC_TARGET", "cpu")
    kw = dict(BM=32, BN=32, BK=16, STAGES=3, PERSISTENT=persistent, WS=ws, sms=sms or 132)
    M, N, K = 150, 90, 56
    c1 = _run_gemm(M, N, K, **kw)
    c2 = _run_gemm(M, N, K, cluster=2, **kw)
    assert not np.isnan(c2.astype(np.float32)).any()
    assert np.array_equal(c1.view(np.uint16), c2.view(np.uint16))


# ------------------------------------------------------------------------------ the IR after warp_specialize
@pytest.fixture(scope="module")
def lowered():
    """(function after the pipeline, ir_after) of the persistent warp-specialized 64x64 GEMM on 2-block
    clusters, for sm_90a (no code generation)."""
    b = GEMM.gemm.bind(SIG, dict(BM=64, BN=128, BK=32, STAGES=4, WS=True, PERSISTENT=True, cluster=2),
                       signature_ok=True)
    t = compiler.resolve("sm_90a")
    m, _ = GEMM.gemm._frontend(b, t)
    m, after = compiler.lower(m, t)
    return m.functions[0], after


def test_warp_specialize_with_multicast(lowered):
    fn, _ = lowered
    top = [o.name for o in fn.body.ops]
    ws = top.index("warp_specialize")
    assert top[ws - 1] == "cluster_barrier" and top[ws + 1:] == ["cluster_barrier", "mbarrier_inval",
                                                                 "mbarrier_inval"]
    inits = {o.operands[0].name: o.attrs["count"] for o in fn.body.ops if o.name == "mbarrier_init"}
    assert inits == {"full": 1, "empty": 2 * 4}              # 4 consumer warps in each of the 2 blocks
    prod, cons = fn.body.ops[ws].regions
    copies = {o.operands[1].name: o.attrs for o in prod.walk() if o.name == "async_copy"}
    assert copies["B"].get("cluster") == 2 and copies["B"]["multicast"] and copies["B"]["copy"] == "tma"
    assert "cluster" not in copies["A"]
    rel = [o.attrs for o in cons.walk() if o.name == "mbarrier_arrive"]
    assert rel and all(a == {"per": "warp", "cluster": 2} for a in rel)
    assert not [o for o in cons.walk() if o.name == "mbarrier_inval"]


def test_roundtrip(lowered):
    fn, after = lowered
    text = after["shared_memory_planning"]
    assert print_module(parse_module(text)) == text
    assert "cluster = [2, 1, 1]" in text and "cluster_barrier" in text


def test_interpreter_runs_the_specialized_cluster_ir(monkeypatch, lowered):
    """The IR after the pipeline (roles in two host threads, mbarrier phases enforced): the same bits
    as the front end's kernel without clusters; 3 row tiles (an odd number) on 2 clusters."""
    fn = parse_module(lowered[1]["shared_memory_planning"]).functions[0]
    rng = np.random.default_rng(3)
    M, N, K = 150, 200, 96
    A = rng.standard_normal((M, K)).astype(ml_dtypes.bfloat16)
    B = rng.standard_normal((K, N)).astype(ml_dtypes.bfloat16)
    bias = np.zeros(N, np.float32)
    C1 = np.full((M, N), np.nan, ml_dtypes.bfloat16)
    C2 = C1.copy()
    run(fn, (4,), [A, B, C1, bias, 1.0])
    monkeypatch.setenv("TILEC_TARGET", "cpu")
    GEMM.gemm[GEMM.grid(M, N, 64, 128)](A, B, C2, bias, 1.0, BM=64, BN=128, BK=32, STAGES=4)
    assert not np.isnan(C1.astype(np.float32)).any()
    assert np.array_equal(C1.view(np.uint16), C2.view(np.uint16))


def test_no_multicast_without_clusters_or_without_the_promise():
    """A launch without a cluster, or loads without multicast=True, keep the plain protocol."""
    t = compiler.resolve("sm_90a")
    for kw in (dict(), dict(cluster=2, NO_MC=True)):
        b = WS_NOMC.bind(SIG[:3], dict(kw), signature_ok=True)
        m, _ = WS_NOMC._frontend(b, t)
        m, _ = compiler.lower(m, t)
        fn = m.functions[0]
        assert not [o for o in fn.walk() if o.name == "cluster_barrier" or o.attrs.get("cluster") == 2]
        assert {o.attrs["count"] for o in fn.walk() if o.name == "mbarrier_init"} == {1, 4}


@tile.kernel
def WS_NOMC(A: T2, B: T2, C: T2, NO_MC: tile.constexpr = False):
    acc = tile.zeros((64, 128), f32)
    for k in tile.range(0, A.shape[1], 32, stages=3, warp_specialize=True):
        acc = tile.dot(tile.load(A, (tile.block_id(0) * 64, k), (64, 32)),
                       tile.load(B, (k, 0), (32, 128), multicast=not NO_MC), acc)
    tile.store(C, (tile.block_id(0) * 64, 0), acc.astype(bf16))


def test_boxes_that_do_not_split_keep_a_whole_copy_per_block():
    """B's tile of 32 x 64 bf16 is one 128-byte-swizzled box: it cannot be split over 2 blocks, so each
    block loads it whole (a PerformanceWarning says so) and no stage is shared."""
    @tile.kernel
    def one_box(A: T2, B: T2, C: T2):
        acc = tile.zeros((64, 64), f32)
        for k in tile.range(0, A.shape[1], 32, stages=3, warp_specialize=True):
            acc = tile.dot(tile.load(A, (tile.block_id(0) * 64, k), (64, 32)),
                           tile.load(B, (k, 0), (32, 64), multicast=True), acc)
        tile.store(C, (tile.block_id(0) * 64, 0), acc.astype(bf16))
    t = compiler.resolve("sm_90a")
    b = one_box.bind(SIG[:3], dict(cluster=2), signature_ok=True)
    m, _ = one_box._frontend(b, t)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m, _ = compiler.lower(m, t)
    assert any("do not split over the cluster's 2 blocks" in str(x.message) for x in w)
    assert not [o for o in m.functions[0].walk() if o.name == "cluster_barrier"]


# ------------------------------------------------------------------------------ PTX
@needs_ptxas
@pytest.mark.parametrize("persistent", [True, False])
def test_ptx(tmp_path, persistent):
    """128x256 on 8 consumer warps: B's 4 boxes each multicast by one of the 2 blocks, A's box not; the
    consumers' remote arrives; the two cluster barriers (arrive + wait); the launch facts record the
    cluster; ptxas: no spills."""
    ck = GEMM.gemm.compile(*SIG, target="sm_90a", BM=128, BN=256, BK=64, STAGES=3, WS=True, PERSISTENT=persistent,
                           num_warps=8, cluster=2)
    art = ck.artifact
    ptx = art.ptx
    assert art.meta.cluster == (2, 1, 1)
    assert ptx.count(".multicast::cluster") == 4
    assert ptx.count("cp.async.bulk.tensor.2d.shared::cluster.global") == 5
    assert "mapa.shared::cluster" in ptx and "mbarrier.arrive.shared::cluster.b64" in ptx
    assert ptx.count("barrier.cluster.arrive.aligned") == 2 and ptx.count("barrier.cluster.wait.aligned") == 2
    assert "%cluster_ctarank" in ptx and "%clusterid.x" in ptx
    rep = assemble(ptx, "sm_90a", tmp_path)
    assert rep["spill_stores"] == 0 and rep["spill_loads"] == 0, rep["log"]


@pytest.mark.parametrize("target", ["sm_80", "gfx942"])
def test_targets_without_clusters_refuse_them(target):
    with pytest.raises(tile.TileError, match=rf"kernel .ids.: launch option cluster = \[2, 1, 1\]: target {target} has no "
                                                r"thread-block clusters"):
        ids.compile(tile.Tensor[i32, 2], target=target, cluster=2)
    ids.compile(tile.Tensor[i32, 2], target=target)          # a cluster of one block: the grid's ids


# ------------------------------------------------------------------------------ GPU
def _hopper():
    from tile.compiler import gpu_arch
    if gpu_arch() != "sm_90a":
        pytest.skip("needs a Hopper GPU (sm_90a)")


@pytest.mark.gpu
@pytest.mark.parametrize("grid, cluster", [((6, 2), 2), ((4, 4), (2, 2, 1)), ((6, 2), (1, 2))])
def test_gpu_cluster_ids(hopper, grid, cluster):
    Y = tile.asarray(np.full((grid[0] * grid[1], 8), -1, np.int32), i32)
    ids[grid](Y, cluster=cluster)
    cl = (cluster, 1) if isinstance(cluster, int) else tuple(cluster)[:2]
    np.testing.assert_array_equal(Y.numpy(), _expected_ids(grid, cl))


@pytest.mark.gpu
@pytest.mark.parametrize("M, N, K, persistent, sms", [(700, 900, 520, True, 8), (700, 900, 520, False, 132),
                                                      (4096, 4096, 4096, True, 132), (300, 520, 64, True, 132),
                                                      (100, 72, 0, True, 6)])
def test_gpu_gemm_with_multicast(hopper, M, N, K, persistent, sms):
    """128x256, 2-block clusters: against float64 (relative error < 1e-2, poisoned output, bias and gelu)
    and bit for bit against the same kernel without clusters (the same tiles, the same k order). 700 rows:
    6 row tiles, 3 clusters per column; 300 rows: 3 row tiles, the last cluster's second block has none;
    8 blocks: several work units per cluster; K = 0: the epilogue of zeros."""
    err = GEMM.run(M, N, K, act="gelu", with_bias=True, BM=128, BN=256, BK=64, STAGES=3, WS=True,
                   PERSISTENT=persistent, sms=sms, num_warps=8, cluster=2)
    assert err < 1e-2, err
    c1 = _run_gemm(M, N, K, BM=128, BN=256, BK=64, STAGES=3, WS=True, PERSISTENT=persistent, num_warps=8, sms=sms)
    c2 = _run_gemm(M, N, K, BM=128, BN=256, BK=64, STAGES=3, WS=True, PERSISTENT=persistent, num_warps=8, sms=sms,
                   cluster=2)
    assert not np.isnan(c2.astype(np.float32)).any()
    assert np.array_equal(c1.view(np.uint16), c2.view(np.uint16))


@pytest.mark.gpu
def test_gpu_cluster_fast_launch(hopper):
    """Torch tensors: the second launch of a call signature with cluster=2 takes the fast path
    (cuLaunchKernelEx behind a per-signature CUlaunchConfig) and gives the same ids for each grid; a grid
    that is not whole clusters is the general path's named error."""
    torch = pytest.importorskip("torch")
    for grid in ((6, 2), (8, 2), (4, 3)):
        Y = torch.full((grid[0] * grid[1], 8), -1, dtype=torch.int32, device="cuda")
        for _ in range(2):
            Y.fill_(-1)
            ids[grid](Y, cluster=2)
            torch.cuda.synchronize()
            np.testing.assert_array_equal(Y.cpu().numpy(), _expected_ids(grid, (2, 1)))
    assert any(v is not None for v in ids._fast.values())
    with pytest.raises(ValueError, match="multiple of the cluster"):
        ids[(5, 2)](torch.zeros((10, 8), dtype=torch.int32, device="cuda"), cluster=2)
