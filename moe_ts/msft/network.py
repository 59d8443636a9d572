"""MSFT multi-scale finetuning modules (docs/ARCHITECTURE.md §9), adapted to the decoder.

The method of "Multi-Scale Finetuning for Encoder-based Time Series Foundation Models" (arXiv 2506.14087)
on our causal decoder:

- scales: scale 0 is the series; scale i (1..K) its average pooling by 2^i (NaN-aware). Every scale
  is patched with the model's patch size, so patch j of scale i+1 spans patches 2j, 2j+1 of scale i.
- input: the frozen patch projection, then a per-scale linear adapter initialised to identity.
- attention: all scales' tokens in one sequence; `scale_attention_mask` lets a token attend to earlier
  or equal positions of its own scale only. Q/K/V carry per-scale LoRA (`ScaleLoRA`, B = 0 at
  start) over frozen base weights; the attention is `scale_attention`, Attention.forward without cache.
- after every layer a `CrossScaleAggregator` adds, between adjacent scales, a linear map of the
  coarse state (coarse→fine, by repetition) and of the fine states (fine→coarse, by average pooling).
  Causal alignment (a decoder must not see the future; the encoder of the paper need not care): fine
  token t receives the coarse token whose span ends at or before t's end (coarse j = ⌊(t+1)/2⌋ − 1,
  nothing for t = 0), coarse token j the mean of fine tokens 2j, 2j+1 (its own span). So every token's
  state depends only on values up to the end of its own span. The maps start at zero, so an untrained
  MSFT network computes exactly the pretrained model on scale 0.
- one output head per scale (scale 0 keeps the pretrained head, the others start as copies); the loss is
  Σ softmax(w)ᵢ·Lᵢ with learnable w (`msft_loss`), and a forecast combines the scales' forecasts,
  upsampled by repetition, with the same weights (`moe_ts.msft.forecasting`).
- MoE: gates trainable (a centroid gate's centroids become a parameter), experts frozen by default.
- KV cache (`MSFTCache`, `MSFTNetwork.extend`): because every token's state depends only on tokens whose span
  ended no later than its own, appending the tokens of a new time step changes no held token's state. So a
  decoder encodes only its new tokens (at most one per scale per fine step): their queries against the held
  keys / values of their scale, and the aggregator reading the held pre-aggregation states of the adjacent
  scales' aligned tokens. `forward` (the whole sequence) stays the reference `extend` is tested against.

Shape legend: B batch, T tokens of all scales, n_i tokens of scale i, D model width, P patch size,
S scales (K + 1), r LoRA rank, L time steps; N new tokens, C held tokens (all scales, in the order they came).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_ts.attention import Attention, LayerCache, RopeTable, apply_rope, rope_angles, rope_rotate
from moe_ts.moe import MoEStats
from moe_ts.network import MoiraiMoENetwork
from moe_ts.router import CentroidGate
from moe_ts.packing import PackedLayout, masked_stats, patchify, standardise


@dataclass
class MSFTConfig:
    """What the finetuning adds to a pretrained model (saved with it)."""

    num_scales: int = 3  # K extra scales, each pooled by 2 from the previous one
    lora_rank: int = 16
    lora_alpha: float = 16.0
    aggregator: bool = True  # cross-scale aggregation after each layer (off for plain LoRA)
    train_gates: bool = True  # MoE gates (linear router or centroids) trainable
    train_experts: bool = False
    train_adapters: bool = True  # per-scale input adapters and per-scale heads (off for plain LoRA)

    def __post_init__(self) -> None:
        if self.num_scales < 0:
            raise ValueError(f"msft.num_scales must be >= 0, got {self.num_scales}")
        if self.lora_rank < 1:
            raise ValueError(f"msft.lora_rank must be >= 1, got {self.lora_rank}")

    @property
    def pool(self) -> int:
        """Points of the series per time step of the coarsest scale (2^K)."""
        return 2 ** self.num_scales


def avg_pool_nan(target_bl: Tensor, factor: int) -> Tensor:
    """Mean of every `factor` consecutive values, ignoring NaN (NaN where all are missing) → [B, L/factor]."""
    if factor == 1:
        return target_bl
    b, length = target_bl.shape
    if length % factor:
        raise ValueError(f"length {length} is not a multiple of the pooling factor {factor}")
    x = target_bl.reshape(b, length // factor, factor)
    observed = ~torch.isnan(x)
    total = torch.where(observed, x, torch.zeros_like(x)).sum(-1)
    count = observed.sum(-1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def scale_layout(tokens_per_scale: list[int], device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """(scale id [T], position within its scale [T]) of the scales' tokens laid one scale after another."""
    scale_t = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(tokens_per_scale)])
    pos_t = torch.cat([torch.arange(n) for n in tokens_per_scale])
    return scale_t.to(device), pos_t.to(device)


