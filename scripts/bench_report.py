"""The outputs of ``bench.py``: results.json, a Markdown table and a PNG chart.

matplotlib is a bench-only dependency (``make bench`` installs it); without it the chart is
skipped, never the figures.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"machine": {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform(),
                        "python": platform.python_version(),
                        "load_average": [round(x, 2) for x in os.getloadavg()],
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}}


def _row(name: str, row: dict, procs: dict, streaming: bool) -> str:
    c1, c32 = row["c1"], row["c32"]
    cells = [name, f"{c1['p50']:.2f}", f"{c1['overhead_p50']:+.2f}" if name != "direct" else "",
             f"{c1['p99']:.2f}", f"{c32['rps']:,.0f}", f"{c32['p99']:.1f}"]
    if streaming:
        ttft = row["ttft"]
        cells.append(f"{ttft['p50']:.2f}" + (f" ({ttft['overhead_p50']:+.2f})"
                                             if name != "direct" else ""))
    proc = procs.get("memproxyd" if name.startswith("memproxyd") else name, {})
    cells += [f"{proc['ready_s']:.2f} s" if proc else "",
              f"{proc['rss_mb_after_load']:.0f} MB" if proc else ""]
    return "| " + " | ".join(cells) + " |"


def table(report: dict) -> str:
    m = report["machine"]
    head = ("| target | p50 ms (c=1) | overhead p50 ms | p99 ms (c=1) | req/s (c=32) "
            "| p99 ms (c=32) |")
    lines = [f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['system']}, Python "
             f"{m['python']} (load average at the end {m['load_average']}); fake upstream on "
             f"loopback; memory on = {report['memories']:,} memories in the user's store, a "
             f"new question per request; medians of {len(report['rounds'])} interleaved "
             "rounds.", ""]
    for group, title, streaming in (("chat", "`/v1/chat/completions`", True),
                                    ("messages", "`/v1/messages`", False)):
        lines += [f"{title}:", "", head + (" TTFT p50 ms (overhead) |" if streaming else "")
                  + " ready | RSS after load |",
                  "|" + "---|" * (9 if streaming else 8)]
        lines += [_row(name, row, report["processes"], streaming)
                  for name, row in report["results"][group].items()]
        lines.append("")
    o = report["outbox"]
    lines.append(f"Remembered during the run: {o['remembered']:,} exchanges; in the store "
                 f"{o['seconds_after_load']} s after the load: {o['stored']:,}, missing "
                 f"{o['missing']}, doubled {o['doubled']}.")
    if report.get("peer_error"):
        lines.append(f"LiteLLM proxy not measured: {report['peer_error']}")
    for reason in report.get("not_measured", ()):
        lines.append(f"Not measured: {reason[:300]}")
    return "\n".join(lines) + "\n"


def chart(report: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = report["results"]["chat"]
    names = [n for n in rows if n != "direct"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(names, [rows[n]["c1"]["overhead_p50"] for n in names], color="#4c72b0")
    left.set_title("overhead p50 at concurrency 1 (ms, lower is better)")
    right.bar(["direct"] + names, [rows[n]["c32"]["rps"] for n in ["direct"] + names],
              color="#55a868")
    right.set_title("requests/s at concurrency 32 (higher is better)")
    for axis in (left, right):
        axis.tick_params(axis="x", labelrotation=20)
    fig.suptitle(f"/v1/chat/completions, fake upstream, {report['machine']['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(out: Path, report: dict) -> None:
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "results.md").write_text(table(report))
    chart(report, out / "results.png")
