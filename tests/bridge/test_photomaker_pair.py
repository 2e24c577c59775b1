"""FreeCurePhotoMakerEncodePair on a tiny PhotoMaker and SDXL CLIP built from ComfyUI's classes
(tests/support/tiny_photomaker.py). The node follows PhotoMaker's reference pipeline (trigger removed, class
token repeated once per photo; the clean prompt for both branches before merge_start), not ComfyUI 0.3.75's core
PhotoMakerEncode (see the last section)."""
import importlib
import logging

import pytest
import torch

import comfy.clip_vision
import nodes as comfy_nodes
from comfy_api.latest import io
from comfy_extras.nodes_photomaker import PhotoMakerEncode
from freecure_core.identity import photomaker_tokens
from support import tiny_models, tiny_photomaker
from support.pack_loader import load_pack

PROMPT = "a photo of a woman photomaker with blonde hair"
PLAIN = "a photo of a woman with blonde hair"
EXPANDED_3 = "a photo of a woman woman woman with blonde hair"  # PLAIN with the class word once per photo, 3 photos
CLASS_AT = 5  # <start> a photo of a woman
NEEDS_TRIGGER = ("FreeCure: the PhotoMaker prompt needs the trigger word 'photomaker' right after the class word, "
                 "e.g. 'a photo of a woman photomaker with blonde hair'")


@pytest.fixture(scope="module")
def clip():
    return tiny_photomaker.build_tiny_sdxl_clip(seed=1)


@pytest.fixture(scope="module")
def photomaker():
    return tiny_photomaker.build_tiny_photomaker(seed=2)


@pytest.fixture(scope="module")
def images():
    return tiny_photomaker.reference_images(3, seed=3)


@pytest.fixture(scope="module")
def spec():
    load_pack("freecure_pack_photomaker")
    module = importlib.import_module("freecure_pack_photomaker.nodes.photomaker")
    (node_spec,) = module.SPECS
    return node_spec


@pytest.fixture(scope="module")
def node(spec):
    from freecure_pack_photomaker.nodes.spec import to_v3
    return to_v3(spec, io)


def pair(node, photomaker, image, clip, text=PROMPT, merge_start=0.0):
    """The node's (pd, fd). merge_start 0 here unless given: one entry each, the prompts after the merge step."""
    return node.execute(photomaker=photomaker, image=image, clip=clip, text=text, merge_start=merge_start).result


def encode(clip, text):
    """What a plain CLIP Text Encode of `text` gives: (cond, pooled)."""
    return clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)


def fuse(photomaker, photos, cond, positions):
    """The PhotoMaker model's own forward: photo i into class position i (on a copy of cond)."""
    pixels = comfy.clip_vision.clip_preprocess(photos).float().unsqueeze(0)
    mask = torch.zeros(1, cond.shape[1], dtype=torch.bool)
    mask[0, positions] = True
    with torch.no_grad():
        return photomaker(id_pixel_values=pixels, prompt_embeds=cond.clone(), class_tokens_mask=mask)


def changed_rows(a, b):
    return (a != b).any(dim=-1)[0].nonzero().flatten().tolist()


def n_tokens(clip, text):
    return sum(t[2] != 0 for c in clip.tokenize(text, return_word_ids=True)["l"] for t in c)


# ------------------------------------------------------------------------------------------ FD
@pytest.mark.parametrize("n_images, plain", [(1, PLAIN), (3, EXPANDED_3)])
def test_fd_is_the_trigger_free_prompt_with_one_class_word_per_photo(node, photomaker, images, clip, n_images, plain):
    pd, fd = pair(node, photomaker, images[:n_images], clip)
    cond, pooled = encode(clip, plain)
    assert len(fd) == 1 and set(fd[0][1]) == {"pooled_output"}
    assert torch.equal(fd[0][0], cond) and torch.equal(fd[0][1]["pooled_output"], pooled)
    assert len(pd) == 1 and set(pd[0][1]) == {"pooled_output"}
    assert torch.equal(pd[0][1]["pooled_output"], pooled)  # both keep the expanded prompt's pooled output


