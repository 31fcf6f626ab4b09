"""``memproxyctl usage``: what each model or project cost, from the daemon's ``/v1/usage``.

    memproxyctl usage [--project P] [--since 7d] [--by model|project|day] [--json]
"""
from __future__ import annotations

import json

from memproxyd.ctl.client import EXIT_OK, Context

COLUMNS = (("calls", "calls", "{:>7}"), ("errors", "errors", "{:>6}"),
           ("prompt_tokens", "prompt", "{:>10}"), ("completion_tokens", "completion", "{:>10}"),
           ("cached_tokens", "cached", "{:>8}"), ("cache_write_tokens", "cache write", "{:>11}"),
           ("cost_usd", "cost USD", "{:>11.6f}"),
           ("latency_p50_ms", "p50 ms", "{:>9.1f}"), ("latency_p95_ms", "p95 ms", "{:>9.1f}"))
SUMMED = 7            # the columns up to the cost have a total line


def cmd_usage(ctx: Context, args) -> int:
    query = {"since": args.since, "by": args.by}
    if args.project:
        query["project"] = args.project
    report = ctx.client.call("GET", "/v1/usage", query=query, admin=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(format_table(report["groups"], args.by))
    return EXIT_OK


def format_table(groups: list[dict], by: str) -> str:
    """One line per group and a total line; widths fit the longest group name."""
    width = max([len(by), 5] + [len(str(g[by])) for g in groups])
    head = f"{by:<{width}}" + "".join(
        " " + f"{title:>{len(fmt.format(0))}}" for _, title, fmt in COLUMNS)
    lines = [head]
    for group in groups:
        lines.append(f"{str(group[by]):<{width}}" + "".join(
            " " + fmt.format(_value(group, key)) for key, _, fmt in COLUMNS))
    if not groups:
        lines.append("(no calls in this period)")
        return "\n".join(lines)
    total = {key: sum(_value(g, key) for g in groups) for key, _, _ in COLUMNS[:SUMMED]}
    lines.append(f"{'total':<{width}}" + "".join(
        " " + fmt.format(total[key]) for key, _, fmt in COLUMNS[:SUMMED]))
    return "\n".join(lines)


def _value(group: dict, key: str):
    """A daemon older than a column does not send it: 0 (``memproxyctl`` may be newer)."""
    return group.get(key, 0)


def add_usage_parser(sub) -> None:
    p = sub.add_parser("usage", help="calls, tokens, cost and latency from the usage ledger")
    p.add_argument("--project", help="one project (user id) only")
    p.add_argument("--since", default="7d", help="a duration (24h, 7d, 2w); default 7d")
    p.add_argument("--by", choices=("model", "project", "day"), default="model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_usage)
