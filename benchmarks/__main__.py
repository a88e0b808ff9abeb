"""Run the benchmarks: `python -m benchmarks [ingest|inference|rollouts|preprocessing|latency|monitor|consumer|edge|reference-rule ...] [--quick]` (or `make bench`).

Each benchmark prints a table with its figures, a baseline measured in the same run and the
ratio; every process it started is stopped at the end, on an error, on Ctrl-C or on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from types import FrameType

from benchmarks import (
    annotation,
    consumer,
    edge,
    inference,
    ingest,
    latency,
    monitor,
    preprocessing,
    reference_rule,
    rollouts,
    training,
)
from benchmarks.harness import BenchmarkFailed

NAMES = (
    "ingest",
    "inference",
    "rollouts",
    "preprocessing",
    "latency",
    "annotation",
    "training",
    "consumer",
    "monitor",
    "edge",
    "reference-rule",
)


def _interrupt(signal_number: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every `with Workspace` stops its processes.
    raise KeyboardInterrupt


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="benchmark", help=" | ".join(NAMES) + " (default: all)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (each benchmark <= ~30 s)")
    parser.add_argument(
        "--ingest-workers", type=int, default=None, metavar="N", help="ingest processes in the ingest benchmark"
    )
    parser.add_argument(
        "--model",
        default=None,
        metavar="PATH",
        help="inference benchmark: serve this ONNX model (or 'signals-demo') instead of the built-in baseline",
    )
    options = parser.parse_args(arguments)
    names = options.names or list(NAMES)
    unknown = [name for name in names if name not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    saturation: float | None = None
    try:
        for name in names:
            began = time.monotonic()
            if name == "ingest":
                saturation = ingest.run(quick=options.quick, workers=options.ingest_workers).protobuf.rate
            elif name == "inference":
                inference.run(quick=options.quick, model=options.model)
            elif name == "rollouts":
                rollouts.run(quick=options.quick)
            elif name == "preprocessing":
                preprocessing.run(quick=options.quick)
            elif name == "annotation":
                annotation.run(quick=options.quick)
            elif name == "training":
                training.run(quick=options.quick)
            elif name == "consumer":
                consumer.run(quick=options.quick)
            elif name == "monitor":
                monitor.run(quick=options.quick)
            elif name == "edge":
                edge.run(quick=options.quick)
            elif name == "reference-rule":
                reference_rule.run(quick=options.quick)
            else:
                latency.run(quick=options.quick, ingest_saturation=saturation)
            print(f"  ({name} took {time.monotonic() - began:.0f} s)\n", flush=True)
    except KeyboardInterrupt:
        print("benchmarks: interrupted; every process was stopped", file=sys.stderr)
        return 130
    except BenchmarkFailed as error:
        print(f"benchmarks: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
