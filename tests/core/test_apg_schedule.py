"""APG schedule math: the paper's turn (timestep gamma*T of the model's schedule) and the split of the run's schedule
there, the older step-fraction split, the DDIM inversion step against the VP-form DDIM formula, the loop."""
import math

import pytest
import torch

from freecure_core.apg.schedule import (FLOW, TURN_RTOL, X0_PLUS_NOISE, ddim_inversion_step, invert, inverted_steps,
                                        paper_turn_sigma, split_at_sigma, split_schedule, split_steps, state_form)


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


# ----------------------------------------------------------------------------- the paper's turn
# Pure-torch copies of ComfyUI's schedules (comfy/model_sampling.py, comfy/samplers.py, k-diffusion), so the mapping
# is checked here without ComfyUI; tests/bridge/test_apg.py checks the same figures on ComfyUI's own objects.
class DiscreteSD:
    """ComfyUI's ModelSamplingDiscrete for SD1.x/SDXL: scaled-linear betas 0.00085..0.012 over T = 1000 timesteps."""

    def __init__(self):
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1 - betas, 0)
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.sigma_max, self.sigma_min = float(self.sigmas[-1]), float(self.sigmas[0])

    def sigma(self, t: float) -> float:
        """log-sigma interpolated at timestep t (0..999)."""
        t = min(max(t, 0.0), 999.0)
        lo = int(math.floor(t))
        hi = min(lo + 1, 999)
        w = t - lo
        return math.exp((1 - w) * math.log(self.sigmas[lo]) + w * math.log(self.sigmas[hi]))

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma((1.0 - percent) * 999.0)


def karras(n, sigma_min, sigma_max, rho=7.0):
    """k-diffusion's get_sigmas_karras (ComfyUI's 'karras' scheduler): n sigmas and a final 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    s = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


def time_snr_shift(shift, t):
    """ComfyUI's flow shift (SD3, ModelSamplingSD3): sigma at t for a shift."""
    return shift * t / (1 + (shift - 1) * t)


def flux_time_shift(mu, t):
    """ComfyUI's FLUX shift (ModelSamplingFlux; mu 1.15 at 1024x1024): sigma at t."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def flow_percent_to_sigma(shift_fn):
    return lambda percent: 1.0 if percent <= 0 else 0.0 if percent >= 1 else shift_fn(1.0 - percent)


def flux_simple(n, mu):
    """ComfyUI's 'simple' scheduler on ModelSamplingFlux (10000-entry table, every 10000/n-th): uniform t, shifted."""
    return torch.tensor([flux_time_shift(mu, 1 - i / n) for i in range(n)] + [0.0], dtype=torch.float64)


def test_sd_turn_is_sigma_at_timestep_gamma_t_on_karras_30():
    """The issue's figures: SD's sigma at t = 500 of 1000 is 1.62; the old step-fraction reading turned karras at 30
    steps at 1.15. The turn is percent_to_sigma(1 - gamma) = sigma(499.5), between the DDPM and diffusers readings
    of t = 500 (sigma(499) and sigma(500)), and karras 30 is split there with one step up to the turn."""
    sd = DiscreteSD()
    turn = paper_turn_sigma(0.5, sd.percent_to_sigma, sd.sigma_max)
    sigmas = karras(30, sd.sigma_min, sd.sigma_max)
    old = split_steps(sigmas, 0.5)
    new = split_at_sigma(sigmas, turn)
    print(f"\nSD discrete: sigma(499) {sd.sigma(499):.4f}, turn sigma(499.5) {turn:.4f}, sigma(500) "
          f"{sd.sigma(500):.4f}; "
          f"karras 30: old turn {old.sigma_turn:.4f} after {old.steps} steps, new turn {new.sigma_turn:.4f} after "
          f"{new.whole_steps} whole steps + turn step {new.turn_step} ({float(sigmas[13]):.4f} > turn > "
          f"{float(sigmas[14]):.4f})")
    assert sd.sigma(499) < turn < sd.sigma(500) and abs(turn - 1.62) < 0.01 and abs(turn / sd.sigma(500) - 1) < 0.002
    assert abs(old.sigma_turn - 1.151) < 0.001 and old.steps == 15
    assert new.sigma_turn == pytest.approx(turn, rel=1e-12) and new.whole_steps == 16 and new.turn_step
    assert new.steps == 17 and torch.equal(new.down[1:], sigmas[14:]) and torch.equal(new.up, new.down.flip(0))
    # schedules uniform in timestep that land on t = 499.5 (sgm_uniform, 30 steps) or within 0.5% need no extra step
    uniform = torch.tensor([sd.sigma(999 - i * 999 / 30) for i in range(30)] + [0.0], dtype=torch.float64)
    on = split_at_sigma(uniform, turn)
    assert on.whole_steps == 15 and not on.turn_step and on.sigma_turn == pytest.approx(turn, rel=1e-9)
    assert torch.equal(on.down, uniform[15:]) and torch.equal(split_steps(uniform, 0.5).down, on.down)