def scale_attention_mask(scale_t: Tensor, pos_t: Tensor, real_bt: Tensor) -> Tensor:
    """[B, T, T] True where query q may attend key k: same scale, pos_k ≤ pos_q, key real; a token always
    attends to itself (padding too, so no row is empty)."""
    same = scale_t[:, None] == scale_t[None, :]
    causal = pos_t[None, :] <= pos_t[:, None]
    eye = torch.eye(len(scale_t), dtype=torch.bool, device=scale_t.device)
    return ((same & causal)[None] & real_bt[:, None, :]) | eye


class ScaleLoRA(nn.Module):
    """One LoRA update per scale of a frozen linear layer: y = W·x + (α/r)·B_s·A_s·x for a token of scale s.

    The base layer is passed in, not held (it stays where the pretrained model keeps it, saved once).
    B starts at zero (the layer starts as the base layer), A as in LoRA (Kaiming-uniform).
    """

    def __init__(self, in_features: int, out_features: int, num_scales: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.scaling = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(num_scales, rank, in_features))
        self.lora_b = nn.Parameter(torch.zeros(num_scales, out_features, rank))
        for s in range(num_scales):
            nn.init.kaiming_uniform_(self.lora_a.data[s], a=math.sqrt(5))

    def forward(self, base: nn.Linear, x_btd: Tensor, scale_t: Tensor) -> Tensor:
        y = base(x_btd)
        for s in range(self.lora_a.shape[0]):
            delta = (x_btd @ self.lora_a[s].T) @ self.lora_b[s].T
            y = y + self.scaling * delta * (scale_t == s).to(y.dtype)[:, None]
        return y

    def merged_weight(self, base_weight: Tensor, scale: int = 0) -> Tensor:
        """W + (α/r)·B_s·A_s: the plain layer equal to this one on tokens of `scale`."""
        return base_weight + self.scaling * self.lora_b[scale] @ self.lora_a[scale]


class ScaleLoRAAttention(nn.Module):
    """Per-scale LoRA on the Q/K/V projections of one attention layer (the layer itself is shared, frozen)."""

    def __init__(self, attn: Attention, num_scales: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.q = ScaleLoRA(attn.q_proj.in_features, attn.q_proj.out_features, num_scales, rank, alpha)
        self.k = ScaleLoRA(attn.k_proj.in_features, attn.k_proj.out_features, num_scales, rank, alpha)
        self.v = ScaleLoRA(attn.v_proj.in_features, attn.v_proj.out_features, num_scales, rank, alpha)


def scale_attention(attn: Attention, lora: ScaleLoRAAttention, x_btd: Tensor, scale_t: Tensor, pos_bt: Tensor,
                    mask_btt: Tensor) -> Tensor:
    """`Attention.forward` (no cache) with Q/K/V through the per-scale LoRA layers."""
    q = rope_rotate(attn.q_norm(attn._heads(lora.q(attn.q_proj, x_btd, scale_t))), pos_bt, attn.rope_base)
    k = rope_rotate(attn.k_norm(attn._heads(lora.k(attn.k_proj, x_btd, scale_t))), pos_bt, attn.rope_base)
    v = attn._heads(lora.v(attn.v_proj, x_btd, scale_t))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_btt[:, None])
    b, _, t, _ = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, -1))


