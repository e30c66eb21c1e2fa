"""Summaries of latency samples: medians, p99s, and ratios taken pair by pair."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) by linear interpolation; NaN for no samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(samples_s: Sequence[float]) -> dict[str, Any]:
    """n, p50, p99, max and mean of latencies given in seconds, reported in microseconds."""
    us = [s * 1e6 for s in samples_s]
    return {
        "n": len(us),
        "p50_us": percentile(us, 50),
        "p99_us": percentile(us, 99),
        "max_us": max(us) if us else float("nan"),
        "mean_us": statistics.fmean(us) if us else float("nan"),
    }


def median_ratio(pairs: Sequence[tuple[float, float]]) -> float:
    """Median of a/b over rounds: each round's ratio cancels the drift common to both sides."""
    ratios = [a / b for a, b in pairs if b > 0]
    return statistics.median(ratios) if ratios else float("nan")
