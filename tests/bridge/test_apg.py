"""APG (stage 4) in an in-process ComfyUI on the tiny SD1.5: the paper's turn on ComfyUI's own model samplings,
reconstruction, pass-through, prompt asymmetry, APG's behaviour (toward the attribute prompt, away from the template),
one progress bar, interruption, no side effects, noise masks, flow models and the nodes."""
import importlib

import pytest
import torch

import comfy.model_management
import comfy.utils
import nodes as comfy_nodes
from comfy_extras.nodes_model_advanced import ModelSamplingSD3
from freecure_core.comfy_bridge import apg as bridge
from support import tiny_models
from support.pack_loader import load_pack

SEED, STEPS = 3, 20


@pytest.fixture(scope="module")
def case(sd15):
    from conftest import Case
    return Case(sd15, "sd1", 16, 24)


@pytest.fixture(scope="module")
def source(case):
    """A real sample of the tiny model (what FreeCure Sampler would hand to APG)."""
    return {"samples": case.ksampler(case.pos, case.neg, steps=STEPS)}


def run(case, latent, template, attributes, gamma=0.5, cfg=5.0, sampler="euler", model=None, **kw):
    return bridge.apg(model or case.model, latent, template, attributes, case.neg, SEED, STEPS, cfg, sampler, "normal",
                      gamma, **kw)


def rms(a, b):
    return float((a - b).pow(2).mean().sqrt())


def img2img(model, case, latent, denoise, cfg):
    return comfy_nodes.common_ksampler(model, SEED, STEPS, cfg, "euler", "normal", case.pos, case.neg, latent,
                                       denoise=denoise)[0]["samples"]


def test_the_turn_is_the_models_sigma_at_timestep_gamma_t(case):
    """On ComfyUI's own model samplings and schedulers: SD's discrete model turns at percent_to_sigma(0.5) =
    sigma(499.5) = 1.616 (sigma(500) = 1.618) on every scheduler, karras at 30 steps with one step inserted (the old step-fraction
    reading turned at 1.151); flow models at their shifted sigma (SD3 shift 3: 0.75; FLUX at 1024x1024: 0.7595)."""
    import comfy.samplers
    from comfy_extras.nodes_model_advanced import ModelSamplingFlux
    sampling = case.model.get_model_object("model_sampling")
    turn = bridge.turn_sigma(case.model, 0.5)
    sigma_500 = float(sampling.sigma(torch.tensor(500.0)))
    assert turn == pytest.approx(1.6156, abs=1e-3) and abs(turn / sigma_500 - 1) < 0.002
    rows = []
    for scheduler, steps in (("karras", 30), ("normal", 20), ("exponential", 30), ("sgm_uniform", 30), ("beta", 30)):
        sigmas = comfy.samplers.calculate_sigmas(sampling, scheduler, steps).cpu()
        new, old = bridge.split(case.model, sigmas, 0.5), bridge.split(case.model, sigmas, 0.5, "steps")
        rows.append(f"{scheduler} {steps}: turn {new.sigma_turn:.4f} ({new.whole_steps} whole steps"
                    f"{' + turn step' if new.turn_step else ''}); steps mode {old.sigma_turn:.4f} ({old.steps} steps)")
        assert abs(new.sigma_turn / turn - 1) <= 0.005 and new.whole_steps == int((sigmas[:-1] <= turn * 1.005).sum())
    print("\nSD discrete, gamma 0.5: sigma(500) %.4f\n  " % sigma_500 + "\n  ".join(rows))
    karras = bridge.split(case.model, comfy.samplers.calculate_sigmas(sampling, "karras", 30).cpu(), 0.5)
    assert karras.turn_step and karras.whole_steps == 16 and karras.sigma_turn == pytest.approx(turn, rel=1e-6)
    old = bridge.split(case.model, comfy.samplers.calculate_sigmas(sampling, "karras", 30).cpu(), 0.5, "steps")
    assert old.sigma_turn == pytest.approx(1.1513, abs=1e-3)
    assert bridge.turn_sigma(case.model, 1.0) == float(sampling.sigma_max) and bridge.turn_sigma(case.model, 0.0) == 0
    sd3 = ModelSamplingSD3().patch(case.model, shift=3.0)[0]
    flux = ModelSamplingFlux().patch(case.model, max_shift=1.15, base_shift=0.5, width=1024, height=1024)[0]
    assert bridge.turn_sigma(sd3, 0.5) == pytest.approx(0.75, abs=1e-6)
    assert bridge.turn_sigma(flux, 0.5) == pytest.approx(0.7595, abs=1e-4) and bridge.turn_sigma(flux, 1.0) == 1.0
    flux_sampling = flux.get_model_object("model_sampling")
    simple = bridge.split(flux, comfy.samplers.calculate_sigmas(flux_sampling, "simple", 28).cpu(), 0.5)
    assert simple.whole_steps == 14 and not simple.turn_step  # FLUX's uniform-t schedule reaches its turn at 14/28


