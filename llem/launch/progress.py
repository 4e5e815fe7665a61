"""Study progress between jobs (pure): ETA and a one-line bar the launcher prints, never inside a job.

    [#####-----] 5/10 jobs · 1 failed · job 6: backend=vllm pytorch.batch_size=8 · ETA 3m10s

The ETA is remaining jobs × seconds per job. With per-job durations it is the median job (robust to
a first job that compiles or downloads) plus the mean overhead per job (gaps, process start-up:
elapsed minus the jobs' own time); without them, elapsed / done. Before any job has finished it
is the prior estimate (the plan's, from earlier results of the same configs) or unknown.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

BAR_WIDTH = 10
MAX_LABEL = 60


def format_duration(seconds: float | None) -> str:
    """45s, 3m10s, 1h02m; '?' when unknown."""
    if seconds is None or math.isnan(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta_s(done: int, total: int, elapsed_s: float, durations_s: Sequence[float] | None = None,
          prior_job_s: float | None = None) -> float | None:
    """Seconds until the last job finishes; None when there is nothing to base it on."""
    if total < 0 or done < 0 or done > total:
        raise ValueError(f"done={done}, total={total}: need 0 <= done <= total")
    remaining = total - done
    if remaining == 0:
        return 0.0
    if done == 0:
        return remaining * prior_job_s if prior_job_s is not None else None
    if durations_s:
        overhead = max(0.0, elapsed_s - sum(durations_s)) / done
        per_job = statistics.median(durations_s) + overhead
    else:
        per_job = elapsed_s / done
    return remaining * per_job


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = width if total <= 0 else int(width * done / total)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def progress_line(done: int, total: int, failed: int, elapsed_s: float, current: str | None = None,
                  current_index: int | None = None, durations_s: Sequence[float] | None = None,
                  prior_job_s: float | None = None, skipped: int = 0) -> str:
    """`[#####-----] 5/10 jobs · 1 failed · job 6: <current> · ETA 3m10s` (one line, no newline).

    done counts finished jobs (completed or failed); `current` describes the job about to run
    (e.g. its overrides) and `current_index` its number as the user sees it.
    """
    parts = [f"{bar(done, total)} {done}/{total} jobs"]
    if failed:
        parts.append(f"{failed} failed")
    if skipped:
        parts.append(f"{skipped} skipped")
    if current is not None or current_index is not None:
        label = current or ""
        if len(label) > MAX_LABEL:
            label = label[: MAX_LABEL - 3] + "..."
        head = f"job {current_index}" if current_index is not None else "job"
        parts.append(f"{head}: {label}" if label else head)
    eta = eta_s(done, total, elapsed_s, durations_s, prior_job_s)
    parts.append(f"ETA {format_duration(eta)}" if done < total else f"done in {format_duration(elapsed_s)}")
    return " · ".join(parts)
