"""Every data format `--data` takes gives the same claims, as strictly as JSON Lines does."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from icm import files
from icm.cli import main
from icm.errors import ConfigError, DataError
from icm.run.config import RunConfig
from icm.run.folder import input_files
from icm.run.plan import load_data
from icm.tasks import get_task
from icm.tasks.readers import ReadOptions, read_rows

ROWS = [
    {"question": f"Is {n} even?", "choice": text, "label": ok, "consistency_id": n}
    for n in (2, 3, 4)
    for text, ok in (("Yes", n % 2 == 0), ("No", n % 2 == 1))
]


def write(path: Path, rows: list[dict], kind: str) -> Path:
    """`rows` in the format `kind`, as a researcher's own tools would write them."""
    if kind == "json":
        path.write_text(json.dumps(rows))
    elif kind == "jsonl":
        files.write_jsonl(path, rows)
    elif kind in ("csv", "tsv"):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, list(rows[0]), delimiter="," if kind == "csv" else "\t")
            w.writeheader()
            w.writerows(rows)
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif kind == "datasets":
        import datasets

        datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(path))
    return path


KINDS = ["json", "jsonl", "csv", "tsv", "parquet", "datasets"]


def suffix(kind: str) -> str:
    return "" if kind == "datasets" else "." + kind


@pytest.mark.parametrize("kind", KINDS)
def test_every_format_reads_the_same_claims(tmp_path, kind):
    task = get_task("truthfulqa")
    want = task.load(write(tmp_path / "ref.jsonl", ROWS, "jsonl"))
    got = task.load(write(tmp_path / f"d{suffix(kind)}", ROWS, kind))
    assert [ex.prompt for ex in got.examples] == [ex.prompt for ex in want.examples]
    assert got.gold == want.gold == [1, 0, 0, 1, 1, 0]
    assert [str(ex.group) for ex in got.examples] == [str(ex.group) for ex in want.examples]


@pytest.mark.parametrize("kind", KINDS)
def test_a_field_rename_reads_another_schema_in_every_format(tmp_path, kind):
    other = [
        {
            "q": r["question"],
            "answer": r["choice"],
            "gold": r["label"],
            "qid": r["consistency_id"],
            "extra": "x",
        }
        for r in ROWS
    ]
    read = ReadOptions(
        columns="q,answer,gold,qid",
        field=["question=q", "choice=answer", "label=gold", "consistency_id=qid"],
    )
    task = get_task("truthfulqa")
    got = task.load(write(tmp_path / f"d{suffix(kind)}", other, kind), read)
    want = task.load(write(tmp_path / "ref.jsonl", ROWS, "jsonl"))
    assert [ex.prompt for ex in got.examples] == [ex.prompt for ex in want.examples]
    assert got.gold == want.gold


def test_the_command_line_reads_a_csv_with_renamed_columns(tmp_path, capsys):
    other = [{"Q": r["question"], "A": r["choice"], "qid": r["consistency_id"]} for r in ROWS]
    data = write(tmp_path / "mine.csv", other, "csv")
    argv = ["run", "--data", str(data), "--field", "question=Q", "--field", "choice=A"]
    argv += ["--field", "consistency_id=qid", "--out", str(tmp_path / "run")]
    assert main([*argv, "--field", "label"]) == 2  # read before the model is loaded
    assert "--field 'label': expected FIELD=COLUMN" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    cfg = RunConfig(data=str(data), field=["question=Q", "choice=A", "consistency_id=qid"])
    _, loaded = load_data(cfg)
    assert len(loaded) == 6 and loaded.gold == [None] * 6


