"""Progress bars: shown when stderr is a terminal (or when asked), silent no-ops in batch jobs."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm


def progress_bar(
    iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
    initial: int = 0, enabled: bool | None = None,
) -> tqdm:
    """A tqdm bar; ``enabled=None`` means "when stderr is a terminal". A disabled bar passes the
    iterable through and ignores update/set_postfix/close, so callers need no special case."""
    show = sys.stderr.isatty() if enabled is None else enabled
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=False, disable=not show)
