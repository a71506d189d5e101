"""The benchmark of issue 4: msgrelay side by side with plain redis-py loops and the task-queue peers.

    python -m bench            # the full run (make bench); writes docs/benchmarks.md, .json and .png
    python -m bench --smoke    # seconds; what CI runs

Layout: :mod:`bench.cli` (options, the plan of jobs, repeats), :mod:`bench.scenarios` (one job = one
measurement against a fresh private redis-server), :mod:`bench.workers` (the producer and consumer
processes), :mod:`bench.peer_runs` (the peers' own script, run in their virtualenvs), :mod:`bench.report`
(terminal table, Markdown page, JSON, chart) and :mod:`bench.workload` (the one job every contestant does).
"""
