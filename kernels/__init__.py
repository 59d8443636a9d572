"""Triton kernels for the MoE routing path (DESIGN §4), each with a plain-torch reference and an autograd wrapper.

- kernels.routing: fused top-k routing from logits or (states, centroids) → ids, weights, counts, offsets, slots
- kernels.permute: token rows ↔ expert-contiguous rows (permute / weighted un-permute)
- kernels.grouped: grouped SwiGLU expert GEMMs (torch._grouped_mm, explicit per-expert-loop fallback)
- kernels.backends: `get_backend(name)` for moe_ts.moe.MoELayer (torch | triton | deepspeed | megablocks)
- kernels.aot_check: compile every kernel for a CUDA architecture on a machine without a GPU

On CPU the kernels run in Triton's interpreter: set TRITON_INTERPRET=1 before triton is imported.
Submodules are imported on use, so `import kernels` pulls in neither triton nor deepspeed.
"""
