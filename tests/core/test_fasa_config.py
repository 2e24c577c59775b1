"""FASA Config's omega: an explicit auto choice beside any number (-1 included), and how saved workflows read."""
import pytest
import torch

from freecure_core.fasa.config import OMEGA_MODES, FASAConfig, read_omega


def test_omega_modes():
    assert OMEGA_MODES[0] == "-1 = auto"  # the node's default: how a workflow saved before omega_mode reads
    assert read_omega(-1.0) is None and read_omega(-1.0, "-1 = auto") is None
    assert read_omega(1.5) == 1.5 and read_omega(0.0) == 0.0
    assert read_omega(1.5, "auto") is None and read_omega(-1.0, "auto") is None
    assert read_omega(-1.0, "value") == -1.0 and read_omega(2.0, "value") == 2.0
    with pytest.raises(ValueError, match="omega_mode 'bogus'"):
        read_omega(1.0, "bogus")


def test_config_omega_none_is_the_family_default_and_any_number_is_kept():
    mask = torch.ones(1, 8, 8)
    assert FASAConfig(mask=mask).omega_for("sdxl") == 1.5 and FASAConfig(mask=mask).omega_for("flux") == 2.0
    assert FASAConfig(mask=mask, omega=-1.0).omega_for("sd1") == -1.0  # no sentinel in the core
    assert FASAConfig(mask=mask, omega=0.0).omega_for("sd1") == 0.0
    with pytest.raises(ValueError, match="outside -10..10"):
        FASAConfig(mask=mask, omega=11.0)


def test_soft_masks_are_not_empty():
    assert not FASAConfig(mask=torch.full((1, 8, 8), 0.2)).mask_is_empty()
    assert FASAConfig(mask=torch.zeros(1, 8, 8)).mask_is_empty()
