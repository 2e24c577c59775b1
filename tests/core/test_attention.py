"""fasa_attention against a dense float64 implementation of the reference semantics."""
import math

import pytest
import torch

from freecure_core.fasa import attention, kernel
from freecure_core.fasa.attention import fasa_attention, plain_attention


def dense_fasa(q, k, v, k_fd, v_fd, key_mask, omega, heads):
    """Reference: logits over [K_pd | K_fd], +omega inside the mask (> 0.5), -inf outside, one softmax (float64)."""
    return dense_soft_fasa(q, k, v, k_fd, v_fd, (key_mask > 0.5).double(), omega, heads)


def make(b=1, n=48, m=48, heads=2, d=8, seed=0, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: (torch.randn(*s, generator=g) * scale).to(dtype)
    return r(b, n, heads * d), r(b, n, heads * d), r(b, n, heads * d), r(b, m, heads * d), r(b, m, heads * d)


def masks(m, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"empty": torch.zeros(m), "full": torch.ones(m), "sparse": (torch.rand(m, generator=g) < 0.25).float()}


TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("which", ["empty", "full", "sparse"])
@pytest.mark.parametrize("batch", [1, 3])
def test_matches_dense_reference(dtype, which, batch):
    q, k, v, kf, vf = make(b=batch, dtype=dtype)
    mask = masks(kf.shape[1])[which]
    out = fasa_attention(q, k, v, kf, vf, mask, 1.5, heads=2)
    ref = dense_fasa(q, k, v, kf, vf, mask, 1.5, heads=2)
    assert out.dtype == dtype and out.shape == q.shape
    assert torch.allclose(out.double(), ref, atol=TOL[dtype], rtol=TOL[dtype])


def test_per_row_masks_in_a_batch():
    q, k, v, kf, vf = make(b=3, m=40)
    rows = torch.stack([masks(40, s)["sparse"] for s in (1, 2, 3)])
    rows[2] = 0  # one image whose mask is empty
    out = fasa_attention(q, k, v, kf, vf, rows, 0.7, heads=2)
    assert torch.allclose(out.double(), dense_fasa(q, k, v, kf, vf, rows, 0.7, 2), atol=1e-5)
    assert torch.equal(out[2:], plain_attention(q[2:], k[2:], v[2:], 2))


def test_empty_mask_is_exactly_plain_attention():
    q, k, v, kf, vf = make(b=2)
    out = fasa_attention(q, k, v, kf, vf, torch.zeros(kf.shape[1]), 2.0, heads=2)
    assert torch.equal(out, plain_attention(q, k, v, 2))
    sdpa = torch.nn.functional.scaled_dot_product_attention(*(t.view(2, -1, 2, 8).transpose(1, 2) for t in (q, k, v)))
    assert torch.allclose(out, sdpa.transpose(1, 2).reshape(q.shape), atol=1e-6)


def test_omega_is_a_log_space_boost():
    """One FD key identical to one PD key: its weight relative to the PD copy is e^omega."""
    heads, d = 1, 4
    q = torch.randn(1, 1, d)
    k = torch.randn(1, 2, d)
    v = torch.tensor([[[1.0, 0, 0, 0], [0, 0, 0, 0]]])
    kf, vf = k[:, :1].clone(), torch.tensor([[[0.0, 1, 0, 0]]])
    omega = 1.3
    out = fasa_attention(q, k, v, kf, vf, torch.ones(1), omega, heads)
    assert out[0, 0, 1] / out[0, 0, 0] == pytest.approx(math.exp(omega), rel=1e-5)


def test_out_of_mask_keys_are_excluded_even_when_huge():
    q, k, v, kf, vf = make(n=8, m=8)
    mask = torch.zeros(8)
    mask[:3] = 1
    poisoned_k, poisoned_v = kf.clone(), vf.clone()
    poisoned_k[:, 3:] = 1e4
    poisoned_v[:, 3:] = float("nan")
    a = fasa_attention(q, k, v, kf, vf, mask, 1.0, 2)
    b = fasa_attention(q, k, v, poisoned_k, poisoned_v, mask, 1.0, 2)
    assert torch.equal(a, b)


def test_softmax_runs_in_fp32_for_half_inputs():
    q, k, v, kf, vf = make(dtype=torch.float16, scale=30.0)  # fp16 logits would overflow
    out = fasa_attention(q, k, v, kf, vf, torch.ones(kf.shape[1]), 2.0, 2)
    assert torch.isfinite(out).all()
    ref = dense_fasa(q, k, v, kf, vf, torch.ones(kf.shape[1]), 2.0, 2)
    assert torch.allclose(out.double(), ref, atol=0.05, rtol=0.01)


def test_query_chunking_gives_the_same_result(monkeypatch):
    q, k, v, kf, vf = make(n=50)
    mask = masks(kf.shape[1])["sparse"]
    whole = fasa_attention(q, k, v, kf, vf, mask, 1.0, 2)
    monkeypatch.setattr(kernel, "QUERY_CHUNK", 7)
    assert torch.allclose(fasa_attention(q, k, v, kf, vf, mask, 1.0, 2), whole, atol=1e-6)


def test_different_fd_token_count_is_allowed():
    q, k, v, kf, vf = make(n=30, m=12)
    mask = masks(12)["sparse"]
    assert torch.allclose(fasa_attention(q, k, v, kf, vf, mask, 0.5, 2).double(),
                          dense_fasa(q, k, v, kf, vf, mask, 0.5, 2), atol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (lambda q, k, v, kf, vf: (q, k, v, kf[:, :, :8], vf, torch.ones(48)), "foundation k/v"),
    (lambda q, k, v, kf, vf: (q, k, v, kf, vf, torch.ones(47)), "key_mask"),
    (lambda q, k, v, kf, vf: (q[0], k, v, kf, vf, torch.ones(48)), "must be"),
])
def test_bad_shapes_name_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        fasa_attention(*bad(*make()), 1.0, 2)


