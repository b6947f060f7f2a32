"""Taskmill's benchmark harness (``python -m tests.bench``): not a pytest suite.

Each measurement runs in a fresh child process (``tests.bench.worker``) against a fresh
database in a fresh temporary directory; the parent interleaves contenders over rounds,
takes medians and prints/saves the comparison. See ``tests/bench/README.md``.
"""
