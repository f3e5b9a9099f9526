"""Every gallery kernel compiles for gfx942 (MI300) and gfx950 (MI350) to an AMD code object that
LLD links: no scratch (private segment 0), LDS within the target's limit, and the explicit
kernel-argument bytes in the code object's metadata equal to what the runtime packs (ir/artifact.py).
Nothing here runs on an AMD GPU (none is available); the code objects are checked statically."""
import importlib.util
import re
import sys
from pathlib import Path

import pytest

import tile
from tile.codegen.amdgpu import find_lld, kernel_metadata
from tile.ir.artifact import kernarg_layout
from tile.ir.targets import get_target

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_gallery_ptx import CASES, load, signature   # noqa: E402


def _have_lld():
    try:
        find_lld()
        return True
    except Exception:                  # noqa: BLE001
        return False


needs_lld = pytest.mark.skipif(not _have_lld(), reason="no LLD >= 19 (pip install ziglang, or ROCm)")

# one configuration of each gallery kernel per target keeps CI short; gfx942 takes them all
AMD_CASES = [(arch, i) for arch in ("gfx942", "gfx950") for i in range(len(CASES))
             if arch == "gfx942" or i in (0, 2, 5, 6, 7, 8, 10)]


@needs_lld
@pytest.mark.parametrize("arch,case", AMD_CASES, ids=[f"{a}-{CASES[i][0]}.{CASES[i][1]}{i}" for a, i in AMD_CASES])
def test_gallery_kernel_links_for_amd(arch, case):
    mod, kname, consts, dtypes = CASES[case]
    k = getattr(load(mod), kname)
    ck = k.compile(*signature(k, **dtypes), target=arch, **consts)
    t = get_target(arch)
    assert ck.hsaco[:4] == b"\x7fELF"
    km = kernel_metadata(ck.hsaco, ck.meta.name)
    assert km[".wavefront_size"] == t.warp_size == 64
    assert km[".private_segment_fixed_size"] == 0, "scratch memory used (spills or a stack)"
    assert km.get(".vgpr_spill_count", 0) == 0       # (SGPR spills go to VGPR lanes, not memory)
    assert km[".group_segment_fixed_size"] + ck.meta.shared_bytes <= t.limits.shared_bytes
    assert km[".max_flat_workgroup_size"] == ck.meta.num_threads
    offsets, size = kernarg_layout(ck.meta.params)
    assert km["explicit_kernarg_size"] == size
    explicit = [a for a in km[".args"] if not a[".value_kind"].startswith("hidden_")]
    assert [a[".offset"] for a in explicit] == offsets
    assert f"amdgcn-amd-amdhsa--{arch}" in ck.extra["asm"] or arch in ck.extra["asm"]


@needs_lld
@pytest.mark.parametrize("arch,atom,instr", [("gfx942", "mfma.32x32x8", "v_mfma_f32_32x32x8_bf16"),
                                              ("gfx950", "mfma.32x32x16", "v_mfma_f32_32x32x16_bf16")])
def test_gemm_uses_mfma(arch, atom, instr):
    """Instruction selection records the MFMA atom in the IR and the assembly has the instruction."""
    k = load("gemm").gemm
    ck = k.compile(*signature(k), target=arch)
    from tile.ir.printer import print_module
    assert f'atom = "{atom}"' in print_module(ck.module)
    assert re.search(rf"^\s*{instr}\b", ck.extra["asm"], re.M), "no MFMA instruction in the assembly"
    km = kernel_metadata(ck.hsaco, ck.meta.name)
    assert km[".private_segment_fixed_size"] == 0


@pytest.mark.parametrize("name", ["32x32x8", "16x16x16", "32x32x16", "16x16x32"])
def test_mfma_builders_are_the_fragments(name):
    """thread_maps.mfma_a/b/c of one atom on one wave are ir/fragments.py's MFMA TVLayouts."""
    from tile.ir import fragments
    from tile.ir.thread_maps import ThreadMap, mfma_a, mfma_b, mfma_c
    m, _, k = map(int, name.split("x"))
    assert ThreadMap.from_tv(getattr(fragments, f"mfma_{name}_a")()).same(mfma_a(m, k, 1, 1, m, k))
    assert ThreadMap.from_tv(getattr(fragments, f"mfma_{name}_b")()).same(mfma_b(k, m, 1, 1, m, k))
    assert ThreadMap.from_tv(getattr(fragments, f"mfma_{name}_c")()).same(mfma_c(m, m, 1, 1, m))
    # tiled over a 2x2 wave grid, every element is held exactly once
    assert mfma_c(4 * m, 4 * m, 2, 2, m).for_threads(256).covers()