@pytest.mark.parametrize("name, shift_fn, expected", [
    ("SD3 flow, shift 3", lambda t: time_snr_shift(3.0, t), 0.75),
    ("FLUX, mu 1.15 (1024x1024)", lambda t: flux_time_shift(1.15, t), 0.7595),
    ("flow, shift 1", lambda t: t, 0.5),
])
def test_flow_turn_is_the_shifted_sigma_at_t_gamma(name, shift_fn, expected):
    """Flow models: the model's own schedule is the shifted one, so timestep gamma*T is sigma = shift(gamma)."""
    turn = paper_turn_sigma(0.5, flow_percent_to_sigma(shift_fn), 1.0)
    print(f"\n{name}: turn at gamma 0.5 = {turn:.4f}")
    assert turn == pytest.approx(expected, abs=1e-4)
    assert paper_turn_sigma(0.6, flow_percent_to_sigma(shift_fn), 1.0) == pytest.approx(shift_fn(0.6))


def test_flux_schedules_split_at_the_shifted_turn():
    """FLUX at 28 steps: 'simple' (uniform t, shifted) reaches the turn at step 14 (old and new readings agree);
    karras on FLUX's sigmas does not: the old reading turned at sigma 0.047, the paper's turn is 0.76."""
    mu = 1.15
    turn = paper_turn_sigma(0.5, flow_percent_to_sigma(lambda t: flux_time_shift(mu, t)), 1.0)
    simple = flux_simple(28, mu)
    on = split_at_sigma(simple, turn)
    assert on.whole_steps == 14 and not on.turn_step and on.sigma_turn == pytest.approx(turn, rel=1e-9)
    assert torch.equal(split_steps(simple, 0.5).down, on.down)
    k = karras(28, flux_time_shift(mu, 1e-4), 1.0)
    old, new = split_steps(k, 0.5), split_at_sigma(k, turn)
    print(f"\nFLUX mu {mu}, 28 steps: turn {turn:.4f}; simple: {on.whole_steps} steps; karras: old turn "
          f"{old.sigma_turn:.4f}, new {new.sigma_turn:.4f} after {new.whole_steps} whole steps + turn step")
    assert old.sigma_turn < 0.05 and new.sigma_turn == pytest.approx(turn, rel=1e-9) and new.turn_step
    assert new.whole_steps == int((k[:-1] < turn).sum())


def test_gamma_zero_is_nothing_and_gamma_one_is_everything():
    sd = DiscreteSD()
    sigmas = karras(30, sd.sigma_min, sd.sigma_max)
    assert paper_turn_sigma(0.0, sd.percent_to_sigma, sd.sigma_max) == 0.0
    nothing = split_at_sigma(sigmas, 0.0)
    assert nothing.up.numel() == nothing.down.numel() == 0 and nothing.steps == 0 and nothing.sigma_turn == 0.0
    top = paper_turn_sigma(1.0, sd.percent_to_sigma, sd.sigma_max)
    assert top == sd.sigma_max  # not ComfyUI's percent_to_sigma(0) sentinel
    everything = split_at_sigma(sigmas, top)
    assert torch.equal(everything.down, sigmas) and everything.whole_steps == 30 and not everything.turn_step
    flux = flow_percent_to_sigma(lambda t: flux_time_shift(1.15, t))
    assert paper_turn_sigma(1.0, flux, 1.0) == 1.0 and paper_turn_sigma(0.0, flux, 1.0) == 0.0
    with pytest.raises(ValueError, match="FreeCure: gamma must be within 0..1"):
        paper_turn_sigma(1.2, flux, 1.0)


def test_split_at_sigma_edges():
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])
    # within TURN_RTOL of a step: that step is the turn
    snapped = split_at_sigma(sigmas, 2.0 * (1 + TURN_RTOL * 0.9))
    assert torch.equal(snapped.down, sigmas[2:]) and snapped.whole_steps == 2 and not snapped.turn_step
    # just outside: inserted above the step below it
    inserted = split_at_sigma(sigmas, 2.0 * (1 + TURN_RTOL * 1.1))
    assert inserted.whole_steps == 2 and inserted.turn_step and inserted.down[1:].tolist() == [2.0, 1.0, 0.0]
    # below the last non-zero sigma: one step, 0 -> turn
    low = split_at_sigma(sigmas, 0.3)
    assert low.up.tolist() == pytest.approx([0.0, 0.3]) and low.whole_steps == 0 and low.steps == 1
    # above the schedule's top: the whole schedule plus the step to the turn
    high = split_at_sigma(sigmas, 14.0)
    assert high.whole_steps == 4 and high.turn_step and high.down[0] == 14.0 and torch.equal(high.down[1:], sigmas)
    assert high.down.dtype == sigmas.dtype
    before = sigmas.clone()
    high.down.mul_(2)
    snapped.down.mul_(2)
    assert torch.equal(sigmas, before)
    with pytest.raises(ValueError, match="FreeCure: the APG turn sigma is NaN"):
        split_at_sigma(sigmas, float("nan"))
    with pytest.raises(ValueError, match="descending"):
        split_at_sigma(torch.tensor([1.0, 3.0, 0.0]), 1.0)


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
