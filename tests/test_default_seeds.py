"""`make run-seeds`: the mean ± sd and the orderings it prints, computed by hand; bad seeds are one-line errors."""

from __future__ import annotations

import math

import pytest

from experiments.default_seeds import main, orderings, summary


def test_summary_is_the_mean_and_sample_sd_in_percent():
    (row,) = summary({"grft": [0.70, 0.80, 0.90]})
    method, mean, sd, low, high = row
    # By hand: mean 80; deviations -10, 0, 10; sample variance (100 + 0 + 100) / (3 - 1) = 100.
    assert method == "grft" and math.isclose(mean, 80.0) and math.isclose(sd, 10.0)
    assert (low, high) == pytest.approx((70.0, 90.0))
    assert summary({"full": [0.5]})[0][2] == 0.0  # one seed: no spread


def test_orderings_count_seeds_per_order_and_show_ties():
    per_seed = [
        {"grft (row, k=4)": 0.7, "linear": 0.5, "full": 0.9},
        {"grft (row, k=4)": 0.8, "linear": 0.5, "full": 0.85},
        {"grft (row, k=4)": 0.6, "linear": 0.6, "full": 0.9},
    ]
    assert orderings(per_seed) == {"full > grft > linear": 2, "full > grft = linear": 1}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--seeds", "0,x"], "not comma-separated integers"),
        (["--seeds", ","], "--seeds is empty"),
        (["--seeds", "0", "seed=3"], "give the seeds with --seeds"),
    ],
)
def test_bad_seeds_stop_before_any_run(argv, message):
    with pytest.raises(SystemExit, match=message):
        main(argv)