def cached_scale_attention(attn: Attention, lora: ScaleLoRAAttention, x_bnd: Tensor, scale_n: Tensor,
                           rope: tuple[Tensor, Tensor], mask_bnc: Tensor, cache: LayerCache) -> Tensor:
    """`scale_attention` of N new tokens against the held ones: their keys / values are written into `cache`
    (in place) and the queries attend under `mask_bnc` [B, N, C] (C: held tokens, these included)."""
    q = apply_rope(attn.q_norm(attn._heads(lora.q(attn.q_proj, x_bnd, scale_n))), rope)
    k = apply_rope(attn.k_norm(attn._heads(lora.k(attn.k_proj, x_bnd, scale_n))), rope)
    v = attn._heads(lora.v(attn.v_proj, x_bnd, scale_n))
    k, v = cache.append(k, v)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_bnc[:, None])
    b, _, n, _ = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, -1))


def coarse_to_fine(coarse_bmd: Tensor, n_fine: int) -> Tensor:
    """[B, n_fine, D]: fine token t gets coarse token ⌊(t+1)/2⌋ − 1 (the last one ending at or before t),
    zeros for t = 0. Needs n_fine ≤ 2m + 1 (m coarse tokens), as in every prefix the decoder builds."""
    if n_fine > 2 * coarse_bmd.shape[1] + 1:
        raise ValueError(f"{n_fine} fine tokens need at least {(n_fine - 1) // 2} coarse tokens, got {coarse_bmd.shape[1]}")
    rep = coarse_bmd.repeat_interleave(2, dim=1)
    return torch.cat((torch.zeros_like(rep[:, :1]), rep), dim=1)[:, :n_fine]


def fine_to_coarse(fine_bnd: Tensor, n_coarse: int) -> Tensor:
    """[B, n_coarse, D]: coarse token j gets the mean of fine tokens 2j and 2j+1 (needs n ≥ 2·n_coarse)."""
    b, n, d = fine_bnd.shape
    if n < 2 * n_coarse:
        raise ValueError(f"{n_coarse} coarse tokens need at least {2 * n_coarse} fine tokens, got {n}")
    return fine_bnd[:, :2 * n_coarse].reshape(b, n_coarse, 2, d).mean(dim=2)


class CrossScaleAggregator(nn.Module):
    """After a layer: between adjacent scales, fine += M_up(coarse→fine), coarse += M_down(fine→coarse),
    both from the layer's output states (simultaneously); the linear maps start at zero."""

    def __init__(self, d_model: int, num_scales: int) -> None:
        super().__init__()
        self.up = nn.ModuleList(nn.Linear(d_model, d_model, bias=False) for _ in range(num_scales - 1))
        self.down = nn.ModuleList(nn.Linear(d_model, d_model, bias=False) for _ in range(num_scales - 1))
        for linear in [*self.up, *self.down]:
            nn.init.zeros_(linear.weight)

    def forward(self, scales: list[Tensor]) -> list[Tensor]:
        out = list(scales)
        for i in range(len(scales) - 1):
            fine, coarse = scales[i], scales[i + 1]
            out[i] = out[i] + self.up[i](coarse_to_fine(coarse, fine.shape[1]))
            out[i + 1] = out[i + 1] + self.down[i](fine_to_coarse(fine, coarse.shape[1]))
        return out


def _identity_linear(d: int) -> nn.Linear:
    layer = nn.Linear(d, d)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(d))
        layer.bias.zero_()
    return layer


