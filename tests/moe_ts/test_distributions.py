"""Mixture output head: component log-probs against torch.distributions, mixture algebra,
uni2ts layout, samplers against analytic moments, gradients, extremes, shapes."""
import math

import pytest
import torch
import torch.distributions as D
from einops import rearrange

from moe_ts.distributions import (
    COMPONENT_PARAMS,
    NORMAL_FIXED_SCALE,
    NUM_COMPONENTS,
    Mixture,
    MixtureHead,
    MixtureParams,
    ScaledMixture,
    log_normal_log_prob,
    negative_binomial_log_prob,
    negative_binomial_sample,
    normal_log_prob,
    student_t_log_prob,
    uni2ts_key_map,
)

B, N, P, D_MODEL = 2, 3, 4, 8


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_params(shape=(B, N, P), seed: int = 0) -> MixtureParams:
    g = _gen(seed)
    r = lambda: torch.randn(shape, generator=g, dtype=torch.float64)  # noqa: E731
    sp = torch.nn.functional.softplus
    return MixtureParams(
        weights_logits=torch.randn(shape + (NUM_COMPONENTS,), generator=g, dtype=torch.float64),
        t_df=2.0 + sp(r()),
        t_loc=r(),
        t_scale=sp(r()),
        normal_loc=r(),
        nb_total_count=sp(r()) + 0.1,
        nb_logits=r(),
        ln_loc=r() * 0.5,
        ln_scale=sp(r()) * 0.5 + 0.05,
    )


def _torch_components(p: MixtureParams) -> list[D.Distribution]:
    return [
        D.StudentT(p.t_df, p.t_loc, p.t_scale, validate_args=False),
        D.Normal(p.normal_loc, torch.full_like(p.normal_loc, NORMAL_FIXED_SCALE), validate_args=False),
        D.NegativeBinomial(total_count=p.nb_total_count, logits=p.nb_logits, validate_args=False),
        D.LogNormal(p.ln_loc, p.ln_scale, validate_args=False),
    ]


# ----------------------------------------------------------------------------- components vs torch


def test_student_t_matches_torch():
    p = _random_params()
    y = torch.randn(B, N, P, dtype=torch.float64, generator=_gen(1)) * 5
    ref = D.StudentT(p.t_df, p.t_loc, p.t_scale).log_prob(y)
    torch.testing.assert_close(student_t_log_prob(y, p.t_df, p.t_loc, p.t_scale), ref)


def test_student_t_huge_branch_matches_float64():
    df, loc, scale = torch.tensor([2.5, 7.0]), torch.tensor([0.3, -1.0]), torch.tensor([1e-7, 2.0])
    y = torch.tensor([1e20, -3e30])
    ours = student_t_log_prob(y, df, loc, scale)
    ref = D.StudentT(df.double(), loc.double(), scale.double()).log_prob(y.double())
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-3)


def test_normal_fixed_scale_matches_torch():
    p = _random_params()
    y = p.normal_loc + 3e-3 * torch.randn(B, N, P, dtype=torch.float64, generator=_gen(2))
    ref = D.Normal(p.normal_loc, NORMAL_FIXED_SCALE).log_prob(y)
    torch.testing.assert_close(normal_log_prob(y, p.normal_loc), ref)


def test_negative_binomial_matches_torch_on_counts_and_continuous_extension():
    p = _random_params()
    counts = torch.randint(0, 20, (B, N, P), generator=_gen(3)).double()
    ref = D.NegativeBinomial(total_count=p.nb_total_count, logits=p.nb_logits).log_prob(counts)
    torch.testing.assert_close(negative_binomial_log_prob(counts, p.nb_total_count, p.nb_logits), ref)
    # non-integer values: torch's formula (lgamma) without validation is the continuous extension
    frac = torch.rand(B, N, P, dtype=torch.float64, generator=_gen(4)) * 7
    ref_frac = D.NegativeBinomial(total_count=p.nb_total_count, logits=p.nb_logits, validate_args=False).log_prob(frac)
    torch.testing.assert_close(negative_binomial_log_prob(frac, p.nb_total_count, p.nb_logits), ref_frac)


