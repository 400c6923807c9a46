"""Benchmarks of the services on loopback, each figure a ratio to a baseline measured in the same run.

`python -m bench` runs every scenario; `python -m bench <scenario> ...` runs some. The table goes to
stdout and to `bench/results/latest.md`, the raw numbers to `bench/results/latest.json`."""
