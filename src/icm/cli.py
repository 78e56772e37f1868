"""The `icm` command line. Options come from the config dataclasses; their help is the CLI help."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, NoReturn

from .backends import BACKENDS
from .backends.options import ModelChoice
from .commands import (
    CompareCommand,
    DemoCommand,
    EvalCommand,
    ExportCommand,
    FinetuneCommand,
    ReportCommand,
    RLCommand,
    RunCommand,
)
from .core.search import SearchConfig
from .errors import ConfigError, IcmError, pip_hint, printable
from .options import flag, kind, resumable
from .run.config import RunConfig, preset
from .run.tracking import check_report_to

EPILOG = """quick start:
  icm demo                                     label a small built-in data set, compare with gold
  icm run --task truthfulqa --data train.json --limit 16 --iterations 8 --out runs/t1
  icm run --resume runs/t1 --iterations 16     continue a run up to 16 iterations in all
  icm tasks                                    list the built-in tasks

A run folder holds config.json, plan.json, the searches' checkpoints and traces under batches/,
labels.jsonl and summary.json. Errors in input files name the file, the row and the field and
exit with code 2."""

RUN_OPTIONS: tuple[type, ...] = (
    ModelChoice,
    *(backend.options for backend in BACKENDS.values()),
    RunConfig,
    SearchConfig,
)
"""The dataclasses `icm run` takes its options from, each listed under its own heading."""
RESUMABLE = resumable(*RUN_OPTIONS)
"""Options that may change when a run is resumed; the rest would change what the run computes."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: `icm run: --seed: invalid int value: 'x'`."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        if len(message) > 200:
            message = message[:197] + "..."
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _number(conv: type) -> Any:
    """An argparse type: the number, or a short error for text that is none (or 5000 digits)."""

    def parse(text: str) -> int | float:
        if len(text) > 100:
            raise argparse.ArgumentTypeError(f"{text[:20]}...: a number of over 100 characters")
        try:
            return conv(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"invalid {conv.__name__} value: {text!r}") from e

    parse.__name__ = conv.__name__
    return parse


def _default(text: str, default: object) -> str:
    """The help's "(default: X)" suffix, unless the help already says what the default is."""
    if "default" in text or default == "" or (default is None and "None:" in text):
        return ""
    return f" (default: {default})"


def _add_fields(parser: Any, cls: type, skip: set[str] | None = None) -> None:
    """A flag for each field of `cls` that has help (and is not in `skip`, which gains them)."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("help") or (skip is not None and f.name in skip):
            continue
        if skip is not None:
            skip.add(f.name)
        k = kind(f)
        default = f.default if f.default is not dataclasses.MISSING else None
        if k == "bool":
            on = default is True  # an option that is on by default is turned off with --no-X
            parser.add_argument(
                flag(("no_" if on else "") + f.name),
                dest=f.name,
                action="store_false" if on else "store_true",
                default=argparse.SUPPRESS,
                help=("turn off: " if on else "") + meta["help"],
            )
            continue
        if k == "list":  # given once per value: --field a=b --field c=d
            parser.add_argument(
                flag(f.name),
                dest=f.name,
                action="append",
                default=argparse.SUPPRESS,
                help=meta["help"],
            )
            continue
        conv: Any = _number(int) if k == "int" else _number(float) if k == "float" else str
        parser.add_argument(
            flag(f.name),
            dest=f.name,
            type=conv,
            choices=meta.get("choices"),
            default=argparse.SUPPRESS,
            help=meta["help"] + _default(meta["help"], default),
        )


def _add_command(parser: Any, cls: type) -> None:
    """A subcommand's own options (a dataclass of `commands.py`), with their defaults."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("positional"):
            parser.add_argument(f.name, help=meta["help"])
        elif kind(f) == "bool":
            on = f.default is True
            parser.add_argument(
                flag(("no_" if on else "") + f.name),
                dest=f.name,
                action="store_false" if on else "store_true",
                help=meta["off"] if on else meta["help"],
            )
        else:
            k = kind(f)
            choices = meta.get("choices")
            parser.add_argument(
                flag(f.name),
                dest=f.name,
                type=_number(int) if k == "int" else _number(float) if k == "float" else None,
                choices=choices() if callable(choices) else choices,
                required=meta.get("required", False),
                default=None if meta.get("required") else f.default,
                help=meta["help"],
                **({"metavar": meta["metavar"]} if "metavar" in meta else {}),
            )


