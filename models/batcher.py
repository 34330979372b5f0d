"""A deadline-aware micro-batcher for scoring, as a pure state machine.

Time is an argument. Every call that needs the time takes ``now_ms``: integer
milliseconds on the same clock as the items' deadlines (epoch milliseconds of the worker's
wall clock, say). Nothing here reads a clock, sleeps or schedules. The caller offers items
as they arrive, polls at ``next_due_ms()`` when none arrive, scores the batches it gets
back, and reports each batch's cost to ``observe``. A time earlier than one already seen
counts as the latest one seen, so a clock that steps back never reopens a released batch.

The waiting items form one open batch, released when the first of these holds:

* ``full``: it holds ``max_batch`` items (only an offer can fill it);
* ``deadline``: ``now + predicted_cost(size) >= earliest deadline`` in the batch, so
  waiting any longer would make that deadline unreachable;
* ``waited``: its oldest item has waited ``max_wait_ms``.

When more than one holds, the reason is ``full`` if the batch is full; otherwise the
trigger that held first (``deadline`` on a tie).

An item is *expired* at ``now`` when ``now > deadline``: the deadline is the last
millisecond at which an answer is on time. Expired items are never dropped: they are
released at once, in batches of their own with reason ``expired`` (``Batch.expired``), for
the caller to answer by a fast path or flag. A batch is either all expired or not
expired at all. Since the deadline trigger fires no later than the deadline, an item
expires while waiting only when the caller polls late.

Batches come out in offer order: the items of the batches returned, in the order
returned, are the items in the order offered. So an expired item behind waiting items
that are not due cuts them off: they come out just ahead of it, with reason ``flush``
unless a reason of their own holds. ``flush(now)`` releases everything, also as ``flush``.

The predicted cost is ``BatchCostModel``: a linear fit ``a + b * size`` in milliseconds,
exponentially weighted towards the latest batches. Until a batch is observed it predicts
zero, and the deadline trigger fires at the deadline itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

__all__ = ["Batch", "BatchCostModel", "MicroBatcher", "ReleaseReason"]

T = TypeVar("T")

ReleaseReason = Literal["full", "waited", "deadline", "expired", "flush"]

# Below this weighted variance of the observed batch sizes (in items squared) the sizes
# are taken as one size: no slope can be fitted, and the cost is taken as proportional
# to the size, which overestimates a fixed cost and so errs towards releasing early.
MIN_SIZE_VARIANCE = 0.25


@dataclass(frozen=True, slots=True)
class Batch(Generic[T]):
    """Items released together, in offer order, and why and when they were released."""

    items: tuple[T, ...]
    reason: ReleaseReason
    opened_ms: int  # when the oldest item was offered
    released_ms: int
    earliest_deadline_ms: int | None  # None when no item has a deadline

    @property
    def expired(self) -> bool:
        """Every item's deadline had passed at release: answer by the fast path."""
        return self.reason == "expired"


