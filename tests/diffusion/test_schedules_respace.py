"""Schedules against their defining formulas; respacing keeps ᾱ exactly; spec errors are clear."""

import math

import numpy as np
import pytest

from unclip.diffusion import GaussianDiffusion, make_betas, respace_betas, space_timesteps


def test_cosine_matches_nichol_dhariwal():
    T, s = 1000, 0.008
    betas = make_betas("cosine", T)
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    expected = np.minimum([1 - f[t + 1] / f[t] for t in range(T)], 0.999)
    np.testing.assert_allclose(betas, expected, rtol=1e-12)
    assert betas.dtype == np.float64 and betas[-1] == 0.999 and np.all(betas > 0)
    # ᾱ_t = f(t+1)/f(0) wherever the clip did not act.
    acp = np.cumprod(1 - betas)
    np.testing.assert_allclose(acp[:-1], np.array(f[1:-1]) / f[0], rtol=1e-10)


@pytest.mark.parametrize("T", [1000, 250])
def test_linear_matches_ho_scaled(T):
    betas = make_betas("linear", T)
    assert betas[0] == pytest.approx(1e-4 * 1000 / T, rel=1e-12)
    assert betas[-1] == pytest.approx(0.02 * 1000 / T, rel=1e-12)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) * (1000 / T) / (T - 1), rtol=1e-9)


def test_schedule_errors():
    with pytest.raises(ValueError, match="'cosin'.*expected one of"):
        make_betas("cosin")
    with pytest.raises(ValueError, match="num_timesteps=0"):
        make_betas("cosine", 0)
    with pytest.raises(ValueError, match="more than 20"):
        make_betas("linear", 10)


BASE = GaussianDiffusion(make_betas("cosine"))


@pytest.mark.parametrize("spec, count", [("27", 27), (27, 27), ("ddim15", 15), ("10,15,20", 45), ([999, 0, 500, 3], 4)])
def test_respaced_alphas_cumprod_are_exactly_the_originals(spec, count):
    chain = BASE.respace(spec)
    assert chain.num_timesteps == count and len(set(chain.timesteps)) == count
    assert np.array_equal(chain.alphas_cumprod, BASE.alphas_cumprod[chain.timesteps])
    # the respaced betas reproduce them through the usual cumprod too, up to the rounding of 1 − β
    # when β ≈ 0.999 (why GaussianDiffusion keeps ᾱ itself rather than recomputing it)
    for betas in (chain.betas, respace_betas(BASE.alphas_cumprod, chain.timesteps)):
        np.testing.assert_allclose(np.cumprod(1 - betas), chain.alphas_cumprod, rtol=1e-7)


def test_spacing_rules():
    assert space_timesteps(1000, "27")[0] == 0 and space_timesteps(1000, "27")[-1] == 999
    ddim = space_timesteps(1000, "ddim15")
    assert ddim[0] == 0 and len(set(np.diff(ddim))) == 1  # one even stride starting at t = 0
    assert space_timesteps(10, "ddim10") == list(range(10))
    sec = space_timesteps(1000, "10,15,20")  # sections of 334, 333, 333 steps
    assert [sum(lo <= t < hi for t in sec) for lo, hi in ((0, 334), (334, 667), (667, 1000))] == [10, 15, 20]
    assert {0, 333, 334, 666, 667, 999} <= set(sec)
    assert space_timesteps(1000, 1000) == list(range(1000))


def test_respace_of_respaced_keeps_original_ids():
    twice = BASE.respace(100).respace(10)
    assert np.array_equal(twice.timesteps, BASE.respace(100).timesteps[space_timesteps(100, 10)])
    assert np.array_equal(twice.alphas_cumprod, BASE.alphas_cumprod[twice.timesteps])


@pytest.mark.parametrize("spec, why", [
    ("", "empty"), ("abc", "not an integer"), ("10,x", "not an integer"), ("ddim0", r"\[1, 1000\]"),
    ("ddim999", "no integer stride"), (0, "cannot keep 0"), (1001, "cannot keep 1001"), ("-3", "cannot keep -3"),
    ([], "empty"), ([1, 1], "distinct"), ([0, 1000], r"\[0, 1000\)"), ([0.5], "int"), (True, "bool"), (2.5, "float"),
])
def test_space_timesteps_errors_name_the_spec(spec, why):
    with pytest.raises(ValueError, match="invalid timestep spec") as info:
        space_timesteps(1000, spec)
    assert repr(spec) in str(info.value) and "expected" in str(info.value)
    assert __import__("re").search(why, str(info.value))