class MSFTNetwork(nn.Module):
    """A pretrained network wrapped for multi-scale finetuning (see the module docstring).

    `base` keeps its module names (`base.layers.0.attn.q_proj.weight`, ...), so the frozen weights
    are the pretrained ones, and scale 0 uses the pretrained head `base.head`.
    """

    def __init__(self, base: MoiraiMoENetwork, cfg: MSFTConfig) -> None:
        super().__init__()
        if base.config.predict_patches != 1:
            raise ValueError(f"MSFT finetuning needs a next-patch model (predict_patches 1), got "
                             f"predict_patches {base.config.predict_patches}")
        self.base = base
        self.msft = cfg
        d, s = base.config.d_model, cfg.num_scales + 1
        self.adapters = nn.ModuleList(_identity_linear(d) for _ in range(s))
        self.lora = nn.ModuleList(ScaleLoRAAttention(layer.attn, s, cfg.lora_rank, cfg.lora_alpha)
                                  for layer in base.layers)
        self.aggregators = nn.ModuleList(CrossScaleAggregator(d, s) for _ in base.layers) \
            if cfg.aggregator and s > 1 else None
        self.scale_heads = nn.ModuleList(copy.deepcopy(base.head) for _ in range(s - 1))
        self.scale_logits = nn.Parameter(torch.zeros(s))
        for layer in base.layers:  # centroids become a parameter (trainable or not, saved under the same name)
            gate = layer.moe.gate
            if isinstance(gate, CentroidGate) and not isinstance(gate.centroids, nn.Parameter):
                gate.set_centroids(gate.centroids, trainable=True)
        self.set_trainable()

    @property
    def config(self):  # the base model's config (patch size, statistics...), as the network's users expect
        return self.base.config

    @property
    def num_scales(self) -> int:
        return self.msft.num_scales + 1

    def heads(self) -> list[nn.Module]:
        return [self.base.head, *self.scale_heads]

    def scale_weights(self) -> Tensor:
        """softmax(w) [S]: the loss weights and the forecast's combination weights."""
        return torch.softmax(self.scale_logits, dim=0)

    def set_trainable(self) -> None:
        """Freeze the pretrained weights; train LoRA, aggregators, scale weights and (per config) gates,
        experts, adapters and heads."""
        cfg = self.msft
        for p in self.base.parameters():
            p.requires_grad_(False)
        for lora in self.lora:
            for lin in (lora.q, lora.k, lora.v):
                lin.lora_a.requires_grad_(True)
                lin.lora_b.requires_grad_(True)
        if self.aggregators is not None:
            self.aggregators.requires_grad_(True)
        self.scale_logits.requires_grad_(self.num_scales > 1)
        self.adapters.requires_grad_(cfg.train_adapters)
        self.scale_heads.requires_grad_(cfg.train_adapters)
        self.base.head.requires_grad_(cfg.train_adapters)
        for layer in self.base.layers:
            layer.moe.gate.requires_grad_(cfg.train_gates)
            layer.moe.experts.requires_grad_(cfg.train_experts)
            if layer.moe.shared is not None:
                layer.moe.shared.requires_grad_(cfg.train_experts)

    def forward(self, patches: list[Tensor], real: list[Tensor]) -> tuple[list[Tensor], list[MoEStats]]:
        """Hidden states per scale [B, n_i, D] of normalised patches [B, n_i, P] (real [B, n_i]: not padding)."""
        if len(patches) != self.num_scales:
            raise ValueError(f"expected {self.num_scales} scales, got {len(patches)}")
        sizes = [p.shape[1] for p in patches]
        x = torch.cat([self.adapters[i](self.base.patch_proj(p)) for i, p in enumerate(patches)], dim=1)
        real_bt = torch.cat(real, dim=1)
        scale_t, pos_t = scale_layout(sizes, x.device)
        b, t, d = x.shape
        pos_bt = pos_t.expand(b, t)
        mask = scale_attention_mask(scale_t, pos_t, real_bt)
        keep = real_bt.to(x.dtype)[..., None]
        stats = []
        for i, layer in enumerate(self.base.layers):
            x = x + scale_attention(layer.attn, self.lora[i], layer.attn_norm(x), scale_t, pos_bt, mask)
            ffn_out, st = layer.moe(layer.ffn_norm(x).reshape(b * t, d), real_bt.reshape(-1))
            x = x + ffn_out.reshape(b, t, d)
            stats.append(st)
            if self.aggregators is not None:  # padding states stay out of the other scales
                x = torch.cat(self.aggregators[i](list((x * keep).split(sizes, dim=1))), dim=1)
        return list(self.base.final_norm(x).split(sizes, dim=1)), stats

    def empty_cache(self, batch: int, capacity: list[int]) -> "MSFTCache":
        """An empty `MSFTCache` with room for `capacity[i]` tokens of scale i."""
        param = next(self.parameters())
        cfg, total = self.config, sum(capacity)
        d = cfg.d_model
        return MSFTCache(
            attn=[LayerCache.empty(batch, cfg.num_heads, total, cfg.head_dim, param.dtype, param.device)
                  for _ in self.base.layers],
            states=[[param.new_zeros(batch, c, d) for c in capacity] for _ in self.base.layers]
            if self.aggregators is not None else [],
            scale_c=torch.empty(total, dtype=torch.long, device=param.device),
            pos_c=torch.empty(total, dtype=torch.long, device=param.device),
            real_bc=torch.empty(batch, total, dtype=torch.bool, device=param.device),
            counts=[0] * len(capacity), capacity=list(capacity))

    def extend(self, patches: list[Tensor], real: list[Tensor], cache: "MSFTCache",
               rope_table: RopeTable | None = None) -> list[Tensor]:
        """Hidden states [B, m_i, D] of m_i new tokens per scale (normalised patches [B, m_i, P], real [B, m_i])
        appended after the tokens held in `cache` (written in place): what `forward` gives these tokens on the
        whole sequence, provided the held tokens of every scale stay a prefix the decoder builds (each fine token's
        aligned coarse token and each coarse token's two fine tokens held once the step is in)."""
        if len(patches) != self.num_scales or len(real) != self.num_scales:
            raise ValueError(f"expected {self.num_scales} scales, got {len(patches)}")
        sizes = [p.shape[1] for p in patches]
        before, after = list(cache.counts), [c + m for c, m in zip(cache.counts, sizes)]
        for i in range(self.num_scales - 1):  # what the aggregator reads of the neighbours must be held
            if not 2 * after[i + 1] <= after[i] <= 2 * after[i + 1] + 1:
                raise ValueError(f"scales {i} and {i + 1} would hold {after[i]} and {after[i + 1]} tokens: a prefix "
                                 f"of the multi-scale sequence holds 2m or 2m+1 fine tokens for m coarse ones")
        if any(a > c for a, c in zip(after, cache.capacity)):
            raise ValueError(f"the MSFT cache holds at most {cache.capacity} tokens per scale, {after} asked")
        dev = cache.scale_c.device
        x = torch.cat([self.adapters[i](self.base.patch_proj(p)) for i, p in enumerate(patches)], dim=1)
        b, n, d = x.shape
        real_bn = torch.cat(real, dim=1).bool()
        scale_n = torch.cat([torch.full((m,), i, dtype=torch.long, device=dev) for i, m in enumerate(sizes)])
        pos_n = torch.cat([torch.arange(c, c + m, device=dev) for c, m in zip(before, sizes)])
        start, end = cache.length, cache.length + n
        cache.scale_c[start:end], cache.pos_c[start:end], cache.real_bc[:, start:end] = scale_n, pos_n, real_bn
        # same scale, causal, key real; a token always sees itself (as `scale_attention_mask`)
        allowed_nc = (cache.scale_c[None, :end] == scale_n[:, None]) & (cache.pos_c[None, :end] <= pos_n[:, None])
        itself_nc = torch.arange(end, device=dev)[None, :] == torch.arange(start, end, device=dev)[:, None]
        mask_bnc = (allowed_nc[None] & cache.real_bc[:, None, :end]) | itself_nc[None]
        pos_bn = pos_n.expand(b, n)
        rope = (rope_angles(pos_bn, self.config.head_dim, self.config.rope_base) if rope_table is None
                else rope_table.lookup(pos_bn))
        keep = real_bn.to(x.dtype)[..., None]
        for li, layer in enumerate(self.base.layers):
            x = x + cached_scale_attention(layer.attn, self.lora[li], layer.attn_norm(x), scale_n, rope, mask_bnc,
                                           cache.attn[li])
            ffn_out, _ = layer.moe(layer.ffn_norm(x).reshape(b * n, d), real_bn.reshape(-1))
            x = x + ffn_out.reshape(b, n, d)
            if self.aggregators is not None:
                x = torch.cat(self._aggregate_new(li, list((x * keep).split(sizes, dim=1)), before, cache), dim=1)
        cache.length, cache.counts = end, after
        return list(self.base.final_norm(x).split(sizes, dim=1))

    def _aggregate_new(self, layer: int, new: list[Tensor], before: list[int], cache: "MSFTCache") -> list[Tensor]:
        """`CrossScaleAggregator` for the new tokens of each scale [B, m_i, D], reading the aligned tokens'
        pre-aggregation states of this layer (held ones from the cache, which the new ones are written into)."""
        agg, states = self.aggregators[layer], cache.states[layer]
        for i, y in enumerate(new):
            states[i][:, before[i]:before[i] + y.shape[1]] = y
        out = []
        for i, y in enumerate(new):
            u = torch.arange(before[i], before[i] + y.shape[1], device=y.device)
            if i > 0:  # coarse token u gets the mean of fine tokens 2u, 2u+1 (`fine_to_coarse`)
                pair = torch.stack((states[i - 1][:, 2 * u], states[i - 1][:, 2 * u + 1]), dim=2)
                y = y + agg.down[i - 1](pair.mean(dim=2))
            if i + 1 < len(new):  # fine token u gets coarse token ⌊(u+1)/2⌋ − 1, nothing for u = 0 (`coarse_to_fine`)
                j = (u + 1) // 2 - 1
                coarse = states[i + 1][:, j.clamp(min=0)] * (j >= 0).to(y.dtype)[None, :, None]
                y = y + agg.up[i](coarse)
            out.append(y)
        return out


