"""When a frame still being written is tried again.

A task reports a frame incomplete when its file is still being written; the frame is
tried again after ``delay * 2**k`` s. Only tries that found the file no longer than
before count against ``retries``: a slow writer is waited for, a file that stopped
growing fails after ``retries`` more tries -- unless it changes again later (then the
ledger takes it anew).
"""

from __future__ import annotations

from dataclasses import dataclass

from saxs_pipeline.pipeline.jobs import Job

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """See the module doc."""

    retries: int = 5
    delay: float = 0.2

    def after_incomplete(self, job: Job, size: int | None) -> float | None:
        """``job``'s try found its file incomplete, ``size`` bytes long (None: unknown):
        the seconds until its next try, or None when it has failed. Keeps the count of
        tries without growth on the job."""
        size = size if size is not None else -1
        grew = job.last_size >= 0 and size > job.last_size
        job.stalls = 0 if grew else job.stalls + 1
        job.last_size = size
        if job.stalls > self.retries:
            return None
        job.attempt += 1
        return self.delay * 2 ** max(job.stalls - 1, 0)
