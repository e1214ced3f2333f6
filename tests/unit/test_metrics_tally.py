"""``TaskTally``'s histograms put each value in Prometheus' bucket: the first bound at or
above it (``le``), counted cumulatively, ending with ``+Inf``."""

from __future__ import annotations

import pytest

from caraway.metrics.tally import Histogram, TaskTally


def test_a_value_on_a_bound_falls_in_that_bucket() -> None:
    histogram = Histogram((0.1, 1.0))

    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)

    assert histogram.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert histogram.total == pytest.approx(8.65)


def test_a_snapshot_does_not_move_with_later_runs() -> None:
    tally = TaskTally()
    tally.ran("w1", "add", "SUCCESS", 0.2)

    before = tally.snapshot()
    tally.ran("w1", "add", "SUCCESS", 0.3)
    tally.waited("w1", "add", -1.0)  # clocks apart: a negative wait counts as none

    assert before.states == {("w1", "add", "SUCCESS"): 1}
    assert before.runtimes["w1", "add"].cumulative()[-1] == ("+Inf", 1)
    after = tally.snapshot()
    assert after.states == {("w1", "add", "SUCCESS"): 2, ("w1", "add", "STARTED"): 1}
    assert after.waits["w1", "add"].total == 0.0
