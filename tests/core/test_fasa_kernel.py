"""The three FASA kernels (kernel.py) against an independent float64 softmax and against each other.

FREECURE_TEST_DEVICE=cuda runs them on a GPU (bench/gpu_check.sh does); the default is the CPU.
"""
import math
import os

import pytest
import torch

from freecure_core.fasa import kernel
from freecure_core.fasa.attention import fasa_attention
from freecure_core.fasa.selection import select_keys

DEVICE = torch.device(os.environ.get("FREECURE_TEST_DEVICE", "cpu"))
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# max |kernel - float64| allowed, per dtype, for unit-scale inputs (rounding of q, k, v and the output)
TOL = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2.5e-2}


def dense(qh, kh, vh, kf, vf, bias, logit_bias=None):
    """float64 softmax over [kh | kf] with +bias (B|1, M) on the FD logits."""
    qh, kh, vh, kf, vf = (t.double().cpu() for t in (qh, kh, vh, kf, vf))
    k, v = torch.cat([kh, kf], 2), torch.cat([vh, vf], 2)
    logits = qh @ k.transpose(-1, -2) / math.sqrt(qh.shape[-1])
    full = torch.cat([torch.zeros(bias.shape[0], kh.shape[2], dtype=torch.float64), bias.double().cpu()], 1)
    logits = logits + full[:, None, None, :]
    if logit_bias is not None:
        logits = logits + logit_bias.double().cpu()
    return torch.softmax(logits, -1) @ v


def operands(b=2, h=3, n=50, length=50, m=30, d=64, dtype=torch.float32, seed=0, soft=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(DEVICE, dtype)
    weights = torch.rand(m, generator=g)
    weights = weights if soft else (weights > 0.5).float()
    weights[weights < 0.2] = 0
    sel = select_keys(weights, 1.7, DEVICE).groups[0]
    kf, vf = r(b, h, m, d), r(b, h, m, d)
    return (r(b, h, n, d), r(b, h, length, d), r(b, h, length, d), kf.index_select(2, sel.index),
            vf.index_select(2, sel.index), sel.bias)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["folded", "masked", "reference"])
@pytest.mark.parametrize("d", [8, 40, 64, 128])
def test_each_kernel_matches_float64(name, dtype, d):
    qh, kh, vh, kf, vf, bias = operands(d=d, dtype=dtype)
    out = kernel.attend(qh, kh, vh, kf, vf, bias, kernel=name)
    assert out.dtype == dtype and out.shape == qh.shape and out.device.type == DEVICE.type
    err = (out.double().cpu() - dense(qh, kh, vh, kf, vf, bias)).abs().max().item()
    assert err <= TOL[dtype], f"{name} {dtype} d={d}: max error {err:.3g} > {TOL[dtype]}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fast_kernels_match_the_fp32_reference(dtype):
    qh, kh, vh, kf, vf, bias = operands(dtype=dtype, soft=False, seed=3)
    ref = kernel.attend(qh, kh, vh, kf, vf, bias, kernel="reference").double()
    for name in ("split", "folded", "masked"):
        err = (kernel.attend(qh, kh, vh, kf, vf, bias, kernel=name).double() - ref).abs().max().item()
        assert err <= TOL[dtype], f"{name} vs reference in {dtype}: {err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("d", [8, 40, 64, 128])
@pytest.mark.parametrize("omega", [0.0, 1.7, -2.0, 9.0])
def test_split_kernel_with_one_bias_matches_float64(dtype, d, omega):
    """A binary mask gives every FD key the bias omega: two mask-free calls merged by their log-sum-exps."""
    qh, kh, vh, kf, vf, _ = operands(d=d, dtype=dtype, soft=False, seed=7)
    assert kernel.attention_lse(qh, kh, vh) is not None, "PyTorch's log-sum-exp attention op is missing here"
    out = kernel.attend(qh, kh, vh, kf, vf, omega, kernel="split")
    ref = dense(qh, kh, vh, kf, vf, torch.full((1, kf.shape[2]), omega, dtype=torch.float64))
    err = (out.double().cpu() - ref).abs().max().item()
    assert out.dtype == dtype and err <= TOL[dtype], f"split {dtype} d={d} omega={omega}: {err:.3g}"


