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