def test_non_finite_omega_is_refused():
    with pytest.raises(ValueError, match="omega"):
        fasa_attention(*make(), torch.ones(48), float("inf"), 2)


def dense_soft_fasa(q, k, v, k_fd, v_fd, weights, omega, heads):
    """Reference for soft masks: FD key bias omega + ln(m) where m > 0, -inf at m = 0 (float64)."""
    q, k, v, k_fd, v_fd = (t.double() for t in (q, k, v, k_fd, v_fd))
    b, n, c = q.shape
    d = c // heads
    split = lambda t: t.view(b, t.shape[1], heads, d).transpose(1, 2)
    qh, kh, vh = split(q), split(torch.cat([k, k_fd], 1)), split(torch.cat([v, v_fd], 1))
    logits = qh @ kh.transpose(-1, -2) / math.sqrt(d)
    w = (weights if weights.dim() == 2 else weights.unsqueeze(0).expand(b, -1)).double()
    fd_bias = torch.where(w > 0, omega + torch.log(w.clamp_min(1e-300)), torch.tensor(-math.inf, dtype=torch.float64))
    bias = torch.cat([torch.zeros(b, k.shape[1], dtype=torch.float64), fd_bias], 1)
    return (torch.softmax(logits + bias[:, None, None, :], dim=-1) @ vh).transpose(1, 2).reshape(b, n, c)


@pytest.mark.parametrize("batch", [1, 3])
def test_soft_mask_weights_are_exact(batch):
    """A feathered mask's values m reach FASA as weights: each FD key counts m * e^omega (bias omega + ln m)."""
    q, k, v, kf, vf = make(b=batch, m=40)
    g = torch.Generator().manual_seed(5)
    soft = torch.rand(batch, 40, generator=g)
    soft[soft < 0.3] = 0  # some keys out, the rest at weights in (0.3, 1)
    out = fasa_attention(q, k, v, kf, vf, soft, 1.2, heads=2)
    assert torch.allclose(out.double(), dense_soft_fasa(q, k, v, kf, vf, soft, 1.2, 2), atol=1e-5)
    shared = fasa_attention(q, k, v, kf, vf, soft[0], -0.7, heads=2)  # one mask for the batch, a negative omega
    assert torch.allclose(shared.double(), dense_soft_fasa(q, k, v, kf, vf, soft[0], -0.7, 2), atol=1e-5)


def test_a_binary_mask_gives_the_same_result_as_before_soft_weights():
    """m in {0, 1}: bias omega + ln 1 = omega exactly, so binary masks are unchanged (bit for bit vs +omega)."""
    q, k, v, kf, vf = make(b=2)
    mask = masks(kf.shape[1])["sparse"]
    idx = mask.nonzero().squeeze(1)
    hard = attention.joint_attention(q, k, v, kf.index_select(1, idx), vf.index_select(1, idx), 1.5, 2)
    assert torch.equal(fasa_attention(q, k, v, kf, vf, mask, 1.5, 2), hard)


def test_soft_weight_and_omega_zero_in_closed_form():
    """One FD key identical to one PD key: its weight relative to the PD copy is m * e^omega; omega = 0 keeps an
    in-mask FD key at its natural weight (the FreeCure code would exclude it: mask x 0 = 0 -> -inf)."""
    heads, d = 1, 4
    q = torch.randn(1, 1, d)
    k = torch.randn(1, 2, d)
    v = torch.tensor([[[1.0, 0, 0, 0], [0, 0, 0, 0]]])
    kf, vf = k[:, :1].clone(), torch.tensor([[[0.0, 1, 0, 0]]])
    for m, omega in ((0.25, 1.3), (1.0, 0.0), (0.5, 0.0), (0.8, -1.0)):
        out = fasa_attention(q, k, v, kf, vf, torch.tensor([m]), omega, heads)
        assert out[0, 0, 1] / out[0, 0, 0] == pytest.approx(m * math.exp(omega), rel=1e-5)


def test_logit_bias_is_chunked_with_the_queries(monkeypatch):
    """attend's optional per-query bias (an attention mask) is sliced with the query chunks."""
    g = torch.Generator().manual_seed(2)
    qh, kh, vh = (torch.randn(1, 2, n, 8, generator=g) for n in (50, 60, 60))
    bias, extra = torch.randn(1, 1, 50, 60, generator=g), torch.randn(1, 20, generator=g)
    split = lambda t: (t[:, :, :40], t[:, :, 40:])
    (kp, kf), (vp, vf) = split(kh), split(vh)
    whole = kernel.attend(qh, kp, vp, kf, vf, extra, logit_bias=bias)
    monkeypatch.setattr(kernel, "QUERY_CHUNK", 7)
    chunked = kernel.attend(qh, kp, vp, kf, vf, extra, logit_bias=bias)
    full = bias + torch.cat([torch.zeros(1, 40), extra], 1)[:, None, None]
    ref = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(8) + full, -1) @ vh
    assert torch.allclose(whole, ref, atol=1e-5) and torch.allclose(chunked, whole, atol=1e-6)
