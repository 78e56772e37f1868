"""What a careful user should hear about a run's labels before trusting them.

ICM fails quietly in known ways: it can settle on one label for nearly everything (a labelling
that is perfectly mutually predictable), drift far from what the model believes zero-shot, give
different answers from different seeds, leave inconsistencies, or run out of iterations before
it has searched every example. Each check is one line; a run prints them on stderr, records them
in summary.json, and the report shows them in a banner.
"""

from __future__ import annotations

COLLAPSE = 0.9
"""A run where this share of the labels or more is one label has collapsed (or the data is that
lopsided: worth a look either way)."""
PRIOR_GAP = 0.3
"""A True share this far from the model's mean zero-shot probability of True."""
CHAIN_DISAGREEMENT = 0.3
"""Chains that disagree on more than this share of rows."""
APPROXIMATE = 0.03
"""A share of approximate scores (a server's top-k held one label word only) above this."""


DIAGNOSES = {
    "found-gold": "the search found the gold labelling",
    "search": "the search fell short (the gold labelling scores higher than the one found)",
    "objective": "the objective fell short (the labelling found scores at least as high as "
    "gold yet differs from it)",
}
"""What U of the gold labelling says about a search, by `run.diagnose`'s verdict."""


def diagnosis_text(counts: dict[str, int] | None, batches: int) -> str:
    """What U of the gold labelling says, over the batches: {verdict: batches}."""
    if not counts:
        return ""
    if len(counts) == 1 and batches == 1:
        return DIAGNOSES[next(iter(counts))]
    return "; ".join(f"{n} of {batches} batches: {DIAGNOSES[d]}" for d, n in counts.items())


def fresh_text(fresh: dict | None, batches: int) -> str:
    """The same comparison with gold under a demonstration order the search never saw: a
    labelling that beats gold only under the search's own order was lucky in its order."""
    if not fresh:
        return ""
    return (
        f"under a fresh demonstration order, U of the labels found {fresh['utility']:.3f} and of "
        f"the gold labelling {fresh['gold_utility']:.3f}: "
        + diagnosis_text(fresh.get("diagnosis"), batches)
    )


def concept_text(concept: dict) -> str:
    """The concept test in one phrase (a summary written before the verdict was recorded: its z
    against the bar)."""
    if concept.get("text"):
        return str(concept["text"])
    z, bar = concept.get("z"), concept.get("bar")
    if z is None or bar is None:
        return "not run"
    verdict = "clearly above them" if concept.get("holds") else f"not clearly (z <= {bar:.2f})"
    return (
        f"under a demonstration order the search never saw, U of the labels found lies {z:.1f} "
        f"sd above random labellings that obey the rule: {verdict}"
    )


def warnings(summary: dict) -> list[str]:
    """One line per problem found in a run's summary (see the constants above)."""
    out = []
    n = summary["examples"]
    true = summary["labels"]["true"]
    share = true / n if n else 0.0
    if n >= 4 and max(share, 1 - share) >= COLLAPSE:
        word = "True" if share >= 0.5 else "False"
        out.append(
            f"collapse: {max(share, 1 - share):.0%} of the labels are {word}; check a few by hand "
            "(icm export --format review) before trusting them"
        )
    prior = summary.get("zero_shot_true")
    if prior is not None and abs(share - prior) > PRIOR_GAP:
        out.append(
            f"prior: {share:.0%} of the labels are True, but zero-shot the model gives True "
            f"{prior:.0%} probability on average; ICM may have found another feature than the "
            "one asked about"
        )
    split = summary.get("chain_disagreement")
    if split is not None and split > CHAIN_DISAGREEMENT:
        out.append(
            f"chains: the {summary['chains']} chains disagree on {split:.0%} of the rows; the "
            "labels depend on the seed: run more iterations or chains, or check by hand"
        )
    if summary["inconsistencies"]:
        out.append(
            f"inconsistencies: {summary['inconsistencies']} pairs of output labels break the "
            "consistency rule"
        )
    concept = summary.get("concept") or {}
    if concept.get("verdict") == "no concept" or (
        "verdict" not in concept and concept.get("holds") is False
    ):
        out.append(
            f"concept: {concept_text(concept)}; the model may not hold this concept: check "
            "labels by hand before training on them"
        )
    elif concept.get("verdict") == "too small to tell":
        out.append(
            f"concept: {concept_text(concept)}; whether the model holds this concept is not "
            "known yet: check labels by hand, or label more claims per batch"
        )
    if summary.get("approximate_share", 0) > APPROXIMATE:
        out.append(
            f"approximate: {summary['approximate_scores']} of {summary['scores']} scores "
            f"({summary['approximate_share']:.0%}) had only one label word among the server's "
            "top tokens, so the other's probability is a bound: raise --top-logprobs (and the "
            "server's cap), or use a server that reports the log-probs of forced tokens "
            "(docs/servers.md)"
        )
    if summary["searched_share"] < 1:
        out.append(
            f"coverage: the search labelled {summary['searched_share']:.0%} of the examples; "
            "the rest are the model's argmax given those: run more --iterations"
        )
    return out