def test_gamma_one_inverts_everything(case, source):
    out, report = run(case, source, case.pos, tiny_models.sd15_conditioning(21), gamma=1.0)
    sigma_max = float(case.model.get_model_object("model_sampling").sigma_max)
    assert report["ran"] and report["whole_steps"] == STEPS and not report["turn_step"]
    assert report["sigma_turn"] == pytest.approx(sigma_max, rel=1e-6)
    assert report["message"].startswith(f"APG: inverted {STEPS} of {STEPS} steps up to sigma {sigma_max:.4g}, the "
                                        f"model's sigma at timestep 1.0T"), report["message"]
    assert torch.isfinite(out["samples"]).all()


def test_same_prompt_reconstructs_far_better_than_img2img(case, source):
    x = source["samples"]
    out, report = run(case, source, case.pos, case.pos, cfg=1.0, force=True)
    err = rms(out["samples"], x)
    base = rms(img2img(case.model, case, source, 0.5, 1.0), x)
    asym, _ = run(case, source, case.pos, case.pos, cfg=5.0, force=True)  # inversion cfg 1, regeneration cfg 5
    refined, _ = run(case, source, case.pos, case.pos, cfg=1.0, force=True, inversion_refine=2)
    print(f"\nAPG reconstruction RMS (gamma 0.5, {STEPS} steps, latent RMS {float(x.pow(2).mean().sqrt()):.2f}): "
          f"cfg 1/1 {err:.3g}, inversion cfg 1 / regeneration cfg 5 {rms(asym['samples'], x):.3g}, "
          f"cfg 1/1 refine 2 {rms(refined['samples'], x):.3g}; img2img denoise 0.5: {base:.3g}")
    assert report["ran"] and report["inverted_steps"] == 11 and report["whole_steps"] == 10 and report["turn_step"]
    assert err < base / 50
    assert rms(asym["samples"], x) < base / 5
    assert rms(refined["samples"], x) < err / 10


def test_gamma_zero_passes_through_and_small_gamma_stays_close(case, source):
    other = tiny_models.sd15_conditioning(21)
    out, report = run(case, source, case.pos, other, gamma=0.0)
    assert out is source and not report["ran"] and "gamma 0.0 inverts nothing" in report["message"]
    gammas = (0.05, 0.25, 0.5)
    errors = [rms(run(case, source, case.pos, other, gamma=g)[0]["samples"], source["samples"]) for g in gammas]
    print("\nAPG change RMS by gamma " + ", ".join(f"{g}: {e:.3g}" for g, e in zip(gammas, errors)))
    # measured on 0.3.75 (turn sigmas 0.226, 0.695, 1.616): 0.05: 0.0072, 0.25: 0.0236, 0.5: 0.0702
    assert errors[0] < errors[1] < errors[2]
    assert errors[0] < 0.2 * errors[2]


def test_attribute_prompt_changes_only_the_regenerated_half(case, source):
    a, b = tiny_models.sd15_conditioning(21), tiny_models.sd15_conditioning(22)
    out_a, rep_a = run(case, source, case.pos, a)
    out_b, rep_b = run(case, source, case.pos, b)
    _, rep_same = run(case, source, case.pos, case.pos, force=True)
    assert torch.equal(rep_a["inverted"]["samples"], rep_b["inverted"]["samples"])
    assert torch.equal(rep_a["inverted"]["samples"], rep_same["inverted"]["samples"])
    # the tiny random UNet responds weakly to its context (latent RMS ~88), but clearly above rounding
    assert rms(out_a["samples"], out_b["samples"]) > 0.01
    assert not torch.equal(rep_a["inverted"]["samples"], source["samples"])