def test_negative_binomial_huge_value_branch_is_stirling_limit():
    r, logits = torch.tensor([0.5, 3.0, 40.0], dtype=torch.float64), torch.tensor([0.2, -1.0, 2.0], dtype=torch.float64)
    y_just_below = torch.full_like(r, 0.99e30)
    y_above = torch.full_like(r, 1.01e30)
    below = negative_binomial_log_prob(y_just_below, r, logits)
    above = negative_binomial_log_prob(y_above, r, logits)
    # y*logsigmoid(l) dominates; the two branches must join continuously
    expected_diff = (1.01e30 - 0.99e30) * torch.nn.functional.logsigmoid(logits) + (r - 1) * math.log(1.01 / 0.99)
    torch.testing.assert_close(above - below, expected_diff, rtol=1e-6, atol=1e-6)
    assert torch.isfinite(negative_binomial_log_prob(torch.tensor([1e37]), torch.tensor([2.0]), torch.tensor([0.0]))).all()


def test_log_normal_matches_torch():
    p = _random_params()
    y = torch.rand(B, N, P, dtype=torch.float64, generator=_gen(5)) * 4 + 1e-3
    ref = D.LogNormal(p.ln_loc, p.ln_scale).log_prob(y)
    torch.testing.assert_close(log_normal_log_prob(y, p.ln_loc, p.ln_scale), ref)


def test_out_of_support_is_minus_inf():
    y = torch.tensor([-2.5, -1e-6, 0.0, 0.5])
    nb = negative_binomial_log_prob(y, torch.ones(4), torch.zeros(4))
    ln = log_normal_log_prob(y, torch.zeros(4), torch.ones(4))
    assert torch.isneginf(nb[:2]).all() and torch.isfinite(nb[2:]).all()
    assert torch.isneginf(ln[:3]).all() and torch.isfinite(ln[3:]).all()


# ----------------------------------------------------------------------------- mixture


def test_mixture_log_prob_is_logsumexp_of_torch_components():
    p = _random_params()
    mix = Mixture(p)
    comps = _torch_components(p)
    log_w = torch.log_softmax(p.weights_logits, dim=-1)
    # inside every support: positive integers
    y = torch.randint(1, 6, (B, N, P), generator=_gen(6)).double()
    ref = torch.logsumexp(log_w + torch.stack([c.log_prob(y) for c in comps], dim=-1), dim=-1)
    torch.testing.assert_close(mix.log_prob(y), ref)
    # negative values: only Student-t and normal contribute
    y_neg = -torch.rand(B, N, P, dtype=torch.float64, generator=_gen(7)) - 0.1
    ref_neg = torch.logsumexp(log_w[..., :2] + torch.stack([c.log_prob(y_neg) for c in comps[:2]], dim=-1), dim=-1)
    torch.testing.assert_close(mix.log_prob(y_neg), ref_neg)
    # non-integer positive value: all four, NB through its continuous extension
    y_frac = torch.rand(B, N, P, dtype=torch.float64, generator=_gen(8)) * 3 + 0.01
    ref_frac = torch.logsumexp(log_w + torch.stack([c.log_prob(y_frac) for c in comps], dim=-1), dim=-1)
    torch.testing.assert_close(mix.log_prob(y_frac), ref_frac)


def test_mixture_mean_is_weighted_component_means():
    p = _random_params()
    w = torch.softmax(p.weights_logits, dim=-1)
    comp_means = torch.stack([c.mean for c in _torch_components(p)], dim=-1)
    torch.testing.assert_close(Mixture(p).mean, (w * comp_means).sum(-1))


def _moderate_params(shape, weights_logits: torch.Tensor) -> MixtureParams:
    """Parameters with finite, modest variances (df >= 5, small log-normal scale)."""
    g = _gen(11)
    return MixtureParams(
        weights_logits=weights_logits.expand(shape + (NUM_COMPONENTS,)).clone(),
        t_df=5.0 + torch.rand(shape, generator=g) * 5,
        t_loc=torch.randn(shape, generator=g),
        t_scale=0.5 + torch.rand(shape, generator=g),
        normal_loc=torch.randn(shape, generator=g),
        nb_total_count=1.0 + torch.rand(shape, generator=g) * 3,
        nb_logits=torch.randn(shape, generator=g) * 0.5,
        ln_loc=torch.randn(shape, generator=g) * 0.3,
        ln_scale=0.2 + 0.3 * torch.rand(shape, generator=g),
    )


@pytest.mark.parametrize("component", [None, 0, 1, 2, 3])
def test_sample_mean_matches_mean(component):
    """Empirical mean of many draws within 5 standard errors of `mean` (mixture and each component alone)."""
    if component is None:
        logits = torch.tensor([0.3, -0.2, 0.1, 0.0])
    else:
        logits = torch.full((NUM_COMPONENTS,), -40.0)
        logits[component] = 40.0
    mix = Mixture(_moderate_params((2, 3), logits))
    torch.manual_seed(0)
    s = mix.sample((20000,))
    assert s.shape == (20000, 2, 3)
    stderr = s.std(dim=0) / math.sqrt(s.shape[0])
    assert ((s.mean(dim=0) - mix.mean).abs() < 5 * stderr + 1e-4).all()


