"""Multi-scale deformable attention: both implementations against a per-sample reference and each other."""

from __future__ import annotations

import math

import pytest
import torch

from seem.models.pixel_decoders.ms_deform_attn import (
    MSDeformAttn,
    ms_deform_attn_core,
    ms_deform_attn_gather,
    ms_deform_attn_grid_sample,
)

SHAPES = [(5, 7), (3, 4), (2, 2), (1, 1)]


def _inputs(n: int = 2, lq: int = 9, m: int = 3, d: int = 4, p: int = 2, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(1)
    s = sum(h * w for h, w in SHAPES)
    value = torch.randn(n, s, m, d, generator=g, dtype=dtype)
    # locations spill outside [0, 1] on purpose: zero padding must apply
    loc = torch.rand(n, lq, m, len(SHAPES), p, 2, generator=g, dtype=dtype) * 1.6 - 0.3
    attn = torch.rand(n, lq, m, len(SHAPES) * p, generator=g, dtype=dtype).softmax(-1).view(n, lq, m, len(SHAPES), p)
    return value, loc, attn


def _naive(value: torch.Tensor, loc: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Per-sample bilinear sampling, zero padding, align_corners=False (pixel centres at (i + 0.5) / size)."""
    n, _, m, d = value.shape
    _, lq, _, _, p, _ = loc.shape
    starts = [0]
    for h, w in SHAPES:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(n, lq, m, d, dtype=value.dtype)
    for b in range(n):
        for q in range(lq):
            for h_ in range(m):
                for lvl, (hh, ww) in enumerate(SHAPES):
                    vmap = value[b, starts[lvl] : starts[lvl + 1], h_].view(hh, ww, d)
                    for k in range(p):
                        x = loc[b, q, h_, lvl, k, 0].item() * ww - 0.5
                        y = loc[b, q, h_, lvl, k, 1].item() * hh - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        acc = torch.zeros(d, dtype=value.dtype)
                        for yy, wy in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
                                if 0 <= xx < ww and 0 <= yy < hh:
                                    acc += wx * wy * vmap[yy, xx]
                        out[b, q, h_] += attn[b, q, h_, lvl, k] * acc
    return out.reshape(n, lq, m * d)


@pytest.mark.parametrize("impl", [ms_deform_attn_gather, ms_deform_attn_grid_sample])
def test_core_matches_per_sample_reference(impl) -> None:
    value, loc, attn = _inputs(dtype=torch.float64)
    torch.testing.assert_close(impl(value, SHAPES, loc, attn), _naive(value, loc, attn), rtol=1e-10, atol=1e-10)


def test_pixel_centres_return_pixel_values_and_outside_is_zero() -> None:
    value = torch.arange(5 * 7, dtype=torch.float32).view(1, 35, 1, 1)
    shapes = [(5, 7)]
    # pixel (row 2, col 3) centre, and a point far outside the map
    loc = torch.tensor([[(3.5 / 7, 2.5 / 5)], [(1.5, -0.6)]], dtype=torch.float32).view(1, 2, 1, 1, 1, 2)
    attn = torch.ones(1, 2, 1, 1, 1)
    for impl in ("gather", "grid_sample"):
        out = ms_deform_attn_core(value, shapes, loc, attn, impl=impl)
        assert out[0, 0, 0].item() == pytest.approx(2 * 7 + 3)
        assert out[0, 1, 0].item() == 0.0


def test_gather_equals_grid_sample_at_model_scale() -> None:
    g = torch.Generator().manual_seed(0)
    shapes = [(10, 15), (19, 29), (38, 58), (76, 116)]
    s = sum(h * w for h, w in shapes)
    value = torch.randn(1, s, 8, 32, generator=g)
    loc = torch.rand(1, 300, 8, 4, 4, 2, generator=g) * 1.2 - 0.1
    attn = torch.rand(1, 300, 8, 16, generator=g).softmax(-1).view(1, 300, 8, 4, 4)
    a = ms_deform_attn_gather(value, shapes, loc, attn)
    b = ms_deform_attn_grid_sample(value, shapes, loc, attn)
    assert (a - b).abs().max().item() <= 1e-5 * b.abs().max().item()


def test_gradients_match_between_implementations() -> None:
    grads = []
    for impl in (ms_deform_attn_gather, ms_deform_attn_grid_sample):
        value, loc, attn = _inputs(dtype=torch.float64)
        for t in (value, loc, attn):
            t.requires_grad_(True)
        impl(value, SHAPES, loc, attn).square().sum().backward()
        grads.append([t.grad for t in (value, loc, attn)])
    for ga, gb in zip(*grads, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-9)


def test_module_precomputed_value_and_box_references() -> None:
    torch.manual_seed(0)
    attn_mod = MSDeformAttn(d_model=16, n_levels=4, n_heads=4, n_points=3)
    with torch.no_grad():  # non-trivial offsets/weights
        for p in attn_mod.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    s = sum(h * w for h, w in SHAPES)
    memory = torch.randn(2, s, 16)
    query = torch.randn(2, 6, 16)
    for ref in (torch.rand(2, 6, 4, 2), torch.rand(2, 6, 4, 4)):
        direct = attn_mod(query, ref, memory, SHAPES)
        cached = attn_mod(query, ref, None, SHAPES, value=attn_mod.project_value(memory))
        torch.testing.assert_close(direct, cached)
        attn_mod.impl = "grid_sample"
        torch.testing.assert_close(attn_mod(query, ref, memory, SHAPES), direct, rtol=1e-5, atol=1e-6)
        attn_mod.impl = "auto"


def test_bad_inputs_raise_clear_errors() -> None:
    value, loc, attn = _inputs()
    with pytest.raises(ValueError, match="spatial_shapes"):
        ms_deform_attn_gather(value, [(5, 7), (3, 4), (2, 2), (2, 1)], loc, attn)
    with pytest.raises(ValueError, match="attention_weights"):
        ms_deform_attn_grid_sample(value, SHAPES, loc, attn[..., :1])
    with pytest.raises(ValueError, match="sampling_locations"):
        ms_deform_attn_gather(value, SHAPES, loc[..., 0], attn)
    with pytest.raises(ValueError, match="implementation"):
        ms_deform_attn_core(value, SHAPES, loc, attn, impl="cuda")  # type: ignore[arg-type]
    mod = MSDeformAttn(8, 4, 2, 2)
    with pytest.raises(ValueError, match="reference_points"):
        mod(torch.randn(1, 3, 8), torch.rand(1, 3, 4, 3), torch.randn(1, value.shape[1], 8), SHAPES)
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(10, 4, 3, 2)