# APG's behaviour on a model where text matters. The random tiny UNet attends almost evenly over its 77 tokens:
# replacing 4 tokens by salient ones (3x the norm) moves the second half of a 10-step sample by 0.16 RMS, about twice
# APG's own round-trip error (0.077), and ordinary random tokens by 0.02 (measured on 0.3.75, 8x12 latent, as below).
# With cross-attention keys x4 and outputs x2 (tiny_models.sharpen_cross_attention_) the text moves it by 2.6, four
# times the round-trip error, so the direction of APG's change can be measured.
BEHAVIOUR_STEPS, BEHAVIOUR_SCHEDULER = 10, "sgm_uniform"  # sgm_uniform at an even step count has a step at the turn


@pytest.fixture(scope="module")
def text_model():
    """The tiny SD1.5 with sharpened cross-attention, a template conditioning and its attribute conditioning: the
    template with 4 of its 77 tokens replaced by salient ones (the expression words)."""
    model = tiny_models.sharpen_cross_attention_(tiny_models.build_tiny_sd15(0), key_gain=4.0, out_gain=2.0)
    template = tiny_models.sd15_conditioning(31)
    context = template[0][0].clone()
    context[:, 5:9] = 3 * torch.randn(1, 4, context.shape[-1], generator=torch.Generator().manual_seed(5))
    return model, template, [[context, dict(template[0][1])]]


