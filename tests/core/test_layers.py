"""Layer presets over probed site lists shaped like real SD1.5 and SDXL UNets."""
import pytest

from freecure_core.fasa.layers import Site, default_omega, parse_layer_spec, resolve_layers


def sites_from(blocks):
    """blocks: [(name, id, depth, level)] in call order -> Site list."""
    out = []
    for name, bid, depth, level in blocks:
        for i in range(depth):
            out.append(Site(name, bid, i, level, len(out)))
    return out


SD15 = sites_from([("input", 1, 1, 0), ("input", 2, 1, 0), ("input", 4, 1, 1), ("input", 5, 1, 1),
                   ("input", 7, 1, 2), ("input", 8, 1, 2), ("middle", 0, 1, 3)]
                  + [("output", i, 1, lv) for i, lv in ((3, 2), (4, 2), (5, 2), (6, 1), (7, 1), (8, 1),
                                                        (9, 0), (10, 0), (11, 0))])
SDXL = sites_from([("input", 4, 2, 1), ("input", 5, 2, 1), ("input", 7, 10, 2), ("input", 8, 10, 2),
                   ("middle", 0, 10, 2)]
                  + [("output", i, 10, 2) for i in (0, 1, 2)] + [("output", i, 2, 1) for i in (3, 4, 5)])


def keys(sites):
    return [s.key for s in sites]


def test_sd15_reference_is_output_blocks_6_to_11():
    assert len(SD15) == 16
    got = resolve_layers("reference", SD15, "sd1")
    assert keys(got) == [("output", i, 0) for i in range(6, 12)]
    assert [s.order for s in got] == list(range(10, 16))  # the reference code's blocks 10-15


def test_sdxl_reference_is_the_last_20_calls():
    assert len(SDXL) == 70
    got = resolve_layers("reference", SDXL, "sdxl")
    want = ([("output", 1, i) for i in range(6, 10)] + [("output", 2, i) for i in range(10)]
            + [("output", b, i) for b in (3, 4, 5) for i in range(2)])
    assert keys(got) == want
    assert keys(parse_layer_spec("50-69", SDXL)) == want


def test_decoder_and_all_presets():
    assert all(s.block == "output" for s in resolve_layers("decoder", SDXL, "sdxl"))
    assert len(resolve_layers("decoder", SDXL, "sdxl")) == 36
    assert resolve_layers("all", SD15, "sd1") == SD15


def test_custom_lists():
    assert keys(parse_layer_spec("output:1.6-9", SDXL)) == [("output", 1, i) for i in range(6, 10)]
    assert keys(parse_layer_spec("middle, output:11", SD15)) == [("middle", 0, 0), ("output", 11, 0)]
    assert len(parse_layer_spec("input:7-8 5", SDXL)) == 20  # overlapping tokens are not doubled


@pytest.mark.parametrize("spec, message", [("output:30", "matches no self-attention"), ("hair", "cannot read"),
                                           ("9-3", "cannot read"), ("  ", "empty")])
def test_bad_custom_lists_explain(spec, message):
    with pytest.raises(ValueError, match=message):
        resolve_layers(spec, SD15, "sd1")


def test_omega_defaults():
    assert default_omega("sdxl") == 1.5 and default_omega("sd1") == 0.5


def test_the_flux_preset_single_is_refused_on_sd_models_by_name():
    with pytest.raises(ValueError, match="'single' is the FLUX preset.*reference, decoder, all or custom"):
        resolve_layers("single", SD15, "sd1")


def test_flux_presets_single_and_the_sd_names_that_mean_it():
    """On FLUX, 'single' is every single-stream block; 'reference'/'decoder' (saved workflows) mean the same blocks,
    and preset_note says so; other settings get no note."""
    from freecure_core.fasa.flux import preset_note, resolve_flux_layers
    single = [("single", j) for j in range(3)]
    assert resolve_flux_layers("single", 2, 3) == resolve_flux_layers("reference", 2, 3) == \
        resolve_flux_layers("decoder", 2, 3) == single
    assert "= 'single'" in preset_note("reference") and preset_note("decoder").startswith("layers 'decoder'")
    assert preset_note("single") is None and preset_note("all") is None and preset_note("single:1-2") is None
