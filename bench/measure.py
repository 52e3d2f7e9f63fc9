"""One way to measure a case: throughput over all items, p50/p99 of single calls, peak memory."""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any


def measure(
    name: str, items: list[Any], fn: Callable[[Any], Any], sample: int = 5000, memory_items: int = 2000
) -> dict[str, Any]:
    """Three passes, so tracing allocations never slows the timed ones: throughput, latency, memory."""
    for item in items[:200]:
        fn(item)  # warm-up
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    total = time.perf_counter() - t0
    lat = []
    for item in items[:sample]:
        s = time.perf_counter_ns()
        fn(item)
        lat.append(time.perf_counter_ns() - s)
    tracemalloc.start()
    kept = [fn(item) for item in items[:memory_items]]  # peak while holding the results
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    q = statistics.quantiles(lat, n=100)
    return {
        "case": name,
        "per_s": len(items) / total,
        "p50_us": q[49] / 1000,
        "p99_us": q[98] / 1000,
        "peak_kib": peak / 1024,
    }


def table(rows: list[dict[str, Any]], unit: str, memory_items: int = 2000) -> str:
    lines = [f"{'case':<42} {unit + '/s':>11} {'p50 us':>8} {'p99 us':>8} {f'KiB/{memory_items}':>9}"]
    for r in rows:
        lines.append(
            f"{r['case']:<42} {r['per_s']:>11,.0f} {r['p50_us']:>8.1f} {r['p99_us']:>8.1f} "
            f"{r['peak_kib']:>9.0f}"
        )
    return "\n".join(lines)


def machine() -> str:
    """The machine and the versions a figure was measured with (printed first by every bench)."""
    import os
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import confluent_kafka

    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            mem = f"{int(meminfo.readline().split()[1]) / 2**20:.0f} GiB"
    except OSError:
        mem = "?"
    packages = []
    for name in ("faust-streaming", "aiokafka", "confluent-kafka", "fastavro", "msgspec", "httpx", "aiohttp"):
        try:
            packages.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    from ops.kafka import KAFKA_VERSION

    return (
        f"# {cpu}, {os.cpu_count()} cores, {mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; Kafka {KAFKA_VERSION}; "
        f"librdkafka {confluent_kafka.libversion()[0]}; " + ", ".join(packages)
    )
