"""Benchmarks: commands that print figures (``leadstream bench ...``), never timed tests.

One module per benchmark (``features``, ``scoring``, ``pipeline``, ``stages``, ``scale``,
``restore``, ``mf``, ``soak``, and ``floor``, the Faust floor the pipeline runs as a
subprocess), their shared helpers in :mod:`leadstream.bench.common`, and
:mod:`leadstream.bench.harness`, which starts, waits for, scrapes and stops worker
processes for the benchmarks, the ``demo`` command and the integration tests. Only the
commands (:mod:`leadstream.cli`) import this package.
"""