@dataclass
class MSFTCache:
    """What `MSFTNetwork.extend` keeps of the tokens encoded so far (its buffers preallocated, written in place)."""

    attn: list[LayerCache]  # per layer: keys / values of every held token, all scales in the order they came
    states: list[list[Tensor]]  # [layer][scale] [B, capacity_i, D]: the layer's output before aggregation (padding 0)
    scale_c: Tensor  # [C] scale of each held token
    pos_c: Tensor  # [C] its position within its scale (RoPE's and the causal mask's)
    real_bc: Tensor  # [B, C] not padding
    counts: list[int]  # tokens held per scale
    capacity: list[int]  # room per scale (the buffers are sized once)
    length: int = 0  # tokens held in all


@dataclass
class ScaleInputs:
    """One scale of a batch: normalised patches, observed mask, real-patch mask and the statistics used."""

    normed: Tensor  # [B, n, P]
    observed: Tensor  # [B, n, P]
    real: Tensor  # [B, n]
    loc: Tensor  # [B, n, 1]
    scale: Tensor  # [B, n, 1]
    stats: Tensor  # [B, n] patches that gave the statistics (no loss)
    informative: Tensor  # [B, n]


def scale_inputs(target_bl: Tensor, cfg: MSFTConfig, patch_size: int, stats_ratio: float, min_scale: float,
                 missing_values: str, stats_all: bool = False) -> list[ScaleInputs]:
    """Every scale of windows target [B, L] (L a multiple of P·2^K), each standardised with its leading
    ⌈stats_ratio·n⌉ patches (as pretraining) or, with `stats_all`, with all its patches (as forecasting)."""
    out = []
    for i in range(cfg.num_scales + 1):
        pooled = avg_pool_nan(target_bl, 2 ** i)
        values, observed = patchify(pooled, patch_size)
        real = torch.ones(values.shape[:2], dtype=torch.long, device=values.device)
        layout = PackedLayout.from_sample_id(real)
        stats = real.bool() if stats_all else layout.stats_patches(stats_ratio)
        loc, scale, informative = masked_stats(values, observed, stats, layout.sample_id, min_scale)
        normed = standardise(values, observed, loc, scale, missing_values)
        out.append(ScaleInputs(normed, observed, real.bool(), loc, scale, stats, informative))
    return out