@pytest.mark.parametrize(
    ("kind", "rows", "part"),
    [
        ("csv", [{"question": "Q?", "choice": "", "label": "true", "consistency_id": 1}], "choice"),
        (
            "tsv",
            [{"question": "Q?", "choice": "A", "label": "maybe", "consistency_id": 1}],
            "label",
        ),
        (
            "parquet",
            [{"question": "Q?", "choice": "A", "label": float("nan"), "consistency_id": 1}],
            "nan",
        ),
        (
            "parquet",
            [{"question": "Q?", "choice": "A", "label": True, "consistency_id": float("inf")}],
            "inf",
        ),
        (
            "datasets",
            [{"question": "Q?", "choice": b"A", "label": True, "consistency_id": 1}],
            "bytes",
        ),
    ],
)
def test_bad_cells_are_one_line_naming_file_row_and_column(tmp_path, kind, rows, part):
    rows = rows + [{**rows[0], "consistency_id": 2}]  # two rows, the first one bad
    path = write(tmp_path / f"d{suffix(kind)}", rows, kind)
    with pytest.raises(DataError) as e:
        get_task("truthfulqa").load(path)
    text = str(e.value)
    assert str(path) in text and "row" in text.lower() and part in text.lower(), text
    assert "\n" not in text


def test_csv_problems_are_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('question,choice,label\n"Q?,A,true\n')
    with pytest.raises(DataError, match=r"bad\.csv: line \d+"):
        read_rows(bad)
    bad.write_text("question,question,label\nQ,A,true\n")
    with pytest.raises(DataError, match="header"):
        read_rows(bad)
    bad.write_text("question,choice\nQ,A,extra\n")
    with pytest.raises(DataError, match="line 2: 3 cells"):
        read_rows(bad)
    bad.write_bytes(b"question,choice\nQ,\xff\n")
    with pytest.raises(DataError, match="UTF-8"):
        read_rows(bad)
    bad.write_text("question,choice\n")
    with pytest.raises(DataError, match="no rows"):
        read_rows(bad)


def test_a_broken_parquet_or_datasets_folder_is_one_line(tmp_path):
    bad = tmp_path / "d.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_rows(bad)
    folder = write(tmp_path / "ds", ROWS, "datasets")
    (folder / "train" / "dataset_info.json").write_text("{")
    with pytest.raises(DataError, match="readable datasets folder"):
        read_rows(folder)


def test_columns_split_and_renames_are_checked(tmp_path):
    path = write(tmp_path / "d.jsonl", ROWS, "jsonl")
    with pytest.raises(DataError, match=r"row 1: no column 'nope' \(--columns\)"):
        read_rows(path, ReadOptions(columns="question,nope"))
    with pytest.raises(ConfigError, match="FIELD=COLUMN"):
        read_rows(path, ReadOptions(field=["question"]))
    with pytest.raises(DataError, match="has both 'choice' and 'question'"):
        read_rows(path, ReadOptions(field=["choice=question"]))
    with pytest.raises(ConfigError, match="--split is for"):
        read_rows(path, ReadOptions(split="train"))
    two = tmp_path / "two"
    import datasets

    half = datasets.Dataset.from_list(ROWS[:2])
    datasets.DatasetDict({"a": half, "b": half}).save_to_disk(str(two))
    with pytest.raises(ConfigError, match="holds the splits a, b: pick one with --split"):
        read_rows(two)  # two splits and no train: say which
    assert len(read_rows(two, ReadOptions(split="b"))[0]) == 2


def fake_hub_cache(home: Path, name: str, rows: list[dict]) -> None:
    """What `datasets.load_dataset(name)` leaves in the cache, built offline from `rows`."""
    from datasets.packaged_modules.json.json import Json

    source = home / "src.jsonl"
    files.write_jsonl(source, rows)
    root = home / "datasets"
    built = Json(
        dataset_name=name.split("/")[-1],
        cache_dir=str(root),
        data_files={"train": str(source), "test": str(source)},
        hash="0123abcd",
    )
    built.download_and_prepare()
    made = root / name.split("/")[-1]
    config = next(made.glob("default*"))
    config.rename(made / "default")
    made.rename(root / name.replace("/", "___"))


