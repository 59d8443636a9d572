"""Compile every Triton kernel for a CUDA architecture without a GPU (catches lowering errors on CPU-only machines).

    env -u TRITON_INTERPRET python -m kernels.aot_check --arch 90 80

Uses triton's bundled ptxas; needs TRITON_INTERPRET unset (an interpreted @triton.jit cannot be compiled).
The signatures mirror the launches in kernels/routing.py and kernels/permute.py at the GPU block sizes.
"""
from __future__ import annotations

import argparse
import os
import sys

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    sys.exit("kernels.aot_check: unset TRITON_INTERPRET (interpreted kernels cannot be compiled)")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from kernels import permute, routing  # noqa: E402


def _c(names: str) -> dict[str, str]:
    return {n: "constexpr" for n in names.split()}


def cases() -> list[tuple[object, dict[str, str], dict[str, object]]]:
    """(kernel, signature, constexprs) for every kernel variant the launchers use on a GPU."""
    out = []
    route_consts = "K CENTROID SIGN RENORM RAW_DOT ACC IS_F64 BLOCK_T BLOCK_E BLOCK_D"
    for dt, centroid, raw, f64, renorm, k in [("bf16", False, False, False, False, 2), ("fp32", False, False, False, True, 4),
                                              ("fp32", True, False, False, True, 1), ("bf16", True, True, False, False, 3),
                                              ("fp64", True, False, True, False, 2), ("fp64", False, False, True, True, 2)]:
        acc = "fp64" if f64 else "fp32"
        sig = {"logits_ptr": f"*{dt}", "x_ptr": f"*{dt}", "c_ptr": f"*{dt}", "scores_ptr": f"*{acc}", "ids_ptr": "*i64",
               "w_ptr": f"*{acc}", "rank_ptr": "*i32", "hist_ptr": "*i32", "T": "i32", "E": "i32", "D": "i32",
               "stride_lt": "i32", "stride_xt": "i32", "stride_ce": "i32", **_c(route_consts)}
        out.append((routing._route_fwd_kernel, sig, dict(
            K=k, CENTROID=centroid, SIGN=-1.0, RENORM=renorm, RAW_DOT=raw, ACC=tl.float64 if f64 else tl.float32,
            IS_F64=f64, BLOCK_T=64, BLOCK_E=32, BLOCK_D=64)))
    out.append((routing._route_scan_kernel, {"hist_ptr": "*i32", "base_ptr": "*i32", "counts_ptr": "*i32",
                "offsets_ptr": "*i32", "NB": "i32", "E": "i32", **_c("BLOCK_NB BLOCK_E")}, dict(BLOCK_NB=64, BLOCK_E=32)))
    out.append((routing._route_slots_kernel, {"ids_ptr": "*i64", "rank_ptr": "*i32", "base_ptr": "*i32",
                "offsets_ptr": "*i32", "slots_ptr": "*i32", "N": "i32", "E": "i32", **_c("K ROUTE_BLOCK_T BLOCK")},
                dict(K=2, ROUTE_BLOCK_T=64, BLOCK=1024)))
    for centroid in (False, True):
        out.append((routing._route_bwd_kernel, {"gw_ptr": "*bf16", "w_ptr": "*fp32", "ids_ptr": "*i64", "gs_ptr": "*fp32",
                    "scores_ptr": "*fp32", "out_ptr": "*fp32", "T": "i32", "E": "i32",
                    **_c("K HAS_GS CENTROID SIGN ACC BLOCK_T BLOCK_E")},
                    dict(K=2, HAS_GS=centroid, CENTROID=centroid, SIGN=1.0, ACC=tl.float32, BLOCK_T=64, BLOCK_E=32)))
    for dt in ("bf16", "fp32"):
        out.append((permute._permute_kernel, {"x_ptr": f"*{dt}", "slots_ptr": "*i32", "out_ptr": f"*{dt}", "N": "i32",
                    "D": "i32", "stride_x": "i32", "stride_o": "i32", **_c("K BLOCK_R BLOCK_D")},
                    dict(K=2, BLOCK_R=16, BLOCK_D=256)))
        for has_w in (True, False):
            out.append((permute._combine_kernel, {"y_ptr": f"*{dt}", "slots_ptr": "*i32", "w_ptr": f"*{dt}",
                        "out_ptr": f"*{dt}", "T": "i32", "D": "i32", "stride_y": "i32", "stride_o": "i32",
                        **_c("K HAS_W ACC BLOCK_T BLOCK_D")},
                        dict(K=2, HAS_W=has_w, ACC=tl.float32, BLOCK_T=16, BLOCK_D=256)))
        out.append((permute._unpermute_bwd_kernel, {"gy_ptr": f"*{dt}", "y_ptr": f"*{dt}", "slots_ptr": "*i32",
                    "w_ptr": f"*{dt}", "gyp_ptr": f"*{dt}", "gw_ptr": "*fp32", "N": "i32", "D": "i32", "stride_gy": "i32",
                    "stride_y": "i32", "stride_gyp": "i32", **_c("K ACC BLOCK_R BLOCK_D")},
                    dict(K=2, ACC=tl.float32, BLOCK_R=16, BLOCK_D=128)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, nargs="+", default=[90], help="CUDA compute capabilities, e.g. 80 90")
    args = parser.parse_args(argv)
    count = 0
    for arch in args.arch:
        target = GPUTarget("cuda", arch, 32)
        for fn, sig, consts in cases():
            triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=target)
            count += 1
    print(f"compiled {count} kernel variants for sm_{'/sm_'.join(map(str, args.arch))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
