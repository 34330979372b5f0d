"""The micro-batcher and its cost model, with an explicit clock.

The scenarios pin each trigger; the property runs random offers, polls, flushes and cost
observations and checks every batch against the rules in ``models/batcher.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.batcher import Batch, BatchCostModel, MicroBatcher


def items_of(batches: list[Batch[str]]) -> list[tuple[str, ...]]:
    return [batch.items for batch in batches]


def learned_cost_model(intercept_ms: int, per_item_ms: int) -> BatchCostModel:
    model = BatchCostModel()
    for size in (1, 2, 4, 8, 4, 2, 1):
        model.observe(size, intercept_ms + per_item_ms * size)
    return model


class TestTriggers:
    def test_a_full_batch_is_released_by_the_offer_that_fills_it(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(max_batch=3, max_wait_ms=1_000)
        assert batcher.offer("a", 100, 5_000) == []
        assert batcher.offer("b", 101, 5_000) == []
        released = batcher.offer("c", 102, 5_000)
        assert released == [Batch(("a", "b", "c"), "full", 100, 102, 5_000)]
        assert not released[0].expired
        assert len(batcher) == 0
        assert batcher.next_due_ms() is None

    def test_a_batch_is_released_when_its_oldest_item_has_waited(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(max_batch=10, max_wait_ms=5)
        batcher.offer("a", 100, None)
        batcher.offer("b", 103, None)
        assert batcher.next_due_ms() == 105
        assert batcher.poll(104) == []
        assert batcher.poll(105) == [Batch(("a", "b"), "waited", 100, 105, None)]
        assert batcher.poll(10_000) == []

    def test_a_late_offer_releases_the_due_batch_before_opening_the_next(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(max_batch=10, max_wait_ms=5)
        batcher.offer("a", 100, None)
        released = batcher.offer("b", 107, None)
        assert released == [Batch(("a",), "waited", 100, 107, None)]
        assert batcher.next_due_ms() == 112

    def test_without_a_learned_cost_the_deadline_trigger_fires_at_the_deadline(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(max_batch=10, max_wait_ms=1_000)
        batcher.offer("a", 0, 40)
        assert batcher.next_due_ms() == 40
        assert batcher.poll(39) == []
        assert batcher.poll(40) == [Batch(("a",), "deadline", 0, 40, 40)]

    def test_the_deadline_trigger_leaves_time_for_the_learned_cost(self) -> None:
        # Cost is 2 ms plus 1 ms per item: a batch of two costs 4 ms.
        batcher: MicroBatcher[str] = MicroBatcher(
            max_batch=10, max_wait_ms=1_000, cost_model=learned_cost_model(2, 1)
        )
        batcher.offer("a", 0, 100)
        assert batcher.next_due_ms() == 100 - 3
        batcher.offer("b", 10, 40)
        assert batcher.next_due_ms() == 40 - 4
        assert batcher.poll(35) == []
        assert batcher.poll(36) == [Batch(("a", "b"), "deadline", 0, 36, 40)]

    def test_observe_feeds_the_cost_model(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(max_batch=10, max_wait_ms=1_000)
        batcher.offer("a", 0, 100)
        assert batcher.next_due_ms() == 100
        batcher.observe(1, 30)
        assert batcher.next_due_ms() == 70

    def test_an_item_too_close_to_its_deadline_is_released_by_its_offer(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(
            max_batch=10, max_wait_ms=1_000, cost_model=learned_cost_model(2, 1)
        )
        batcher.offer("a", 0, 500)
        released = batcher.offer("b", 10, 13)  # a batch of two needs 4 ms
        assert released == [Batch(("a", "b"), "deadline", 0, 10, 13)]

    def test_a_deadline_at_now_is_due_not_expired(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(max_batch=10, max_wait_ms=1_000)
        assert batcher.offer("a", 50, 50) == [Batch(("a",), "deadline", 50, 50, 50)]

    def test_the_trigger_that_held_first_names_a_late_release(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(
            max_batch=10, max_wait_ms=5, cost_model=learned_cost_model(2, 1)
        )
        batcher.offer("a", 0, 10)  # waited due at 5, deadline due at 10 - 3
        assert [batch.reason for batch in batcher.poll(7)] == ["waited"]
        batcher.offer("b", 20, 27)  # deadline due at 27 - 3, waited due at 25
        assert [batch.reason for batch in batcher.poll(26)] == ["deadline"]
        batcher.offer("c", 30, 38)  # both due at 35: a tie goes to the deadline
        assert [batch.reason for batch in batcher.poll(35)] == ["deadline"]

    def test_a_max_wait_of_zero_releases_every_offer(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(max_batch=10, max_wait_ms=0)
        assert batcher.offer("a", 7, None) == [Batch(("a",), "waited", 7, 7, None)]

    def test_items_without_a_deadline_never_expire(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(max_batch=10, max_wait_ms=100)
        batcher.offer("a", 0, None)
        assert batcher.poll(100) == [Batch(("a",), "waited", 0, 100, None)]


class TestExpiry:
    def test_an_expired_item_is_released_at_once_and_flagged(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(max_batch=10, max_wait_ms=1_000)
        released = batcher.offer("late", 50, 49)
        assert released == [Batch(("late",), "expired", 50, 50, 49)]
        assert released[0].expired
        assert len(batcher) == 0

    def test_waiting_items_leave_just_ahead_of_an_expired_one(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(max_batch=10, max_wait_ms=1_000)
        batcher.offer("a", 0, 500)
        batcher.offer("b", 1, 600)
        released = batcher.offer("late", 2, 1)
        assert released == [
            Batch(("a", "b"), "flush", 0, 2, 500),
            Batch(("late",), "expired", 2, 2, 1),
        ]
        assert [batch.expired for batch in released] == [False, True]

    def test_an_item_that_expires_while_waiting_is_released_by_a_late_poll(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(max_batch=10, max_wait_ms=1_000)
        batcher.offer("a", 0, 500)
        batcher.offer("b", 1, 20)
        batcher.offer("c", 2, 25)
        batcher.offer("d", 3, 600)
        assert batcher.next_due_ms() == 20
        released = batcher.poll(30)  # late: b and c have expired
        assert released == [
            Batch(("a",), "flush", 0, 30, 500),
            Batch(("b", "c"), "expired", 1, 30, 20),
        ]
        assert len(batcher) == 1  # d waits in a batch of its own
        assert batcher.next_due_ms() == 600
        assert batcher.flush(40) == [Batch(("d",), "flush", 3, 40, 600)]

    def test_an_item_ahead_of_an_expired_one_keeps_its_own_reason_if_due(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(max_batch=10, max_wait_ms=10)
        batcher.offer("a", 0, 500)
        batcher.offer("b", 5, 8)
        released = batcher.poll(12)
        assert released == [
            Batch(("a",), "waited", 0, 12, 500),
            Batch(("b",), "expired", 5, 12, 8),
        ]


class TestFlushAndClock:
    def test_flush_releases_everything_waiting(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(max_batch=10, max_wait_ms=1_000)
        assert batcher.flush(0) == []
        batcher.offer("a", 0, 500)
        batcher.offer("b", 1, 30)
        assert batcher.flush(40) == [
            Batch(("a",), "flush", 0, 40, 500),
            Batch(("b",), "expired", 1, 40, 30),
        ]
        assert len(batcher) == 0

    def test_a_clock_that_steps_back_counts_as_the_latest_time_seen(self) -> None:
        batcher: MicroBatcher[str] = MicroBatcher(max_batch=10, max_wait_ms=5)
        batcher.offer("a", 100, None)
        assert batcher.poll(90) == []
        batcher.offer("b", 90, None)  # offered at 100, the latest time seen
        assert batcher.poll(105) == [Batch(("a", "b"), "waited", 100, 105, None)]

    @pytest.mark.parametrize(("max_batch", "max_wait_ms"), [(0, 10), (1, -1)])
    def test_bad_limits_are_refused(self, max_batch: int, max_wait_ms: int) -> None:
        with pytest.raises(ValueError, match="max_"):
            MicroBatcher[str](max_batch=max_batch, max_wait_ms=max_wait_ms)


class TestBatchCostModel:
    def test_before_any_observation_the_cost_is_zero(self) -> None:
        model = BatchCostModel()
        assert not model.observed
        assert model.coefficients() == (0.0, 0.0)
        assert model.predict_ms(64) == 0

    def test_a_noiseless_linear_cost_is_recovered(self) -> None:
        model = BatchCostModel(alpha=0.3)
        for size in (1, 8, 3, 16, 5, 2, 32, 7):
            model.observe(size, 2.0 + 0.5 * size)
        intercept, slope = model.coefficients()
        assert intercept == pytest.approx(2.0)
        assert slope == pytest.approx(0.5)
        assert model.predict_ms(10) == 7
        assert model.predict_ms(11) == 8  # 7.5 rounds up

    def test_one_batch_size_only_gives_a_proportional_cost(self) -> None:
        model = BatchCostModel()
        for _ in range(5):
            model.observe(4, 8.0)
        assert model.coefficients() == pytest.approx((0.0, 2.0))
        assert model.predict_ms(8) == 16

    def test_a_negative_slope_gives_the_mean_cost(self) -> None:
        model = BatchCostModel(alpha=1.0 / 3.0)
        for size, cost in ((1, 9.0), (4, 3.0), (8, 1.0), (1, 9.0), (8, 1.0)):
            model.observe(size, cost)
        intercept, slope = model.coefficients()
        assert slope == 0.0
        assert intercept > 0.0
        assert model.predict(1) == model.predict(100) == intercept

    def test_the_fit_follows_a_change_in_cost(self) -> None:
        model = BatchCostModel(alpha=0.2)
        for size in (1, 2, 4, 8) * 10:
            model.observe(size, 1.0 + size)
        for size in (1, 2, 4, 8) * 20:
            model.observe(size, 10.0 + 3.0 * size)
        assert model.predict(8) == pytest.approx(34.0, rel=0.02)

    def test_a_prediction_is_never_negative(self) -> None:
        model = BatchCostModel(alpha=1.0 / 3.0)
        for size, cost in ((10, 0.0), (20, 10.0), (30, 20.0)):
            model.observe(size, cost)
        assert model.predict(1) == 0.0
        assert model.predict_ms(40) == 30

    @pytest.mark.parametrize(
        ("batch_size", "cost_ms"), [(0, 1.0), (1, -1.0), (1, float("nan")), (1, float("inf"))]
    )
    def test_bad_observations_are_refused(self, batch_size: int, cost_ms: float) -> None:
        with pytest.raises(ValueError, match=r"batch_size|cost_ms"):
            BatchCostModel().observe(batch_size, cost_ms)

    @pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
    def test_a_bad_alpha_is_refused(self, alpha: float) -> None:
        with pytest.raises(ValueError, match="alpha"):
            BatchCostModel(alpha)


@dataclass(frozen=True)
class Offered:
    """An item that carries what the property needs to check its batch."""

    index: int
    offered_ms: int
    deadline_ms: int | None


@dataclass
class Run:
    """The effective clock and everything released so far in one property example."""

    max_batch: int
    max_wait_ms: int
    batcher: MicroBatcher[Offered]
    now_ms: int = 0
    offered: list[Offered] = field(default_factory=list)
    released: list[Batch[Offered]] = field(default_factory=list)

    def check(self, batches: list[Batch[Offered]], *, flushing: bool = False) -> None:
        for position, batch in enumerate(batches):
            assert 1 <= len(batch.items) <= self.max_batch
            assert batch.released_ms == self.now_ms
            assert batch.opened_ms == batch.items[0].offered_ms
            deadlines = [i.deadline_ms for i in batch.items if i.deadline_ms is not None]
            assert batch.earliest_deadline_ms == min(deadlines, default=None)
            late = [i.deadline_ms is not None and i.deadline_ms < self.now_ms for i in batch.items]
            assert all(late) if batch.expired else not any(late)
            if batch.reason == "full":
                assert len(batch.items) == self.max_batch
            elif batch.reason == "waited":
                assert self.now_ms - batch.opened_ms >= self.max_wait_ms
            elif batch.reason == "deadline":
                cost = self.batcher.cost_model.predict_ms(len(batch.items))
                assert min(deadlines) <= self.now_ms + cost
            elif batch.reason == "flush":
                cut_off = position + 1 < len(batches) and batches[position + 1].expired
                assert flushing or cut_off
        self.released.extend(batches)
        # Nothing due is left waiting, and nothing expired.
        due = self.batcher.next_due_ms()
        assert (due is None) == (len(self.batcher) == 0)
        assert due is None or due > self.now_ms


offers = st.tuples(
    st.just("offer"),
    st.integers(-3, 20),  # clock step; a step back is clamped
    st.one_of(st.none(), st.integers(-3, -1), st.integers(0, 40)),  # deadline - offer time
)
operations = st.lists(
    st.one_of(
        offers,
        offers,
        st.tuples(st.just("poll"), st.integers(-3, 60), st.none()),
        st.tuples(st.just("poll_at_due"), st.just(0), st.none()),
        st.tuples(st.just("flush"), st.integers(0, 10), st.none()),
        st.tuples(st.just("observe"), st.integers(1, 8), st.integers(0, 12)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(max_batch=st.integers(1, 6), max_wait_ms=st.integers(0, 80), steps=operations)
def test_every_item_comes_out_once_in_order_and_only_when_due(
    max_batch: int, max_wait_ms: int, steps: list[tuple[str, int, int | None]]
) -> None:
    run = Run(max_batch, max_wait_ms, MicroBatcher(max_batch, max_wait_ms))
    assert run.batcher.poll(run.now_ms) == []  # the batcher's clock starts with the run's
    for operation, number, extra in steps:
        if operation == "observe":
            assert extra is not None
            run.batcher.observe(number, extra)
            continue
        if operation == "poll_at_due":
            due = run.batcher.next_due_ms()
            if due is None or due <= run.now_ms:
                continue
            assert run.batcher.poll(due - 1) == []
            run.now_ms = due
            released = run.batcher.poll(due)
            assert released != []
            run.check(released)
            continue
        clock_ms = run.now_ms + number  # what the caller passes
        run.now_ms = max(run.now_ms, clock_ms)  # what the batcher goes by
        if operation == "offer":
            deadline = None if extra is None else run.now_ms + extra
            item = Offered(len(run.offered), run.now_ms, deadline)
            run.offered.append(item)
            run.check(run.batcher.offer(item, clock_ms, deadline))
        elif operation == "poll":
            run.check(run.batcher.poll(clock_ms))
        else:
            run.check(run.batcher.flush(clock_ms), flushing=True)
    run.check(run.batcher.flush(run.now_ms), flushing=True)
    assert len(run.batcher) == 0
    assert [item for batch in run.released for item in batch.items] == run.offered
