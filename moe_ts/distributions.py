"""Output head: a four-component mixture per step of the next patch (docs/ARCHITECTURE.md §2, "Output head").

Layout follows uni2ts's `MixtureOutput([StudentTOutput, NormalFixedScaleOutput,
NegativeBinomialOutput, LogNormalOutput])` and its `DistrParamProj`, so released
Moirai(-MoE) weights map onto `MixtureHead` one tensor at a time:

    uni2ts  param_proj.proj.<name>.weight [1, dim*P, d]  ->  ours proj.<name>.weight [dim*P, d]
    uni2ts  param_proj.proj.<name>.bias   [1, dim*P]     ->  ours proj.<name>.bias   [dim*P]

with <name> in `weights_logits`, `components.0.{df,loc,scale}`, `components.1.loc`,
`components.2.{total_count,logits}`, `components.3.{loc,scale}` (`uni2ts_key_map`).
Each linear's outputs are parameter-major ("(dim out) -> out dim"): output j*P + p is
parameter entry j (the mixture component for `weights_logits`) at step p of the patch.

Domain maps (as uni2ts): weights = softmax(weights_logits); Student-t df = 2 + softplus,
loc = identity, scale = softplus clamped at the dtype's eps; normal loc = identity with a
fixed scale 1e-3; negative binomial total_count = softplus (clamped at the dtype's smallest
normal number, where uni2ts would give 0 and a NaN log-prob), logits = identity;
log-normal loc = identity, scale = softplus clamped at eps. Parameters are computed in
float32 when the hidden states are float16/bfloat16 (autocast).

Values live on the normalised scale ((x - loc) / scale of the series), so they can be
negative and non-integer. Support handling matches uni2ts's `Mixture.log_prob`, which tests
each component's `support` on the normalised value:
  * negative binomial: support y >= 0 over the reals. For non-integer y the log-pmf is the
    continuous extension through lgamma,
        lgamma(r + y) - lgamma(y + 1) - lgamma(r) + r*logsigmoid(-l) + y*logsigmoid(l),
    which is not normalised over the reals (uni2ts trains with exactly this). For y < 0 the
    component's log-prob is -inf: it gets zero weight inside the logsumexp.
  * log-normal: support y > 0; for y <= 0 its log-prob is -inf (zero weight).
  * Student-t and normal cover all reals, so the mixture log-prob is finite for every
    finite y: the Student-t term uses log(1 + u^2) = 2*log|u| once |u| > 1e18 (u^2 would
    overflow float32), and the NB term uses lgamma(r + y) - lgamma(y + 1) = (r - 1)*log(y)
    for y > 1e30 (lgamma overflows near 1e36).
Out-of-support positions evaluate the component at a dummy in-support value (uni2ts uses a
sample) and then select -inf, so no NaN reaches the gradients.

Sampling (no reparameterisation): the negative binomial is drawn as Poisson(Gamma(r, rate =
exp(-l))), as uni2ts. The Gamma draw's log and the log-normal's exponent are capped at
log(SAMPLE_CAP) = log(1e15) (torch.poisson overflows int64 above ~9e18); `mean` applies the
same cap to exp(log r + l) and exp(loc + scale^2/2). On the normalised scale 1e15 is far
beyond any real forecast, so the cap only guards against inf/NaN at absurd parameters.

De-normalisation: `ScaledMixture(mixture, loc, scale)` is y = loc + scale * x (uni2ts's
AffineTransformed); its `sample`/`mean` are on the original scale and its `log_prob`
includes the -log(scale) Jacobian.

Shape legend: `...` leading batch dims (e.g. B, N), P patch size, K = 4 components,
S sample shape.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

COMPONENTS: tuple[str, ...] = ("student_t", "normal", "negative_binomial", "log_normal")
NUM_COMPONENTS = len(COMPONENTS)
NORMAL_FIXED_SCALE = 1e-3
SAMPLE_CAP = 1e15
_LOG_SAMPLE_CAP = math.log(SAMPLE_CAP)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_HALF_LOG_PI = 0.5 * math.log(math.pi)
# Parameter names per component, in uni2ts's order (its `args_dim` dicts).
COMPONENT_PARAMS: tuple[tuple[str, ...], ...] = (
    ("df", "loc", "scale"),
    ("loc",),
    ("total_count", "logits"),
    ("loc", "scale"),
)


@dataclass
class MixtureParams:
    """Mixture parameters, each [..., P] except `weights_logits` [..., P, K]."""

    weights_logits: Tensor
    t_df: Tensor
    t_loc: Tensor
    t_scale: Tensor
    normal_loc: Tensor
    nb_total_count: Tensor
    nb_logits: Tensor
    ln_loc: Tensor
    ln_scale: Tensor

    def map(self, fn: Callable[[Tensor], Tensor]) -> "MixtureParams":
        """Apply `fn` to every tensor (for `weights_logits` it sees the extra trailing K dim)."""
        return MixtureParams(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    @property
    def shape(self) -> torch.Size:
        """Batch shape [..., P] of the mixture."""
        return self.t_loc.shape


# ----------------------------------------------------------------------------- components


_LOG_BIG = math.log(1e18)  # |u| above this: log(1 + u^2) == 2*log|u| in float32, and u^2 could overflow


def student_t_log_prob(y: Tensor, df: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """Student-t log-density (all reals), finite for every finite y."""
    d = y - loc
    log_abs_u = torch.log(d.abs().clamp_min(torch.finfo(d.dtype).tiny)) - torch.log(scale) - 0.5 * torch.log(df)
    big = log_abs_u > _LOG_BIG
    u_small = torch.where(big, torch.zeros_like(d), d) / (scale * torch.sqrt(df))
    log1p_u2 = torch.where(big, 2.0 * log_abs_u, torch.log1p(u_small * u_small))
    norm = torch.log(scale) + 0.5 * torch.log(df) + _HALF_LOG_PI + torch.lgamma(0.5 * df) - torch.lgamma(0.5 * (df + 1.0))
    return -0.5 * (df + 1.0) * log1p_u2 - norm


def normal_log_prob(y: Tensor, loc: Tensor, scale: float | Tensor = NORMAL_FIXED_SCALE) -> Tensor:
    """Normal log-density (all reals)."""
    scale_t = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
    z = (y - loc) / scale_t
    return -0.5 * z * z - torch.log(scale_t) - _HALF_LOG_2PI


def negative_binomial_log_prob(y: Tensor, total_count: Tensor, logits: Tensor) -> Tensor:
    """Negative binomial log-pmf, continuous in y via lgamma; -inf for y < 0."""
    inside = y >= 0
    y_safe = torch.where(inside, y, torch.zeros_like(y))
    # lgamma(r + y) - lgamma(y + 1): its Stirling limit (r - 1)*log(y) once y is huge (lgamma overflows near 1e36).
    huge = y_safe > 1e30
    y_mod = torch.where(huge, torch.zeros_like(y_safe), y_safe)
    y_huge = torch.where(huge, y_safe, torch.ones_like(y_safe))
    lgamma_ratio = torch.where(
        huge,
        (total_count - 1.0) * torch.log(y_huge),
        torch.lgamma(total_count + y_mod) - torch.lgamma(y_mod + 1.0),
    )
    lp = total_count * F.logsigmoid(-logits) + y_safe * F.logsigmoid(logits) + lgamma_ratio - torch.lgamma(total_count)
    return torch.where(inside, lp, torch.full_like(lp, -math.inf))


def log_normal_log_prob(y: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """Log-normal log-density; -inf for y <= 0."""
    inside = y > 0
    log_y = torch.log(torch.where(inside, y, torch.ones_like(y)))
    z = (log_y - loc) / scale
    lp = -0.5 * z * z - torch.log(scale) - _HALF_LOG_2PI - log_y
    return torch.where(inside, lp, torch.full_like(lp, -math.inf))


class RowStreams:
    """Per-series random streams for a batch whose rows are `per_series` consecutive rows per series: series b
    draws from `generators[b]`, so its draws do not depend on the other series of the batch (`row_streams`).
    Each draw names its row dimension (the first batch dimension: after the sample dimensions)."""

    def __init__(self, generators: list[torch.Generator], per_series: int) -> None:
        self.generators, self.per_series = generators, per_series

    def _split(self, size: int) -> int:
        if size != self.per_series * len(self.generators):
            raise ValueError(f"row streams: {size} rows for {len(self.generators)} series of {self.per_series}")
        return self.per_series

    def randn(self, shape: torch.Size, like: Tensor, row_dim: int) -> Tensor:
        part = shape[:row_dim] + (self._split(shape[row_dim]),) + shape[row_dim + 1:]
        return torch.cat([torch.randn(part, generator=g, dtype=like.dtype, device=like.device)
                          for g in self.generators], dim=row_dim)

    def rand(self, shape: torch.Size, like: Tensor, row_dim: int) -> Tensor:
        part = shape[:row_dim] + (self._split(shape[row_dim]),) + shape[row_dim + 1:]
        return torch.cat([torch.rand(part, generator=g, dtype=like.dtype, device=like.device)
                          for g in self.generators], dim=row_dim)

    def standard_gamma(self, alpha: Tensor, row_dim: int) -> Tensor:
        chunks = alpha.split(self._split(alpha.shape[row_dim]), dim=row_dim)
        return torch.cat([torch._standard_gamma(a.contiguous(), generator=g) for a, g in zip(chunks, self.generators)],
                         dim=row_dim)

    def poisson(self, rate: Tensor, row_dim: int) -> Tensor:
        chunks = rate.split(self._split(rate.shape[row_dim]), dim=row_dim)
        return torch.cat([torch.poisson(r.contiguous(), generator=g) for r, g in zip(chunks, self.generators)],
                         dim=row_dim)


_ROW_STREAMS: ContextVar[RowStreams | None] = ContextVar("moe_ts_row_streams", default=None)


@contextmanager
def row_streams(streams: RowStreams | None) -> Iterator[None]:
    """Within the block, mixture draws come from `streams` (None: the global generator, as outside)."""
    token = _ROW_STREAMS.set(streams)
    try:
        yield
    finally:
        _ROW_STREAMS.reset(token)


def _randn(shape: torch.Size, like: Tensor, row_dim: int) -> Tensor:
    streams = _ROW_STREAMS.get()
    if streams is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    return streams.randn(shape, like, row_dim)


def _rand(shape: torch.Size, like: Tensor, row_dim: int) -> Tensor:
    streams = _ROW_STREAMS.get()
    if streams is None:
        return torch.rand(shape, dtype=like.dtype, device=like.device)
    return streams.rand(shape, like, row_dim)


def _standard_gamma(alpha: Tensor, row_dim: int) -> Tensor:
    streams = _ROW_STREAMS.get()
    return torch._standard_gamma(alpha) if streams is None else streams.standard_gamma(alpha, row_dim)


def _poisson(rate: Tensor, row_dim: int) -> Tensor:
    streams = _ROW_STREAMS.get()
    return torch.poisson(rate) if streams is None else streams.poisson(rate, row_dim)


def _capped_exp(x: Tensor) -> Tensor:
    return torch.exp(x.clamp(max=_LOG_SAMPLE_CAP))


def negative_binomial_sample(total_count: Tensor, logits: Tensor, sample_shape: torch.Size) -> Tensor:
    """Poisson(Gamma(total_count, rate=exp(-logits))) draws, shape sample_shape + batch."""
    shape = torch.Size(sample_shape) + total_count.shape
    row_dim = len(sample_shape)
    gamma = _standard_gamma(total_count.expand(shape).contiguous(), row_dim)
    log_rate = torch.log(gamma.clamp_min(torch.finfo(gamma.dtype).tiny)) + logits
    return _poisson(_capped_exp(log_rate), row_dim)


def student_t_sample(df: Tensor, loc: Tensor, scale: Tensor, sample_shape: torch.Size) -> Tensor:
    """loc + scale * N(0,1) / sqrt(Chi2(df) / df), shape sample_shape + batch."""
    shape = torch.Size(sample_shape) + loc.shape
    row_dim = len(sample_shape)
    chi2 = 2.0 * _standard_gamma((0.5 * df).expand(shape).contiguous(), row_dim)
    chi2 = chi2.clamp_min(torch.finfo(chi2.dtype).tiny)
    z = _randn(shape, loc, row_dim)
    return loc + scale * z * torch.rsqrt(chi2 / df)


# ----------------------------------------------------------------------------- mixture


class Mixture:
    """Four-component mixture on the normalised scale, batch shape [..., P] (plain torch)."""

    def __init__(self, params: MixtureParams) -> None:
        self.params = params
        self.log_weights = torch.log_softmax(params.weights_logits, dim=-1)  # [..., P, K]

    @property
    def batch_shape(self) -> torch.Size:
        return self.params.shape

    def component_log_probs(self, y: Tensor) -> Tensor:
        """[..., P, K] log-prob of y under each component (-inf outside its support)."""
        p = self.params
        y = y.to(p.t_loc.dtype)
        return torch.stack(
            [
                student_t_log_prob(y, p.t_df, p.t_loc, p.t_scale),
                normal_log_prob(y, p.normal_loc),
                negative_binomial_log_prob(y, p.nb_total_count, p.nb_logits),
                log_normal_log_prob(y, p.ln_loc, p.ln_scale),
            ],
            dim=-1,
        )

    def log_prob(self, y: Tensor) -> Tensor:
        """[..., P] logsumexp over components of log weight + component log-prob."""
        return torch.logsumexp(self.log_weights + self.component_log_probs(y), dim=-1)

    def component_means(self) -> Tensor:
        """[..., P, K] component means (NB and log-normal exponentials capped at SAMPLE_CAP)."""
        p = self.params
        return torch.stack(
            [
                p.t_loc,  # df > 2 always
                p.normal_loc,
                _capped_exp(torch.log(p.nb_total_count) + p.nb_logits),
                _capped_exp(p.ln_loc + 0.5 * p.ln_scale * p.ln_scale),
            ],
            dim=-1,
        )

    @property
    def mean(self) -> Tensor:
        """[..., P] mixture mean."""
        return (self.log_weights.exp() * self.component_means()).sum(dim=-1)

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        """Draws of shape sample_shape + [..., P] (not differentiable)."""
        draws, choice = self._component_draws(sample_shape)
        return torch.gather(draws, -1, choice).squeeze(-1)

    def component_centers(self) -> Tensor:
        """[..., P, K] a central value of each component: the Student-t and normal locations, the negative
        binomial's mean, the log-normal's median (not its mean, which explodes with the log-scale)."""
        means = self.component_means()
        return torch.cat([means[..., :3], _capped_exp(self.params.ln_loc).unsqueeze(-1)], dim=-1)

    @torch.no_grad()
    def sample_with_centers(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> tuple[Tensor, Tensor]:
        """(draws, centers), both sample_shape + [..., P]: each draw and the center (`component_centers`) of the
        component it was drawn from. Uses the random stream exactly as `sample` does."""
        draws, choice = self._component_draws(sample_shape)
        centers = self.component_centers().expand(draws.shape)
        return torch.gather(draws, -1, choice).squeeze(-1), torch.gather(centers, -1, choice).squeeze(-1)

    def _component_draws(self, sample_shape: torch.Size | tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """(one draw of every component [S..., ..., P, K], the sampled component index [S..., ..., P, 1])."""
        p = self.params
        sample_shape = torch.Size(sample_shape)
        shape = sample_shape + p.shape
        row_dim = len(sample_shape)
        eps = _randn(shape, p.t_loc, row_dim)
        draws = torch.stack(
            [
                student_t_sample(p.t_df, p.t_loc, p.t_scale, sample_shape),
                p.normal_loc + NORMAL_FIXED_SCALE * eps,
                negative_binomial_sample(p.nb_total_count, p.nb_logits, sample_shape),
                _capped_exp(p.ln_loc + p.ln_scale * _randn(eps.shape, eps, row_dim)),
            ],
            dim=-1,
        )
        gumbel = -torch.log(-torch.log(_rand(shape + (NUM_COMPONENTS,), eps, row_dim).clamp_min(1e-20)))
        return draws, torch.argmax(self.log_weights + gumbel, dim=-1, keepdim=True)


class ScaledMixture:
    """y = loc + scale * x for x ~ `base` (de-normalisation, uni2ts's AffineTransformed)."""

    def __init__(self, base: Mixture, loc: Tensor | float, scale: Tensor | float) -> None:
        self.base = base
        self.loc = loc
        self.scale = scale

    @property
    def mean(self) -> Tensor:
        return self.loc + self.scale * self.base.mean

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        return self.loc + self.scale * self.base.sample(sample_shape)

    def log_prob(self, y: Tensor) -> Tensor:
        scale = torch.as_tensor(self.scale, dtype=y.dtype, device=y.device)
        return self.base.log_prob((y - self.loc) / scale) - torch.log(scale)


# ----------------------------------------------------------------------------- head


class MixtureHead(nn.Module):
    """Hidden state [..., d_model] -> mixture parameters for the P steps of the next patch."""

    def __init__(self, d_model: int, patch_size: int) -> None:
        super().__init__()
        if d_model < 1 or patch_size < 1:
            raise ValueError(f"MixtureHead needs d_model >= 1 and patch_size >= 1, got {d_model}, {patch_size}")
        self.d_model = d_model
        self.patch_size = patch_size
        self.proj = nn.ModuleDict(
            {
                "weights_logits": nn.Linear(d_model, NUM_COMPONENTS * patch_size),
                "components": nn.ModuleList(
                    nn.ModuleDict({name: nn.Linear(d_model, patch_size) for name in names}) for names in COMPONENT_PARAMS
                ),
            }
        )

    def forward(self, h: Tensor) -> MixtureParams:
        if h.shape[-1] != self.d_model:
            raise ValueError(f"MixtureHead: hidden size {h.shape[-1]} != d_model {self.d_model}")
        P = self.patch_size

        def raw(layer: nn.Module) -> Tensor:
            out = layer(h)
            return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out

        w = raw(self.proj["weights_logits"])  # [..., K*P], component-major
        w = w.unflatten(-1, (NUM_COMPONENTS, P)).transpose(-1, -2)  # [..., P, K]
        t, n, nb, ln = self.proj["components"]
        t_scale = raw(t["scale"])
        ln_scale = raw(ln["scale"])
        nb_count = raw(nb["total_count"])
        return MixtureParams(
            weights_logits=w,
            t_df=2.0 + F.softplus(raw(t["df"])),
            t_loc=raw(t["loc"]),
            t_scale=F.softplus(t_scale).clamp_min(torch.finfo(t_scale.dtype).eps),
            normal_loc=raw(n["loc"]),
            nb_total_count=F.softplus(nb_count).clamp_min(torch.finfo(nb_count.dtype).tiny),
            nb_logits=raw(nb["logits"]),
            ln_loc=raw(ln["loc"]),
            ln_scale=F.softplus(ln_scale).clamp_min(torch.finfo(ln_scale.dtype).eps),
        )

    def distribution(self, h: Tensor) -> Mixture:
        """Shortcut: Mixture(self(h))."""
        return Mixture(self(h))


def uni2ts_key_map(prefix: str = "param_proj.proj.") -> dict[str, str]:
    """uni2ts state-dict key -> MixtureHead key (uni2ts tensors carry a leading patch-size dim to index)."""
    names = ["weights_logits"] + [f"components.{i}.{n}" for i, ns in enumerate(COMPONENT_PARAMS) for n in ns]
    return {f"{prefix}{name}.{kind}": f"proj.{name}.{kind}" for name in names for kind in ("weight", "bias")}
