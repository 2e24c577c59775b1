"""Label schemas: attributes are looked up by label name, so two models with different class orders agree."""
import numpy as np
import pytest

from freecure_core.parsing.schema import (ATTRIBUTES, CELEBAMASK_HQ_19, SCHEMAS, SEGFORMER_FACE_19, LabelSchema,
                                          palette)


def test_celebamask_order_matches_the_reference_code():
    s = CELEBAMASK_HQ_19
    assert s.n_classes == 19
    assert s.ids_for(["hair"]) == [17]
    assert s.ids_for(["eyes"]) == [4, 5]
    assert s.ids_for(["glasses"]) == [6]
    assert s.ids_for(["mouth"]) == [11, 12, 13]
    assert s.ids_for(["lips"]) == [12, 13]
    assert s.ids_for(["earrings", "hat", "necklace"]) == [9, 15, 18]
    assert s.ids_for(["lower_face"]) == s.ids_for(["skin"]) == [1]


def test_segformer_order_differs_and_is_looked_up_by_name():
    s = SEGFORMER_FACE_19
    assert s.ids_for(["hair"]) == [13] != CELEBAMASK_HQ_19.ids_for(["hair"])
    assert s.ids_for(["glasses"]) == [3]
    assert s.ids_for(["eyes"]) == [4, 5]
    assert s.ids_for(["brows"]) == [6, 7]
    assert s.ids_for(["earrings"]) == [15]
    assert s.ids_for(["necklace"]) == [16]
    assert s.ids_for(["cloth"]) == [18]
    for schema in (CELEBAMASK_HQ_19, SEGFORMER_FACE_19):
        for attribute in ATTRIBUTES:
            ids = schema.ids_for([attribute])
            names = {schema.labels[i] for i in ids}
            assert names == set(schema.attribute_labels[attribute])


def test_ids_are_sorted_unique_and_case_insensitive():
    assert CELEBAMASK_HQ_19.ids_for(["Lips", "mouth", " lips "]) == [11, 12, 13]
    assert CELEBAMASK_HQ_19.ids_for([]) == []
    assert CELEBAMASK_HQ_19.ids_for("hair") == [17]


def test_unknown_attribute_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown attribute.*'beard'.*known attributes: hair, eyes.*lower_face"):
        CELEBAMASK_HQ_19.ids_for(["hair", "beard"])


def test_label_ids_and_short_spellings():
    assert CELEBAMASK_HQ_19.id("hair") == 17 and SEGFORMER_FACE_19.id("hair") == 13
    assert CELEBAMASK_HQ_19.id("eye_g") == CELEBAMASK_HQ_19.id("eyeglasses") == 6
    assert SEGFORMER_FACE_19.id("eyeglasses") == 3
    with pytest.raises(ValueError, match=r"no label 'beard'.*labels are background, skin"):
        CELEBAMASK_HQ_19.id("beard")


def test_schema_validates_its_attribute_map():
    with pytest.raises(ValueError, match="unknown label"):
        LabelSchema("bad", ("background", "hair"), {"eyes": ("l_eye",)})
    assert hash(CELEBAMASK_HQ_19) == hash(CELEBAMASK_HQ_19)  # usable as a cache key despite the dict


def test_schemas_registry_and_palette():
    assert SCHEMAS == {"celebamask_hq_19": CELEBAMASK_HQ_19, "segformer_face_19": SEGFORMER_FACE_19}
    for schema in SCHEMAS.values():
        colours = palette(schema)
        assert colours.shape == (19, 3) and colours.dtype == np.uint8
        assert (colours[0] == 0).all()
        assert len({tuple(c) for c in colours}) == 19  # distinct
        np.testing.assert_array_equal(colours, palette(schema))
    # the same class gets the same colour whichever model produced it
    a, b = palette(CELEBAMASK_HQ_19), palette(SEGFORMER_FACE_19)
    assert (a[17] == b[13]).all() and (a[6] == b[3]).all()
