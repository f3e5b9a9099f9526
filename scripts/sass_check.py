"""Assemble the default GEMM for the GPU's arch and count the tensor-core and copy instructions in its
SASS (cuobjdump must be on PATH). Usage: python scripts/sass_check.py [OUTDIR]"""
import collections
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import tile
from tile.codegen import assemble

out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
spec = importlib.util.spec_from_file_location("gemm", Path(__file__).parent.parent / "examples" / "gemm.py")
g = importlib.util.module_from_spec(spec)
spec.loader.exec_module(g)
for arch in ("sm_90a", "sm_80"):
    ck = g.gemm.compile(*[tile.Tensor[tile.bf16, 2]] * 3, tile.Tensor[tile.f32, 1], float, target=arch)
    cubin = assemble(ck.artifact)
    path = out / f"gemm_{arch}.cubin"
    path.write_bytes(cubin)
    sass = subprocess.run(["cuobjdump", "-sass", str(path)], capture_output=True, text=True).stdout
    (out / f"gemm_{arch}.sass").write_text(sass)
    ops = collections.Counter(m.group(1) for m in re.finditer(r"\b(HGMMA|HMMA|LDSM|LDGSTS|LDG|STG|BAR|WARPGROUP)[.\w]*", sass))
    print(f"gemm 128x128x64 {arch}: SASS instruction counts {dict(sorted(ops.items()))}")
# the warp-specialized configs (passes/warp_specialize.py): a producer warpgroup (USETMAXREG.DEALLOC,
# UTMALDG) beside the consumers (USETMAXREG.TRY_ALLOC, HGMMA); ptxas must report no spills
from tile.codegen import ptxas_report
for BM, BN, nw in ((128, 256, 8), (256, 128, 8), (128, 128, 4)):
    ck = g.gemm.compile(*[tile.Tensor[tile.bf16, 2]] * 3, tile.Tensor[tile.f32, 1], float, target="sm_90a",
                        BM=BM, BN=BN, STAGES=4, WS=True, num_warps=nw)
    path = out / f"gemm_ws_{BM}x{BN}.cubin"
    path.write_bytes(assemble(ck.artifact))
    sass = subprocess.run(["cuobjdump", "-sass", str(path)], capture_output=True, text=True).stdout
    ops = collections.Counter(m.group(1) for m in re.finditer(r"\b(HGMMA|UTMALDG|USETMAXREG|BAR|STL|LDL)[.\w]*", sass))
    rep = ptxas_report(ck.artifact)
    print(f"gemm {BM}x{BN}x64 ws w{nw}+4 sm_90a: SASS {dict(sorted(ops.items()))}, spills "
          f"{rep['spill_stores']}/{rep['spill_loads']}")
