"""FreeCure APG nodes (stage 4, asymmetric prompt guidance): the APG sampler and the prompt splitter.
Declarations only; the work is in freecure_core.apg and freecure_core.comfy_bridge.apg."""
from __future__ import annotations

from ..freecure_core.apg import expressions
from ..freecure_core.apg.schedule import GAMMA_MODES, GAMMA_TIMESTEP
from ..freecure_core.comfy_bridge import apg as engine
from ..freecure_core.comfy_bridge.sampling import sampler_names, scheduler_names
from .spec import In, NodeSpec, Out, WithUI

CATEGORY = "FreeCure/sampling"


def _apg(model, samples, template, attributes, negative, seed, steps, cfg, sampler_name, scheduler, gamma,
         inversion_cfg, inversion_refine=0, gamma_mode=GAMMA_TIMESTEP):
    latent, report = engine.apg(model, samples, template, attributes, negative, seed, steps, cfg, sampler_name,
                                scheduler, gamma, inversion_cfg, inversion_refine, gamma_mode=gamma_mode)
    return WithUI((latent,), {"text": [engine.describe(report)]})


APG = NodeSpec(
    node_id="FreeCureAPG", display_name="FreeCure APG (expressions)", category=CATEGORY,
    description="Stage 4, asymmetric prompt guidance: for expressions a mask cannot localise (laughing, frowning "
                "worriedly, very angry looking). Inverts the FreeCure result part-way with the template prompt, then "
                "regenerates that part with the template plus the expression words, identity off. Passes the image "
                "through when the two prompts are the same.",
    inputs=[
        In("MODEL", "model", "The foundation MODEL: the identity is off during APG (for InstantID, the model without "
           "the identity adapter; its IdentityNet can stay in the conditionings)."),
        In("LATENT", "samples", "The PD latent from FreeCure Sampler (the FASA result)."),
        In("CONDITIONING", "template", "Template prompt without the expression words, e.g. 'a photo of a woman, "
           "blonde hair' (FreeCure Expression Split makes it), encoded like the foundation prompt."),
        In("CONDITIONING", "attributes", "The template plus the expression words, e.g. 'a photo of a woman laughing, "
           "blonde hair'. Identical to the template = no APG."),
        In("CONDITIONING", "negative", "Negative prompt."),
        In("INT", "seed", "Seed (used by ancestral samplers in the regeneration; the inversion is deterministic).",
           default=0, min=0, max=0xffffffffffffffff, seed=True),
        In("INT", "steps", "Steps of the full schedule (with the scheduler below); APG inverts and regenerates its "
           "steps below the turn that gamma sets.", default=20, min=1, max=10000),
        In("FLOAT", "cfg", "Guidance scale of the regeneration (the attribute prompt).", default=8.0, min=0.0,
           max=100.0, step=0.1),
        In("COMBO", "sampler_name", "Sampler of the regeneration (the inversion is always deterministic DDIM).",
           options=sampler_names(), default="euler"),
        In("COMBO", "scheduler", "Noise schedule (shared by inversion and regeneration).", options=scheduler_names(),
           default="normal"),
        In("FLOAT", "gamma", "Where APG turns, as the paper's gamma: the image is inverted up to the model's noise "
           "level at timestep gamma*T (T = its training timesteps; SD1.x/SDXL at 0.5: sigma 1.616; flow and FLUX "
           "models: their shifted sigma at t = gamma), whatever the scheduler and steps, and regenerated from there. "
           "The schedule's steps below that sigma are inverted, plus one step up to it unless a step lands within "
           "0.5%. Paper: 0.5 (ablation 0.5-0.6). Larger = stronger expression, less of the FreeCure image kept; 0 = "
           "pass through; 1 = invert to pure noise. The node's text gives the turn sigma and the steps inverted.",
           default=0.5, min=0.0, max=1.0, step=0.01),
        In("FLOAT", "inversion_cfg", "Guidance scale of the inversion with the template (1 = conditional only, "
           "DDIM inversion's usual choice).", default=1.0, min=0.0, max=100.0, step=0.1),
        In("INT", "inversion_refine", "Extra model evaluations per inversion step that make it the exact inverse of "
           "a DDIM step (0 = plain DDIM inversion, as the paper).", default=0, min=0, max=10),
        In("COMBO", "gamma_mode", "How gamma is read. 'timestep (paper)': the model's sigma at timestep gamma*T "
           "(see gamma). 'steps': the last ceil(gamma*steps) steps of the schedule (the pack's earlier reading, to "
           "reproduce older results): close to the paper's on schedules uniform in the model's timestep (simple, "
           "sgm_uniform, normal), less noise on others (SD, karras, 30 steps: turns at sigma 1.15 instead of 1.62).",
           options=list(GAMMA_MODES), default=GAMMA_TIMESTEP, optional=True),
    ],
    outputs=[Out("LATENT", "latent", "The image with the expression applied.")],
    run=_apg)


def _split(prompt, keep_attributes):
    split = expressions.split_prompt(prompt, keep_attributes)
    return WithUI((split.template, split.attributes), {"text": [expressions.describe(split)]})


EXPRESSION_SPLIT = NodeSpec(
    node_id="FreeCureExpressionSplit", display_name="FreeCure Expression Split", category=CATEGORY,
    description="Splits a prompt into APG's template (without expression words such as 'laughing happily', "
                "'very angry looking', 'with a big smile') and attribute prompt (the whole prompt). Encode both "
                "and connect them to FreeCure APG.",
    inputs=[
        In("STRING", "prompt", "The generation prompt.", default="", multiline=True),
        In("BOOLEAN", "keep_attributes", "Keep the FASA attribute words (hair, glasses, ...) in the template too, so "
           "APG does not push them away. Off: the template is only the subject while the attribute prompt keeps "
           "everything, so APG pushes those attributes as well (stronger attributes, less identity). Without "
           "expression words both outputs are the whole prompt either way.", default=True),
    ],
    outputs=[Out("STRING", "template", "The prompt without its expression words (for the APG template)."),
             Out("STRING", "attributes", "The whole prompt (for the APG attributes).")],
    run=_split)

SPECS = [APG, EXPRESSION_SPLIT]
