"""The final-answer parser: the key of GSM8K-verification's consistency rule.

Equal keys force equal labels and different keys forbid two Trues, so each case below is a
rule the search would otherwise learn wrong.
"""

import json

import pytest

from icm.tasks.answers import final_answer, normalise_number

from .conftest import shared

SOLVERS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


@pytest.mark.parametrize(
    "text,value",
    [
        ("17", "17"),
        ("17.", "17"),  # a trailing full stop
        ("17.50", "35/2"),
        ("17.5", "35/2"),
        ("0.5", "1/2"),
        (".5", "1/2"),
        ("1/2", "1/2"),
        ("2/4", "1/2"),
        ("12 / 4", "3"),
        ("1/7", "1/7"),
        ("3 1/3", "10/3"),  # a mixed number, not 3
        ("10/3", "10/3"),
        ("-3 1/3", "-10/3"),
        ("-3", "-3"),
        ("−3", "-3"),  # unicode minus
        ("-0", "0"),
        ("-$5", "-5"),
        ("$-5", "-5"),
        ("$27", "27"),
        ("€27", "27"),
        ("$1,200.00", "1200"),
        ("1,200", "1200"),  # a comma before three digits groups thousands
        ("1,234,567", "1234567"),
        ("17,5", "35/2"),  # a lone comma before one or two digits is a decimal comma
        ("17,50", "35/2"),
        ("12%", "12"),  # a percentage keeps its number: "what percent?" is answered 12
        ("12 percent", "12"),
        ("17 dollars", "17"),
        ("17 dollars per day.", "17"),
        ("5 kg", "5"),
        ("2.5 million", "2500000"),
        ("-1.8 billion", "-1800000000"),
        ("\\frac{1}{7}", "1/7"),
        ("\\dfrac{2}{4}", "1/2"),
        ("3\\frac{1}{3}", "10/3"),
        ("-\\frac{1}{2}", "-1/2"),
        ("\\$1{,}200", "1200"),
        ("1\\,200", "1200"),
        ("50\\%", "50"),
        ("3.3333333333333335", "10/3"),  # a floating-point artefact of 10/3
        ("0.30000000000000004", "3/10"),
        ("10.02609801394532", "250652450348633/25000000000000"),  # no simple fraction: exact
        ("about 18 eggs", "18"),
        ("007", "7"),
        ("Tuesday", None),
        ("", None),
        ("3:30", None),  # a time is no single number
        ("1/0", None),
        ("9" * 51, None),  # longer than MAX_DIGITS: refused
        ("9" * 50, "9" * 50),
    ],
)
def test_normalise_number(text, value):
    assert normalise_number(text) == value


@pytest.mark.parametrize(
    "solution,answer",
    [
        # the known failures of the first-number-after-the-last-marker parser
        ("So she has 5 + 2 + 10 = 17 apples.\nA: 5 + 2 + 10 = 17", "17"),
        ("A: 1/7", "1/7"),
        ("A: 3 1/3", "10/3"),
        ("A: $27", "27"),
        ("The answer is 17.\n\nQ: Tom has 3 pens and buys 2. How many?\nA: 5", "17"),
        # the plain GSM8K forms
        ("16 - 3 - 4 = <<16-3-4=9>>9 eggs\n9 * 2 = $<<9*2=18>>18\nA: 18", "18"),
        ("She has 3 + 4 = 7 apples.\n#### 7", "7"),
        ("####18", "18"),
        ("The answer is 17", "17"),
        ("The answer is: $17.", "17"),
        ("Final answer: 17", "17"),
        ("Answer = 17", "17"),
        ("ANSWER IS 17", "17"),
        ("So the answer is $\\boxed{17}$.", "17"),
        ("\\boxed{\\frac{1}{7}}", "1/7"),
        ("\\boxed{x = 3\\frac{1}{3}}", "10/3"),
        ("A: **18**", "18"),
        ("A:\n18", "18"),
        # numbers in their many dresses
        ("A: 17 dollars", "17"),
        ("A: $1,200.00", "1200"),
        ("A: 12%", "12"),
        ("A: 0.5", "1/2"),
        ("#### 2/4", "1/2"),
        ("A: 17.50", "35/2"),
        ("A: -3", "-3"),
        ("A: -$5.", "-5"),
        ("A: 18 eggs.", "18"),
        ("A: Janet makes $18 per day.", "18"),
        ("A: 18 (because 9 * 2 = 18)", "18"),
        ("A: 2 hours = 120 minutes", "120"),  # an equation: its right-hand side
        ("A: x = 17", "17"),
        ("A: 10 - 3 = 7. Then 7 = 7", "7"),  # the first sentence only
        ("A: 5 - 3", "5"),  # an expression without "=" reads its first number
        ("A: -1.8 billion", "-1800000000"),
        ("A: 201.89999999999998", "2019/10"),
        # which marker wins
        ("A: 12 then she buys more.\nA: 15", "15"),  # the last one
        ("#### 8\nThe answer is 9", "9"),
        ("Plan A: 5 boxes.\n#### 7", "7"),
        ("The answer is 17. Q: Tom has 3 pens. How many? A: 3", "17"),
        ("#### 18\n\nQuestion: Ann has 4 cats and 1 dog. How many pets?\n#### 5", "18"),
        ("Q: Janet has 16 eggs and eats 3. How many are left?\nA: 16 - 3 = 13\n#### 13", "13"),
        ("The answer is 17.\nA:", "17"),  # an empty last marker falls back to the one before
        # words
        ("A: Tuesday.", "tuesday"),
        ("The answer is Yes!", "yes"),
        ("A: five", "5"),
        ("A: 3:30 pm", "3:30 pm"),
        # no key: no constraint
        ("She has 3 + 4 = 7 apples.", None),
        ("The total is 25", None),
        ("A:", None),
        ("", None),
        (None, None),
    ],
)
def test_final_answer(solution, answer):
    assert final_answer(solution) == answer


