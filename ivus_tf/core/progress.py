"""Progress for long loops: a tqdm bar on a terminal, a few plain log lines otherwise (CI logs, files)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """Yield `items`, reporting progress on stderr."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, unit=unit, dynamic_ncols=True)
        return
    start = time.perf_counter()
    step = max(1, (total or 0) // 4) if total else 100
    count = 0
    for count, item in enumerate(items, 1):
        yield item
        if count % step == 0 and total and count < total:
            print(f"{desc}: {count}/{total} {unit}", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    print(f"{desc}: {count} {unit} in {elapsed:.1f} s", file=sys.stderr, flush=True)
