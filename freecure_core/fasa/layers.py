"""Self-attention layer sites and the presets that choose where FASA acts.

A site is one attn1 call of the UNet, identified the way ComfyUI keys attention patches:
(block name, block id, transformer index). Sites come from a probe pass on the real model (see
comfy_bridge.probe); presets are expressed over that discovered list, never as hard-coded blocks.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

PRESETS = ("reference", "decoder", "all")
FLUX_PRESET = "single"  # FLUX's preset (fasa.flux); an SD model refuses it by name
FAMILIES = ("sd1", "sdxl")
# omega defaults per family: SD = the reference code's (additive bias, as here). FLUX has no reference code: 2.0 is the
# paper's value, which the paper states for its multiplicative formula (logits x omega), not for this additive bias.
DEFAULT_OMEGA = {"flux": 2.0, "sd1": 0.5, "sdxl": 1.5}
PAPER_OMEGA = 2.0
# The reference SDXL layer set: transformer blocks 50-69 of 70, i.e. the last 20 attn1 calls.
_SDXL_REFERENCE_LAST = 20


@dataclass(frozen=True)
class Site:
    """One attn1 call: ComfyUI block key, downsample level relative to the latent, and call order."""
    block: str
    block_id: int
    index: int
    level: int
    order: int

    @property
    def key(self) -> tuple[str, int, int]:
        """The (block, id, transformer_index) key ComfyUI uses for attn1 replace patches."""
        return (self.block, self.block_id, self.index)

    def label(self) -> str:
        return f"{self.block}:{self.block_id}.{self.index}"


def reference_sites(sites: list[Site], family: str) -> list[Site]:
    """The reference code's FASA layers for a model family.

    sd1: every decoder (output-block) site at the two finest resolutions (SD1.x output blocks 6-11,
    the reference's blocks 10-15). sdxl: the last 20 self-attention calls (the reference's 50-69).
    """
    if family == "sdxl":
        return sorted(sites, key=lambda s: s.order)[-_SDXL_REFERENCE_LAST:]
    if family == "sd1":
        out = [s for s in sites if s.block == "output"]
        levels = sorted({s.level for s in out})[:2]
        return [s for s in out if s.level in levels]
    raise ValueError(f"FreeCure: no reference layer set for model family {family!r}; known: {FAMILIES}")


def _parse_range(text: str) -> range:
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if not m:
        raise ValueError(text)
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if hi < lo:
        raise ValueError(text)
    return range(lo, hi + 1)


def _match_token(token: str, sites: list[Site]) -> list[Site]:
    if re.fullmatch(r"\d+(-\d+)?", token):
        orders = _parse_range(token)
        return [s for s in sites if s.order in orders]
    m = re.fullmatch(r"(input|middle|output)(?::(\d+(?:-\d+)?)(?:\.(\d+(?:-\d+)?))?)?", token)
    if not m:
        raise ValueError(token)
    block, ids, idx = m.group(1), m.group(2), m.group(3)
    ids = _parse_range(ids) if ids else None
    idx = _parse_range(idx) if idx else None
    return [s for s in sites if s.block == block and (ids is None or s.block_id in ids)
            and (idx is None or s.index in idx)]


def parse_layer_spec(spec: str, sites: list[Site]) -> list[Site]:
    """Sites chosen by a custom layer list.

    Tokens, separated by commas or spaces: "50-69" (positions in call order, 0-based, the reference
    code's numbering), "output" / "output:6-11" (blocks) / "output:1.6-9" (block 1, transformer
    indices 6-9), likewise "input:…" and "middle". Raises ValueError naming any token that matches
    nothing, with the sites this model has.
    """
    chosen: dict[tuple, Site] = {}
    tokens = [t for t in re.split(r"[,\s]+", spec.strip()) if t]
    if not tokens:
        raise ValueError("FreeCure: the custom layer list is empty; e.g. 'output:6-11' or '50-69'")
    available = ", ".join(f"{s.order}={s.label()}" for s in sites)
    for token in tokens:
        try:
            found = _match_token(token, sites)
        except ValueError:
            raise ValueError(f"FreeCure: cannot read layer token {token!r}; write call positions like '50-69' "
                             f"or blocks like 'output:6-11' / 'output:1.6-9'") from None
        if not found:
            raise ValueError(f"FreeCure: layer token {token!r} matches no self-attention layer of this model. "
                             f"Available (position=block:id.index): {available}")
        for s in found:
            chosen[s.key] = s
    return sorted(chosen.values(), key=lambda s: s.order)


def resolve_layers(spec: str, sites: list[Site], family: str) -> list[Site]:
    """Sites for a preset name ("reference", "decoder", "all") or a custom layer list."""
    if not sites:
        raise ValueError("FreeCure: the probe found no self-attention layers in this model")
    name = spec.strip().lower()
    if name == FLUX_PRESET:
        raise ValueError("FreeCure: layers 'single' is the FLUX preset (every single-stream block); this is an SD "
                         "model: use reference, decoder, all or custom")
    if name == "reference":
        return reference_sites(sites, family)
    if name == "decoder":
        return [s for s in sites if s.block == "output"]
    if name == "all":
        return list(sites)
    return parse_layer_spec(spec, sites)


def default_omega(family: str) -> float:
    """The default omega for a model family (SDXL 1.5, SD1.x 0.5 from the reference code; FLUX 2.0, the paper's)."""
    return DEFAULT_OMEGA[family]
