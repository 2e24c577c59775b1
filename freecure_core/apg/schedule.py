"""APG schedule math: where gamma turns (the paper's timestep gamma*T), the split of a sampling schedule there, and
deterministic DDIM inversion up the first part.

gamma, as the paper defines it: APG inverts the image to the latent at timestep gamma*T, the *model's* noise level
at that fraction of its own schedule, whatever schedule the run uses. In ComfyUI that sigma is
model_sampling.percent_to_sigma(1 - gamma) (`paper_turn_sigma`): for discrete SD models sigma(gamma * 999) of the
1000 training timesteps (gamma 0.5: 1.6156, between the DDPM reading x_500 = sigma(499) = 1.6129 and diffusers'
timestep 500 = sigma(500) = 1.6183, 0.17% either side); for flow models (SD3, FLUX) the model's shifted sigma at
t = gamma (FLUX at shift mu 1.15: 0.7595, not 0.5); for continuous EDM/V models the log-linear point. gamma 0 is
the clean image (nothing to invert), gamma 1 the model's sigma_max (pure noise).
`split_at_sigma` then splits the run's own schedule at that sigma: the run's steps below it are inverted and
regenerated whole, and one more step goes from the first of them up to the turn itself (inserted into the
schedule), unless a step of the schedule lies within 0.5% of the turn, which is then the turn (the paper's
gamma*T is not defined more closely than that: see above). So the regeneration starts from exactly the paper's
latent on every scheduler and step count, at the cost of at most one extra model evaluation each way.
The older reading, the last ceil(gamma * N) steps of the run's schedule (`split_schedule`), is kept as an
option: it equals the paper's on schedules uniform in the model's timestep, and differs elsewhere (karras at 30
steps on SD turns at sigma 1.151 instead of 1.616).

Everything works in k-diffusion's parameterisation, which ComfyUI samplers use: the sampler state is
x = a(sigma) * x0 + sigma * eps with a = 1 (EPS, V-prediction, EDM, X0 models: x = x0 + sigma * eps) or
a = 1 - sigma (flow models, ComfyUI's CONST), and the model returns the denoised estimate x0_hat.
In both, the deterministic DDIM update from sigma to sigma_next keeps (x0_hat, eps_hat) and re-mixes them,
which is the same as the Euler step x + (sigma_next - sigma) * (x - x0_hat) / sigma. Inversion runs that
update with sigma_next > sigma.

Where the model is evaluated during inversion: at the *target* sigma (sigma_next), with the current x.
Reasons: (1) the first inversion step starts at sigma 0, where x - x0_hat = 0 / 0 carries no noise estimate,
and evaluating at sigma_next avoids any made-up small sigma (ComfyUI's FlipSigmas uses 1e-4 instead);
(2) it is what diffusers' DDIMInverseScheduler does (the model sees the timestep it steps to);
(3) the regeneration step that undoes it evaluates the model at that same sigma, so the approximation
eps(x_i, sigma_{i+1}) ~ eps(x_{i+1}, sigma_{i+1}) differs from the exact one only in x, by one step. On the
tiny test model (20 steps, gamma 0.5) it reconstructs 4x better than evaluating at the current sigma when the
regeneration is Euler/DDIM (RMS 0.0098 vs 0.039); with dpmpp_2m the current sigma does better (0.012 vs 0.026).
`refine` > 0 adds fixed-point iterations eps(x_{i+1}, sigma_{i+1}), which make each inversion step the exact
inverse of a DDIM/Euler denoising step (one extra model evaluation per iteration per step).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

_GAMMA_EPS = 1e-9  # gamma * N is rounded up, but 0.1 * 30 = 3.0000000000000004 must give 3, not 4


GAMMA_TIMESTEP = "timestep (paper)"  # gamma = the paper's timestep gamma*T of the model's schedule
GAMMA_STEPS = "steps"  # gamma = the fraction of the run's steps (the last ceil(gamma * N))
GAMMA_MODES = (GAMMA_TIMESTEP, GAMMA_STEPS)
TURN_RTOL = 0.005  # a schedule sigma this close (relative) to the turn is the turn; nothing is inserted


def check_gamma(gamma: float) -> None:
    """Raise unless 0 <= gamma <= 1."""
    if not 0.0 <= gamma <= 1.0 or math.isnan(gamma):
        raise ValueError(f"FreeCure: gamma must be within 0..1, got {gamma}")


def inverted_steps(n_steps: int, gamma: float) -> int:
    """k = ceil(gamma * n_steps): how many of the schedule's last (least noisy) steps APG inverts in "steps" mode."""
    check_gamma(gamma)
    return min(n_steps, max(0, math.ceil(gamma * n_steps - _GAMMA_EPS)))


