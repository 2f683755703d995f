"""Profile one of the benchmark's scenarios, with one command:

    python benchmarks/profiling.py web-1000   # or e2e-one, e2e-many, latency(-one), web-5000, loop
    python benchmarks/profiling.py web-1000 --sdk segment --top 40

It runs the same worker as ``benchmarks/run.py`` (a fresh process, the sink in another)
under cProfile, writes ``benchmarks/profiles/<scenario>-<sdk>.prof`` (open it with
``python -m pstats`` or snakeviz) and prints the functions with the most time of their own.
The figures are the profiler's, not the benchmark's: cProfile roughly doubles the cost of
each Python call, so read shares, not microseconds.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
from pathlib import Path

import run

HERE = Path(__file__).parent
# scenario: (run.py's mode, its scenario, events, sink config, rate, seconds)
SCENARIOS: dict[str, tuple[str, str, int, dict[str, float], float, float]] = {
    "e2e-one": ("run", "one", 20_000, {}, 0, 0),
    "e2e-many": ("run", "many", 20_000, {}, 0, 0),
    "latency": ("latency", "many", 10_000, {"delay": 0.05}, 0, 0),
    "latency-one": ("latency", "one", 10_000, {"delay": 0.05}, 0, 0),
    "web-1000": ("web", "visitors", 0, {"delay": 0.05}, 1_000, 10),
    "web-5000": ("web", "visitors", 0, {"delay": 0.05}, 5_000, 10),
    "loop": ("loop", "one", 100_000, {}, 0, 0),
}


def child(args: argparse.Namespace) -> None:
    """In the worker's process: profile run.worker, and write the profile before it exits
    (it ends with os._exit, which skips every exit hook)."""
    profile = cProfile.Profile()
    real_exit = os._exit

    def exit_after_writing(code: int) -> None:
        profile.disable()
        profile.dump_stats(args.out)
        real_exit(code)

    os._exit = exit_after_writing  # type: ignore[assignment]
    profile.enable()
    run.worker(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--sdk", default="koala_async", help="koala_async, segment or posthog")
    parser.add_argument("--top", type=int, default=25, help="functions to print")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    mode, scenario, events, config, rate, seconds = SCENARIOS[args.scenario]
    if args.child:
        args.scenario = scenario
        child(args)
        return
    out = HERE / "profiles" / f"{args.scenario}-{args.sdk}.prof"
    out.parent.mkdir(exist_ok=True)
    with run.running_sink() as port:
        if config:
            run.sink(port, "/_config", config)
        command = [sys.executable, __file__, args.scenario, "--child", "--out", str(out)]
        command += ["--worker", args.sdk, "--mode", "run" if mode == "latency" else mode]
        command += ["--events", str(events), "--port", str(port)]
        command += ["--rate", str(rate), "--seconds", str(seconds)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    figures = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not out.exists():
        sys.exit(f"the worker failed:\n{done.stderr[-2000:]}")
    print(f"{args.scenario} ({args.sdk}): {figures[-1] if figures else 'no figures'}")
    print(f"profile written to {out}\n")
    pstats.Stats(str(out)).strip_dirs().sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