def test_split_is_chosen_for_one_bias_and_falls_back_otherwise():
    q = torch.zeros(1, 1, 1, 64, device=DEVICE)
    other = "folded" if DEVICE.type == "cuda" else "masked"
    assert kernel.choose_kernel("auto", q, False, one_bias=True) == "split"
    assert kernel.choose_kernel("auto", q, False, one_bias=False) == other  # per-key (soft) biases
    assert kernel.choose_kernel("split", q, True, one_bias=True) == "masked"  # an attention mask
    assert kernel.choose_kernel("split", q.double(), False, one_bias=True) == other
    qh, kh, vh, kf, vf, bias = operands(soft=True)
    ref = kernel.attend(qh, kh, vh, kf, vf, bias, kernel="reference")
    assert torch.allclose(kernel.attend(qh, kh, vh, kf, vf, bias, kernel="split"), ref, atol=2e-5)


def test_a_large_bias_and_per_row_biases_fold_exactly():
    """Biases far from 0 (omega 8, ln of small weights) and one bias row per batch row survive the hi/lo split."""
    g = torch.Generator().manual_seed(4)
    qh, kh, vh = (torch.randn(2, 2, 20, 16, generator=g).to(DEVICE) for _ in range(3))
    kf, vf = (torch.randn(2, 2, 12, 16, generator=g).to(DEVICE) for _ in range(2))
    bias = torch.stack([torch.linspace(-9.0, 8.0, 12), torch.linspace(3.0, -4.0, 12)]).to(DEVICE)
    for dtype in DTYPES:
        args = [t.to(dtype) for t in (qh, kh, vh, kf, vf)]
        ref = dense(*args, bias)
        err = (kernel.attend(*args, bias, kernel="folded").double().cpu() - ref).abs().max().item()
        assert err <= TOL[dtype], f"{dtype}: {err:.3g}"


def test_no_extra_keys_is_plain_attention():
    qh, kh, vh, kf, vf, _ = operands()
    empty = kf[:, :, :0]
    plain = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh)
    for name in ("split", "folded", "masked", "reference"):
        assert torch.allclose(kernel.attend(qh, kh, vh, empty, empty, 0.0, kernel=name), plain, atol=1e-5)


def test_an_attention_mask_is_honoured_and_folded_falls_back_to_masked():
    qh, kh, vh, kf, vf, bias = operands(b=1, n=20, length=20)
    g = torch.Generator().manual_seed(9)
    logit_bias = torch.randn(1, 1, 20, 20 + kf.shape[2], generator=g).to(DEVICE)
    assert kernel.choose_kernel("folded", qh, True) == "masked"
    ref = dense(qh, kh, vh, kf, vf, bias, logit_bias)
    for name in ("split", "folded", "masked", "reference"):
        out = kernel.attend(qh, kh, vh, kf, vf, bias, kernel=name, logit_bias=logit_bias)
        assert (out.double().cpu() - ref).abs().max().item() <= 2e-5


def test_auto_choice_and_padding():
    q = torch.zeros(1, 1, 1, 64)
    assert kernel.choose_kernel("auto", q, False) == "masked"  # CPU, per-key biases: the flash kernel takes the mask
    assert kernel.choose_kernel("auto", q.double(), False) == "reference"
    assert kernel.fold_width(64, torch.float16, "cuda") == 72 and kernel.fold_width(64, torch.float16, "cpu") == 66
    assert kernel.fold_width(128, torch.bfloat16, "cuda") == 136
    with pytest.raises(ValueError, match="unknown FASA kernel"):
        kernel.choose_kernel("flash", q, False)
    if DEVICE.type == "cuda":
        assert kernel.choose_kernel("auto", q.to(DEVICE, torch.float16), False) == "folded"


@pytest.mark.parametrize("name", ["auto", "split", "folded", "masked", "reference"])
def test_fasa_attention_per_row_selection_with_each_kernel(name):
    """Different masks per image: each row its own FD keys, an empty row plain attention, any kernel."""
    g = torch.Generator().manual_seed(6)
    q, k, v, kf, vf = (torch.randn(3, 24, 32, generator=g).to(DEVICE) for _ in range(5))
    rows = (torch.rand(3, 24, generator=g) > 0.6).float()
    rows[1] = 0
    sel = select_keys(rows, 0.9, DEVICE)
    assert [gr.rows for gr in sel.groups] == [slice(0, 1), slice(2, 3)]
    assert all(gr.fd_bias == 0.9 for gr in sel.groups)  # binary rows: one bias, the split kernel's case
    out = fasa_attention(q, k, v, kf, vf, None, 0.0, 4, selection=sel, kernel=name)
    ref = fasa_attention(q, k, v, kf, vf, rows, 0.9, 4, kernel="reference")
    assert torch.allclose(out, ref, atol=2e-5)