def paper_turn_sigma(gamma: float, percent_to_sigma: Callable[[float], float], sigma_max: float) -> float:
    """The sigma of the paper's timestep gamma*T: percent_to_sigma(1 - gamma) (ComfyUI's model_sampling method),
    0 at gamma 0 (the clean image) and sigma_max at gamma 1 (ComfyUI's percent_to_sigma(0) is a huge sentinel)."""
    check_gamma(gamma)
    if gamma == 0.0:
        return 0.0
    if gamma == 1.0:
        return float(sigma_max)
    return float(percent_to_sigma(1.0 - gamma))


def check_schedule(sigmas: torch.Tensor) -> None:
    """Raise unless `sigmas` is a 1-D, non-increasing schedule that ends at 0 (a full KSampler schedule)."""
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"FreeCure: APG needs a 1-D sigma schedule with at least one step, got shape "
                         f"{tuple(sigmas.shape)}")
    if float(sigmas[-1]) != 0.0:
        raise ValueError(f"FreeCure: APG needs a schedule that ends at sigma 0 (a clean image), this one ends at "
                         f"{float(sigmas[-1])}; use denoise 1 and a standard scheduler")
    if bool((sigmas[1:] > sigmas[:-1]).any()):
        raise ValueError("FreeCure: APG needs a descending sigma schedule")


