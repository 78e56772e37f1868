"""The run's progress bar counts every search iteration once, fresh or resumed."""

from __future__ import annotations

import re

from icm.run.progress import Bar


def row(n: int) -> dict:
    return {"batch": 0, "batches": 1, "U": 1.0, "T": 2.0, "labelled": n, "calls": n}


def counts(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"(\d+)/(\d+) \[", text)]


def test_bar_ends_at_its_total(capsys):
    bar = Bar()
    bar.start(total=3, done=0)
    for n in range(3):
        bar.step(row(n))
    err = capsys.readouterr().err
    assert counts(err)[-1] == (3, 3)
    # a count past the total ("4it"), not a rate that happens to end in 4 ("14.24it/s")
    assert not re.search(r"(?<![\d.])4it(?!/s)", err)
    assert all(a <= b for a, b in counts(err))


def test_resumed_bar_starts_where_the_run_stopped(capsys):
    bar = Bar()
    bar.start(total=5, done=2)
    for n in range(3):
        bar.step(row(n))
    seen = counts(capsys.readouterr().err)
    assert seen[0][0] >= 2 and seen[-1] == (5, 5)
    assert all(a <= b for a, b in seen)


def test_a_part_count_ends_at_its_total_and_gives_way_to_the_next_line(capsys):
    bar = Bar()
    for done in range(1, 5):
        bar.part("the batch: concept test, labellings", done, 4)
    bar.phase("eval: next")
    err = capsys.readouterr().err
    assert counts(err)[-1] == (4, 4) and all(a <= b for a, b in counts(err))
    assert err.rstrip().endswith("icm: eval: next")


def test_the_concept_test_counts_the_labellings_it_scores(tmp_path, capsys):
    """The review can take minutes on a laptop: it says how far it is."""
    from icm import files
    from icm.run.driver import Run

    from .test_trust import setup

    cfg, model = setup(tmp_path, iterations=3)
    Run.create(cfg, tmp_path / "run").execute(model, progress=Bar())
    err = capsys.readouterr().err
    seen = [(int(a), int(b)) for a, b in re.findall(r"labellings: .*?(\d+)/(\d+) \[", err)]
    nulls = files.read_json(tmp_path / "run" / "summary.json")["per_batch"][0]["concept"]["nulls"]
    assert seen and seen[-1] == (len(nulls) + 1, len(nulls) + 1)
