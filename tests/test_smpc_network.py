"""pets_lite.smpc.network: the time a link adds, predicted from rounds and bytes."""

from __future__ import annotations

import math

import pytest

from pets_lite import smpc


def test_prediction_adds_latency_per_round_and_transfer_per_byte():
    link = smpc.Link.of(rtt_ms=10, mbit_s=100)
    assert link.rtt_s == pytest.approx(0.01) and link.bandwidth_bps == pytest.approx(1e8)
    p = smpc.predict_seconds(compute_seconds=2.0, rounds=300, nbytes=50e6, link=link)
    assert p["latency_high"] == pytest.approx(3.0)   # 300 rounds x 10 ms
    assert p["transfer_high"] == pytest.approx(4.0)  # 400 Mbit at 100 Mbit/s
    assert p["high"] == pytest.approx(9.0) and p["low"] == pytest.approx(2.0 + 1.5 + 2.0)


def test_more_delay_costs_more_and_nothing_costs_nothing():
    rows = smpc.predict_table(1.0, rounds=1000, nbytes=1e6, units=10, rtts_ms=(1, 10, 50))
    highs = [r["s per unit (high)"] for r in rows]
    assert highs[0] < highs[1] < highs[2]
    assert highs[2] - highs[1] == pytest.approx(1000 * 0.04 / 10)
    free = smpc.predict_seconds(1.5, 0, 0, smpc.Link(0.0, 1e9))
    assert free["low"] == free["high"] == 1.5


def test_check_against_a_measurement():
    p = smpc.predict_seconds(1.0, 100, 0, smpc.Link.of(10, 100))
    assert smpc.check_prediction(1.8, p)["within"]
    assert not smpc.check_prediction(10.0, p)["within"]
    assert smpc.check_prediction(2.0, p)["ratio_to_high"] == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [dict(rtt_s=-1, bandwidth_bps=1e6),
                                    dict(rtt_s=0.01, bandwidth_bps=0),
                                    dict(rtt_s=math.nan, bandwidth_bps=1e6)])
def test_bad_links_are_refused(kwargs):
    with pytest.raises(ValueError, match="finite non-negative"):
        smpc.Link(**kwargs)


def test_bad_measurements_are_refused():
    with pytest.raises(ValueError, match="rounds"):
        smpc.predict_seconds(1.0, -3, 0, smpc.Link.of(1, 100))
    with pytest.raises(ValueError, match="units"):
        smpc.predict_table(1.0, 1, 1, units=0)
