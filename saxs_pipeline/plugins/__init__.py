"""The Dask side: :mod:`.worker` (the ``IntegratorPlugin`` every worker holds, with its
operator cache, and the ``saxs-worker`` command), :mod:`.workerconfig` (what a worker is
started with) and :mod:`.stats` (the ``SaxsStats`` scheduler plugin; ``dask scheduler
--preload saxs_pipeline.stats`` loads it).
"""