def _config(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    given = vars(args)
    cfg = base or RunConfig()
    top = {f.name for f in dataclasses.fields(RunConfig)} - {"search"}
    inner = {f.name for f in dataclasses.fields(SearchConfig)}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in given.items() if k in top})
    cfg.search = dataclasses.replace(cfg.search, **{k: v for k, v in given.items() if k in inner})
    return cfg


def _progress(args: argparse.Namespace):
    from .run.progress import Bar

    return Bar() if args.progress else None


def cmd_run(args: argparse.Namespace) -> int:
    from .backends import where
    from .run.driver import Run
    from .run.plan import prepare

    if args.resume:
        if args.out or args.overwrite:
            raise ConfigError("--resume continues a run in its own folder: drop --out/--overwrite")
        if args.algorithm != "default":
            raise ConfigError(f"{args.resume}: --resume keeps the run's settings; not --algorithm")
        run = Run.open(args.resume)
        run.folder.lock()  # one process per run folder: refused here, before any work
        changed = set(vars(args)) & (
            {f.name for f in dataclasses.fields(RunConfig)}
            | {f.name for f in dataclasses.fields(SearchConfig)}
        )
        fixed = sorted(changed - RESUMABLE)
        if fixed:
            names = ", ".join(map(flag, fixed))
            raise ConfigError(f"{args.resume}: --resume keeps the run's settings; not {names}")
        # Trust in a model's code is given per command, never taken from a run folder that
        # someone else may have written.
        run.cfg.trust_remote_code = False
        cfg = _config(args, run.cfg)
        done = run.done()
        if cfg.iterations is not None and cfg.iterations < done:
            raise ConfigError(f"--iterations {cfg.iterations} is below the {done} already done")
        prepared = prepare(cfg)
        run.folder.check_writable()
        run.cfg = cfg
        run.folder.write_config(cfg)
    else:
        if not args.out:
            raise ConfigError("pass --out FOLDER for a new run (or --resume FOLDER)")
        cfg = _config(args, preset(args.algorithm))
        Run.check_new(cfg, args.out, args.overwrite)
        prepared = prepare(cfg)  # bad input fails before the run folder is created or touched
        run = Run.create(cfg, args.out, overwrite=args.overwrite)
    if args.progress and (how := where(prepared.model)):
        print(f"icm: model {run.cfg.model} ({how})", file=sys.stderr)
    summary = run.execute(progress=_progress(args), prepared=prepared)
    print_summary(summary, run.path)
    return 0


def print_warnings(summary: dict) -> None:
    for line in summary.get("warnings", []):
        print(f"icm: warning: {printable(line)}", file=sys.stderr)


def print_summary(s: dict, folder: Path) -> None:
    print_warnings(s)
    agree = s["agreement"]
    print(
        f"U={s['utility']:.2f}  inconsistencies={s['inconsistencies']}  "
        f"labels: {s['labels']['true']} True / {s['labels']['false']} False"
        + ("" if agree is None else f"  agreement with gold={agree:.3f}")
    )
    chains = f"; chains agree on {s['chain_agreement']:.0%} of rows" if s["chains"] > 1 else ""
    print(
        f"searched {s['searched_share']:.0%} of {s['examples']} examples{chains}; "
        f"{s['iterations']} iterations"
    )
    if s.get("concept", {}).get("text"):
        print(f"concept test: {s['concept']['text']}")
    print(f"{cost_text(s)} -> {folder}/labels.jsonl")


