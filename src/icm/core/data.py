"""What the search sees of a data set: prompts, groups and consistency keys, never gold labels."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One claim to label.

    `prompt` is the text up to the label word ("...I think this claim is"); `group` is the question
    the claim belongs to; `key` is what the consistency rule compares (a parsed final answer, the
    ordered pair of a comparison). Gold labels live outside this type, so the search
    cannot read them.
    """

    uid: str
    prompt: str
    group: Hashable | None = None
    key: Hashable | None = None

    def group_or(self, i: int) -> Hashable:
        """The example's group, or (for one with none, at index `i`) a group of its own."""
        return self.group if self.group is not None else ("row", i)


@dataclass(frozen=True)
class PromptFormat:
    """How labelled demonstrations and the scored example are joined into one prompt.

    A demonstration is `prompt + label_words[y] + separator`; the example to score is its bare
    prompt, last. `label_words[0]` means False, `label_words[1]` True.
    """

    label_words: tuple[str, str] = (" False", " True")
    separator: str = "\n\n"
    prefix: str = ""

    def demo(self, prompt: str, label: int) -> str:
        return prompt + self.label_words[label] + self.separator


def loo_orders(n: int) -> list[list[int]]:
    """Order of the demonstrations each leave-one-out term sees, for items 0..n-1.

    Divide and conquer: to score a range on top of a context, split it into halves A and B; the
    items of A see the context, then B's demonstrations, then (recursively) the rest of A, and
    vice versa. Every backend uses this order, so the cached and the naive scorers agree exactly
    and a server with prefix caching sees long shared prefixes.
    """
    orders: list[list[int]] = [[] for _ in range(n)]

    def rec(lo: int, hi: int, context: list[int]) -> None:
        if hi - lo == 1:
            orders[lo] = context
            return
        mid = (lo + hi) // 2
        rec(lo, mid, context + list(range(mid, hi)))
        rec(mid, hi, context + list(range(lo, mid)))

    if n:
        rec(0, n, [])
    return orders
