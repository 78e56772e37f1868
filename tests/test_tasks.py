import json

import pytest

from icm.core.consistency import constraints
from icm.errors import DataError
from icm.tasks import final_answer, get_task, load_task_spec, task_names

from .conftest import shared


@pytest.mark.parametrize(
    "text,answer",
    [
        ("She has 3 + 4 = 7 apples.\n#### 7", "7"),
        ("so 1,200 in all\nA: $1,200.00", "1200"),
        ("Half of 5 is 2.5, so the answer is 2.5.", "5/2"),
        ("The temperature fell to -3\nA: -3", "-3"),
        ("A: 12 then she buys more.\nA: 15", "15"),  # the last marker wins
        ("#### 8\nThe answer is 9", "9"),
        ("no final answer here", None),
    ],
)
def test_final_answer_parsing(text, answer):
    assert final_answer(text) == answer


def test_final_answer_on_real_gsm8k_solutions():
    """A solution marked correct parses to the reference's final answer; wrong ones mostly not."""
    path = shared("gsm8k/model_solutions.jsonl")
    right = wrong = agree_wrong = 0
    for line in path.read_text().splitlines():
        row = json.loads(line)
        truth = final_answer(row["ground_truth"])
        assert truth is not None
        for k in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            sol = row[k]
            parsed = final_answer(sol["solution"])
            if sol["is_correct"]:
                right += 1
                assert parsed == truth, (sol["solution"][-80:], truth)
            else:
                wrong += 1
                agree_wrong += parsed == truth
    assert right > 1000 and wrong > 1000
    assert agree_wrong / wrong < 0.05


def test_gsm8k_solution_file_loads_as_verification_set():
    data = get_task("gsm8k").load(shared("gsm8k/model_solutions.jsonl"))
    assert len(data) == 2304
    assert sum(data.gold) == 1089
    groups = {}
    for ex in data.examples:
        groups.setdefault(ex.group, []).append(ex)
    assert len(groups) == 576 and all(len(g) == 4 for g in groups.values())
    assert data.examples[0].prompt.startswith("Question: Janet")
    assert data.examples[0].prompt.endswith("I think this claim is")
    # same-answer constraints come from parsed answers, never from gold labels
    cons = constraints("same-answer", data.examples)
    unparsed = [ex for ex in data.examples if ex.key is None]
    assert len(unparsed) <= 4
    assert len(cons) == 576 * 6 - 3 * len(unparsed)  # an unparsed answer constrains nothing
    assert {c.allowed for c in cons} == {((0, 0), (1, 1)), ((0, 0), (0, 1), (1, 0))}


def test_truthfulqa_and_comparison_tasks_load():
    tqa = get_task("truthfulqa").load(shared("truthfulqa/train.json"))
    assert len(tqa) == 2608 and sum(tqa.gold) == 1194
    assert constraints("none", tqa.examples) == []
    alpaca = get_task("alpaca").load(shared("alpaca/pairs.json"))
    assert len(alpaca) == 934 and set(alpaca.gold) <= {0, 1}  # bool and int labels
    cons = constraints("asymmetry", alpaca.examples)
    assert len([c for c in cons if c.allowed == ((0, 1), (1, 0))]) == 467
    pref = get_task("truthfulqa-preference").load(shared("truthfulqa_preference/train.json"))
    assert len(pref) == 7250


def test_first_groups_keeps_whole_groups_in_file_order():
    data = get_task("truthfulqa").load(shared("truthfulqa/train.json"))
    sub = data.first_groups(16)
    assert len(sub) == 16
    ids = [ex.group for ex in sub.examples]
    first = []
    for ex in data.examples:
        if ex.group not in first:
            first.append(ex.group)
    assert set(ids) == set(first[:4])
    assert sub.rows == [r for r in data.rows if r["consistency_id"] in set(ids)]