def cost_text(s: dict) -> str:
    """What a run spent: the search, the review and both, with the wall time."""
    c = s["cost"]
    cached = f" ({s['cached_share']:.0%} from the server's cache)" if s.get("cached_tokens") else ""

    def part(name: str) -> str:
        p = c[name]
        return f"{name} {p['calls']} calls, {p['tokens']} tokens, {p['seconds']:.1f} s"

    return (
        f"cost: {part('search')}; {part('review')}; {part('total')}{cached}; "
        f"wall {s['wall_seconds']:.1f} s"
    )


def cmd_tasks(args: argparse.Namespace) -> int:
    from .tasks import get_task, task_names

    for name in task_names():
        print(f"{name:24s} {get_task(name).description}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo
    from .options import check

    check(DemoCommand(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DemoCommand)}))
    return demo(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval.icl import EvalConfig, evaluate, write

    names = {f.name for f in dataclasses.fields(EvalConfig)}
    cfg = EvalConfig(**{k: v for k, v in vars(args).items() if k in names})
    out = Path(args.out or args.run)
    result = evaluate(args.run, cfg, out=out, overwrite=args.overwrite, note=say)
    report_eval(result, write(result, out))
    return 0


def say(text: str) -> None:
    """One line of what a long step is doing, on stderr."""
    print(f"icm: {printable(text)}", file=sys.stderr, flush=True)


def report_eval(result: dict, written: list[Path]) -> None:
    """The evaluation table, where it went, and what a reader could miss in it."""
    from .eval.icl import EVAL_PNG, markdown, overlap_text

    print(printable(markdown(result), lines=True), end="")
    print("-> " + ", ".join(str(p) for p in written))
    if result["demos"].get("dropped_overlap"):
        say(overlap_text(result))
    if not any(p.name == EVAL_PNG for p in written):
        say(f"eval.png skipped: matplotlib is missing ({pip_hint('matplotlib')})")


def cmd_report(args: argparse.Namespace) -> int:
    try:
        from .eval.report import write_report
    except ImportError as e:
        raise IcmError(f"icm report needs matplotlib: {pip_hint('matplotlib')} ({e})") from e
    print(write_report(args.run, args.out, args.overwrite))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run

    n, data = export_run(
        args.run, args.format, args.out, args.searched_only, args.overwrite, args.least_certain
    )
    skipped = "".join(f"; left out: {k} ({v})" for k, v in data.skipped.items())
    print(f"{n} {args.format} records from {len(data.rows)} labelled rows -> {args.out}{skipped}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from .train import TrainConfig
    from .train.finetune import finetune
    from .train.reward import train_reward

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    check_report_to(cfg.report_to)  # before a model loads or anything is written
    train = train_reward if args.reward_model else finetune
    info = train(args.run, args.out, cfg, args.searched_only, args.model, args.overwrite)
    print(f"{info['steps']} steps, loss {info['loss_first']:.3f} -> {info['loss_last']:.3f}")
    print(f"{info['kind']} model -> {args.out}")
    return 0


def cmd_rl(args: argparse.Namespace) -> int:
    from .options import check
    from .train.rlconfig import RLConfig, resume_config

    names = {f.name for f in dataclasses.fields(RLConfig)}
    given = {k: v for k, v in vars(args).items() if k in names}
    if args.resume:
        if args.out or args.overwrite:
            raise ConfigError("--resume continues in its own folder: drop --out/--overwrite")
        cfg, out = resume_config(args.resume, given), args.resume
    else:
        if not args.out:
            raise ConfigError("pass --out FOLDER for a new policy (or --resume FOLDER)")
        cfg, out = RLConfig(**given), args.out
    check(cfg)  # before torch loads: a bad option is one quick line
    check_report_to(cfg.report_to)
    from .train.rl import train_policy

    info = train_policy(cfg, out, args.overwrite, bool(args.resume), show=args.progress, say=say)
    first, last = info["first"] or {}, info["last"] or {}
    if first:
        print(
            f"{info['steps']} steps ({cfg.algorithm}); mean reward {first['reward']:+.3f} at "
            f"step {first['step']} -> {last['reward']:+.3f} at step {last['step']}; "
            f"completion length {last['completion_length']:.1f}"
        )
    print(f"policy -> {out} (loads as --model {out})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .eval.compare import COMPARE_PNG, compare, markdown, write
    from .train.rlconfig import CompareConfig

    names = {f.name for f in dataclasses.fields(CompareConfig)}
    cfg = CompareConfig(**{k: v for k, v in vars(args).items() if k in names})
    result = compare(args.a, args.b, cfg, args.out, args.overwrite, say=say)
    written = write(result, args.out)
    print(printable(markdown(result), lines=True), end="")
    print("-> " + ", ".join(str(p) for p in written))
    if not any(p.name == COMPARE_PNG for p in written):
        say(f"{COMPARE_PNG} skipped: matplotlib is missing ({pip_hint('matplotlib')})")
    return 0


def _add_rl(sub) -> None:
    from .train.rlconfig import RLConfig

    r = sub.add_parser("rl", help="train a policy against a reward model (TRL GRPO or RLOO, LoRA)")
    _add_command(r, RLCommand)
    _add_fields(r, RLConfig)
    r.set_defaults(func=cmd_rl)


def _add_compare(sub) -> None:
    from .train.rlconfig import CompareConfig

    c = sub.add_parser("compare", help="two policies head to head: win rate under a judge")
    _add_command(c, CompareCommand)
    _add_fields(c, CompareConfig)
    c.set_defaults(func=cmd_compare)


def _add_run(sub) -> None:
    """`icm run`: the hand-written options, then one group per options dataclass."""
    r = sub.add_parser(
        "run",
        help="label a data set",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_command(r, RunCommand)
    added: set[str] = set()
    for cls in RUN_OPTIONS:
        title = (cls.__doc__ or cls.__name__).strip().split(". ")[0].splitlines()[0]
        _add_fields(r.add_argument_group(title.rstrip(".")), cls, added)
    r.set_defaults(func=cmd_run)


def _add_demo(sub) -> None:
    """`icm demo` and `icm tasks`."""
    d = sub.add_parser("demo", help="run ICM on a small built-in data set with the default model")
    _add_command(d, DemoCommand)
    d.set_defaults(func=cmd_demo)
    t = sub.add_parser("tasks", help="list the built-in tasks")
    t.set_defaults(func=cmd_tasks)


def _add_eval(sub) -> None:
    """`icm eval` and `icm report`."""
    from .eval.icl import EvalConfig

    e = sub.add_parser("eval", help="many-shot accuracy with ICM, gold, random and no labels")
    _add_command(e, EvalCommand)
    _add_fields(e, EvalConfig)
    e.set_defaults(func=cmd_eval)
    rep = sub.add_parser("report", help="one self-contained HTML page about a run")
    _add_command(rep, ReportCommand)
    rep.set_defaults(func=cmd_report)


def _add_export(sub) -> None:
    """`icm export`."""
    x = sub.add_parser("export", help="ICM labels as training data (TRL column names)")
    _add_command(x, ExportCommand)
    x.set_defaults(func=cmd_export)


def _add_finetune(sub) -> None:
    """`icm finetune`."""
    from .train import TrainConfig

    f = sub.add_parser("finetune", help="LoRA fine-tune the run's model on its ICM labels")
    _add_command(f, FinetuneCommand)
    _add_fields(f, TrainConfig)
    f.set_defaults(func=cmd_finetune, **dataclasses.asdict(TrainConfig()))


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="icm",
        description="Internal Coherence Maximization: label claims with a model, no labels.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in (_add_run, _add_demo, _add_eval, _add_export, _add_finetune, _add_rl, _add_compare):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except IcmError as e:
        print(f"icm: {printable(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder we may not write: one line, files stay valid
        where = f"{e.filename}: " if e.filename else ""
        print(f"icm: {printable(f'{where}{e.strerror or e}')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "icm: interrupted; the run folder holds the last complete iteration (--resume it)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
