"""The identity example workflows (built-in InstantID / CrossFaceID / PhotoMaker pairs, and the peer-pack wiring for
cubiq's InstantID, PuLID and IP-Adapter FaceID) against a real headless ComfyUI server's /object_info.

* static: the files equal what scripts/workflow_builder.py writes; workflows/ holds exactly ALL_WORKFLOW_NAMES;
  each workflow is well formed (links agree with both ends, execution order, seeds fixed and shared, SDXL 1024²,
  30 steps, cfg 5, Notes naming the model folders, no overlapping nodes) and wires the foundation branch as
  documented in the README;
* server: every node type of the built-in workflows exists in /object_info, and the API copy in workflows/api/
  equals the UI workflow converted with it (regenerate with FREECURE_WRITE_API_WORKFLOWS=1);
* peer workflows: the same against a server with the real packs installed (conftest ``comfy_peer_server``; skipped
  without .peers/), whose /object_info names the pack as each peer node's module; on the plain server the pack's
  nodes (read from its source, tests/e2e/peer_nodes.py) are exactly the types it lacks;
* every link's type is the producer's output type and one the consumer input accepts; combo values are options
  of their combo (file names excepted: those are the user's files).

Running the workflows is done elsewhere (tests/e2e/test_server_instantid*.py and friends; the peer workflows in
tests/e2e/test_peer_packs.py).
"""
from __future__ import annotations

import importlib.util
import itertools
import os
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import peer_nodes  # noqa: E402
import workflow_utils as wu  # noqa: E402

NAMES = wu.IDENTITY_WORKFLOW_NAMES + wu.PEER_WORKFLOW_NAMES
FILE_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".png", ".jpg", ".jpeg", ".webp")


