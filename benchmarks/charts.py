"""Draw the performance page's charts from a run of ``run.py``, as plain SVG bar charts.

    python benchmarks/run.py --quick --json run.json
    python benchmarks/charts.py run.json docs/images

Each chart's title carries the run's date and machine (written by ``run.py``), so a chart
is never quoted apart from the run it came from. koala_async's bar is green, the peers'
grey, a floor's (the cheapest delivery, measured in the same run) outlined.
"""

from __future__ import annotations

import argparse
import json
from html import escape
from pathlib import Path
from typing import Any

NAMES = {
    "koala_async": "koala_async",
    "segment": "Segment",
    "posthog": "PostHog",
    "posthog_async": "PostHog async",
    "floor": "floor",
}
WIDTH, LABEL, ROW, BAR = 720, 150, 34, 24


def bars(title: str, when: str, rows: list[tuple[str, float, str]]) -> str:
    """A horizontal bar chart: one (name, value, shown text) per row, scaled to the largest,
    under its title and the run it came from (``when``)."""
    top = max((value for _, value, _ in rows if value == value), default=1.0) or 1.0
    span = WIDTH - LABEL - 110
    height = 58 + ROW * len(rows) + 12
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="14">',
        '<rect width="100%" height="100%" fill="white"/>',
        f"<title>{escape(title)}; {escape(when)}</title>",
        f'<text x="10" y="20" font-weight="bold">{escape(title)}</text>',
        f'<text x="10" y="40" font-size="12" fill="#555">{escape(when)}</text>',
    ]
    for i, (name, value, shown) in enumerate(rows):
        y = 58 + ROW * i
        width = 0 if value != value else max(1, round(span * value / top))
        look = {"koala_async": 'fill="#2e7d32"', "floor": 'fill="none" stroke="#2e7d32"'}
        style = look.get(name, 'fill="#9e9e9e"')
        out += [
            f'<text x="10" y="{y + 17}">{escape(NAMES.get(name, name))}</text>',
            f'<rect x="{LABEL}" y="{y}" width="{width}" height="{BAR}" {style}/>',
            f'<text x="{LABEL + width + 6}" y="{y + 17}">{escape(shown)}</text>',
        ]
    out.append("</svg>")
    return "\n".join(out) + "\n"


def charts(results: dict[str, Any]) -> dict[str, str]:
    """The charts of one run, by file name."""

    def get(key: str, field: str) -> float:
        return float(results.get(key, {}).get(field, float("nan")))

    when = f"{results.get('date', 'undated')}, {results.get('machine', '')}".rstrip(", ")
    sdks = ["koala_async", "segment", "posthog", "posthog_async"]
    hot = [
        (sdk, get(f"{sdk}/one", "hot_us"), f"{get(f'{sdk}/one', 'hot_us'):.2f} µs") for sdk in sdks
    ]
    cpu = [
        (sdk, get(f"{sdk}/one", "cpu_us"), f"{get(f'{sdk}/one', 'cpu_us'):.1f} µs")
        for sdk in [*sdks, "floor"]
    ]
    web = []
    for sdk in [*sdks, "floor"]:
        key = f"{sdk}/web5000"
        delivered, produced = get(key, "delivered"), get(key, "produced")
        web.append((sdk, delivered, f"{delivered:,.0f} of {produced:,.0f}"))
    return {
        "hot-path.svg": bars("track() per call, one person (lower is better)", when, hot),
        "cpu-per-event.svg": bars(
            "CPU per delivered event, one person, end to end (lower is better)", when, cpu
        ),
        "web-5000.svg": bars("Entries delivered at 5,000 entries/s, 50 ms answers", when, web),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="run.py --json's file")
    parser.add_argument("out", type=Path, help="where to write the SVG files")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, svg in charts(json.loads(args.results.read_text())).items():
        (args.out / name).write_text(svg)
        print(args.out / name)


if __name__ == "__main__":
    main()
