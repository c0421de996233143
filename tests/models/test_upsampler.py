"""The upsamplers (§2.1): conv-only, low-res concatenation, noise conditioning, crops, corruptions."""
import pytest
import torch

from unclip.data.corruptions import BSRConfig, bsr_degradation, gaussian_blur, gaussian_kernel
from unclip.diffusion import GaussianDiffusion, make_betas
from unclip.models import build, random_aligned_crop, sample_upsampler
from unclip.models.sampling import StageSettings
from unclip.nn import ImageAttentionBlock

from .helpers import perturb


@pytest.mark.parametrize("stage", ["sr256", "sr1024"])
def test_upsampler_is_conv_only_and_uses_low_res(stage):
    torch.manual_seed(0)
    model = perturb(build(stage, "tiny")).eval()
    assert not any(isinstance(m, ImageAttentionBlock) for m in model.modules())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    low = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        out = model(x, t, low)
        assert out.shape == (2, 3, 16, 16)
        assert not torch.allclose(out, model(x, t, low + 1))
        # fully convolutional: trained on crops, run at 4× the crop size
        assert model(torch.randn(1, 3, 64, 64), t[:1], torch.randn(1, 3, 16, 16)).shape == (1, 3, 64, 64)


def test_random_aligned_crop_pairs_the_same_pixels():
    high = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    low = high[:, :, ::4, ::4]  # pixel (i, j) of low is pixel (4i, 4j) of high
    hi, lo = random_aligned_crop(high, low, 16, generator=torch.Generator().manual_seed(0))
    assert hi.shape == (2, 3, 16, 16) and lo.shape == (2, 3, 4, 4)
    assert torch.equal(hi[:, :, ::4, ::4], lo)
    with pytest.raises(ValueError, match="multiple"):
        random_aligned_crop(high, low, 10)


def test_sample_upsampler_full_size_ddim():
    torch.manual_seed(0)
    model = perturb(build("sr256", "tiny"), std=0.01).eval()
    diffusion = GaussianDiffusion(make_betas("cosine"))
    out = sample_upsampler(model, diffusion, torch.rand(1, 3, 8, 8) * 2 - 1, settings=StageSettings("ddim", 3),
                           mean_type="eps", generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_gaussian_blur_matches_paper_kernel_and_preserves_constants():
    k = gaussian_kernel(3, 0.6)
    assert k.shape == (3, 3) and abs(k.sum().item() - 1) < 1e-6 and k[1, 1] == k.max()
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert torch.allclose(gaussian_blur(flat), flat, atol=1e-6)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    y = gaussian_blur(x)
    assert y.shape == x.shape and y.std() < x.std()


def test_bsr_degradation_is_random_bounded_and_reproducible():
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    a = bsr_degradation(x, torch.Generator().manual_seed(0))
    b = bsr_degradation(x, torch.Generator().manual_seed(0))
    c = bsr_degradation(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1 and (a - x).abs().mean() > 0.01
    # anisotropic rotated kernels are normalised and not symmetric under transpose
    k = gaussian_kernel(9, 0.8, 3.0, 0.4)
    assert abs(k.sum().item() - 1) < 1e-6 and not torch.allclose(k, k.T)
    mild = BSRConfig(iso_sigma=(0.1, 0.1), p_isotropic=1.0, resize_scale=(1.0, 1.0), noise_sigma=(0.0, 0.0),
                     jpeg_quality=(95, 95))
    ramp = torch.linspace(-0.8, 0.8, 32)
    smooth = torch.stack([ramp[None, :].expand(32, 32), ramp[:, None].expand(32, 32),
                          0.5 * ramp[None, :] * ramp[:, None]])
    smooth = smooth[None].expand(2, -1, -1, -1)  # JPEG keeps a smooth image; noise would lose its chroma
    assert (bsr_degradation(smooth, torch.Generator().manual_seed(0), mild) - smooth).abs().mean() < 0.03
