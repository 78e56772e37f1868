from icm.core.consistency import EXACTLY_ONE, NOT_BOTH_TRUE, SAME, allowed, constraints, violations
from icm.core.data import Example


def ex(i, group, key):
    return Example(str(i), f"p{i}", group, key)


def test_same_answer_rule():
    a, b, c = ex(0, "q", "18"), ex(1, "q", "18"), ex(2, "q", "26")
    assert allowed("same-answer", a, b) == SAME
    assert allowed("same-answer", a, c) == NOT_BOTH_TRUE
    assert allowed("same-answer", a, ex(3, "other", "18")) is None  # other question
    assert allowed("same-answer", a, ex(4, "q", None)) is None  # unparsed answer: no rule


def test_asymmetry_rule():
    ab, ba, ac = ex(0, "q", ("A", "B")), ex(1, "q", ("B", "A")), ex(2, "q", ("A", "C"))
    assert allowed("asymmetry", ab, ba) == EXACTLY_ONE
    assert allowed("asymmetry", ab, ac) is None
    assert allowed("asymmetry", ab, ex(3, "q", ("A", "B"))) == SAME


def test_inconsistency_count_on_hand_made_groups():
    # question q1: answers 18, 18, 26, 26; question q2: answers 5, 7
    exs = [ex(0, "q1", "18"), ex(1, "q1", "18"), ex(2, "q1", "26"), ex(3, "q1", "26")]
    exs += [ex(4, "q2", "5"), ex(5, "q2", "7")]
    cons = constraints("same-answer", exs)
    assert len(cons) == 6 + 1
    assert violations(cons, [1, 1, 0, 0, 1, 0]) == []
    # 0 and 1 disagree (same answer); 0, 2 both True (different answers); 4, 5 both True
    bad = violations(cons, [1, 0, 1, 0, 1, 1])
    assert {(c.i, c.j) for c in bad} == {(0, 1), (0, 2), (2, 3), (4, 5)}
    # unlabelled examples break nothing
    assert violations(cons, [1, -1, 1, -1, -1, -1]) == [c for c in cons if (c.i, c.j) == (0, 2)]


def test_none_rule_has_no_constraints():
    exs = [ex(i, "q", str(i % 2)) for i in range(4)]
    assert constraints("none", exs) == []