@dataclass
class MSFTOutput:
    """Losses of one finetuning batch."""

    loss: Tensor  # Σ softmax(w)_i·L_i + the MoE auxiliary terms
    scale_nll: Tensor  # [S] L_i: mean next-patch NLL per observed value of scale i
    aux_loss: Tensor


def msft_loss(net: MSFTNetwork, target_bl: Tensor) -> MSFTOutput:
    """Weighted next-patch NLL of windows target [B, L] (NaN = missing) over all scales.

    Per scale, as `moe_ts.objectives.pretrain_loss` for rows holding one window each: position j is
    scored on patch j+1, except statistics patches and windows with degenerate statistics.
    """
    cfg = net.config
    length = target_bl.shape[1]
    unit = cfg.patch_size * net.msft.pool
    if length % unit:
        raise ValueError(f"window length {length} must be a multiple of patch_size·2^K = {unit}")
    scales = scale_inputs(target_bl, net.msft, cfg.patch_size, cfg.stats_ratio, cfg.min_scale, cfg.missing_values)
    hidden, stats = net([s.normed for s in scales], [s.real for s in scales])
    nlls = []
    for head, h, s in zip(net.heads(), hidden, scales):
        scored_bn = ~s.stats[:, 1:] & s.informative[:, 1:]
        weight = (s.observed[:, 1:] & scored_bn[..., None]).to(h.dtype)
        log_prob = head.distribution(h[:, :-1]).log_prob(s.normed[:, 1:])
        nlls.append(-(log_prob * weight).sum() / weight.sum().clamp(min=1.0))
    scale_nll = torch.stack(nlls)
    aux = torch.stack([st.aux_loss for st in stats]).mean()
    z = torch.stack([st.z_loss for st in stats]).mean()
    loss = (net.scale_weights() * scale_nll).sum() + cfg.moe.aux_loss_coef * aux + cfg.moe.z_loss_coef * z
    return MSFTOutput(loss=loss, scale_nll=scale_nll, aux_loss=aux)


