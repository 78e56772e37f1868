"""Final answers of GSM8K-style worked solutions, as canonical strings.

The consistency rule compares these strings: equal strings mean "same answer" (same label),
different strings mean "different answers" (not both True). A wrong key silently teaches the
search a wrong rule, so every number is reduced to one exact rational value ("0.5", "1/2",
"2/4" and "$0.50" all read "1/2") and a solution whose answer cannot be read gets no key
(None), which imposes no constraint.
"""

from __future__ import annotations

import re
from collections import deque
from fractions import Fraction

MAX_DIGITS = 50  # longer numbers are refused: bounded time, and no real answer is that long
_SPAN = 300  # characters read after an answer marker
_READ = 1000  # characters normalise_number reads: bounded time on any input

_CALC = re.compile(r"<<[^<>\n]{0,200}>>")  # GSM8K calculator notes: "$<<9*2=18>>18"
_MARKER = re.compile(r"####|\bA:|(?i:\banswer\s*(?:is\b|was\b|:|=))|\\boxed\s*\{")
_NEXT_QUESTION = re.compile(
    r"(?:^[ \t]*|(?<=[.!?])[ \t]+)(?:Q|(?i:question))[ \t]*\d*[ \t]*:", re.MULTILINE
)
_SENTENCE_END = re.compile(r"[.!?;](?=\s|$)")
_LONG = re.compile(rf"\d{{{MAX_DIGITS + 1}}}")
_NUMBER = re.compile(
    r"(?<![\w.])(?P<neg>-\s?)?(?:[$€£¥]\s?)?(?P<neg2>-)?"
    r"(?:(?:(?P<whole>\d+)\s+)?(?P<num>\d+)\s*/\s*(?P<den>\d+)"  # 1/7, 3 1/3
    r"|(?P<dec>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)"  # 1,200.50: commas group thousands
    r"|\d+,\d{1,2}(?![\d,])"  # 17,5: a decimal comma
    r"|\d*\.\d+|\d+))"
    r"(?:\s*(?P<scale>thousand|million|billion|trillion)\b)?",
    re.IGNORECASE,
)
_SCALE = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_WORDS = {
    w: str(i)
    for i, w in enumerate(
        re.findall(
            r"\w+",
            "zero one two three four five six seven eight nine ten eleven twelve thirteen "
            "fourteen fifteen sixteen seventeen eighteen nineteen twenty",
        )
    )
}
_LATEX = [
    (re.compile(r"\\[dt]?frac\s*\{([^{}]{0,60})\}\s*\{([^{}]{0,60})\}"), r" \1/\2"),
    (re.compile(r"\\approx|≈"), "="),
    (re.compile(r"\\times|\\cdot|×"), "*"),
    (re.compile(r"\\([$%])"), r"\1"),
    (re.compile(r"\{,\}"), ","),  # 1{,}200
    (re.compile(r"\\[,;!]"), ""),  # 1\,200 (a thin space between digit groups)
    (re.compile(r"\\[a-zA-Z]+|[{}]"), " "),  # \text{...}, \boxed{...}, \left( and braces
    (re.compile(r"[−–]"), "-"),  # unicode minus and en dash
]


def _plain(text: str) -> str:
    """LaTeX and typography reduced to plain text: `\\frac{1}{7}` -> ` 1/7`, `\\$` -> `$`."""
    for pattern, repl in _LATEX:
        text = pattern.sub(repl, text)
    return text