@pytest.mark.parametrize(
    "same",
    [
        ["A: 0.5", "A: 1/2", "#### 2/4", "The answer is $0.50.", "\\boxed{\\frac{1}{2}}"],
        ["A: 10/3", "A: 3 1/3", "\\boxed{3\\frac{1}{3}}", "A: 3.3333333333333335"],
        ["A: $27", "A: 27", "A: 27 dollars", "#### 27.00", "The answer is $27."],
        ["A: 1200", "A: 1,200", "A: $1,200.00", "#### 1200.0", "A: 1.2 thousand"],
        ["A: 17.50", "A: 17.5", "A: $17.50", "A: 35/2", "A: 17 1/2"],
        ["A: 12%", "A: 12", "A: 12 percent"],
        ["A: -3", "A: −3", "A: - 3", "A: -3.0"],
    ],
)
def test_equal_numbers_get_one_key(same):
    assert len({final_answer(s) for s in same}) == 1
    assert final_answer(same[0]) is not None


@pytest.mark.parametrize(
    "a,b",
    [
        ("A: 1/7", "A: 1"),
        ("A: 3 1/3", "A: 3"),
        ("A: 1/2", "A: 1/3"),
        ("A: 17.5", "A: 17"),
        ("A: 17.05", "A: 17.5"),
        ("A: -3", "A: 3"),
        ("A: 1,200", "A: 1.2"),
        ("A: 5 + 2 + 10 = 17", "A: 5"),
        ("A: 0.12", "A: 12%"),
    ],
)
def test_different_numbers_get_different_keys(a, b):
    assert final_answer(a) != final_answer(b)


@pytest.mark.parametrize(
    "huge,answer",
    [
        ("A: " + "9" * 5000, None),  # too long to be an answer: no key
        ("A: " + "1" * 1_000_000, None),
        ("x" * 1_000_000, None),
        ("-" * 1_000_000, None),
        ("A:" * 500_000, None),
        ("A:\n" * 300_000, None),
        ("<<" * 500_000 + "A: 3", "3"),
        ("Q: x\n" * 100_000 + "A: 3", "3"),
        ("\\boxed{" * 200_000, None),
        ("A: " + " " * 1_000_000 + "5", None),
        ("The answer is 17. " + "Q: y " * 200_000, "17"),
        ("2 + 2 = 4\n" * 100_000 + "#### 4", "4"),
    ],
)
def test_pathological_input_is_read_in_bounded_time(huge, answer):
    """Runs into the test runner's own timeout if any rule is quadratic."""
    assert final_answer(huge) == answer


@pytest.mark.parametrize(
    "huge,value",
    [
        ("9" * 5000, None),
        ("1" * 1_000_000, None),
        ("-" * 1_000_000, None),
        ("x" * 1_000_000 + "5", None),  # only the first 1,000 characters are read
        ("5 " + "x" * 1_000_000, "5"),
    ],
)
def test_normalise_number_on_pathological_input(huge, value):
    assert normalise_number(huge) == value


def test_real_gsm8k_solutions():
    """Nearly every model solution has a key, and a solution marked correct has the key of
    the reference solution (a sanity check on real text, not a rule tuned to it)."""
    path = shared("gsm8k/model_solutions.jsonl")
    total = parsed = correct = agree = 0
    for line in path.read_text().splitlines():
        row = json.loads(line)
        truth = final_answer(row["ground_truth"])
        assert truth is not None
        for k in SOLVERS:
            answer = final_answer(row[k]["solution"])
            total += 1
            parsed += answer is not None
            if row[k]["is_correct"]:
                correct += 1
                agree += answer == truth
    assert total and correct
    assert parsed / total >= 0.99, f"{parsed}/{total} parsed"
    assert agree / correct >= 0.95, f"{agree}/{correct} correct solutions agree"