def split_schedule(sigmas: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(inversion sigmas, regeneration sigmas) for an N-step schedule and gamma read as a fraction of the steps.

    With k = ceil(gamma * N): inversion goes up the last k + 1 sigmas, ascending from 0 to sigmas[N - k];
    regeneration goes down sigmas[N - k:] back to 0 (both k steps). gamma 0 (k = 0) gives two empty
    tensors: nothing to do. gamma 1 inverts the whole schedule, up to sigmas[0].
    """
    check_schedule(sigmas)
    n = sigmas.shape[0] - 1
    k = inverted_steps(n, gamma)
    if k == 0:
        empty = sigmas[:0]
        return empty, empty.clone()
    regeneration = sigmas[n - k:].clone()
    return regeneration.flip(0), regeneration


class Split(NamedTuple):
    """APG's schedule split: `up` ascends from 0 to the turn (inversion), `down` = `up` reversed (regeneration).
    `whole_steps` of the run's schedule are inside it; `turn_step` is True when one more step, from the highest of
    them up to the turn sigma, was inserted (the turn lies between two of the schedule's sigmas)."""
    up: torch.Tensor
    down: torch.Tensor
    whole_steps: int
    turn_step: bool

    @property
    def steps(self) -> int:
        """Steps each way (model evaluations of the inversion without refine, and of a one-stage regeneration)."""
        return self.whole_steps + int(self.turn_step)

    @property
    def sigma_turn(self) -> float:
        """The sigma APG inverts to and regenerates from (0 when nothing is inverted)."""
        return float(self.up[-1]) if self.up.numel() else 0.0


def split_at_sigma(sigmas: torch.Tensor, sigma_turn: float, rtol: float = TURN_RTOL) -> Split:
    """Split an N-step schedule (descending, ending at 0) at `sigma_turn`.

    If a schedule sigma s_j > 0 lies within rtol * sigma_turn of it (the nearest such), the turn is s_j: down =
    sigmas[j:], N - j whole steps. Otherwise let j be the number of schedule sigmas above the turn: down =
    [sigma_turn] + sigmas[j:], N - j whole steps plus the turn step s_j -> sigma_turn (j = 0 when the turn is above
    the schedule's top). sigma_turn <= 0 gives empty tensors: nothing to do. `up` is `down` reversed.
    """
    check_schedule(sigmas)
    if math.isnan(sigma_turn):
        raise ValueError("FreeCure: the APG turn sigma is NaN")
    n = sigmas.shape[0] - 1
    if sigma_turn <= 0.0:
        empty = sigmas[:0]
        return Split(empty, empty.clone(), 0, False)
    gap = (sigmas[:n].double() - sigma_turn).abs()
    j = int(torch.argmin(gap))
    if float(gap[j]) <= rtol * sigma_turn:
        down = sigmas[j:].clone()
        return Split(down.flip(0), down, n - j, False)
    j = int((sigmas[:n].double() > sigma_turn).sum())
    down = torch.cat([sigmas.new_tensor([sigma_turn]), sigmas[j:]])
    return Split(down.flip(0), down, n - j, True)


def split_steps(sigmas: torch.Tensor, gamma: float) -> Split:
    """`split_schedule` as a Split: gamma read as a fraction of the run's steps (the last ceil(gamma * N), no turn
    step)."""
    up, down = split_schedule(sigmas, gamma)
    return Split(up, down, max(0, len(down) - 1), False)


def ddim_inversion_step(x: torch.Tensor, denoised: torch.Tensor, sigma, sigma_next, sigma_eval=None) -> torch.Tensor:
    """x at sigma_next from x at sigma by the deterministic DDIM update, given the model's denoised estimate.

    The noise estimate is eps = (x - denoised) / sigma_eval, where sigma_eval is the sigma the model was
    evaluated at (default: sigma). With sigma_eval = sigma this equals
    denoised + sigma_next * (x - denoised) / sigma.
    """
    sigma_eval = sigma if sigma_eval is None else sigma_eval
    return x + (sigma_next - sigma) * (x - denoised) / sigma_eval


@torch.no_grad()
def invert(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args=None, callback=None, disable=None,
           refine: int = 0) -> torch.Tensor:
    """DDIM inversion of x up the ascending `sigmas` (a k-diffusion sampler: model(x, sigma * s_in) = denoised).

    Each step evaluates the model at the step's target sigma (see the module docstring); `refine` fixed-point
    iterations re-evaluate it at the new x. `callback` gets k-diffusion's dict (x, i, sigma, sigma_hat,
    denoised) once per step; `disable` (the console bar switch) is accepted for the signature and unused.
    """
    extra_args = {} if extra_args is None else extra_args
    if bool((sigmas[1:] < sigmas[:-1]).any()):
        raise ValueError("FreeCure: inversion sigmas must ascend (use split_schedule)")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if sigma_next == sigma:  # a repeated sigma is no step (and 0 -> 0 has no noise estimate)
            if callback is not None:
                callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": x})
            continue
        denoised = model(x, sigma_next * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        x_next = ddim_inversion_step(x, denoised, sigma, sigma_next, sigma_eval=sigma_next)
        for _ in range(refine):
            eps = (x_next - model(x_next, sigma_next * s_in, **extra_args)) / sigma_next
            x_next = x + (sigma_next - sigma) * eps
        x = x_next
    return x


X0_PLUS_NOISE = "x0 + sigma * eps"
FLOW = "(1 - sigma) * x0 + sigma * eps"


def _form_at(noise_scaling, sigma: float) -> str | None:
    s = torch.tensor(sigma, dtype=torch.float64)
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    b = float(noise_scaling(s, one.clone(), zero.clone()))  # weight of the noise
    a = float(noise_scaling(s, zero.clone(), one.clone()))  # weight of the clean latent
    tol = 1e-5 * max(1.0, sigma)
    if abs(b - sigma) > tol:
        return None
    if abs(a - 1.0) <= tol:
        return X0_PLUS_NOISE
    if abs(a - (1.0 - sigma)) <= tol:
        return FLOW
    return None


def state_form(noise_scaling, sigmas) -> str:
    """Which k-diffusion state a model samples in, probed through its `noise_scaling(sigma, noise, latent)`.

    Returns X0_PLUS_NOISE (EPS, V-prediction, EDM, X0 models) or FLOW (rectified flow, ComfyUI's CONST); the
    DDIM inversion step is exact DDIM for both. Raises for any other form, where it would not be.
    """
    forms = {_form_at(noise_scaling, float(s)) for s in sigmas if float(s) > 0}
    if len(forms) == 1 and None not in forms:
        return forms.pop()
    raise ValueError("FreeCure: APG's DDIM inversion needs a model whose sampler state is x0 + sigma*eps (SD1.x, "
                     "SDXL, V-prediction) or (1 - sigma)*x0 + sigma*eps (flow models); this model's sampling "
                     "scales noise differently. Use a model of one of those kinds for APG.")
