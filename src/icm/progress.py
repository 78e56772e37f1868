"""Progress on the terminal: one bar over every search of a run, and a line per other phase."""

from __future__ import annotations

import sys
import threading
import time

from .run import Progress


class Bar(Progress):
    """A tqdm bar over all search iterations of a run (every batch and chain), made at the first
    step so a resumed run starts where it stopped; other phases print one line each."""

    def __init__(self, desc: str = "icm") -> None:
        self.desc = desc
        self.bar = None
        self.total = self.done = 0
        self.lock = threading.Lock()
        self.t0 = time.monotonic()

    def start(self, total: int, done: int) -> None:
        self.total, self.done = total, done

    def step(self, row: dict) -> None:
        from tqdm import tqdm

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

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
