"""Accounting: thesis Table 4.9 (MNIST: N = 60000, B = 4096, 300 epochs, delta = 1e-5, RDP as in Opacus)."""

import math

import pytest

from diffjax.privacy import PrivacyBudget, calibrate_noise, epsilon, steps_for_epochs

N, B, EPOCHS, DELTA = 60_000, 4096, 300, 1e-5
Q = B / N
STEPS = steps_for_epochs(EPOCHS, N, B)
TABLE_4_9 = [(0.2, 82.5), (1.0, 18.28125), (10.0, 2.48779)]  # (epsilon, sigma_DP), MNIST column


def test_steps_and_rate():
    assert STEPS == math.ceil(300 * 60_000 / 4096) == 4395
    assert Q == pytest.approx(0.0682667, rel=1e-5)


@pytest.mark.parametrize("eps_target, sigma", TABLE_4_9)
def test_table_4_9_epsilon(eps_target, sigma):
    eps = epsilon(sigma, Q, STEPS, DELTA)
    assert abs(eps / eps_target - 1) < 0.03, eps


@pytest.mark.parametrize("eps_target, sigma", TABLE_4_9)
def test_table_4_9_calibration(eps_target, sigma):
    s = calibrate_noise(eps_target, Q, STEPS, DELTA)
    assert abs(s / sigma - 1) < 0.03, s
    # the returned sigma satisfies the budget and is tight to ~1e-3
    assert epsilon(s, Q, STEPS, DELTA) <= eps_target
    assert epsilon(s / (1 + 2e-3), Q, STEPS, DELTA) > eps_target


def test_pld_is_tighter_than_rdp():
    # PLD (not used by the thesis) gives a smaller epsilon for the same sigma
    e_rdp = epsilon(18.28125, Q, STEPS, DELTA)
    e_pld = epsilon(18.28125, Q, STEPS, DELTA, accountant="pld")
    assert e_pld < e_rdp
    assert 0.8 < e_pld < 1.0


def test_monotone_and_edge_cases():
    assert epsilon(5.0, Q, 0, DELTA) == 0.0
    assert epsilon(0.0, Q, 10, DELTA) == math.inf
    assert epsilon(5.0, Q, 100, DELTA) < epsilon(5.0, Q, 200, DELTA)
    assert epsilon(5.0, Q, 100, DELTA) > epsilon(6.0, Q, 100, DELTA)
    with pytest.raises(ValueError, match="sample_rate"):
        epsilon(1.0, 1.5, 10, DELTA)
    with pytest.raises(ValueError, match="accountant"):
        epsilon(1.0, Q, 10, DELTA, accountant="gdp")
    with pytest.raises(ValueError, match="delta"):
        epsilon(1.0, Q, 10, 0.0)


def test_budget_refuses_before_training():
    b = PrivacyBudget.create(epsilon=10.0, delta=DELTA, dataset_size=N, batch_size=B, epochs=EPOCHS)
    assert b.steps == STEPS and abs(b.noise_multiplier / 2.48779 - 1) < 0.03
    assert b.planned_epsilon <= 10.0
    assert b.spent(STEPS // 2) < b.spent(STEPS) <= 10.0
    with pytest.raises(ValueError, match="budget exceeded"):
        b.check_steps(STEPS + 1)
    # a noise multiplier that is too small for the requested epochs
    with pytest.raises(ValueError, match=r"budget exceeded before training.*noise_multiplier >="):
        PrivacyBudget.create(epsilon=1.0, delta=DELTA, dataset_size=N, batch_size=B, epochs=EPOCHS,
                             noise_multiplier=10.0)