def test_a_data_set_in_the_local_hugging_face_cache_is_read_offline(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    fake_hub_cache(tmp_path, "someorg/claims", ROWS)
    task = get_task("truthfulqa")
    for source, split in [("hf:someorg/claims", None), ("hf:someorg/claims:test", None)]:
        got = task.load(source, ReadOptions(split=split))
        assert got.gold == [1, 0, 0, 1, 1, 0]
    assert len(task.load("hf:someorg/claims", ReadOptions(split="test"))) == 6
    with pytest.raises(DataError, match="nope"):
        task.load("hf:someorg/claims:nope")
    with pytest.raises(DataError) as e:
        task.load("hf:someorg/absent")
    text = str(e.value)
    assert "not in the local Hugging Face cache" in text and "downloads nothing" in text
    assert "\n" not in text
    with pytest.raises(ConfigError, match="expected hf:NAME"):
        task.load("hf:bad name!")


@pytest.mark.parametrize(
    "source, message",
    [
        ("hf:../claims", "expected hf:NAME"),  # a path, not a name on the Hub
        ("hf:.claims", "expected hf:NAME"),
        ("hf:a/b/c", "expected hf:NAME"),
        ("hf:org/claims:../x", "'../x' is not a split name"),
        ("hf:org/claims:a:b", "'a:b' is not a split name"),
        ("hf:here", "here is a local path here: pass it as --data here"),
    ],
)
def test_an_hf_name_is_a_name_on_the_hub_never_a_path(tmp_path, monkeypatch, source, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()  # datasets would read a local folder of that name
    with pytest.raises(ConfigError, match=message):
        read_rows(source)


def test_a_datasets_folder_never_reads_outside_itself(tmp_path):
    outside = write(tmp_path / "outside", ROWS, "datasets")
    folder = tmp_path / "inner" / "ds"
    folder.mkdir(parents=True)
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": ["../../outside/train"]}))
    assert (folder / "../../outside/train").is_dir()  # a split that points at real data
    with pytest.raises(DataError, match=r"dataset_dict.json: field 'splits'"):
        read_rows(folder)
    assert len(read_rows(outside)[0]) == len(ROWS)


@pytest.mark.parametrize("kind", ["json", "jsonl"])
def test_a_key_named_twice_in_a_row_is_refused(tmp_path, kind):
    """Parsers disagree on which of two values wins; icm takes neither."""
    row = '{"question": "Q", "choice": "A", "label": 1, "consistency_id": 0, "label": 0}'
    path = tmp_path / f"d.{kind}"
    path.write_text(f"[{row}]" if kind == "json" else row + "\n")
    with pytest.raises(DataError, match="the key 'label' appears twice in one object"):
        read_rows(path)


def test_a_changed_file_of_any_format_is_noticed_on_resume(tmp_path):
    """The plan's fingerprint is of the rows read, whatever the format."""
    from icm.run.folder import data_fingerprints

    task = get_task("truthfulqa")
    for kind in KINDS:
        path = write(tmp_path / f"d{suffix(kind)}", ROWS, kind)
        before = data_fingerprints(task.load(path), task.fmt, task.rule, {})
        changed = [dict(r) for r in ROWS]
        changed[3]["choice"] = "Perhaps"
        if kind == "datasets":
            shutil.rmtree(path)
        after = data_fingerprints(task.load(write(path, changed, kind)), task.fmt, task.rule, {})
        assert before != after, kind


def test_a_datasets_folder_is_protected_like_a_file(tmp_path):
    folder = write(tmp_path / "run" / "ds", ROWS, "datasets")
    cfg = RunConfig(data=str(folder))
    assert str(folder) in input_files(cfg)
    assert input_files(RunConfig(data="hf:someorg/claims")) == []


@pytest.mark.parametrize("kind", KINDS)
def test_rl_and_compare_prompts_read_every_format(tmp_path, kind):
    from icm.train.prompts import load_prompts

    rows = [{"q": "What is two and two?", "n": 1}, {"q": "Name a colour.", "n": 2}]
    path = write(tmp_path / f"p{suffix(kind)}", rows, kind)
    got = load_prompts(str(path), "{question}", read=ReadOptions(field=["question=q"]))
    assert [p.text for p in got] == ["What is two and two?", "Name a colour."]