def merge_lora(net: MSFTNetwork) -> MoiraiMoENetwork:
    """The base network with scale 0's LoRA folded into Q/K/V (exact up to rounding): valid only without
    extra scales, where scale 0 is the whole model; adapters and gates are folded/kept as they are."""
    if net.num_scales != 1:
        raise ValueError(f"only a single-scale network merges into a plain model, this one has {net.num_scales}")
    base = copy.deepcopy(net.base)
    adapter = net.adapters[0]
    with torch.no_grad():
        for layer, lora in zip(base.layers, net.lora):
            for name in ("q", "k", "v"):
                linear = getattr(layer.attn, f"{name}_proj")
                linear.weight.copy_(getattr(lora, name).merged_weight(linear.weight))
        # adapter ∘ out_proj of the patch projection: both linear, fold into out_proj and res_proj
        proj = base.patch_proj
        proj.out_proj.weight.copy_(adapter.weight @ proj.out_proj.weight)
        proj.out_proj.bias.copy_(adapter.weight @ proj.out_proj.bias + adapter.bias)
        proj.res_proj.weight.copy_(adapter.weight @ proj.res_proj.weight)
        proj.res_proj.bias.copy_(adapter.weight @ proj.res_proj.bias)
    for layer in base.layers:
        gate = layer.moe.gate
        if isinstance(gate, CentroidGate):
            gate.set_centroids(gate.centroids)  # back to a buffer, as a released model holds it
    base.requires_grad_(True)
    return base