def test_a_class_word_in_a_later_chunk_of_a_long_prompt(node, photomaker, images, clip):
    head = ", ".join(["a sunny garden with red roses"] * 12)
    pd, fd = pair(node, photomaker, images, clip, head + ", a woman photomaker smiling")
    cond, _ = encode(clip, head + ", a woman woman woman smiling")
    assert cond.shape[1] == 2 * 77 and torch.equal(fd[0][0], cond)
    # chunk 0 holds <start>, the first 75 prompt tokens and <end>; chunk 1 <start> and the rest
    start = 77 + 1 + (n_tokens(clip, head + ", a woman") - 1 - 75)
    assert changed_rows(pd[0][0], fd[0][0]) == [start, start + 1, start + 2]


# ------------------------------------------------------------------------------------------ PD
@pytest.mark.parametrize("n_images", [1, 2, 3])
def test_pd_differs_from_fd_only_at_the_class_tokens_and_is_the_photomaker_forward(node, photomaker, images,
                                                                                   clip, n_images):
    photos = images[:n_images]
    pd, fd = pair(node, photomaker, photos, clip)
    positions = list(range(CLASS_AT, CLASS_AT + n_images))
    assert changed_rows(pd[0][0], fd[0][0]) == positions
    rest = torch.ones(pd[0][0].shape[1], dtype=torch.bool)
    rest[positions] = False
    assert torch.equal(pd[0][0][:, rest], fd[0][0][:, rest])
    assert torch.equal(pd[0][0], fuse(photomaker, photos, fd[0][0], positions))


def test_each_class_row_is_the_identity_of_its_own_photo(node, photomaker, images, clip):
    pd, fd = pair(node, photomaker, images, clip)
    order = [1, 0, 2]
    swapped, swapped_fd = pair(node, photomaker, images[order], clip)
    assert torch.equal(swapped_fd[0][0], fd[0][0])
    assert changed_rows(swapped[0][0], pd[0][0]) == [CLASS_AT, CLASS_AT + 1]  # photo order matters
    for result, photos in ((pd, [0, 1, 2]), (swapped, order)):
        for slot, photo in enumerate(photos):  # that photo alone, fused into that copy only
            alone = fuse(photomaker, images[photo:photo + 1], fd[0][0], [CLASS_AT + slot])
            torch.testing.assert_close(result[0][0][0, CLASS_AT + slot], alone[0, CLASS_AT + slot], rtol=0, atol=1e-5)


def test_a_multi_token_class_word_gets_the_identity_on_its_last_token(node, photomaker, images, clip):
    assert n_tokens(clip, "skateboarder") == 2  # 'skate' 'boarder'
    pd, fd = pair(node, photomaker, images[:2], clip, "a photo of a skateboarder photomaker")
    assert torch.equal(fd[0][0], encode(clip, "a photo of a skateboarder boarder")[0])
    assert changed_rows(pd[0][0], fd[0][0]) == [6, 7]


def test_the_identity_and_photo_count_are_logged(node, photomaker, images, clip, caplog):
    with caplog.at_level(logging.INFO, logger="FreeCure"):
        pair(node, photomaker, images[:2], clip)
    assert "identity of 2 photo(s) goes into the class word 'woman'" in caplog.text


# ------------------------------------------------------------------------------------------ the trigger
@pytest.mark.parametrize("text, prefix, plain", [
    (PROMPT, "a photo of a woman", PLAIN),
    ("a woman photomaker, smiling", "a woman", "a woman, smiling"),
    ("A Woman PhotoMaker. Smiling", "A Woman", "A Woman. Smiling"),
    ("a woman\nphotomaker", "a woman", "a woman"),
])
def test_the_trigger_word_and_the_space_before_it_are_removed(text, prefix, plain):
    assert photomaker_tokens.split_trigger(text) == (prefix, plain)


def test_glued_punctuation_stays_in_the_prompt(node, photomaker, images, clip):
    pd, fd = pair(node, photomaker, images[:1], clip, "a woman photomaker, smiling")
    assert torch.equal(fd[0][0], encode(clip, "a woman, smiling")[0])
    assert changed_rows(pd[0][0], fd[0][0]) == [2]


