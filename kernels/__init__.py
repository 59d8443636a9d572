"""Pure tensor ops of the MoE path (docs/ARCHITECTURE.md §3): no imports from the rest of the project.

- kernels.topk: the routing record `Routing` and the plain-torch top-k router (no triton)
- kernels.routing: fused top-k routing from logits or (states, centroids) → ids, weights, counts, offsets, slots
- kernels.permute: token rows ↔ expert-contiguous rows (permute / weighted un-permute)
- kernels.grouped: the SwiGLU formula and grouped expert GEMMs (torch._grouped_mm, explicit per-expert-loop fallback)
- kernels.aot_check: compile every kernel for a CUDA architecture on a machine without a GPU

On CPU the kernels run in Triton's interpreter: set TRITON_INTERPRET=1 before triton is imported.
Each Triton kernel has a plain-torch reference and an autograd wrapper. Submodules are imported on use, so
`import kernels` pulls in neither triton nor deepspeed.
"""
