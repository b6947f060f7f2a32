"""The scheduling policy's live state between ticks (PROTOCOL.md "Policy settings").

The pure pieces are in :mod:`taskmill_core.policy`; this holds what they need from one tick to
the next: the rate buckets (in memory, full at start, also after a restart), the host's
pressure sources (``set_pressure``; never persisted), and the settings turned into policy
values. The dispatcher asks :meth:`PolicyState.policy` for each decision — None while no
policy is configured and no pressure is set, so an app that uses none of it takes exactly
the path it took before — and keeps the decision's buckets once its starts are committed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from taskmill_core.dispatch import Policy
from taskmill_core.policy import (
    Aging,
    FairShare,
    Pressure,
    RateBuckets,
    RateLimit,
    RateLimits,
    Throttle,
    ThrottleTier,
    TypeDefaults,
)
from taskmill_core.types import (
    PRIORITY_NAMES,
    BucketStatus,
    Event,
    PressureStatus,
    RateBucketsStatus,
    RateLimitConfig,
    SchedulerConfig,
    SchedulerPressure,
)

__all__ = ["PolicyState"]


def _limit(c: RateLimitConfig) -> RateLimit:
    return RateLimit(per_second=c.per_second, per_minute=c.per_minute, burst=c.burst)


class PolicyState:
    """Rate buckets, pressure and the configured policy, for the dispatcher and the status."""

    def __init__(self, config: SchedulerConfig, publish: Callable[[Event], None]) -> None:
        self._publish = publish
        self.pressure = Pressure()
        self.buckets: RateBuckets | None = None
        self.aging: Aging | None = None
        self.fair_share: FairShare | None = None
        self.tiers: tuple[ThrottleTier, ...] = ()
        self.type_defaults: Mapping[str, TypeDefaults] = {}
        self.configured = False  # any policy but the throttle tiers
        self._holding: tuple[int, ...] = ()  # the tiers in force as last announced
        self.configure(config)

    def configure(self, c: SchedulerConfig) -> None:
        """Take the policy settings of ``c`` (a bucket whose limit is unchanged keeps its
        tokens; a new or changed one starts full)."""
        rl = c.rate_limits
        if rl is not None and (rl.types or rl.groups):
            limits = RateLimits(
                types={k: _limit(v) for k, v in rl.types.items()},
                groups={k: _limit(v) for k, v in rl.groups.items()},
            )
            self.buckets = (self.buckets or RateBuckets()).reconfigure(limits)
        else:
            self.buckets = None
        a = c.aging
        self.aging = Aging(a.after_ms, a.step_ms, a.limit) if a is not None else None
        f = c.fair_share
        self.fair_share = (
            FairShare(dict(f.weights), f.default_weight, dict(f.min_slots))
            if f is not None
            else None
        )
        self.tiers = tuple(ThrottleTier(t.min_priority, t.level) for t in c.throttle)
        self.type_defaults = {
            t: TypeDefaults(
                priority=_priority(d.priority),
                max_retries=d.max_retries,
                backoff=d.backoff,
                timeout_ms=d.timeout_ms,
                ttl_ms=d.ttl_ms,
                group=d.group,
                io_cost=d.io_cost,
            )
            for t, d in (c.type_defaults or {}).items()
        }
        self.configured = (
            self.buckets is not None or self.aging is not None or self.fair_share is not None
        )

    # --- the decision's inputs ---------------------------------------------------------------

    def policy(self, now: int) -> Policy | None:
        """The policy of a decision at ``now``; None when nothing is configured or pressed."""
        throttle = self.throttle(now)
        if throttle is not None and throttle.hold_from is None:
            throttle = None
        if not self.configured and throttle is None:
            return None
        return Policy(
            aging=self.aging, buckets=self.buckets, throttle=throttle, fair_share=self.fair_share
        )

    def throttle(self, now: int) -> Throttle | None:
        """The throttle in force (None without pressure); announces a change of its tiers."""
        if not self.pressure.sources:
            return None
        throttle = self.pressure.throttle(now, self.tiers)
        if not throttle.holding and throttle.until is None:
            self.pressure = Pressure()  # every source lapsed: forget them
        self._announce(now, throttle.holding)
        return throttle

    def next_change(self, now: int) -> int | None:
        """When the tiers in force next change by a source lapsing (a timer of the loop)."""
        if not self.pressure.sources:
            return None
        return self.pressure.throttle(now, self.tiers).until

    def keep_buckets(self, buckets: RateBuckets | None) -> None:
        """The decision's starts are committed: its buckets are the state from now on."""
        if buckets is not None and self.buckets is not None:
            self.buckets = buckets

    # --- set by the host -------------------------------------------------------------------------

    def set_pressure(self, source: str, level: float, ttl_ms: int, now: int) -> None:
        """``scheduler.setPressure``: the source's level, live for ``ttl_ms`` (0 removes it)."""
        self.pressure = self.pressure.set(source, level, now, ttl_ms)
        holding = self.pressure.throttle(now, self.tiers).holding
        self._announce(now, holding)

    def _announce(self, now: int, holding: tuple[int, ...]) -> None:
        if holding == self._holding:
            return
        self._holding = holding
        self._publish(
            SchedulerPressure(
                level=self.pressure.level(now),
                sources=self.pressure.live(now),
                holding=list(holding),
            )
        )

    def retier(self, now: int) -> None:
        """The tiers changed (``configure``): announce what is in force now, if different."""
        self._announce(now, self.pressure.throttle(now, self.tiers).holding)

    # --- status ------------------------------------------------------------------------------

    def pressure_status(self, now: int) -> PressureStatus:
        return PressureStatus(level=self.pressure.level(now), sources=self.pressure.live(now))

    def buckets_status(self, now: int) -> RateBucketsStatus:
        out = RateBucketsStatus()
        b = self.buckets
        if b is None:
            return out
        for src, dst in ((b.types, out.types), (b.groups, out.groups)):
            for key, bucket in src.items():
                tokens = bucket.tokens(now)
                at = bucket.next_token_at(now)
                dst[key] = BucketStatus(
                    tokens=round(tokens, 6), next_token_at=at if tokens < 1 else None
                )
        return out


def _priority(p: int | str | None) -> int | None:
    if isinstance(p, str):
        return PRIORITY_NAMES[p]
    return p