def test_negative_binomial_sampler_moments():
    r = torch.tensor([0.7, 3.0, 12.0])
    logits = torch.tensor([1.0, 0.5, -0.8])
    torch.manual_seed(1)
    s = negative_binomial_sample(r, logits, torch.Size([100000]))
    assert (s >= 0).all() and torch.equal(s, s.round())
    mean = r * logits.exp()
    var = mean / torch.sigmoid(-logits)
    torch.testing.assert_close(s.mean(0), mean, rtol=0.03, atol=0.0)
    torch.testing.assert_close(s.var(0), var, rtol=0.06, atol=0.0)


def test_scaled_mixture_is_affine():
    p = _random_params()
    mix = Mixture(p)
    loc, scale = torch.tensor(3.0, dtype=torch.float64), torch.tensor(2.5, dtype=torch.float64)
    sm = ScaledMixture(mix, loc, scale)
    torch.testing.assert_close(sm.mean, loc + scale * mix.mean)
    x = torch.randn(B, N, P, dtype=torch.float64, generator=_gen(9))
    torch.testing.assert_close(sm.log_prob(loc + scale * x), mix.log_prob(x) - torch.log(scale))
    torch.manual_seed(3)
    a = sm.sample((5,))
    torch.manual_seed(3)
    b = loc + scale * mix.sample((5,))
    torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- head


def test_head_shapes_and_domains():
    head = MixtureHead(D_MODEL, P)
    p = head(torch.randn(B, N, D_MODEL, generator=_gen(10)))
    assert p.weights_logits.shape == (B, N, P, NUM_COMPONENTS)
    for name in ("t_df", "t_loc", "t_scale", "normal_loc", "nb_total_count", "nb_logits", "ln_loc", "ln_scale"):
        assert getattr(p, name).shape == (B, N, P), name
    assert (p.t_df > 2).all() and (p.t_scale > 0).all() and (p.nb_total_count > 0).all() and (p.ln_scale > 0).all()
    mix = Mixture(p)
    y = torch.randn(B, N, P)
    assert mix.log_prob(y).shape == (B, N, P)
    assert mix.mean.shape == (B, N, P)
    assert mix.sample().shape == (B, N, P)
    assert mix.sample((7,)).shape == (7, B, N, P)


def test_head_matches_uni2ts_layout():
    """State-dict names mirror uni2ts's param_proj.proj.*, and outputs follow its '(dim out) -> out dim' rearrange."""
    head = MixtureHead(D_MODEL, P)
    sd = head.state_dict()
    key_map = uni2ts_key_map()
    assert set(key_map.values()) == set(sd.keys())
    assert sd["proj.weights_logits.weight"].shape == (NUM_COMPONENTS * P, D_MODEL)
    for i, names in enumerate(COMPONENT_PARAMS):
        for name in names:
            assert sd[f"proj.components.{i}.{name}.weight"].shape == (P, D_MODEL)
            assert sd[f"proj.components.{i}.{name}.bias"].shape == (P,)
    assert key_map["param_proj.proj.components.2.total_count.weight"] == "proj.components.2.total_count.weight"

    h = torch.randn(B, N, D_MODEL, generator=_gen(12))
    sp = torch.nn.functional.softplus

    def uni2ts_style(name: str) -> torch.Tensor:
        w, b = sd[f"proj.{name}.weight"], sd[f"proj.{name}.bias"]
        return rearrange(torch.einsum("od,...d->...o", w, h) + b, "... (dim out) -> ... out dim", out=P)

    p = head(h)
    torch.testing.assert_close(p.weights_logits, uni2ts_style("weights_logits"))
    torch.testing.assert_close(p.t_df, 2.0 + sp(uni2ts_style("components.0.df").squeeze(-1)))
    torch.testing.assert_close(p.t_loc, uni2ts_style("components.0.loc").squeeze(-1))
    torch.testing.assert_close(p.t_scale, sp(uni2ts_style("components.0.scale").squeeze(-1)))
    torch.testing.assert_close(p.normal_loc, uni2ts_style("components.1.loc").squeeze(-1))
    torch.testing.assert_close(p.nb_total_count, sp(uni2ts_style("components.2.total_count").squeeze(-1)))
    torch.testing.assert_close(p.nb_logits, uni2ts_style("components.2.logits").squeeze(-1))
    torch.testing.assert_close(p.ln_loc, uni2ts_style("components.3.loc").squeeze(-1))
    torch.testing.assert_close(p.ln_scale, sp(uni2ts_style("components.3.scale").squeeze(-1)))