class BatchCostModel:
    """The cost in milliseconds of scoring a batch, fitted as ``a + b * size``.

    An exponentially weighted least-squares fit: each observation weighs ``alpha``, and
    the weight of the earlier ones decays by ``1 - alpha``. A fit is kept physical: a
    negative slope is replaced by the weighted mean cost, and a prediction is never
    negative. With one batch size only, the cost is taken as proportional to the size.
    """

    def __init__(self, alpha: float = 0.1) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], not {alpha}")
        self._decay = 1.0 - alpha
        # Exponentially weighted sums of 1, size, cost, size**2 and size*cost.
        self._weight = 0.0
        self._sum_size = 0.0
        self._sum_cost = 0.0
        self._sum_size_squared = 0.0
        self._sum_size_cost = 0.0

    @property
    def observed(self) -> bool:
        return self._weight > 0.0

    def observe(self, batch_size: int, cost_ms: float) -> None:
        """Learn that a batch of ``batch_size`` items took ``cost_ms`` to score."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if not math.isfinite(cost_ms) or cost_ms < 0:
            raise ValueError(f"cost_ms must be finite and not negative, not {cost_ms}")
        decay = self._decay
        self._weight = decay * self._weight + 1.0
        self._sum_size = decay * self._sum_size + batch_size
        self._sum_cost = decay * self._sum_cost + cost_ms
        self._sum_size_squared = decay * self._sum_size_squared + batch_size * batch_size
        self._sum_size_cost = decay * self._sum_size_cost + batch_size * cost_ms

    def coefficients(self) -> tuple[float, float]:
        """``(a, b)`` of the fit ``a + b * size``; ``(0, 0)`` before any observation."""
        if not self.observed:
            return 0.0, 0.0
        mean_size = self._sum_size / self._weight
        mean_cost = self._sum_cost / self._weight
        variance = self._sum_size_squared / self._weight - mean_size * mean_size
        if variance < MIN_SIZE_VARIANCE:
            return 0.0, mean_cost / mean_size
        covariance = self._sum_size_cost / self._weight - mean_size * mean_cost
        slope = covariance / variance
        if slope < 0.0:
            return mean_cost, 0.0
        return mean_cost - slope * mean_size, slope

    def predict(self, batch_size: int) -> float:
        intercept, slope = self.coefficients()
        return max(0.0, intercept + slope * batch_size)

    def predict_ms(self, batch_size: int) -> int:
        """The prediction rounded to the microsecond, then up to a whole millisecond."""
        return math.ceil(round(self.predict(batch_size), 3))


@dataclass(frozen=True, slots=True)
class _Waiting(Generic[T]):
    item: T
    offered_ms: int
    deadline_ms: int | None

    def expired_at(self, now_ms: int) -> bool:
        return self.deadline_ms is not None and now_ms > self.deadline_ms


class MicroBatcher(Generic[T]):
    """Collects offered items into batches of at most ``max_batch``; see the module doc."""

    def __init__(
        self, max_batch: int, max_wait_ms: int, *, cost_model: BatchCostModel | None = None
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, not {max_wait_ms}")
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.cost_model = BatchCostModel() if cost_model is None else cost_model
        self._waiting: list[_Waiting[T]] = []
        self._earliest_deadline_ms: int | None = None  # of the waiting items: O(1) checks
        self._now_ms: int | None = None

    def __len__(self) -> int:
        """The number of items waiting."""
        return len(self._waiting)

    def offer(self, item: T, now_ms: int, deadline_ms: int | None) -> list[Batch[T]]:
        """Add an item; the batches due at ``now_ms``, the item's own batch included.

        ``deadline_ms=None`` is an item without a deadline: it never expires.
        """
        now = self._advance(now_ms)
        released = self._release_due(now)
        self._waiting.append(_Waiting(item, now, deadline_ms))
        if deadline_ms is not None and (
            self._earliest_deadline_ms is None or deadline_ms < self._earliest_deadline_ms
        ):
            self._earliest_deadline_ms = deadline_ms
        released.extend(self._release_due(now))
        return released

    def poll(self, now_ms: int) -> list[Batch[T]]:
        """The batches due at ``now_ms``, when no item arrives to trigger them."""
        return self._release_due(self._advance(now_ms))

    def flush(self, now_ms: int) -> list[Batch[T]]:
        """Release every waiting item: what is due as usual, the rest as ``flush``."""
        now = self._advance(now_ms)
        released = self._release_due(now)
        if self._waiting:
            released.append(self._cut(len(self._waiting), "flush", now))
        return released

    def observe(self, batch_size: int, cost_ms: float) -> None:
        """Learn the cost of a scored batch; later deadline triggers account for it."""
        self.cost_model.observe(batch_size, cost_ms)

    def next_due_ms(self) -> int | None:
        """When the open batch falls due if no item arrives; None when nothing waits.

        Polling before it releases nothing; polling at it releases a batch. After
        ``observe`` has raised the predicted cost it may lie in the past: poll at once.
        """
        if not self._waiting:
            return None
        waited_due = self._waiting[0].offered_ms + self.max_wait_ms
        deadline_due = self._deadline_due(len(self._waiting))
        return waited_due if deadline_due is None else min(waited_due, deadline_due)

    def _advance(self, now_ms: int) -> int:
        if self._now_ms is not None and now_ms < self._now_ms:
            return self._now_ms
        self._now_ms = now_ms
        return now_ms

    def _deadline_due(self, size: int) -> int | None:
        """When the first ``size`` waiting items fall due for their earliest deadline."""
        if size == len(self._waiting):
            earliest = self._earliest_deadline_ms
        else:
            earliest = min(
                (w.deadline_ms for w in self._waiting[:size] if w.deadline_ms is not None),
                default=None,
            )
        if earliest is None:
            return None
        return earliest - self.cost_model.predict_ms(size)

    def _due_reason(self, size: int, now: int) -> ReleaseReason | None:
        """Why the first ``size`` waiting items, as a batch, are due at ``now``, if they are."""
        if size >= self.max_batch:
            return "full"
        waited_due = self._waiting[0].offered_ms + self.max_wait_ms
        deadline_due = self._deadline_due(size)
        if deadline_due is not None and deadline_due <= min(now, waited_due):
            return "deadline"
        if waited_due <= now:
            return "waited"
        return None

    def _release_due(self, now: int) -> list[Batch[T]]:
        released: list[Batch[T]] = []
        while self._waiting:
            first_expired = (
                None
                if self._earliest_deadline_ms is None or now <= self._earliest_deadline_ms
                else next((i for i, w in enumerate(self._waiting) if w.expired_at(now)), None)
            )
            if first_expired == 0:
                expired = 1
                while expired < len(self._waiting) and self._waiting[expired].expired_at(now):
                    expired += 1
                released.append(self._cut(expired, "expired", now))
            elif first_expired is not None:
                # Items ahead of an expired one leave first, to keep the offer order.
                reason = self._due_reason(first_expired, now) or "flush"
                released.append(self._cut(first_expired, reason, now))
            else:
                due = self._due_reason(len(self._waiting), now)
                if due is None:
                    break
                released.append(self._cut(len(self._waiting), due, now))
        return released

    def _cut(self, size: int, reason: ReleaseReason, now: int) -> Batch[T]:
        taken, self._waiting = self._waiting[:size], self._waiting[size:]
        self._earliest_deadline_ms = min(
            (w.deadline_ms for w in self._waiting if w.deadline_ms is not None), default=None
        )
        deadlines = [w.deadline_ms for w in taken if w.deadline_ms is not None]
        return Batch(
            items=tuple(w.item for w in taken),
            reason=reason,
            opened_ms=taken[0].offered_ms,
            released_ms=now,
            earliest_deadline_ms=min(deadlines, default=None),
        )
