"""The demo's time-left estimate: from the pace of the results, not the worker's start-up."""

from __future__ import annotations

from caraway.cli.demo import Eta


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_estimate_before_the_results_show_a_pace() -> None:
    clock = Clock()
    eta = Eta(2000, clock)
    clock.now += 3.0  # the worker starting: nothing in 3 s

    assert eta.update(1) == ""  # the first result: when the pace starts, not a pace
    clock.now += 0.1
    assert eta.update(50) == ""  # 2.5 % of the work, 0.1 s: too little to judge


def test_the_estimate_follows_the_pace_since_the_first_result() -> None:
    clock = Clock()
    eta = Eta(2000, clock)
    clock.now += 3.0
    eta.update(100)
    clock.now += 1.0

    assert eta.update(400) == "about 4 s left"  # 400 a second, 1500 to go
    clock.now += 3.0
    assert eta.update(1450) == "almost done"
