"""Seeding and the RNG states a checkpoint carries: seed_everything repeats draws, and a captured state
restores the exact next draws of Python, NumPy and torch, also after a weights-only torch.save/load."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from vocseg.runtime.seeding import capture_rng_state, restore_rng_state, seed_everything


@pytest.fixture(autouse=True)
def _restore_global_state(torch_global_state):
    """Every test here changes the global generators (and one the determinism flags): put them back."""


def _draws() -> tuple:
    """The next draws of all three generators, NumPy's Gaussian (with its cached second value) included."""
    return (
        [random.random() for _ in range(3)],
        random.getrandbits(64),
        np.random.rand(3).tolist(),
        np.random.randn(3).tolist(),  # odd count: leaves a cached Gaussian behind
        np.random.randint(0, 1 << 30, 4).tolist(),
        torch.rand(3).tolist(),
        torch.randint(0, 1 << 30, (4,)).tolist(),
    )


def test_seed_everything_makes_the_draws_repeat():
    seed_everything(123)
    first = _draws()
    seed_everything(123)
    assert _draws() == first
    seed_everything(124)
    assert _draws() != first


def test_seed_everything_matches_seeding_each_library_itself():
    seed_everything(7)
    ours = _draws()
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    assert _draws() == ours


def test_deterministic_asks_torch_for_deterministic_algorithms():
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    seed_everything(0)
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    seed_everything(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.benchmark is False


def test_capture_and_restore_give_back_the_exact_next_draws():
    seed_everything(5)
    _draws()  # move every generator, NumPy's into a state with a cached Gaussian
    assert np.random.get_state(legacy=False)["has_gauss"] == 1
    state = capture_rng_state()
    expected = _draws()
    _draws()  # move them on again
    restore_rng_state(state)
    assert _draws() == expected
    restore_rng_state(state)  # a state can be restored more than once
    assert _draws() == expected


def test_the_captured_state_survives_a_weights_only_save_and_load():
    seed_everything(11)
    np.random.randn(1)  # a cached Gaussian, the numpy state's float field
    state = capture_rng_state()
    expected = _draws()
    buf = io.BytesIO()
    torch.save({"rng": state}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["rng"]
    seed_everything(999)
    restore_rng_state(loaded)
    assert _draws() == expected
