"""The driver side of a run, as parts that talk through small typed objects.

Data flows one way::

    sources (walk, watch, feeder)  --paths-->  ImageQueue.offer
        --> ledger (what is new: FrameRef + Fingerprint, durable state per frame)
        --> dispatcher (batches, bounded in flight, retries, cluster loss)
        --> worker task (saxs_pipeline.pipeline.task, on the Dask workers: read,
            integrate, write .chi)
        --> sinks (curve stack + ledger commit, live file list, failures, history)

:class:`saxs_pipeline.pipeline.queue.ImageQueue` composes them; each module here has one job.
"""