@pytest.mark.parametrize("text", ["a photo of a woman with blonde hair", "photomaker woman smiling",
                                  "a woman (photomaker) smiling", "a woman, photomaker smiling",
                                  "a woman photomakers", "a woman photomaker's smile"])
def test_a_prompt_without_the_trigger_after_a_class_word_is_refused(node, photomaker, images, clip, text):
    with pytest.raises(ValueError, match=NEEDS_TRIGGER.replace("(", r"\(").replace(")", r"\)")):
        pair(node, photomaker, images[:1], clip, text)


def test_two_triggers_are_refused(node, photomaker, images, clip):
    with pytest.raises(ValueError, match="FreeCure: the prompt has the trigger word 'photomaker' 2 times"):
        pair(node, photomaker, images[:1], clip, "a man photomaker and a woman photomaker")


def test_a_class_word_inside_a_weight_bracket_is_refused_clearly(node, photomaker, images, clip):
    with pytest.raises(ValueError, match="FreeCure: could not find the class word .* plain word right before"):
        pair(node, photomaker, images[:1], clip, "(a woman photomaker:1.2) smiling")


def test_a_prompt_too_long_for_the_photos_is_refused(node, photomaker, images, clip):
    text = "a woman photomaker " + " ".join(["red"] * 72)  # 74 tokens: room for one extra class copy
    assert n_tokens(clip, photomaker_tokens.split_trigger(text)[1]) == 74
    pd, fd = pair(node, photomaker, images[:2], clip, text)
    assert fd[0][0].shape[1] == 77 and changed_rows(pd[0][0], fd[0][0]) == [2, 3]
    with pytest.raises(ValueError, match="FreeCure: the prompt is too long for 3 reference photos.*Shorten the "
                                         "prompt or use fewer photos"):
        pair(node, photomaker, images, clip, text)


def test_expanding_keeps_weights_and_chunk_lengths_and_leaves_the_tokens_alone(clip):
    tokens = clip.tokenize("a (woman:1.3) with blonde hair", return_word_ids=True)
    snapshot = {k: [list(c) for c in v] for k, v in tokens.items()}
    where = {key: (0, 2) for key in tokens}
    grown = photomaker_tokens.expand_class_token(tokens, where, 4)
    assert tokens == snapshot
    for key in tokens:
        (old,), (new,) = tokens[key], grown[key]
        assert len(new) == len(old)
        assert new[:3] == old[:3] and new[2:6] == [old[2]] * 4 and old[2][1] == pytest.approx(1.3)
        assert new[6:] == old[3:-3]


# ------------------------------------------------------------------------------------------ merge_start
def test_before_merge_start_both_branches_are_the_clean_prompt_then_pd_fused_fd_expanded(node, photomaker, images,
                                                                                           clip):
    """PhotoMaker's reference loop (pipeline.py:897-920): for i <= start_merge_step PD and FD both use the prompt
    without the trigger (class word once) and ITS pooled output; after it PD uses the fused expanded prompt, FD the
    expanded prompt before fusion, both with the expanded prompt's pooled output. Three photos, so the clean and
    the expanded prompts differ."""
    pd, fd = pair(node, photomaker, images, clip, merge_start=0.3)
    clean, clean_pooled = encode(clip, PLAIN)
    expanded, expanded_pooled = encode(clip, EXPANDED_3)
    assert not torch.equal(clean, expanded) and not torch.equal(clean_pooled, expanded_pooled)
    assert len(pd) == len(fd) == 2
    for branch in (pd, fd):
        (early, early_opts), (late, late_opts) = branch
        assert torch.equal(early, clean) and torch.equal(early_opts["pooled_output"], clean_pooled)  # bit-exact
        assert torch.equal(late_opts["pooled_output"], expanded_pooled)
        assert (early_opts["start_percent"], early_opts["end_percent"]) == (0.0, 0.3)
        assert (late_opts["start_percent"], late_opts["end_percent"]) == (0.3, 1.0)
        # Same keys as core's ConditioningSetTimestepRange.
        (ranged,) = comfy_nodes.ConditioningSetTimestepRange().set_range([[late, {"pooled_output": None}]], 0.3, 1.0)
        assert set(early_opts) == set(late_opts) == set(ranged[0][1]) == {"pooled_output", "start_percent",
                                                                          "end_percent"}
    assert torch.equal(fd[1][0], expanded)
    assert torch.equal(pd[1][0], fuse(photomaker, images, expanded, [CLASS_AT, CLASS_AT + 1, CLASS_AT + 2]))
    (fused, _), = pair(node, photomaker, images, clip, merge_start=0.0)[0]
    assert torch.equal(pd[1][0], fused)
    options = [opts for _, opts in pd + fd]
    assert len({id(o) for o in options}) == 4  # every entry has its own options dict


