"""APG schedule math: the gamma split, the DDIM inversion step against the VP-form DDIM formula, the loop."""
import math

import pytest
import torch

from freecure_core.apg.schedule import (FLOW, X0_PLUS_NOISE, ddim_inversion_step, invert, inverted_steps,
                                        split_schedule, state_form)


def schedule(n, sigma_max=14.6, sigma_min=0.03):
    """A Karras-like descending N-step schedule ending at 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    rho = 7.0
    s = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


@pytest.mark.parametrize("n, gamma, k", [(20, 0.5, 10), (30, 0.5, 15), (25, 0.5, 13), (50, 0.6, 30), (30, 0.1, 3),
                                         (10, 0.01, 1), (7, 1.0, 7), (30, 0.0, 0), (1, 0.5, 1), (3, 0.34, 2)])
def test_split_sizes(n, gamma, k):
    sigmas = schedule(n)
    up, down = split_schedule(sigmas, gamma)
    assert inverted_steps(n, gamma) == k
    if k == 0:
        assert up.numel() == 0 and down.numel() == 0
        return
    assert len(up) == len(down) == k + 1
    assert torch.equal(down, sigmas[n - k:]) and torch.equal(up, down.flip(0))
    assert up[0] == 0 and down[-1] == 0 and up[-1] == sigmas[n - k]
    assert bool((up[1:] > up[:-1]).all()) and bool((down[1:] < down[:-1]).all())


def test_gamma_one_inverts_the_whole_schedule():
    sigmas = schedule(12)
    up, down = split_schedule(sigmas, 1.0)
    assert torch.equal(down, sigmas) and up[-1] == sigmas[0]


def test_split_does_not_alias_the_input():
    sigmas = schedule(8)
    before = sigmas.clone()
    up, down = split_schedule(sigmas, 0.5)
    up.mul_(2)
    down.mul_(3)
    assert torch.equal(sigmas, before)


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([3.0, 1.0, 0.1]), "ends at sigma 0"),
    (torch.tensor([1.0, 3.0, 0.0]), "descending"),
    (torch.tensor([0.0]), "at least one step"),
])
def test_bad_schedules_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        split_schedule(bad, 0.5)


@pytest.mark.parametrize("gamma", [-0.1, 1.5, float("nan")])
def test_bad_gamma_is_refused(gamma):
    with pytest.raises(ValueError, match="gamma must be within 0..1"):
        split_schedule(schedule(10), gamma)


def test_step_is_vp_ddim_inversion():
    """k-diffusion's x = x0 + sigma*eps is the VP latent x_vp = sqrt(alpha_bar) * x, alpha_bar = 1/(1+sigma^2);
    DDIM maps x_vp(t) to x_vp(t') = sqrt(a') x0_hat + sqrt(1 - a') eps_hat,
    with x0_hat = (x_vp - sqrt(1-a) eps) / sqrt(a)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64) * 3
    eps = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64)
    for sigma, sigma_next in [(0.3, 0.9), (1.2, 4.0), (0.03, 0.05), (5.0, 14.6)]:
        denoised = x - sigma * eps  # what an EPS model returns for this eps
        a, a_next = 1 / (1 + sigma ** 2), 1 / (1 + sigma_next ** 2)
        x_vp = x * math.sqrt(a)
        x0_hat = (x_vp - math.sqrt(1 - a) * eps) / math.sqrt(a)
        x_vp_next = math.sqrt(a_next) * x0_hat + math.sqrt(1 - a_next) * eps
        ours = ddim_inversion_step(x, denoised, sigma, sigma_next)
        assert torch.allclose(ours * math.sqrt(a_next), x_vp_next, rtol=1e-12, atol=1e-12)
        # the brief's form: denoised + sigma_next * (x - denoised) / sigma
        assert torch.allclose(ours, denoised + sigma_next * (x - denoised) / sigma, rtol=1e-12, atol=1e-12)


