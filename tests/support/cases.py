"""A model with PD/FD conditionings, a latent and the plain KSampler baseline: the in-process cases of
tests/bridge (tests/bridge/conftest.py) and of bench/gpu_check.py, which builds the same tiny models on a GPU."""
import torch

from support import tiny_models


class Case:
    """A model with PD/FD conditionings and a latent, plus the plain KSampler baseline."""

    def __init__(self, model, family, h, w, batch=1):
        self.model, self.family, self.h, self.w = model, family, h, w
        if family == "sd1":
            cond = lambda s: tiny_models.sd15_conditioning(s, batch=batch)
        else:
            cond = lambda s: tiny_models.sdxl_conditioning(s, w * 8, h * 8, batch=batch)
        self.pos, self.neg, self.fd_pos, self.fd_neg = cond(11), cond(12), cond(13), cond(12)
        self.latent = {"samples": torch.zeros(batch, 4, h, w)}

    def mask(self, box=None, batch=1):
        """Pixel mask for this latent; box = (top, left, bottom, right) in latent cells."""
        m = torch.zeros(batch, self.h * 8, self.w * 8)
        if box is not None:
            t, l, b, r = box
            m[:, t * 8:b * 8, l * 8:r * 8] = 1
        return m

    def ksampler(self, positive, negative, seed=3, steps=4, cfg=5.0, sampler="euler", scheduler="normal"):
        """What ComfyUI's stock KSampler node returns for this graph."""
        import nodes
        return nodes.common_ksampler(self.model, seed, steps, cfg, sampler, scheduler, positive, negative,
                                     self.latent)[0]["samples"]