def test_one_photo_clean_and_expanded_prompts_are_the_same(node, photomaker, images, clip):
    pd, fd = pair(node, photomaker, images[:1], clip, merge_start=0.5)
    clean, clean_pooled = encode(clip, PLAIN)
    assert torch.equal(fd[0][0], clean) and torch.equal(fd[1][0], clean) and torch.equal(pd[0][0], clean)
    assert torch.equal(fd[1][1]["pooled_output"], clean_pooled)
    assert changed_rows(pd[1][0], clean) == [CLASS_AT]


def test_merge_start_1_never_fuses_and_warns(node, photomaker, images, clip, caplog):
    with caplog.at_level(logging.WARNING, logger="FreeCure"):
        pd, fd = pair(node, photomaker, images, clip, merge_start=1.0)
    assert "never fused" in caplog.text
    clean, clean_pooled = encode(clip, PLAIN)
    for branch in (pd, fd):  # both the clean prompt throughout, as the reference with start_merge_step >= steps
        assert len(branch) == 1 and set(branch[0][1]) == {"pooled_output"}
        assert torch.equal(branch[0][0], clean) and torch.equal(branch[0][1]["pooled_output"], clean_pooled)
    assert pd[0][1] is not fd[0][1]


def test_the_default_merge_start_is_the_nodes(spec):
    import inspect
    from freecure_core.comfy_bridge import photomaker as bridge
    (ms,) = [i for i in spec.inputs if i.name == "merge_start"]
    assert inspect.signature(bridge.encode_pair).parameters["merge_start"].default == ms.default == 0.23


# The reference (PhotoMaker/run_photomaker_freecure.py:96,107-111; pipeline.py:897): DDIM with SDXL base's scheduler
# config, 50 steps, start_merge_step = int(20 / 100 * 50) = 10, clean prompt for the steps i <= start_merge_step.
# diffusers' DDIM "leading" spacing with steps_offset 1 puts step i at timestep 981 - 20 i.
REFERENCE_STEPS, START_MERGE_STEP = 50, int(20 / 100 * 50)
REFERENCE_TIMESTEPS = list(range(981, 0, -20))
SDXL_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      timestep_spacing="leading", steps_offset=1, clip_sample=False, set_alpha_to_one=False,
                      prediction_type="epsilon")  # SDXL base 1.0's scheduler_config.json, the fields DDIM reads


@pytest.fixture(scope="module")
def sdxl_2048():
    return tiny_models.build_tiny_sdxl_2048(0)


def conds_per_step(model, clip, positive, steps, sampler, scheduler):
    """[(model timestep, c_crossattn, pooled part of y)] of every model call when ComfyUI's KSampler samples
    `positive` at cfg 1 (no uncond call); the UNet itself is not run (the wrapper predicts zero noise)."""
    calls = []

    def wrapper(apply_model, args):
        c = args["c"]
        calls.append((args["timestep"], c["c_crossattn"], c["y"][:, :1280]))
        return torch.zeros_like(args["input"])

    m = model.clone()
    m.set_model_unet_function_wrapper(wrapper)
    empty, empty_pooled = encode(clip, "")
    comfy_nodes.common_ksampler(m, 0, steps, 1.0, sampler, scheduler, positive, [[empty, {"pooled_output":
                                                                                         empty_pooled}]],
                                {"samples": torch.zeros(1, 4, 8, 8)})
    sampling = model.get_model_object("model_sampling")
    return [(int(sampling.timestep(sigma)[0]), cross, pooled) for sigma, cross, pooled in calls]


