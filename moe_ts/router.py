"""Gates (docs/ARCHITECTURE.md §3): token states → gate scores → one `Routing` record (top-k ids and weights).

A gate is the router module of an MoE layer: `scores` gives its [T, E] scores, `route` the routing,
by the plain-torch reference (`kernels.topk.route_reference`) or, with `fused=True`, by the fused
Triton routing kernel (`kernels.routing`, imported on use so the torch path never imports triton).

Shape legend: T tokens, D model width, E experts, k top-k.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from kernels.topk import Routing, centroid_scores_reference, route_reference


class LinearGate(nn.Module):
    """softmax(W·x) router scores; trained with load-balancing and z losses."""

    balance_losses = True  # the layer computes the Switch aux loss and the z-loss from these scores

    def __init__(self, d_model: int, num_experts: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, num_experts, bias=False)

    def scores(self, x_td: Tensor) -> Tensor:
        return self.proj(x_td)

    def route(self, x_td: Tensor, top_k: int, weighting: str, fused: bool = False) -> Routing:
        """Top-k routing of the tokens; `fused` runs the Triton routing kernel on the logits."""
        logits_te = self.scores(x_td)
        if fused:
            from kernels.routing import route_logits

            return route_logits(logits_te, top_k, weighting)
        return route_reference(logits_te, top_k, weighting)


class CentroidGate(nn.Module):
    """Cluster-centroid gate: score = −‖x − c‖ (nearest, default) or +‖x − c‖ (farthest, uni2ts #211).

    The centroids are a buffer (fixed in pretraining) filled from k-means over a pretrained model's
    token representations; `trainable=True` turns them into a parameter for finetuning.
    """

    balance_losses = False  # fixed clusters: no load-balancing or z loss

    def __init__(self, d_model: int, num_experts: int, select: str = "nearest") -> None:
        super().__init__()
        if select not in ("nearest", "farthest"):
            raise ValueError(f"centroid_select must be 'nearest' or 'farthest', got {select!r}")
        self.select = select
        self.register_buffer("centroids", torch.randn(num_experts, d_model) / d_model**0.5)

    def set_centroids(self, centroids_ed: Tensor, trainable: bool = False) -> None:
        """Install k-means centroids [E, D]."""
        if centroids_ed.shape != self.centroids.shape:
            raise ValueError(f"centroids must have shape {tuple(self.centroids.shape)}, got {tuple(centroids_ed.shape)}")
        data = centroids_ed.detach().to(self.centroids)
        del self.centroids
        if trainable:
            self.centroids = nn.Parameter(data)
        else:
            self.register_buffer("centroids", data)

    def scores(self, x_td: Tensor) -> Tensor:
        return centroid_scores_reference(x_td, self.centroids, self.select)

    def route(self, x_td: Tensor, top_k: int, weighting: str, fused: bool = False) -> Routing:
        """Top-k routing; `fused` computes the distances inside the Triton routing kernel."""
        if fused:
            from kernels.routing import route_centroids

            return route_centroids(x_td.contiguous(), self.centroids, top_k, weighting, self.select)
        return route_reference(self.scores(x_td), top_k, weighting)