def cos(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_apg_moves_the_image_toward_the_attribute_prompt_and_away_from_the_template(text_model):
    """x = a template image; z = what the attribute prompt makes of x's own latent at the turn (the template's
    sampling trajectory at timestep 0.5T, regenerated with the attribute prompt): the text-conditioned change APG
    is after. APG (x inverted with the template, regenerated with the attributes) must land near z, in z's
    direction from x, much farther from x than its round trip with identical prompts; with the prompts swapped it
    takes z back toward x."""
    model, template, attributes = text_model
    neg = tiny_models.sd15_conditioning(12)
    half = BEHAVIOUR_STEPS // 2

    def ksampler(cond, latent, **kw):
        return comfy_nodes.common_ksampler(model, SEED, BEHAVIOUR_STEPS, 5.0, "euler", BEHAVIOUR_SCHEDULER, cond, neg,
                                           latent, **kw)[0]

    def apg(latent, template_cond, attribute_cond, **kw):
        return bridge.apg(model, {"samples": latent}, template_cond, attribute_cond, neg, SEED, BEHAVIOUR_STEPS, 5.0,
                          "euler", BEHAVIOUR_SCHEDULER, 0.5, **kw)

    at_turn = ksampler(template, {"samples": torch.zeros(1, 4, 8, 12)}, last_step=half)
    x = ksampler(template, at_turn, disable_noise=True, start_step=half)["samples"]
    z = ksampler(attributes, at_turn, disable_noise=True, start_step=half)["samples"]
    out, report = apg(x, template, attributes)
    same, _ = apg(x, template, template, force=True)
    back, _ = apg(z, attributes, template)
    y, y_same, y_back = out["samples"], same["samples"], back["samples"]
    figures = dict(text_change=rms(z, x), round_trip=rms(y_same, x), moved=rms(y, x), left_to_z=rms(y, z),
                   direction=cos(y - x, z - x), back_direction=cos(y_back - z, x - z), back_to_x=rms(y_back, x))
    print("\nAPG behaviour (sharpened tiny SD1.5, 8x12, %d steps %s, gamma 0.5, cfg 5): " % (BEHAVIOUR_STEPS,
          BEHAVIOUR_SCHEDULER) + ", ".join(f"{k} {v:.3g}" for k, v in figures.items()))
    # measured on 0.3.75: text_change 2.59, round_trip 0.647, moved 2.62, left_to_z 0.652, direction 0.969,
    # back_direction 0.660, back_to_x 2.12
    assert report["whole_steps"] == half and not report["turn_step"]
    assert figures["direction"] > 0.9  # along the text-conditioned change
    assert figures["left_to_z"] < 0.4 * figures["text_change"]  # most of the way to the attribute prompt's image
    assert figures["moved"] > 2.5 * figures["round_trip"]  # away from the template image, beyond the round trip
    assert figures["back_direction"] > 0.4 and figures["back_to_x"] < figures["text_change"]  # swapped: back


def test_identical_conditionings_pass_through_with_a_message(case, source):
    copy = [[t.clone(), {k: v.clone() for k, v in d.items()}] for t, d in case.pos]
    for template, attributes in ((case.pos, case.pos), (case.pos, copy)):
        out, report = run(case, source, template, attributes)
        assert out is source and torch.equal(out["samples"], source["samples"])
        assert not report["ran"] and "identical (no expression words)" in report["message"]
    assert bridge.same_conditioning(case.pos, copy)
    assert not bridge.same_conditioning(case.pos, tiny_models.sd15_conditioning(21))
    assert not bridge.same_conditioning(case.pos, case.pos + case.pos)


def snapshot(obj):
    """Structure of nested dicts/lists with leaf identities (what an in-place patch would change)."""
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [snapshot(v) for v in obj]
    return id(obj)


def model_state(model):
    return (snapshot(model.model_options), dict(model.patches), dict(model.object_patches), model.hook_mode)


def cond_state(cond):
    return [(t.clone(), {k: v.clone() if torch.is_tensor(v) else v for k, v in d.items()}) for t, d in cond]


def same_cond_state(a, b):
    return all(torch.equal(ta, tb) and da.keys() == db.keys() and all(
        torch.equal(da[k], db[k]) if torch.is_tensor(da[k]) else da[k] == db[k] for k in da)
        for (ta, da), (tb, db) in zip(a, b))


def test_no_side_effects_on_model_conds_or_latent(case, source):
    attrs = tiny_models.sd15_conditioning(21)
    before = model_state(case.model), cond_state(case.pos), cond_state(attrs), source["samples"].clone()
    out, report = run(case, source, case.pos, attrs)
    assert model_state(case.model) == before[0]
    assert same_cond_state(cond_state(case.pos), before[1]) and same_cond_state(cond_state(attrs), before[2])
    assert torch.equal(source["samples"], before[3]) and set(out) == set(source)


@pytest.fixture
def progress_hook():
    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    yield calls
    comfy.utils.set_progress_bar_global_hook(None)
    comfy.model_management.interrupt_current_processing(False)


def test_one_progress_bar_over_both_halves(case, source, progress_hook, monkeypatch):
    """What a user sees on every ComfyUI: one bar of 22 (11 inversion steps: 10 of the schedule's 20 and the step
    to the turn, then 11 back) that only moves forward and ends full.  Newer ComfyUIs (0.33)
    throttle ComfyUI's ProgressBar (at most one hook call per 0.1 s and 0.5 %), so the bar's hook sees a subset of
    the steps: with the throttle as shipped, the contract; with it set to zero, every step in order."""
    attrs = tiny_models.sd15_conditioning(21)
    run(case, source, case.pos, attrs, sampler="heun")
    values = [v for v, _ in progress_hook]
    assert {t for _, t in progress_hook} == {22} and values == sorted(set(values)), progress_hook
    assert values[0] == 1 and values[-1] == 22, progress_hook
    throttles = [n for n in ("PROGRESS_THROTTLE_MIN_INTERVAL", "PROGRESS_THROTTLE_MIN_PERCENT") if hasattr(comfy.utils, n)]
    for name in throttles:
        monkeypatch.setattr(comfy.utils, name, 0)
    progress_hook.clear()
    run(case, source, case.pos, attrs, sampler="heun")
    assert progress_hook == [(i, 22) for i in range(1, 23)], f"throttle off ({throttles or 'none in this ComfyUI'})"


def test_interrupt_in_the_second_half_leaves_nothing_behind(case, source, progress_hook):
    attrs = tiny_models.sd15_conditioning(21)
    expected, _ = run(case, source, case.pos, attrs)
    before = model_state(case.model)
    seen = []

    def hook(value, total, preview, node_id=None):  # what ComfyUI's server hook does, plus a user pressing cancel
        seen.append(value)
        if value > 11:  # the first report from the second half, after 11 inversion steps (a throttled ProgressBar
            # may skip some steps)
            comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()

    comfy.utils.set_progress_bar_global_hook(hook)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run(case, source, case.pos, attrs)
    assert seen == sorted(set(seen)) and seen[-1] > 11 and all(v <= 11 for v in seen[:-1]), seen
    assert seen[-1] < 22, f"the interrupt landed only at the end: {seen}"
    assert not comfy.model_management.processing_interrupted()
    assert model_state(case.model) == before
    comfy.utils.set_progress_bar_global_hook(None)
    again, _ = run(case, source, case.pos, attrs)
    assert torch.equal(again["samples"], expected["samples"])


def test_ancestral_regeneration_uses_the_seed(case, source):
    attrs = tiny_models.sd15_conditioning(21)
    a = run(case, source, case.pos, attrs, sampler="euler_ancestral")[0]["samples"]
    b = run(case, source, case.pos, attrs, sampler="euler_ancestral")[0]["samples"]
    c = bridge.apg(case.model, source, case.pos, attrs, case.neg, SEED + 1, STEPS, 5.0, "euler_ancestral", "normal",
                   0.5)[0]["samples"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_noise_mask_keeps_the_unmasked_part(case, source):
    mask = torch.zeros(1, 16 * 8, 24 * 8)
    mask[:, :, :12 * 8] = 1  # left half of the image may change
    masked = dict(source, noise_mask=mask)
    out, report = run(case, masked, case.pos, tiny_models.sd15_conditioning(21))
    x, y = source["samples"], out["samples"]
    assert report["noise_mask"] and "noise_mask" in out
    assert torch.allclose(y[..., 12:], x[..., 12:], rtol=1e-5, atol=1e-4)
    assert rms(y[..., :12], x[..., :12]) > 0.01


def test_multi_entry_conditioning_with_timestep_ranges(case, source):
    import node_helpers
    early = node_helpers.conditioning_set_values(tiny_models.sd15_conditioning(21), {"start_percent": 0.0,
                                                                                       "end_percent": 0.7})
    late = node_helpers.conditioning_set_values(tiny_models.sd15_conditioning(22), {"start_percent": 0.7,
                                                                                      "end_percent": 1.0})
    out, report = run(case, source, case.pos, early + late)
    plain, _ = run(case, source, case.pos, tiny_models.sd15_conditioning(21))
    assert report["ran"] and torch.isfinite(out["samples"]).all()
    assert not torch.equal(out["samples"], plain["samples"])  # the late entry took part


@pytest.fixture(scope="module")
def flow(case):
    model = ModelSamplingSD3().patch(case.model, shift=3.0)[0]
    latent = {"samples": comfy_nodes.common_ksampler(model, SEED, STEPS, 5.0, "euler", "normal", case.pos, case.neg,
                                                     case.latent)[0]["samples"]}
    return model, latent


def test_flow_model_reconstructs_and_refuses_what_it_cannot_do(case, flow):
    model, latent = flow
    x = latent["samples"]
    out, report = run(case, latent, case.pos, case.pos, cfg=1.0, model=model, force=True)
    exact, _ = run(case, latent, case.pos, case.pos, cfg=1.0, model=model, force=True, inversion_refine=2)
    err, err_exact = rms(out["samples"], x), rms(exact["samples"], x)
    base = rms(img2img(model, case, latent, 0.5, 1.0), x)
    print(f"\nflow (CONST, shift 3) model, latent RMS {float(x.pow(2).mean().sqrt()):.2f}: APG reconstruction RMS "
          f"{err:.3g}, refine 2 {err_exact:.3g}; img2img denoise 0.5 {base:.3g}")
    assert report["form"].startswith("(1 - sigma)")
    assert err < base / 4 and err_exact < base / 1000
    with pytest.raises(ValueError, match="FreeCure: with a flow model, gamma 1"):
        run(case, latent, case.pos, case.pos, gamma=1.0, model=model, force=True)
    with pytest.raises(ValueError, match="FreeCure: APG cannot keep a latent noise_mask with a flow model"):
        run(case, dict(latent, noise_mask=torch.ones(1, 128, 192)), case.pos, case.pos, model=model, force=True)


def test_bad_arguments(case, source):
    with pytest.raises(ValueError, match="FreeCure: gamma must be within 0..1"):
        run(case, source, case.pos, case.pos, gamma=1.5)
    with pytest.raises(ValueError, match="FreeCure: inversion_refine"):
        run(case, source, case.pos, case.pos, inversion_refine=-1)
    with pytest.raises(ValueError, match="FreeCure: gamma_mode must be one of"):
        run(case, source, case.pos, case.pos, gamma_mode="paper")


@pytest.fixture(scope="module")
def node_specs():
    load_pack("freecure_pack_apg")
    module = importlib.import_module("freecure_pack_apg.nodes.apg")
    from freecure_pack_apg.nodes.spec import to_v1
    return {s.node_id: to_v1(s) for s in module.SPECS}


def test_node_declarations():
    from comfy_api.latest import io
    load_pack("freecure_pack_apg")
    module = importlib.import_module("freecure_pack_apg.nodes.apg")
    from freecure_pack_apg.nodes.spec import to_v1, to_v3
    assert [s.node_id for s in module.SPECS] == ["FreeCureAPG", "FreeCureExpressionSplit"]
    for spec in module.SPECS:
        v1, v3 = to_v1(spec), to_v3(spec, io)
        info = v3.GET_NODE_INFO_V1()
        assert set(info["input"]["required"]) == set(v1.INPUT_TYPES()["required"])
        assert v1.CATEGORY == info["category"] == "FreeCure/sampling" and v1.DESCRIPTION and all(v1.OUTPUT_TOOLTIPS)
        assert all(opts.get("tooltip") for _, opts in v1.INPUT_TYPES()["required"].values())


def test_nodes(case, source, node_specs):
    split = node_specs["FreeCureExpressionSplit"]().execute(
        prompt="a photo of a woman laughing happily, with blonde curly hair", keep_attributes=True)
    assert split["result"] == ("a photo of a woman, with blonde curly hair",
                               "a photo of a woman laughing happily, with blonde curly hair")
    assert split["ui"]["text"] == ["expression words: 'laughing happily'"]
    none = node_specs["FreeCureExpressionSplit"]().execute(prompt="a woman, red hat", keep_attributes=False)
    assert none["result"] == ("a woman, red hat", "a woman, red hat")
    assert none["ui"]["text"] == ["no expression words: APG will pass the image through"]

    apg_node = node_specs["FreeCureAPG"]
    required = apg_node.INPUT_TYPES()["required"]
    assert required["gamma"][1]["default"] == 0.5 and required["inversion_cfg"][1]["default"] == 1.0
    kw = dict(model=case.model, samples=source, template=case.pos, negative=case.neg, seed=SEED, steps=STEPS,
              cfg=5.0, sampler_name="euler", scheduler="normal", gamma=0.5, inversion_cfg=1.0, inversion_refine=0)
    optional = apg_node.INPUT_TYPES()["optional"]
    assert optional["gamma_mode"][0] == ["timestep (paper)", "steps"]
    assert optional["gamma_mode"][1]["default"] == "timestep (paper)"
    ran = apg_node().execute(attributes=tiny_models.sd15_conditioning(21), **kw)  # without gamma_mode: the paper's
    text = ran["ui"]["text"][0]
    assert text.startswith("APG: inverted 11 steps (10 of the 20 scheduled + 1 to the turn) up to sigma 1.616, the "
                           "model's sigma at timestep 0.5T (gamma 0.5, as the paper), with the template; regenerated "
                           "them with the attribute prompt;"), text
    expected, _ = run(case, source, case.pos, tiny_models.sd15_conditioning(21))
    assert torch.equal(ran["result"][0]["samples"], expected["samples"])
    steps = apg_node().execute(attributes=tiny_models.sd15_conditioning(21), gamma_mode="steps", **kw)
    assert steps["ui"]["text"][0].startswith("APG: inverted 10 of 20 steps up to sigma 1.481 (gamma 0.5 of the "
                                             "steps), with the template;"), steps["ui"]["text"][0]
    old, _ = run(case, source, case.pos, tiny_models.sd15_conditioning(21), gamma_mode="steps")
    assert torch.equal(steps["result"][0]["samples"], old["samples"])
    assert not torch.equal(old["samples"], expected["samples"])
    skipped = apg_node().execute(attributes=case.pos, **kw)
    assert skipped["result"][0] is source and "identical" in skipped["ui"]["text"][0]
    nothing = apg_node().execute(attributes=tiny_models.sd15_conditioning(21), **dict(kw, gamma=0.0))
    assert nothing["result"][0] is source
    assert nothing["ui"]["text"] == ["APG skipped: gamma 0.0 inverts nothing (the turn is the clean image); the image "
                                     "passes through"]
    with pytest.raises(ValueError, match="FreeCure: FreeCure APG \\(expressions\\): gamma_mode 'paper'"):
        apg_node().execute(attributes=case.pos, gamma_mode="paper", **kw)