def which(cross, pooled, candidates):
    """The name of the (embedding, pooled) candidate that (cross, pooled) is, bit-exact."""
    (name,) = [k for k, (c, p) in candidates.items() if torch.equal(cross, c) and torch.equal(pooled, p)]
    return name


def test_the_reference_schedule_is_comfyuis_ddim_uniform():
    """The reference's timesteps and sigmas are what ComfyUI's ddim_uniform scheduler gives for 50 steps."""
    diffusers = pytest.importorskip("diffusers")
    import comfy.samplers
    from comfy.model_sampling import ModelSamplingDiscrete
    ddim = diffusers.DDIMScheduler(**SDXL_SCHEDULER)
    ddim.set_timesteps(REFERENCE_STEPS)
    assert ddim.timesteps.tolist() == REFERENCE_TIMESTEPS
    sampling = ModelSamplingDiscrete()  # SDXL's defaults: scaled_linear 0.00085..0.012, 1000 steps
    sigmas = comfy.samplers.calculate_sigmas(sampling, "ddim_uniform", REFERENCE_STEPS)
    alpha = ddim.alphas_cumprod[ddim.timesteps].double()
    torch.testing.assert_close(sigmas[:-1].double(), ((1 - alpha) / alpha).sqrt(), rtol=1e-5, atol=0)
    assert float(sigmas[-1]) == 0.0


@pytest.mark.parametrize("merge_start, sampler, scheduler, steps, first_fused", [
    (0.23, "ddim", "ddim_uniform", REFERENCE_STEPS, START_MERGE_STEP + 1),  # the reference: steps 0-10 clean
    (0.2, "ddim", "ddim_uniform", REFERENCE_STEPS, START_MERGE_STEP),  # the former default fused one step early
    (0.23, "euler", "normal", 30, 7),  # other schedules (the tooltip and README): the same timestep, other steps
    (0.23, "euler", "karras", 30, 8),
    (0.23, "euler", "normal", 50, 12),
])
def test_the_switch_step_in_comfyui_sampling(node, photomaker, images, clip, sdxl_2048, merge_start, sampler,
                                             scheduler, steps, first_fused):
    """What the UNet is given at every step when KSampler samples each branch: the clean prompt and its pooled
    output up to the switch, then PD's fused / FD's expanded prompt with the expanded pooled output."""
    pd, fd = pair(node, photomaker, images, clip, merge_start=merge_start)
    clean, expanded = encode(clip, PLAIN), encode(clip, EXPANDED_3)
    fused = (pd[1][0], expanded[1])
    for branch, late, late_cond in ((pd, "fused", fused), (fd, "expanded", expanded)):
        calls = conds_per_step(sdxl_2048, clip, branch, steps, sampler, scheduler)
        assert len(calls) == steps  # one call per step: exactly one entry is active at every step
        used = [which(cross, pooled, {"clean": clean, late: late_cond}) for _, cross, pooled in calls]
        assert used == ["clean"] * first_fused + [late] * (steps - first_fused)
        if scheduler == "ddim_uniform":
            assert [t for t, _, _ in calls] == REFERENCE_TIMESTEPS
            reference = ["clean" if i <= START_MERGE_STEP else late for i in range(REFERENCE_STEPS)]
            assert (used == reference) == (merge_start == 0.23)


def test_merge_start_outside_0_1_is_refused(node, photomaker, images, clip):
    with pytest.raises(ValueError, match="FreeCure: merge_start must be between 0 and 1"):
        pair(node, photomaker, images[:1], clip, merge_start=1.5)


def test_inputs_are_not_changed(node, photomaker, images, clip):
    image = images[:2].clone()
    tokens = clip.tokenize(PLAIN, return_word_ids=True)
    state = {k: v.clone() for k, v in photomaker.state_dict().items()}
    pair(node, photomaker, image, clip, merge_start=0.5)
    assert torch.equal(image, images[:2])
    assert clip.tokenize(PLAIN, return_word_ids=True) == tokens
    assert all(torch.equal(v, state[k]) for k, v in photomaker.state_dict().items())


