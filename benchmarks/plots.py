"""Latency distribution plots (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

TITLES = {
    "http_legacy_sequential": "HTTP, sequential, legacy (initialize) clients",
    "http_legacy_concurrent32": "HTTP, 32 concurrent legacy clients",
    "http_modern_sequential": "HTTP, sequential, modern (discover) clients",
    "http_modern_concurrent32": "HTTP, 32 concurrent modern clients",
    "bridge_sequential": "In-process: bridged turn vs direct call vs state-service hop",
    "bridge_concurrent64": "In-process: Host.call with 64 concurrent callers",
    "alt_sequential": "Alternatives over HTTP, sequential",
    "alt_concurrent32": "Alternatives over HTTP, 32 concurrent clients",
    "durable": "Durable turns vs raw SQLite commit (WAL, synchronous=FULL)",
    "wakeup": "Long-poll wake-up latency (in-process)",
}


def cdf(name: str, series: dict[str, list[float]], out_dir: Path) -> Path | None:
    """One CDF line per label, latency in microseconds on a log axis; None if nothing to plot."""
    series = {label: values for label, values in series.items() if values}
    if not series:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, values in series.items():
        us = sorted(v * 1e6 for v in values)
        ys = [(i + 1) / len(us) for i in range(len(us))]
        ax.plot(us, ys, label=f"{label} (n={len(us):,})", linewidth=1.4)
    ax.set_xscale("log")
    ax.set_xlabel("latency (us, log scale)")
    ax.set_ylabel("fraction of calls <= x")
    ax.set_title(TITLES.get(name, name))
    ax.grid(True, which="both", alpha=0.3)
    ax.axhline(0.5, color="grey", linewidth=0.6, linestyle=":")
    ax.axhline(0.99, color="grey", linewidth=0.6, linestyle=":")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