def normalise_number(text: str) -> str | None:
    """The canonical value of the first number in `text`, or None when there is none.

    Reads integers, decimals (".5"), fractions ("1/7", LaTeX `\\frac{1}{7}`), mixed numbers
    ("3 1/3" is 10/3), negatives ("-5", "-$5", "$-5"), currency signs, units and any words
    after the number, "12%" (read as 12: GSM8K asks "what percent" and answers 12 or 12%),
    and "2.5 million". Commas: a comma before exactly three digits groups thousands
    ("1,200" is 1200); a single comma before one or two digits is a decimal comma ("17,5" is
    17.5). The result is the exact rational as a string ("17", "-3", "10/3"), so equal
    numbers compare equal. A decimal with 10+ decimal places that lies within 1e-9 of a
    fraction with a denominator up to 1000 is a floating-point artefact ("3.3333333333333335"
    is 10/3). None, too, for a number over MAX_DIGITS digits, a division by zero, a time or
    ratio ("3:30"), which are no single value, and a number not ending well inside the first
    1,000 characters (the only ones read, so that any input takes bounded time).
    """
    if not isinstance(text, str):
        return None
    cut, text = len(text) > _READ, _plain(text[:_READ])
    m = _NUMBER.search(text)
    if m is None or re.match(r":\d", text[m.end() : m.end() + 2]):
        return None
    if cut and m.end() > len(text) - 20:  # the number may go on past what was read
        return None
    if sum(c.isdigit() for c in m.group()) > MAX_DIGITS:
        return None
    try:
        if m["den"] is not None:
            value = Fraction(int(m["num"]), int(m["den"])) + int(m["whole"] or 0)
        else:
            dec = m["dec"]
            if re.fullmatch(r"\d+,\d{1,2}", dec):
                dec = dec.replace(",", ".")
            value = Fraction(dec.replace(",", ""))
            places = len(dec.partition(".")[2])
            near = value.limit_denominator(1000)
            if places >= 10 and abs(near - value) <= Fraction(1, 10**9) * max(
                Fraction(1), abs(value)
            ):
                value = near
    except ZeroDivisionError:
        return None
    if m["scale"]:
        value *= _SCALE[m["scale"].lower()]
    return str(-value if m["neg"] or m["neg2"] else value)


def _span(text: str, marker: re.Match[str], end: int) -> str:
    """What a marker announces, up to `end` (the next marker): the inside of `\\boxed{...}`,
    else the rest of its sentence (up to the line's end or a full stop), blank lines skipped."""
    rest = text[marker.end() : min(end, marker.end() + 2 * _SPAN)].lstrip()[:_SPAN]
    if marker.group().startswith("\\"):
        depth = 1
        for i, c in enumerate(rest):
            depth += {"{": 1, "}": -1}.get(c, 0)
            if depth == 0:
                return rest[:i]
    return _SENTENCE_END.split(rest.split("\n", 1)[0], 1)[0]


def _read(span: str) -> str | None:
    """The answer in a marker's span: the value of an equation's right-hand side
    ("5 + 2 + 10 = 17" is 17), else of its first number; else its text, lower-cased without
    outer punctuation ("Tuesday." is "tuesday", "five" is 5); None when empty or when the
    number is too long to read."""
    parts = [p for p in _plain(span).split("=") if p.strip()]
    if not parts:
        return None
    rhs = parts[-1]
    value = normalise_number(rhs)
    if value is not None:
        return value
    if _LONG.search(rhs):
        return None
    words = " ".join(rhs.split()).strip(" .,;:!?*\"'`").lower()
    return _WORDS.get(words, words) or None


def final_answer(solution: str) -> str | None:
    """The canonical final answer of a worked solution, or None when none can be read.

    Markers: `####`, `A:`, "answer is" / "answer:" (any case) and `\\boxed{...}`. The last
    marker wins: models restate and correct themselves, and GSM8K solutions end with their
    answer. But a model often runs on past its answer into a new question ("Q: ..." then
    "A: ..."), so the solution is first cut at the first "Q:" or "Question:" that starts a
    line or a sentence after an answer marker; a question before any marker (a restated
    prompt) is kept. If the last marker announces nothing (a cut-off "A:"), up to four
    earlier markers are tried. No marker means None, not the last number: the last number of
    a solution is often an intermediate step, and no key means no constraint, the safe side.
    GSM8K calculator notes (`<<9*2=18>>`) are dropped first.
    """
    if not isinstance(solution, str):
        return None
    text = _CALC.sub("", solution)
    first = _MARKER.search(text)
    if first is None:
        return None
    cut = _NEXT_QUESTION.search(text, first.end())
    if cut:
        text = text[: cut.start()]
    end = len(text)
    for marker in reversed(deque(_MARKER.finditer(text), maxlen=5)):
        answer = _read(_span(text, marker, end))
        if answer is not None:
            return answer
        end = marker.start()
    return None
