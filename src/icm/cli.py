"""The `icm` command line. Options come from the config dataclasses; their help is the CLI help."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from .config import RunConfig
from .core.search import SearchConfig
from .errors import IcmError

EPILOG = """quick start:
  icm demo                                     label a small built-in data set, compare with gold
  icm run --task truthfulqa --data train.json --limit 16 --iterations 8 --out runs/t1
  icm run --resume runs/t1 --iterations 16     continue a run up to 16 iterations in all
  icm tasks                                    list the built-in tasks

A run folder holds config.json, state.json (the checkpoint), trace.jsonl, labels.jsonl and
summary.json. Errors in input files name the file, the row and the field and exit with code 2."""

RESUMABLE = {"iterations", "threads", "device", "trust_remote_code"}
RESUMABLE |= {"base_url", "concurrency", "timeout", "retries", "call_cache"}  # where, not what
"""Options that may change when a run is resumed; the rest would change what the run computes."""


def _default(text: str, default: object) -> str:
    """The help's "(default: X)" suffix, unless the help already says what the default is."""
    if "default" in text or default == "" or (default is None and "None:" in text):
        return ""
    return f" (default: {default})"


def _add_fields(parser: argparse.ArgumentParser, cls: type, skip: set[str] = frozenset()) -> None:
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("help"):
            continue
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
        conv: Any = int if kind.startswith("int") else float if kind.startswith("float") else str
        default = f.default if f.default is not dataclasses.MISSING else None
        if kind == "bool":
            parser.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                action="store_true",
                default=argparse.SUPPRESS,
                help=f.metadata["help"],
            )
            continue
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=conv,
            default=argparse.SUPPRESS,
            help=f.metadata["help"] + _default(f.metadata["help"], default),
        )


def _config(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    given = vars(args)
    cfg = base or RunConfig()
    top = {f.name for f in dataclasses.fields(RunConfig)} - {"search"}
    inner = {f.name for f in dataclasses.fields(SearchConfig)}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in given.items() if k in top})
    cfg.search = dataclasses.replace(cfg.search, **{k: v for k, v in given.items() if k in inner})
    return cfg


def _progress():
    """A tqdm bar per batch, made at the first step (so a resumed run starts where it stopped)."""
    from tqdm import tqdm

    current: dict = {}

    def on_step(step, state, row) -> None:
        batch = row.get("batch")
        if current.get("batch", -1) != batch or "bar" not in current:
            if "bar" in current:
                current["bar"].close()
            desc = "icm" if batch is None else f"icm batch {batch}/{row['batches']}"
            current["bar"] = tqdm(
                total=row["total"], initial=step.n - 1, desc=desc, unit="it", dynamic_ncols=True
            )
            current["batch"] = batch
        agree = row["agreement"]
        bar = current["bar"]
        bar.set_postfix(
            U=f"{row['U']:.1f}",
            T=f"{row['T']:.2f}",
            agree="-" if agree is None else f"{agree:.2f}",
            lab=row["labelled"],
            calls=row["calls"],
            tok=row["tokens"],
        )
        bar.update(1)
        if step.n >= row["total"]:
            bar.close()
            del current["bar"]

    return on_step


def cmd_run(args: argparse.Namespace) -> int:
    from . import atomic
    from .run import Run, prepare

    if args.resume:
        run = Run.open(args.resume)
        changed = set(vars(args)) & (
            {f.name for f in dataclasses.fields(RunConfig)}
            | {f.name for f in dataclasses.fields(SearchConfig)}
        )
        fixed = sorted(changed - RESUMABLE)
        if fixed:
            raise IcmError(f"{args.resume}: --resume keeps the run's settings; not {fixed}")
        # Trust in a model's code is given per command, never taken from a run folder that
        # someone else may have written.
        run.cfg.trust_remote_code = False
        run.cfg = _config(args, run.cfg)
        model = prepare(run.cfg)
        atomic.write_json(run.folder / "config.json", run.cfg.to_json())
    else:
        if not args.out:
            raise IcmError("pass --out FOLDER for a new run (or --resume FOLDER)")
        cfg = _config(args)
        Run.check_new(args.out, args.overwrite)
        model = prepare(cfg)  # bad input fails before the run folder is created or touched
        run = Run.create(cfg, args.out, overwrite=args.overwrite)
    summary = run.execute(model, on_step=_progress() if args.progress else None)
    print_summary(summary, run.folder)
    return 0


def print_summary(s: dict, folder: Path) -> None:
    agree = s["agreement"]
    print(
        f"U={s['utility']:.2f}  inconsistencies={s['inconsistencies']}  "
        f"labels: {s['labels']['true']} True / {s['labels']['false']} False"
        + ("" if agree is None else f"  agreement with gold={agree:.3f}")
    )
    print(
        f"{s['iterations']} iterations, {s['model_calls']} model calls, {s['tokens']} tokens, "
        f"{s['seconds']:.1f} s -> {folder}/labels.jsonl"
    )


