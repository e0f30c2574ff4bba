"""core.ratelimit: one sliding-window limiter for waiting clients and refusing servers (hand clock)."""

from __future__ import annotations

import pytest

from core.ratelimit import RateLimiter


class HandClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_try_acquire_when_window_full_then_refused_and_not_counted():
    clock = HandClock()
    rl = RateLimiter(3, per=1.0, clock=clock)
    got = []
    for _ in range(4):
        got.append(rl.try_acquire())
        clock.t += 0.25
    assert got == [True, True, True, False]  # calls at 0, 0.25, 0.5; refused at 0.75
    # At 1.0 the first call leaves the window; the refused one at 0.75 never counted.
    assert rl.try_acquire() and not rl.try_acquire()
    clock.t += 0.25
    assert rl.try_acquire()  # the 0.25 call left


def test_two_windows_when_per_second_ok_then_per_minute_still_binds():
    clock = HandClock()
    rl = RateLimiter(windows=((1.0, 2), (60.0, 3)), clock=clock)
    assert rl.try_acquire() and rl.try_acquire() and not rl.try_acquire()
    clock.t += 1.0
    assert rl.try_acquire() and not rl.try_acquire()
    clock.t += 30.0
    assert not rl.try_acquire()  # 3 in the last minute
    clock.t += 29.0
    assert rl.try_acquire()  # the first call is 60 s old


def test_acquire_when_limited_then_sleeps_exactly_until_the_window_allows():
    clock = HandClock()
    rl = RateLimiter(2, per=1.0, margin=0.5, clock=clock, sleep=clock.sleep)
    t0 = clock.t
    times = []
    for _ in range(5):
        rl.acquire()
        times.append(clock.t - t0)
    assert times == pytest.approx([0.0, 0.0, 1.5, 1.5, 3.0])
    assert rl.waited == pytest.approx(3.0)


@pytest.mark.parametrize("kwargs", [{}, {"rate": 0}, {"rate": 1, "windows": ((1.0, 1),)}, {"windows": ((0.0, 1),)}])
def test_bad_limits_when_built_then_value_error(kwargs):
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)


def test_prime_counts_calls_a_previous_run_made() -> None:
    now = [1000.0]
    rl = RateLimiter(windows=((1.0, 8), (60.0, 10)), clock=lambda: now[0], sleep=lambda s: None)
    rl.prime([59.5, 30.0, 20.0, 10.0, 5.0, 4.0, 3.0, 2.0, 90.0])  # the 90 s old call is outside every window
    assert [rl.try_acquire() for _ in range(3)] == [True, True, False]  # 8 earlier + 2 = the minute's 10
    now[0] += 0.6  # the 59.5 s old call leaves the minute
    assert rl.try_acquire() and not rl.try_acquire()
