"""The v2 decoder's fast paths give what the official formulation gives (small random tensors)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metrocli.model.dpt_gru import (
    BIN_CHUNK,
    ConvGRU,
    DepthBinHead,
    FusionBlock,
    Reassemble,
    convex_upsample,
    normalise_normal,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_convex_upsample_matches_the_unfold_formulation():
    b, d, h, w, f = 2, 6, 5, 7, 4
    state = torch.randn(b, d, h, w)
    mask = torch.randn(b, 9 * f * f, h, w) * 3
    weights = torch.softmax(mask.view(b, 1, 9, f, f, h, w), dim=2)
    patches = F.unfold(state, [3, 3], padding=1).view(b, d, 9, 1, 1, h, w)
    ref = torch.sum(weights * patches, dim=2).permute(0, 1, 4, 2, 5, 3).reshape(b, d, f * h, f * w)
    out = convex_upsample(state, mask.contiguous(memory_format=torch.channels_last), f)
    assert out.shape == (b, d, f * h, f * w) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # bf16 inputs are upsampled in float32
    assert convex_upsample(state.bfloat16(), mask.bfloat16(), f).dtype == torch.float32


def test_conv_gru_equals_the_concatenated_formulation():
    hidden, c_in = 8, 10
    gru = ConvGRU(hidden, c_in).eval()
    h = torch.tanh(torch.randn(1, hidden, 6, 9))
    inputs = (torch.randn(1, 4, 6, 9), torch.randn(1, 6, 6, 9))
    gates = torch.randn(1, 3 * hidden, 6, 9)
    cz, cr, cq = gates.split(hidden, dim=1)
    x = torch.cat(inputs, dim=1)
    hx = torch.cat([h, x], dim=1)
    z = torch.sigmoid(gru.convz(hx) + cz)
    r = torch.sigmoid(gru.convr(hx) + cr)
    q = torch.tanh(gru.convq(torch.cat([r * h, x], dim=1)) + cq)
    ref = (1 - z) * h + z * q
    with torch.inference_mode():
        torch.testing.assert_close(gru(h, gates, *inputs), ref, rtol=1e-5, atol=1e-6)
        # a single input is used as it is
        torch.testing.assert_close(
            ConvGRU(hidden, 4)(h, gates, inputs[0]).shape, torch.Size([1, hidden, 6, 9])
        )


def test_depth_bin_head_chunked_expectation_matches_plain_softmax():
    head = DepthBinHead(5, (0.1, 200.0)).eval()
    # more pixels than one chunk, not a multiple of it
    height, width = 3, BIN_CHUNK // 2 + 17
    x = torch.randn(1, 5, height, width).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = head(x)
        prob = head.conv2(F.relu(head.conv1(x))).softmax(dim=1)
        ref = torch.sum(prob * head.bins_m.view(1, -1, 1, 1), 1, keepdim=True)
    assert out.shape == (1, 1, height, width)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert float(out.min()) >= 0.1 and float(out.max()) <= 200.0


def test_reassemble_and_fusion_convolve_before_upsampling_exactly():
    reassemble = Reassemble(dim=16, prefix_tokens=5, out_channels=8, scale=3.5).eval()
    patches, prefix = torch.randn(1, 4, 6, 16), torch.randn(1, 1, 1, 5 * 16)
    fusion = FusionBlock(12, 6, has_skip=True, upsample=7 / 4).eval()
    x, skip = torch.randn(1, 12, 8, 10), torch.randn(1, 12, 8, 10)
    with torch.inference_mode():
        tokens = F.gelu(reassemble.patch_proj(patches) + reassemble.prefix_proj(prefix)).permute(0, 3, 1, 2)
        ref = reassemble.resample(F.interpolate(tokens, scale_factor=3.5, mode="nearest"))
        torch.testing.assert_close(reassemble(patches, prefix), ref, rtol=1e-5, atol=1e-6)

        y = fusion.trunk(x + fusion.skip(skip))
        up = F.interpolate(y, scale_factor=7 / 4, mode="bilinear", align_corners=True)
        torch.testing.assert_close(fusion(x, skip), fusion.project(up), rtol=1e-5, atol=1e-5)


def test_normalise_normal_is_float32_unit_length():
    raw = torch.randn(1, 4, 3, 3).bfloat16()
    out = normalise_normal(raw)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[:, :3].norm(dim=1), torch.ones(1, 3, 3), rtol=1e-5, atol=1e-5)
    assert float(out[:, 3].min()) > 0.01