def _builder():
    path = wu.REPO_ROOT / "scripts" / "workflow_builder.py"
    spec = importlib.util.spec_from_file_location("freecure_workflow_builder", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _by_type(wf: dict, ntype: str) -> list[dict]:
    return [n for n in wf["nodes"] if n["type"] == ntype]


def _one(wf: dict, ntype: str) -> dict:
    nodes = _by_type(wf, ntype)
    assert len(nodes) == 1, f"expected one {ntype}, found {len(nodes)}"
    return nodes[0]


def _sources(wf: dict) -> dict[tuple[int, str], tuple[int, str]]:
    """(node id, input name) -> (source node id, source output name) for every link."""
    nodes = {n["id"]: n for n in wf["nodes"]}
    return {(dst, nodes[dst]["inputs"][dst_slot]["name"]): (src, nodes[src]["outputs"][src_slot]["name"])
            for _, src, src_slot, dst, dst_slot, _ in wf["links"]}


def _src(wf: dict, node: dict, inp: str) -> tuple[str, str, int]:
    """(type, output name, id) of what feeds node's input."""
    src, out = _sources(wf)[(node["id"], inp)]
    return next(n["type"] for n in wf["nodes"] if n["id"] == src), out, src


def _notes(wf: dict) -> str:
    return "\n".join(n["widgets_values"][0] for n in _by_type(wf, "Note"))


# ------------------------------------------------------------------------------------------ static
def test_builder_writes_the_committed_workflows():
    builder = _builder()
    assert set(builder.WORKFLOWS) == set(NAMES + wu.APG_WORKFLOW_NAMES + wu.FLUX_WORKFLOW_NAMES
                                         + wu.PEER_FLUX_WORKFLOW_NAMES)
    for name in builder.WORKFLOWS:
        text = builder.render(builder.WORKFLOWS[name]())
        assert text == (wu.WORKFLOWS_DIR / f"{name}.json").read_text(), (
            f"workflows/{name}.json differs from scripts/workflow_builder.py; run python scripts/workflow_builder.py")


def test_every_workflow_file_is_listed():
    files = sorted(p.stem for p in wu.WORKFLOWS_DIR.glob("*.json"))
    assert files == sorted(wu.ALL_WORKFLOW_NAMES)
    assert sorted(p.stem for p in wu.API_DIR.glob("*.json")) == files


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_is_well_formed(name):
    wf = wu.load_ui(name)
    wu.assert_well_formed(wf)

    assert [n["widgets_values"][:2] for n in _by_type(wf, "EmptyLatentImage")] == [[1024, 1024]]
    samplers = _by_type(wf, "FreeCureFoundationSampler") + _by_type(wf, "FreeCureSampler")
    assert len(samplers) == 2
    assert all(n["widgets_values"][1] == "fixed" for n in samplers), "seeds must be fixed"
    assert len({tuple(n["widgets_values"][i] for i in (0, 2, 3, 4, 5, 6)) for n in samplers}) == 1, \
        "seed, steps, cfg, sampler, scheduler and denoise equal in both samplers"
    assert samplers[0]["widgets_values"][2:4] == [30, 5.0]
    assert _one(wf, "FreeCureFoundationSampler")["widgets_values"][7] == "cond", "stage 1 records for replay"
    assert [n["widgets_values"] for n in _by_type(wf, "LoadImage")] == [["reference_face.png", "image"]]
    assert len(_by_type(wf, "Note")) >= 4
    notes = _notes(wf)
    assert "ComfyUI/models/" in notes and "models/face_parsing/" in notes

    boxes = [(n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in wf["nodes"]]
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
        assert not overlap, f"{wf['nodes'][i]['type']} overlaps {wf['nodes'][j]['type']}"


@pytest.mark.parametrize("name", NAMES)
def test_stages_are_wired_like_the_face_parsing_workflow(name):
    """Stage 2 parses the FD image with the prompt's attributes; stage 3 replays stage 1 with the same model_fd,
    fd conds and latent, and saves PD."""
    wf = wu.load_ui(name)
    fd, pd = _one(wf, "FreeCureFoundationSampler"), _one(wf, "FreeCureSampler")
    for inp, fd_inp in (("model_fd", "model_fd"), ("fd_positive", "positive"), ("fd_negative", "negative"),
                        ("latent_image", "latent_image")):
        assert _src(wf, pd, inp) == _src(wf, fd, fd_inp), inp
    assert _src(wf, pd, "kv")[::2] == ("FreeCureFoundationSampler", fd["id"])
    mask, parse = _one(wf, "FreeCureAttributeMask"), _one(wf, "FreeCureFaceParse")
    (fd_decode,) = [n for n in _by_type(wf, "VAEDecode") if _src(wf, n, "samples")[1] == "fd_latent"]
    assert _src(wf, parse, "image")[2] == _src(wf, mask, "image")[2] == fd_decode["id"]
    assert _src(wf, _one(wf, "FreeCureFASAConfig"), "mask")[:2] == ("FreeCureAttributeMask", "mask")
    assert _src(wf, pd, "fasa")[0] == "FreeCureFASAConfig"
    (save,) = _by_type(wf, "SaveImage")
    (pd_decode,) = [n for n in _by_type(wf, "VAEDecode") if _src(wf, n, "samples")[1] == "pd_latent"]
    assert _src(wf, save, "images")[2] == pd_decode["id"]
    prompt = mask["widgets_values"][0]
    assert "blonde curly hair" in prompt and "sunglasses" in prompt
    texts = [n["widgets_values"][0] for n in _by_type(wf, "CLIPTextEncode") + _by_type(wf, "FreeCurePhotoMakerEncodePair")
             if n.get("title") != "Negative prompt"]
    assert texts == [prompt], "the attribute mask reads the generation prompt"


@pytest.mark.parametrize("name", ["freecure_instantid", "freecure_crossfaceid"])
def test_instantid_pair_feeds_fd_to_stage_one_and_both_branches_to_stage_three(name):
    wf = wu.load_ui(name)
    pair, fd, pd = (_one(wf, t) for t in ("FreeCureInstantIDPair", "FreeCureFoundationSampler", "FreeCureSampler"))
    for node, inp, out in ((fd, "model_fd", "fd_model"), (fd, "positive", "fd_positive"),
                           (fd, "negative", "fd_negative"), (pd, "model_pd", "pd_model"),
                           (pd, "positive", "pd_positive"), (pd, "negative", "pd_negative")):
        assert _src(wf, node, inp)[:2] == ("FreeCureInstantIDPair", out), inp
    assert _src(wf, pair, "model")[:2] == ("CheckpointLoaderSimple", "MODEL")
    assert _src(wf, pair, "control_net")[0] == "ControlNetLoader" and _src(wf, pair, "image")[0] == "LoadImage"
    (kps,) = [n for n in _by_type(wf, "PreviewImage") if _src(wf, n, "images")[1] == "kps_image"]
    assert kps
    adapter, cnet = _one(wf, "FreeCureInstantIDLoader"), _one(wf, "ControlNetLoader")
    ip_weight, cn_strength = pair["widgets_values"][:2]
    if name == "freecure_crossfaceid":
        assert adapter["widgets_values"] == ["crossfaceid_instantid.bin"]
        assert cnet["widgets_values"] == ["crossfaceid_instantid_controlnet.safetensors"]
        assert (ip_weight, cn_strength) == (0.8, 1.0)
        assert "python -m freecure_core.convert" in _notes(wf)
    else:
        assert adapter["widgets_values"] == ["ip-adapter.bin"]
        assert cnet["widgets_values"] == ["instantid/diffusion_pytorch_model.safetensors"]
        assert (ip_weight, cn_strength) == (0.8, 0.8)
        assert "CrossFaceID" in _notes(wf)
    assert pair["widgets_values"][2:] == [0.0, 1.0, 0.0, "average"]
    assert "models/instantid/" in _notes(wf) and "models/controlnet/" in _notes(wf)


def test_photomaker_changes_only_the_conditioning():
    wf = wu.load_ui("freecure_photomaker")
    pair, fd, pd = (_one(wf, t) for t in ("FreeCurePhotoMakerEncodePair", "FreeCureFoundationSampler",
                                          "FreeCureSampler"))
    ckpt = _one(wf, "CheckpointLoaderSimple")
    for node, inp in ((fd, "model_fd"), (pd, "model_pd"), (pd, "model_fd")):
        assert _src(wf, node, inp) == ("CheckpointLoaderSimple", "MODEL", ckpt["id"]), inp
    assert _src(wf, fd, "positive")[:2] == ("FreeCurePhotoMakerEncodePair", "fd_conditioning")
    assert _src(wf, pd, "positive")[:2] == ("FreeCurePhotoMakerEncodePair", "pd_conditioning")
    assert _src(wf, pd, "negative") == _src(wf, fd, "negative")
    assert _src(wf, pair, "photomaker")[0] == "PhotoMakerLoader" and _src(wf, pair, "image")[0] == "LoadImage"
    assert _src(wf, pair, "clip") == ("CheckpointLoaderSimple", "CLIP", ckpt["id"])
    assert pair["widgets_values"] == ["a photo of a woman photomaker with blonde curly hair, wearing sunglasses", 0.23]
    assert _one(wf, "PhotoMakerLoader")["widgets_values"] == ["photomaker-v1.bin"]
    assert "models/photomaker/" in _notes(wf)


def _zero_identity_fd(wf, pd, model_pd_type: str) -> None:
    """model_fd of stage 3 (and stage 1) is FreeCure Zero-ID Model on stage 3's model_pd, the pack's MODEL."""
    assert _src(wf, pd, "model_pd")[:2] == (model_pd_type, "MODEL")
    zid = _one(wf, "FreeCureZeroIdentityModel")
    assert _src(wf, pd, "model_fd") == ("FreeCureZeroIdentityModel", "model_fd", zid["id"])
    assert _src(wf, zid, "model_pd") == _src(wf, pd, "model_pd")
    assert _src(wf, _one(wf, "FreeCureFoundationSampler"), "model_fd") == _src(wf, pd, "model_fd")


def test_peer_instantid_fd_is_the_zero_identity_patch_with_zero_face_conds():
    wf = wu.load_ui("freecure_peer_instantid")
    patch, zero = _one(wf, "InstantIDAttentionPatch"), _one(wf, "FreeCureZeroFaceEmbeds")
    pd = _one(wf, "FreeCureSampler")
    assert patch["widgets_values"][3] == 0.0, "noise 0: the exact zero-face tokens for FD"
    _zero_identity_fd(wf, pd, "InstantIDAttentionPatch")
    assert _src(wf, zero, "face_embeds")[:2] == ("InstantIDAttentionPatch", "FACE_EMBEDS")
    cn_pd_id, cn_fd_id = _src(wf, pd, "positive")[2], _src(wf, pd, "fd_positive")[2]
    assert _src(wf, pd, "negative")[2] == cn_pd_id and _src(wf, pd, "fd_negative")[2] == cn_fd_id
    cn_pd, cn_fd = ({n["id"]: n for n in wf["nodes"]}[i] for i in (cn_pd_id, cn_fd_id))
    assert cn_pd["type"] == cn_fd["type"] == "ApplyInstantIDControlNet"
    assert _src(wf, cn_pd, "face_embeds")[:2] == ("InstantIDAttentionPatch", "FACE_EMBEDS")
    assert _src(wf, cn_fd, "face_embeds")[:2] == ("FreeCureZeroFaceEmbeds", "fd_face_embeds")
    for inp in ("control_net", "image_kps", "positive", "negative"):
        assert _src(wf, cn_pd, inp) == _src(wf, cn_fd, inp), inp
    assert cn_pd["widgets_values"] == cn_fd["widgets_values"]


def test_peer_pulid_fd_is_the_zero_identity_pulid_model():
    wf = wu.load_ui("freecure_peer_pulid")
    pd = _one(wf, "FreeCureSampler")
    _zero_identity_fd(wf, pd, "ApplyPulid")
    assert _src(wf, pd, "positive") == _src(wf, pd, "fd_positive")
    assert _src(wf, pd, "negative") == _src(wf, pd, "fd_negative")


def test_peer_faceid_fd_is_the_zero_identity_faceid_model():
    wf = wu.load_ui("freecure_peer_faceid")
    faceid, pd = _one(wf, "IPAdapterFaceID"), _one(wf, "FreeCureSampler")
    _zero_identity_fd(wf, pd, "IPAdapterFaceID")
    assert _src(wf, faceid, "model")[:2] == ("IPAdapterUnifiedLoaderFaceID", "MODEL")
    assert _src(wf, pd, "positive") == _src(wf, pd, "fd_positive")
    assert _src(wf, pd, "negative") == _src(wf, pd, "fd_negative")


# ------------------------------------------------------------------------------------------ server
@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.object_info()


@pytest.fixture(scope="module")
def peer_object_info(comfy_peer_server):
    return comfy_peer_server.object_info()


def _info_for(request, name: str) -> dict:
    """The /object_info to check a workflow against: the peer-pack server's for the peer workflows."""
    return request.getfixturevalue("peer_object_info" if name in wu.PEER_WORKFLOW_NAMES else "object_info")


def _check_api_copy(name: str, info: dict) -> dict:
    converted = wu.ui_to_api(wu.load_ui(name), info)
    if os.environ.get("FREECURE_WRITE_API_WORKFLOWS") == "1":
        wu.write_api(name, converted)
    assert converted == wu.load_api(name), (
        f"workflows/api/{name}.json differs from workflows/{name}.json; regenerate it with "
        f"FREECURE_WRITE_API_WORKFLOWS=1 .venv/bin/python -m pytest -q tests/e2e/test_workflows_identity.py")
    return converted


def _accepts(spec_type, link_type: str) -> bool:
    if isinstance(spec_type, list):  # a combo can take a link only from a matching combo output
        return link_type == "COMBO"
    return spec_type == "*" or link_type in spec_type.split(",")


def _combo_options(spec: list) -> list | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1].get("options")
    return None


def _check_types(name: str, info: dict) -> None:
    wf = wu.load_ui(name)
    nodes = {n["id"]: n for n in wf["nodes"]}
    for lid, src, src_slot, dst, dst_slot, typ in wf["links"]:
        src_info, dst_node = info[nodes[src]["type"]], nodes[dst]
        assert src_info["output"][src_slot] == typ, (name, lid, src_info["name"], src_info["output"], typ)
        assert src_info["output_name"][src_slot] == nodes[src]["outputs"][src_slot]["name"], (name, lid)
        inp = dst_node["inputs"][dst_slot]["name"]
        specs = dict(wu._input_specs(info[dst_node["type"]]))
        assert inp in specs, f"{name}: {dst_node['type']} has no input {inp!r}"
        assert _accepts(specs[inp][0], typ), f"{name}: link {lid} {typ} -> {dst_node['type']}.{inp} {specs[inp][0]}"
    # every socket the UI shows is a non-widget input of the node, optional ones marked as the frontend does; a
    # linked widget (e.g. the text fed by the Prompt node) is listed after them as a widget input of its type
    for n in wf["nodes"]:
        if n["type"] in wu.FRONTEND_ONLY:
            continue
        node_info = info[n["type"]]
        specs = wu._input_specs(node_info)
        sockets = [(k, s) for k, s in specs if not wu._is_widget(s)]
        optional = set((node_info.get("input_order") or {}).get("optional", node_info["input"].get("optional", {})))
        plain = [i for i in n["inputs"] if "widget" not in i]
        assert [i["name"] for i in plain] == [k for k, _ in sockets], (name, n["type"])
        assert [i["type"] for i in plain] == [s[0] for _, s in sockets], (name, n["type"])
        assert [i.get("shape") == 7 for i in plain] == [k in optional for k, _ in sockets], (name, n["type"])
        widgets = dict((k, s) for k, s in specs if wu._is_widget(s))
        for i in n["inputs"]:
            if "widget" in i:
                assert i["name"] in widgets and widgets[i["name"]][0] == i["type"], (name, n["type"], i)
        assert not wu.output_problems(n, node_info), (name, wu.output_problems(n, node_info))
    # combo values are options (model and image files are the user's, so those may be missing here)
    for nid, node in wu.ui_to_api(wf, info).items():
        specs = dict(wu._input_specs(info[node["class_type"]]))
        for inp, value in node["inputs"].items():
            options = _combo_options(specs[inp])
            if options is None or isinstance(value, list):
                continue
            assert value in options or str(value).lower().endswith(FILE_SUFFIXES), (name, nid, inp, value, options)


# The API copies of our own workflows are checked with the others in test_server_freecure.py.


@pytest.mark.e2e
@pytest.mark.parametrize("name", wu.PEER_WORKFLOW_NAMES + wu.PEER_FLUX_WORKFLOW_NAMES)
def test_plain_server_lacks_exactly_the_peer_packs_nodes(object_info, name):
    types = wu.node_types(wu.load_ui(name)) - wu.FRONTEND_ONLY
    pack = peer_nodes.workflow_pack_nodes(name, types)
    if pack is None:
        pytest.skip(f"{peer_nodes.PACKS[name]} is not in {peer_nodes.PEERS_DIR} (scripts/bootstrap.sh unpacks it)")
    assert pack, "a peer workflow uses its pack's nodes"
    assert not pack & set(object_info), f"the plain e2e server has {peer_nodes.PACKS[name]} nodes"
    assert {t for t in types if t not in object_info} == pack, "only the peer pack's nodes may be missing"


@pytest.mark.e2e
@pytest.mark.parametrize("name", wu.PEER_WORKFLOW_NAMES)
def test_peer_api_copy_equals_converted_ui_workflow(peer_object_info, name):
    types = wu.node_types(wu.load_ui(name)) - wu.FRONTEND_ONLY
    missing = {t for t in types if t not in peer_object_info}
    assert not missing, f"node types not in the peer server's /object_info: {missing}"
    module = peer_nodes.python_module(peer_nodes.PACKS[name])
    pack = peer_nodes.workflow_pack_nodes(name, types)
    assert pack and {t for t in types if peer_object_info[t]["python_module"] == module} == pack, module
    _check_api_copy(name, peer_object_info)


@pytest.mark.e2e
@pytest.mark.parametrize("name", NAMES)
def test_link_and_socket_types_match_object_info(request, name):
    _check_types(name, _info_for(request, name))


def test_flux_workflow_wiring():
    """FLUX settings in the FLUX template: the diffusion model feeds both branches, Flux Guidance the positives, the
    FLUX VAE both decoders, cfg 1 with the simple scheduler and a 16-channel latent in both samplers."""
    api = wu.load_api("freecure_flux")
    unet, guide = wu.only_node(api, "UNETLoader"), wu.only_node(api, "FluxGuidance")
    vae, latent = wu.only_node(api, "VAELoader"), wu.only_node(api, "EmptySD3LatentImage")
    fd, pd = api[wu.only_node(api, "FreeCureFoundationSampler")]["inputs"], api[wu.only_node(api, "FreeCureSampler")]["inputs"]
    assert fd["model_fd"][0] == pd["model_pd"][0] == pd["model_fd"][0] == unet
    assert fd["positive"][0] == pd["positive"][0] == pd["fd_positive"][0] == guide
    assert pd["kv"] == [wu.only_node(api, "FreeCureFoundationSampler"), 1]
    assert fd["latent_image"][0] == pd["latent_image"][0] == latent
    for s in (fd, pd):
        assert (s["cfg"], s["scheduler"], s["seed"]) == (1.0, "simple", 42)
    assert {api[n]["inputs"]["vae"][0] for n in api if api[n]["class_type"] == "VAEDecode"} == {vae}


def test_peer_pulid_flux_workflow_wiring():
    """The FLUX template's settings with lldacing's Apply PuLID Flux on model_pd only: model_fd and the Apply node's
    model are the diffusion model, the text conditioning is shared, stage 3 replays stage 1 (kv); the UI file is well
    formed, without overlapping nodes, and names the port's model folders. (Run with the real port:
    tests/e2e/test_peer_pulid_flux.py.)"""
    wf = wu.load_ui("freecure_peer_pulid_flux")
    wu.assert_well_formed(wf)
    boxes = [(n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in wf["nodes"]]
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
        assert not overlap, f"{wf['nodes'][i]['type']} overlaps {wf['nodes'][j]['type']}"
    notes = _notes(wf)
    for folder in ("models/pulid/", "models/clip/", "models/facexlib/", "models/insightface/models/antelopev2/",
                   "models/diffusion_models/", "models/face_parsing/"):
        assert folder in notes, folder
    api = wu.load_api("freecure_peer_pulid_flux")
    unet, guide = wu.only_node(api, "UNETLoader"), wu.only_node(api, "FluxGuidance")
    apply, vae = wu.only_node(api, "ApplyPulidFlux"), wu.only_node(api, "VAELoader")
    fd_id, pd_id = wu.only_node(api, "FreeCureFoundationSampler"), wu.only_node(api, "FreeCureSampler")
    fd, pd = api[fd_id]["inputs"], api[pd_id]["inputs"]
    assert pd["model_pd"] == [apply, 0] and api[apply]["inputs"]["model"] == [unet, 0]
    assert fd["model_fd"] == pd["model_fd"] == [unet, 0], "FD is the model going into Apply PuLID Flux"
    assert fd["positive"][0] == pd["positive"][0] == pd["fd_positive"][0] == guide
    assert pd["negative"] == pd["fd_negative"] == fd["negative"]
    assert pd["kv"] == [fd_id, 1] and fd["latent_image"] == pd["latent_image"]
    for s in (fd, pd):
        assert (s["cfg"], s["scheduler"], s["seed"], s["steps"]) == (1.0, "simple", 42, 28)
    assert {api[n]["inputs"]["vae"][0] for n in api if api[n]["class_type"] == "VAEDecode"} == {vae}
    assert api[wu.only_node(api, "LoadImage")]["inputs"]["image"] == "reference_face.png"
    assert api[wu.only_node(api, "PulidFluxModelLoader")]["inputs"]["pulid_file"] == "pulid_flux_v0.9.1.safetensors"
