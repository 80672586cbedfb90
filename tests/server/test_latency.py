"""TokenTime: the live time-per-token model behind depth routing (pure arithmetic, no clock read)."""

import math

import pytest

from gptzoo.server.latency import HALF_LIFE_S, Budget, TokenTime


def test_nothing_known_predicts_nan_and_the_prior_alone_is_its_line():
    t = TokenTime()
    assert math.isnan(t.tpot(1, now=10.0))
    t.calibrate(0.001, 0.0041, rows=32)  # 1 ms at one row, 0.1 ms more per row
    assert t.tpot(1, 10.0) == pytest.approx(0.001) and t.tpot(32, 10.0) == pytest.approx(0.0041)
    assert t.tpot(16, 10.0) == pytest.approx(0.001 + 15 * 0.0001)


def test_recent_steps_outweigh_the_prior_and_recover_the_line():
    t = TokenTime()
    t.calibrate(0.010, 0.010, rows=8)  # a flat, slow prior
    for i in range(200):
        rows = 1 + i % 8
        t.observe(rows, 0.002 + 0.0005 * rows, now=100.0 + i * 0.001)
    a, b = t.coefficients(now=100.2)
    assert a == pytest.approx(0.002, rel=0.1) and b == pytest.approx(0.0005, rel=0.1)


def test_old_steps_fade_back_to_the_prior():
    t = TokenTime()
    t.calibrate(0.001, 0.001, rows=4)
    for i in range(50):
        t.observe(2, 0.050, now=1.0 + i * 0.001)  # a burst of slow steps
    busy = t.tpot(2, now=1.05)
    assert busy > 0.045
    later = t.tpot(2, now=1.05 + 20 * HALF_LIFE_S)  # idle since: the prior decides again
    assert later == pytest.approx(0.001, rel=0.01)


def test_one_occupancy_only_takes_the_slope_from_the_prior():
    t = TokenTime()
    t.calibrate(0.001, 0.001 + 31 * 0.0002, rows=32)  # slope 0.2 ms per row
    for i in range(100):
        t.observe(4, 0.003, now=5.0 + i * 0.001)
    a, b = t.coefficients(now=5.1)
    assert b == pytest.approx(0.0002, rel=0.05)
    assert t.tpot(4, 5.1) == pytest.approx(0.003, rel=0.05)  # through what was seen
    assert t.tpot(8, 5.1) > t.tpot(4, 5.1)


def test_ttft_adds_the_prefill_and_the_wait_for_a_slot():
    t = TokenTime()
    t.calibrate(0.001, 0.001, rows=2)
    t.observe_prefill(100, 0.01)  # 0.1 ms per prompt token
    t.observe_queue(0.5)
    free = t.ttft(prompt_tokens=50, must_wait=False, tpot=t.tpot(1, now=0.0))
    assert free == pytest.approx(0.001 + 0.005)
    assert t.ttft(50, must_wait=True, tpot=0.001) == pytest.approx(free + 0.1)  # the wait's running average
    assert t.prior_tpot(1) == pytest.approx(0.001)


def test_budget_verdicts():
    assert not Budget() and Budget(tpot=0.01) and Budget(ttft=0.1)
    b = Budget(tpot=0.01, ttft=0.1)
    assert b.met(0.01, 0.1) and not b.met(0.011, 0.05) and not b.met(0.005, 0.2)
    assert b.met(None, 0.05)  # one token: no time per token to judge


def test_slowdown_is_the_recent_step_time_against_the_calibration_and_fades():
    t = TokenTime()
    assert t.slowdown(now=1.0) == 1.0  # nothing seen: as alone
    t.calibrate(0.001, 0.001 + 7 * 0.0001, rows=8)
    for i in range(100):
        t.observe(8, 3 * (0.001 + 7 * 0.0001), now=1.0 + i * 1e-3)  # three times as slow as alone
    assert t.slowdown(now=1.1) == pytest.approx(3.0, rel=0.01)
    assert t.slowdown(now=1.1 + 20 * HALF_LIFE_S) == pytest.approx(1.0, abs=1e-4)


def test_the_prior_is_the_fastest_of_several_steps():
    """Whatever shares the machine while a model calibrates only adds time: the fastest step counts, so one slow
    step (the thread lost the core while a neighbour loaded) does not make a model look slower than a deeper one."""
    t = TokenTime()
    t.calibrate([0.050, 0.001, 0.020], [0.090, 0.004, 0.004], rows=4)
    assert t.prior_tpot(1) == pytest.approx(0.001) and t.prior_tpot(4) == pytest.approx(0.004)
    deeper = TokenTime()
    deeper.calibrate([0.003, 0.003], [0.009], rows=4)
    assert t.tpot(1, now=1.0) < deeper.tpot(1, now=1.0)