def cmd_tasks(args: argparse.Namespace) -> int:
    from .tasks import get_task, task_names

    for name in task_names():
        print(f"{name:24s} {get_task(name).description}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo

    return demo(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval.icl import EVAL_PNG, EvalConfig, evaluate, markdown, write
    from .run import Run

    run = Run.open(args.run)
    names = {f.name for f in dataclasses.fields(EvalConfig)}
    result = evaluate(run, EvalConfig(**{k: v for k, v in vars(args).items() if k in names}))
    written = write(result, args.out or run.folder)
    print(markdown(result), end="")
    print("-> " + ", ".join(str(p) for p in written))
    if not any(p.name == EVAL_PNG for p in written):
        print("icm: eval.png skipped: matplotlib is missing (pip install 'icm[eval]')")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    try:
        from .eval.report import write_report
    except ImportError as e:
        raise IcmError(f"icm report needs matplotlib: pip install 'icm[eval]' ({e})") from e
    print(write_report(args.run, args.out))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run

    n, data = export_run(args.run, args.format, args.out, args.searched_only, args.overwrite)
    skipped = "".join(f"; left out: {k} ({v})" for k, v in data.skipped.items())
    print(f"{n} {args.format} records from {len(data.rows)} labelled rows -> {args.out}{skipped}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from .train import TrainConfig
    from .train.finetune import finetune
    from .train.reward import train_reward

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    train = train_reward if args.reward_model else finetune
    info = train(args.run, args.out, cfg, args.searched_only, args.model, args.overwrite)
    print(f"{info['steps']} steps, loss {info['loss_first']:.3f} -> {info['loss_last']:.3f}")
    print(f"{info['kind']} model -> {args.out}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="icm",
        description="Internal Coherence Maximization: label claims with a model, no labels.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "run",
        help="label a data set",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--out", help="run folder to create")
    r.add_argument("--resume", help="run folder to continue")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    r.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_fields(r, RunConfig)
    _add_fields(r, SearchConfig)
    r.set_defaults(func=cmd_run)
    d = sub.add_parser("demo", help="run ICM on a small built-in data set with the default model")
    d.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    d.add_argument("--model", default="default", help="model (default: embedded SmolLM2-135M)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    d.add_argument(
        "--score",
        default="mean-logodds",
        help="sum-logprob or mean-logodds (default: mean-logodds, see the README)",
    )
    d.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    d.set_defaults(func=cmd_demo)
    t = sub.add_parser("tasks", help="list the built-in tasks")
    t.set_defaults(func=cmd_tasks)
    from .eval.icl import EvalConfig

    e = sub.add_parser("eval", help="many-shot accuracy with ICM, gold, random and no labels")
    e.add_argument("--run", required=True, help="run folder whose labels.jsonl gives the demos")
    e.add_argument("--out", help="folder for eval.json, eval.md, eval.png (default: the run)")
    _add_fields(e, EvalConfig)
    e.set_defaults(func=cmd_eval)
    rep = sub.add_parser("report", help="one self-contained HTML page about a run")
    rep.add_argument("run", help="run folder")
    rep.add_argument("--out", help="HTML file to write (default: RUN/report.html)")
    rep.set_defaults(func=cmd_report)
    from .export import FORMATS

    x = sub.add_parser("export", help="ICM labels as training data (TRL column names)")
    x.add_argument("run", help="run folder")
    x.add_argument("--format", required=True, choices=FORMATS, help="record layout")
    x.add_argument("--out", required=True, help=".jsonl, .json, .parquet, else a datasets folder")
    x.add_argument("--searched-only", action="store_true", help="only labels the search chose")
    x.add_argument("--overwrite", action="store_true", help="replace an existing output")
    x.set_defaults(func=cmd_export)
    from .train import TrainConfig

    f = sub.add_parser("finetune", help="LoRA fine-tune the run's model on its ICM labels")
    f.add_argument("run", help="run folder")
    f.add_argument("--out", required=True, help="model folder to write (merged weights)")
    f.add_argument("--reward-model", action="store_true", help="train a reward model on pairs")
    f.add_argument("--model", help="base model (default: the run's model)")
    f.add_argument("--searched-only", action="store_true", help="only labels the search chose")
    f.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    _add_fields(f, TrainConfig)
    f.set_defaults(func=cmd_finetune, **dataclasses.asdict(TrainConfig()))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except IcmError as e:
        print(f"icm: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("icm: interrupted; the run folder holds the last complete iteration", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
