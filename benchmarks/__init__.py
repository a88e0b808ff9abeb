"""Michi's benchmarks: each measures a service next to a baseline taken in the same run.

    make bench                                   # every benchmark
    .venv/bin/python -m benchmarks ingest        # one of them by name
    .venv/bin/python -m benchmarks --quick       # a short smoke run (each benchmark <= ~30 s)

Every benchmark starts its own embedded Kafka (and redis-server when needed) on free loopback
ports, runs the services as subprocesses (`python -m services.<name>`), prints a table of its
figures, the baseline's and their ratio, and stops every process it started, even on Ctrl-C.
They are measurements, not tests: nothing asserts on speed. See docs/benchmarks.md.
"""