# ------------------------------------------------------------------------------------------ errors
def test_a_clip_of_another_width_is_refused_with_both_widths(node, photomaker, images):
    sd1_clip = tiny_photomaker.build_tiny_sd1_clip(seed=4)
    with pytest.raises(ValueError, match=r"FreeCure: this CLIP gives 64-wide .* fuses 2048-wide .* SDXL"):
        pair(node, photomaker, images[:1], sd1_clip)


def test_wrong_objects_are_refused(node, photomaker, images, clip):
    with pytest.raises(ValueError, match="FreeCure: 'photomaker' must be the PHOTOMAKER output .* got CLIP"):
        pair(node, clip, images[:1], clip)
    with pytest.raises(ValueError, match="FreeCure: 'clip' must be a CLIP"):
        pair(node, photomaker, images[:1], photomaker)
    with pytest.raises(ValueError, match="FreeCure: 'image' must be an IMAGE"):
        pair(node, photomaker, images[:0], clip)


# ------------------------------------------------------------------------------------------ core differs
def test_core_photomaker_encode_keeps_the_trigger_which_this_node_removes(node, photomaker, images, clip):
    """Why we do not follow ComfyUI 0.3.75's PhotoMakerEncode: it drops the tokens whose word id is
    1 + the index of 'photomaker' in text.split(" "), but ComfyUI's tokenizer numbers prompt segments, not
    words (the whole unweighted prompt is word id 1), so nothing is dropped: its prompt still contains
    'photom' 'aker', and only one class token (hence only the first photo) gets an identity. PhotoMaker's
    reference removes the trigger and repeats the class token once per photo, which is what this node does."""
    (core_cond, _), = PhotoMakerEncode.execute(photomaker, images[:1], clip, PROMPT).result[0]
    with_trigger, _ = encode(clip, PROMPT)
    assert changed_rows(core_cond, with_trigger) == [CLASS_AT]  # core = the prompt WITH the trigger + 1 ID
    pd, fd = pair(node, photomaker, images[:1], clip)
    # CLIP's attention is causal, so rows up to the class word agree (the fused row too, for one photo)...
    assert torch.equal(core_cond[:, :CLASS_AT + 1], pd[0][0][:, :CLASS_AT + 1])
    # ...and the rows after it differ: core reads 'photom' 'aker' where our prompt goes on 'with blonde hair'.
    after = list(range(CLASS_AT + 1, CLASS_AT + 6))
    assert changed_rows(core_cond[:, after], fd[0][0][:, after]) == list(range(5))


# ------------------------------------------------------------------------------------------ declaration
def test_node_declaration_v1_and_v3(spec, node, photomaker, images, clip):
    from freecure_pack_photomaker.nodes.spec import to_v1
    v1 = to_v1(spec)
    required = v1.INPUT_TYPES()["required"]
    assert list(required) == ["photomaker", "image", "clip", "text", "merge_start"]
    assert [required[k][0] for k in ("photomaker", "image", "clip", "text")] == ["PHOTOMAKER", "IMAGE", "CLIP",
                                                                                 "STRING"]
    assert required["text"][1]["default"] == "photograph of photomaker" and required["text"][1]["multiline"]
    ms = required["merge_start"][1]
    assert (ms["default"], ms["min"], ms["max"], ms["step"]) == (0.23, 0.0, 1.0, 0.01)
    assert v1.RETURN_TYPES == ("CONDITIONING", "CONDITIONING")
    assert v1.RETURN_NAMES == ("pd_conditioning", "fd_conditioning")
    assert v1.CATEGORY == "FreeCure/identity"

    info = node.GET_NODE_INFO_V1()
    assert list(info["input"]["required"]) == list(required)
    assert info["input"]["required"]["photomaker"][0] == "PHOTOMAKER"
    assert info["input"]["required"]["clip"][0] == "CLIP"
    assert info["output"] == ["CONDITIONING", "CONDITIONING"]

    kwargs = dict(photomaker=photomaker, image=images[:1], clip=clip, text="photograph of photomaker",
                  merge_start=0.25)
    pd1, fd1 = v1().execute(**kwargs)
    pd3, fd3 = node.execute(**kwargs).result
    assert [len(pd1), len(fd1)] == [len(pd3), len(fd3)] == [2, 2]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(pd1 + fd1, pd3 + fd3))
