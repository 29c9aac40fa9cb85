"""The local engine: a DataLoader decodes images in worker processes while this process runs the model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from verification.batch import BatchJob, Row, make_loader
from verification.engines import EngineOptions, progress_disabled

R = TypeVar("R")


def run_local(
    job: BatchJob[R], paths: Sequence[str | Path], options: EngineOptions, *, progress: bool | None = None
) -> Iterator[Row[R]]:
    """Yield one row per path in order; the model is loaded once, here."""
    model = job.setup()
    loader = make_loader(
        paths, model, batch_size=options.batch_size, workers=options.workers, keep_display=job.keep_display
    )
    with tqdm(total=len(paths), unit="img", disable=progress_disabled(progress), leave=False) as bar:
        for batch in loader:
            yield from job.run(batch)
            bar.update(len(batch))
