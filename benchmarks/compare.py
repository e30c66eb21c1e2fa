"""Side-by-side runs over HTTP: every design gets the same client, in A B A B order.

Interleaving rounds means slow drift of the machine (thermal, other processes) hits every design
alike; ratios are taken within each round and then the median over rounds is reported.
"""

from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass
from typing import Any

from benchmarks import client, stats


@dataclass(frozen=True)
class Design:
    """One server under test: a label, its MCP URL, and the name of its increment tool."""

    label: str
    url: str
    tool: str

    @property
    def get_tool(self) -> str:
        return self.tool.removesuffix("increment") + "get"


async def sequential(
    designs: list[Design], *, mode: str, rounds: int, calls: int, references: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Sequential latency per design, one session each, blocks of `calls` interleaved by round."""
    samples: dict[str, list[float]] = {d.label: [] for d in designs}
    medians: dict[str, list[float]] = {d.label: [] for d in designs}
    async with contextlib.AsyncExitStack() as stack:
        sessions = {d.label: await stack.enter_async_context(client.session(d.url, mode)) for d in designs}
        for _ in range(rounds):
            for d in designs:
                block = await client.sequential(sessions[d.label], d.tool, {"key": "seq"}, calls)
                samples[d.label] += block
                medians[d.label].append(statistics.median(block))
    out = {}
    for d in designs:
        row = stats.summary(samples[d.label])
        row["ratio_p50"] = {
            ref: stats.median_ratio(list(zip(medians[d.label], medians[ref], strict=True)))
            for ref in references
        }
        out[d.label] = row
    return out, samples


async def concurrent(
    designs: list[Design],
    *,
    mode: str,
    rounds: int,
    seconds: float,
    clients: int,
    keys: int,
    references: tuple[str, ...],
    check: bool = False,
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """`clients` concurrent sessions per design for `seconds`, interleaved by round.

    Clients share `keys` counters (fresh names every round), so calls contend on one key the
    way real users of one resource do. With `check`, the counters are read back after each run
    and compared with the number of acknowledged calls.
    """
    samples: dict[str, list[float]] = {d.label: [] for d in designs}
    rates: dict[str, list[float]] = {d.label: [] for d in designs}
    acked: dict[str, int] = {d.label: 0 for d in designs}
    final: dict[str, int] = {d.label: 0 for d in designs}
    for r in range(rounds):
        for d in designs:
            names = [f"{mode}-r{r}-k{i}" for i in range(keys)]

            def key_of(i: int, names: list[str] = names) -> str:
                return names[i % len(names)]

            result = await client.concurrent(
                d.url, d.tool, clients=clients, seconds=seconds, key_of=key_of, mode=mode
            )
            samples[d.label] += result.latencies
            rates[d.label].append(result.rate)
            acked[d.label] += sum(result.acked.values())
            if check:
                async with client.session(d.url, mode) as s:
                    for name in names:
                        final[d.label] += await client.call(s, d.get_tool, {"key": name})
    out = {}
    for d in designs:
        row = stats.summary(samples[d.label])
        row["calls_per_s"] = statistics.median(rates[d.label])
        row["ratio_rate"] = {
            ref: stats.median_ratio(list(zip(rates[d.label], rates[ref], strict=True))) for ref in references
        }
        if check:
            row["acked"] = acked[d.label]
            row["final"] = final[d.label]
            row["lost"] = acked[d.label] - final[d.label]
        out[d.label] = row
    return out, samples