def test_step_is_flow_ddim_inversion():
    """For rectified flow x = (1 - s) x0 + s eps the same formula keeps (x0_hat, eps_hat) and re-mixes them."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 4, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(1, 4, 3, 3, generator=g, dtype=torch.float64)
    s, s_next = 0.2, 0.7
    x = (1 - s) * x0 + s * eps
    assert torch.allclose(ddim_inversion_step(x, x0, s, s_next), (1 - s_next) * x0 + s_next * eps, atol=1e-12)


def test_step_with_an_evaluation_sigma():
    x, denoised = torch.tensor([2.0]), torch.tensor([0.5])
    # eps = (x - denoised) / sigma_eval = 0.5 at sigma_eval 3; x + (1 - 0) * 0.5
    assert torch.allclose(ddim_inversion_step(x, denoised, 0.0, 1.0, sigma_eval=3.0), torch.tensor([2.5]))


class ExactEps:
    """A toy EPS 'model' whose data is one point c: x = c + sigma*eps has denoised = c for every sigma."""

    def __init__(self, c):
        self.c, self.calls = c, []

    def __call__(self, x, sigma, **kwargs):
        self.calls.append(float(sigma[0]))
        return self.c.expand_as(x)


def test_invert_evaluates_at_the_target_sigma_never_at_zero():
    c = torch.full((1, 1, 2, 2), 0.25, dtype=torch.float64)
    model = ExactEps(c)
    up = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    x0 = c + 0.0
    out = invert(model, x0.clone(), up)
    assert model.calls == [0.5, 1.0, 2.0]
    assert torch.equal(out, x0)  # a point that is its own denoised has eps 0 at every sigma


def test_invert_then_euler_reconstructs_a_linear_model():
    """For the posterior-mean denoiser of a Gaussian prior (linear in x), inversion + Euler descent returns the
    input approximately, and refine makes the inversion the exact inverse of the Euler steps."""
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64)

    def model(x, sigma, **kwargs):
        s = sigma.view(-1, 1, 1, 1)
        return x / (1 + s ** 2) + 0.1 * s / (1 + s ** 2)  # a Gaussian-prior-like denoiser

    up = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-2, 0.5, 30, dtype=torch.float64)])

    def descend(x, sigmas):
        for i in range(len(sigmas) - 1):
            s = sigmas[i].view(1)
            d = model(x, s)
            x = x + (sigmas[i + 1] - sigmas[i]) * (x - d) / sigmas[i]
        return x

    plain = descend(invert(model, x0.clone(), up), up.flip(0))
    exact = descend(invert(model, x0.clone(), up, refine=30), up.flip(0))
    assert (plain - x0).abs().max() < 0.35  # max |x0| is about 2
    assert (exact - x0).abs().max() < 1e-9 < (plain - x0).abs().max()


def test_invert_callback_and_repeated_sigma():
    seen = []
    up = torch.tensor([0.0, 0.0, 0.5, 0.5, 1.0])
    out = invert(lambda x, s, **kw: torch.zeros_like(x), torch.ones(1, 1, 1, 1), up,
                 callback=lambda d: seen.append((d["i"], float(d["sigma"]))))
    assert seen == [(0, 0.0), (1, 0.0), (2, 0.5), (3, 0.5)]
    # denoised 0, eps = x / sigma_next: 0 -> 0.5 gives 1 + 0.5 * 1 / 0.5 = 2, 0.5 -> 1 gives 2 + 0.5 * 2 / 1 = 3
    assert torch.allclose(out, torch.full((1, 1, 1, 1), 3.0))


def test_invert_refuses_a_descending_schedule():
    with pytest.raises(ValueError, match="ascend"):
        invert(lambda x, s, **kw: x, torch.ones(1, 1, 1, 1), torch.tensor([1.0, 0.0]))


def eps_scaling(sigma, noise, latent, max_denoise=False):
    return noise * sigma + latent


def flow_scaling(sigma, noise, latent, max_denoise=False):
    return sigma * noise + (1 - sigma) * latent


def odd_scaling(sigma, noise, latent, max_denoise=False):
    return noise * sigma + latent * 2


def test_state_form():
    sig = torch.tensor([0.0, 0.2, 0.9])
    assert state_form(eps_scaling, sig) == X0_PLUS_NOISE
    assert state_form(flow_scaling, sig) == FLOW
    with pytest.raises(ValueError, match="FreeCure: APG's DDIM inversion needs"):
        state_form(odd_scaling, sig)