def test_claim_field_alias_and_bad_rows(tmp_path):
    path = tmp_path / "claims.jsonl"
    path.write_text(
        json.dumps({"question": "1+1?", "cot": "1+1=2\n#### 2", "consistency_id": 0}) + "\n"
    )
    data = get_task("gsm8k").load(path)
    assert data.examples[0].key == "2" and data.gold == [None]
    path.write_text(json.dumps({"question": "1+1?", "consistency_id": 0}) + "\n")
    with pytest.raises(DataError, match=r"claims.jsonl: row 1: missing field 'choice' or 'cot'"):
        get_task("gsm8k").load(path)
    path.write_text(json.dumps({"question": "q", "choice": "c", "consistency_id": 0, "label": 2}))
    with pytest.raises(DataError, match=r"row 1: field 'label' must be a binary label"):
        get_task("truthfulqa").load(path)


def test_custom_task_spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: capitals\n"
        'template: "Country: {country}\\nClaim: the capital is {city}.\\nI think this claim is"\n'
        "group: country\n"
        "label: gold\n"
        "consistency: {rule: same-answer, key: city}\n"
    )
    task = load_task_spec(spec)
    rows = [
        {"country": "France", "city": "Paris", "gold": True},
        {"country": "France", "city": "Lyon", "gold": False},
        {"country": "France", "city": "Paris", "gold": True},
    ]
    data = task.build(rows)
    assert (
        data.examples[1].prompt
        == "Country: France\nClaim: the capital is Lyon.\nI think this claim is"
    )
    cons = constraints(task.rule, data.examples)
    assert {(c.i, c.j): c.allowed for c in cons}[(0, 2)] == ((0, 0), (1, 1))
    spec.write_text("template: 'x {a'\n")
    with pytest.raises(DataError, match="template"):
        load_task_spec(spec)


def test_a_yaml_spec_can_say_what_the_built_in_gsm8k_task_says(tmp_path):
    """GSM8K's answer key and solutions layout are named hooks: a spec written by hand gives the
    same prompts, groups, keys and gold as the built-in task, on the real solutions file."""
    spec = tmp_path / "math.yaml"
    spec.write_text(
        "name: my-gsm8k\n"
        'template: "Question: {question}\\nClaim: {choice}\\nI think this claim is"\n'
        "group: consistency_id\n"
        "consistency: {rule: same-answer, key: choice, parse: final-answer}\n"
        "aliases: {choice: [cot]}\n"
        "expand: gsm8k-solutions\n"
        "unique: false\n"
    )
    path = shared("gsm8k/model_solutions.jsonl")
    mine, theirs = load_task_spec(spec).load(path), get_task("gsm8k").load(path)
    assert len(mine) == len(theirs) > 0
    assert [(e.prompt, e.group, e.key) for e in mine.examples] == [
        (e.prompt, e.group, e.key) for e in theirs.examples
    ]
    assert mine.gold == theirs.gold
    assert any(e.key is not None for e in mine.examples)


@pytest.mark.parametrize(
    "extra,says",
    [
        ("consistency: {rule: same-answer, key: choice, parse: last-number}\n", "parse"),
        ("consistency: {rule: asymmetry, key: [choice, other], parse: final-answer}\n", "parse"),
        ("expand: my-layout\n", "expand"),
        ("aliases: {choice: cot}\n", "aliases"),
        ("aliases: {choice: [label]}\n", "gold-label"),
        ("unique: 'no'\n", "unique"),
        ("description: [a, b]\n", "description"),
    ],
)
def test_a_spec_naming_a_hook_badly_is_one_line(tmp_path, extra, says):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        'template: "Q: {question} A: {choice}. I think this claim is"\n'
        "group: consistency_id\n" + extra
    )
    with pytest.raises(DataError, match=says) as e:
        load_task_spec(spec)
    assert "\n" not in str(e.value) and "spec.yaml" in str(e.value)


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(DataError, match="truthfulqa"):
        get_task("nope")
    assert {"truthfulqa", "gsm8k", "alpaca", "truthfulqa-preference"} <= set(task_names())