def test_gradients_reach_every_head_parameter():
    torch.manual_seed(0)
    head = MixtureHead(D_MODEL, P)
    h = torch.randn(B, N, D_MODEL, generator=_gen(13), requires_grad=True)
    # positive integers (all four components in support) and negative values (two components)
    # and, at the last token, values within 1e-3 of the normal's loc (the fixed-scale normal's
    # density vanishes in float32 elsewhere, so its loc gets a gradient only from nearby values)
    near_normal = head(h).normal_loc[:, -1:].detach() + 1e-3 * torch.randn(B, 1, P, generator=_gen(18))
    y = torch.cat(
        [torch.randint(1, 4, (B, 1, P), generator=_gen(14)).float(), -torch.rand(B, N - 2, P, generator=_gen(15)) - 0.1, near_normal],
        dim=1,
    )
    loss = -head.distribution(h).log_prob(y).mean()
    loss.backward()
    for name, param in head.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert torch.isfinite(h.grad).all()


@pytest.mark.parametrize("h_value", [50.0, -50.0])
def test_no_nan_at_extremes(h_value):
    torch.manual_seed(0)
    head = MixtureHead(D_MODEL, P)
    h = torch.full((B, N, D_MODEL), h_value, requires_grad=True)
    h_mixed = h * torch.sign(torch.randn(B, N, D_MODEL, generator=_gen(16)))  # both signs per feature too
    y_vals = torch.tensor([1e4, -1e4, 0.0, 1e-30, -1e-30, 2.5, 1e30, -1e35])
    for hh in (h, h_mixed):
        mix = head.distribution(hh)
        for v in y_vals:
            lp = mix.log_prob(torch.full((B, N, P), float(v)))
            assert torch.isfinite(lp).all(), (h_value, float(v))
        y = y_vals[torch.randint(0, len(y_vals), (B, N, P), generator=_gen(17))]
        head.zero_grad()
        (-mix.log_prob(y).sum()).backward(retain_graph=True)
        for name, param in head.named_parameters():
            assert torch.isfinite(param.grad).all(), (h_value, name)
        assert torch.isfinite(mix.mean).all()
        assert torch.isfinite(mix.sample((16,))).all()


def test_bf16_hidden_gives_float32_params():
    head = MixtureHead(D_MODEL, P).to(torch.bfloat16)
    p = head(torch.randn(B, N, D_MODEL).to(torch.bfloat16))
    assert p.t_loc.dtype == torch.float32 and p.weights_logits.dtype == torch.float32
    assert torch.isfinite(Mixture(p).log_prob(torch.randn(B, N, P))).all()


def test_params_map_selects_last_token():
    head = MixtureHead(D_MODEL, P)
    p = head(torch.randn(B, N, D_MODEL))
    last = p.map(lambda t: t[:, -1])
    assert last.shape == (B, P) and last.weights_logits.shape == (B, P, NUM_COMPONENTS)
    torch.testing.assert_close(Mixture(last).mean, Mixture(p).mean[:, -1])


def test_head_rejects_wrong_hidden_size():
    with pytest.raises(ValueError, match="d_model"):
        MixtureHead(D_MODEL, P)(torch.randn(2, D_MODEL + 1))


def test_mean_and_samples_stay_finite_for_absurd_parameters():
    """exp(logits) and exp(loc + scale^2/2) overflow float32 here; mean and samples must stay finite."""
    shape = (2, P)
    big = torch.full(shape, 200.0)
    p = MixtureParams(
        weights_logits=torch.tensor([-300.0, -300.0, 0.0, 0.0]).expand(shape + (NUM_COMPONENTS,)).clone(),
        t_df=torch.full(shape, 2.0),
        t_loc=torch.zeros(shape),
        t_scale=torch.full(shape, 1e-7),
        normal_loc=torch.zeros(shape),
        nb_total_count=big,
        nb_logits=big,
        ln_loc=big,
        ln_scale=torch.full(shape, 50.0),
    )
    mix = Mixture(p)
    assert torch.isfinite(mix.mean).all()
    s = mix.sample((64,))
    assert torch.isfinite(s).all() and (s >= 0).all()
    assert torch.isfinite(mix.log_prob(torch.tensor([[-1e4, 0.0, 3.0, 1e4]]).expand(shape))).all()
