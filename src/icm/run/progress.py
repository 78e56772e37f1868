"""Progress: what a run reports while it works, and the terminal's bar over every search of a
run with a line per other phase."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm.auto import tqdm


class Progress:
    """What a run reports while it works; the command line draws it, a library caller may not."""

    def start(self, total: int, done: int) -> None:
        """`total` search iterations over every search of the run, `done` of them already."""

    def step(self, row: dict) -> None:
        """One iteration of one search: its trace row, with `batch`, `chain` and counters."""

    def phase(self, text: str) -> None:
        """A stretch of work that is not a search iteration (final labels, fine-tuning)."""

    def part(self, text: str, done: int, total: int) -> None:
        """`done` of the `total` parts of a phase (the labellings the concept test scores)."""

    def close(self) -> None:
        """The run is over (or stopped): let go of what the progress holds."""


class Bar(Progress):
    """A tqdm bar over all search iterations of a run (every batch and chain), made at the first
    step so a resumed run starts where it stopped; other phases print one line each."""

    def __init__(self, desc: str = "icm") -> None:
        self.desc = desc
        self.bar: tqdm | None = None
        self.parts: tqdm | None = None
        self.total = self.done = 0
        self.lock = threading.Lock()
        self.t0 = time.monotonic()

    def start(self, total: int, done: int) -> None:
        self.total, self.done = total, done

    def step(self, row: dict) -> None:
        from tqdm.auto import tqdm

        with self.lock:
            if self.bar is None:  # starts at the steps done before this one
                self.bar = tqdm(
                    total=self.total,
                    initial=self.done,
                    desc=self.desc,
                    unit="it",
                    dynamic_ncols=True,
                    file=sys.stderr,
                )
            agree = row.get("agreement")
            post = {"batch": f"{row['batch'] + 1}/{row['batches']}"} if row["batches"] > 1 else {}
            post |= {
                "U": f"{row['U']:.1f}",
                "T": f"{row['T']:.2f}",
                "lab": row["labelled"],
                "agree": "-" if agree is None else f"{agree:.2f}",
                "calls": row["calls"],
            }
            if row.get("chain"):
                post["chain"] = row["chain"] + 1
            if row.get("cached_tokens"):
                post["cached"] = f"{row['cached_tokens'] / max(row['tokens'], 1):.0%}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(1)
            self.done += 1
            if self.done >= self.total:
                self.close()

    def phase(self, text: str) -> None:
        with self.lock:
            self.close()
            print(f"icm: {text}", file=sys.stderr, flush=True)

    def part(self, text: str, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        with self.lock:
            if self.parts is None or self.parts.desc != f"icm: {text}":
                self.close()
                self.parts = tqdm(total=total, desc=f"icm: {text}", file=sys.stderr)
            self.parts.update(done - self.parts.n)
            if done >= total:
                self.parts.close()
                self.parts = None

    def close(self) -> None:
        for bar in (self.bar, self.parts):
            if bar is not None:
                bar.close()
        self.bar = self.parts = None
