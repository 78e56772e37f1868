"""The run folder: its layout, the marker and lock, its config, the saved plan, and its checks.

    RUN/
      .icm-run          marks a folder icm made: only such a folder may be --overwrite'n
      .lock             held (flock) by the one process that works in the folder
      config.json       every option (reloads with RunConfig.from_json)
      plan.json         decided once: the batch split, and the fingerprints a resume checks
      batches/NNN/      one batch (its chains are combined in memory, into the files below)
        chain-C/        one search: state.json (the checkpoint, with its counters),
                        trace.jsonl (one line per iteration and settling move), final.json
                        (its labels, log-odds, U and counters; checked against state.json
                        before a resume uses it)
      labels.jsonl      every input row with its ICM label, merged over the batches
      summary.json      the run's figures, each batch's under per_batch, and the warnings

Everything else in a run folder is the user's: --overwrite removes only the names above (and
the report and evaluation files icm writes there), never another file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import files
from ..errors import DataError, IcmError, LinkError, RunError
from ..files import TRAINED_META
from ..options import resumable
from ..tasks import Dataset
from .config import RunConfig

MARKER, LOCK, CONFIG, PLAN = ".icm-run", ".lock", "config.json", "plan.json"
STATE, TRACE, FINAL, LABELS, SUMMARY = (
    "state.json",
    "trace.jsonl",
    "final.json",
    "labels.jsonl",
    "summary.json",
)
BATCHES = "batches"
MODEL_DIR = "finetuned"
"""The model iterative ICM trains on the batches so far, in each batch's folder."""
OUTPUTS = (CONFIG, PLAN, LABELS, SUMMARY, STATE, TRACE, FINAL)
"""The files of a run folder that --overwrite may remove (besides batches/)."""
EXTRA_OUTPUTS: tuple[str, ...] = ("report.html", "eval.json", "eval.md", "eval.png")
EXTRA_OUTPUTS += ("compare.json", "compare.md", "compare.png")
ROWS = "rows.jsonl"
"""The rows `icm.label` was given in memory, kept so that the run can be resumed."""
EXTRA_OUTPUTS += (ROWS,)
"""Files other commands write into a run folder by default: also icm's own."""


MARKER_NOTE = "made by icm: --overwrite may replace the files icm wrote here"
"""In every model folder icm trains (`icm.train.META`)."""


def _remove_file(path: Path) -> None:
    """Remove a regular file icm names; a link or a folder under that name is left alone."""
    if path.is_file() and not path.is_symlink():
        path.unlink()


def blockers(path: Path) -> list[Path]:
    """Paths where a run writes (its own files, in icm's layout) that it could not write as
    files: links (to files or to folders), folders, devices, pipes and sockets. `--overwrite`
    and a resume check them before they change anything. (Other commands' outputs, such as
    eval.json, are not the run's: a link there is left alone.)"""
    bad = [path / n for n in OUTPUTS if _blocks(path / n)]
    batches = path / BATCHES
    if batches.is_symlink():
        return [*bad, batches]
    if not batches.is_dir():
        return bad
    for batch in sorted(batches.iterdir()):
        if not batch.name.isdigit():
            continue
        if batch.is_symlink():
            bad.append(batch)
            continue
        subs = sorted(batch.iterdir()) if batch.is_dir() else []
        for sub in subs:
            if sub.name.startswith("chain-"):
                if sub.is_symlink():
                    bad.append(sub)
                elif sub.is_dir():
                    bad += [p for n in (STATE, TRACE, FINAL) if _blocks(p := sub / n)]
    return bad


def _blocks(path: Path) -> bool:
    return path.is_symlink() or path.exists() and not path.is_file()


def _remove_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: what is left is not icm's
        folder.rmdir()


def fingerprint(obj: object) -> str:
    """A short hash of a JSON-able value (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def data_fingerprints(
    data: Dataset, fmt: object, rule: str, fixed: dict[int, int]
) -> dict[str, object]:
    """What a resume must find unchanged: the rows (gold included: it is reported), and what the
    search sees of them (prompts, groups, consistency keys, label words, the rule, the labels a
    person fixed)."""
    seen = [[ex.prompt, ex.group, ex.key] for ex in data.examples]
    return {
        "rows": len(data),
        "rows_hash": fingerprint(data.rows),
        "examples_hash": fingerprint([seen, fmt, rule, sorted(fixed.items())]),
    }


def batch_fingerprints(data: Dataset, batches: list[list[int]]) -> list[str]:
    """Each batch's rows as the search sees them, by position: a plan whose row lists were
    edited (two batches swapped, a row moved) no longer matches them."""
    return [
        fingerprint([[i, data.examples[i].prompt, data.examples[i].group] for i in b])
        for b in batches
    ]


@dataclass
class Plan:
    """Decided when a run starts and kept for good: a resumed run never splits again (a server
    may now report another context length, or have no /tokenize)."""

    batches: list[list[int]]
    data: dict
    model: dict
    settings: str | None = None
    """A fingerprint of the options that decide what the run computes (not those a resume
    may change): an edited config.json is noticed. None in plans of older runs."""
    batch_hashes: list[str] | None = None
    """`batch_fingerprints` of the batches (None in plans of older runs)."""

    def to_json(self) -> dict:
        out = {"batches": self.batches, "data": self.data, "model": self.model}
        out |= {"batch_hashes": self.batch_hashes} if self.batch_hashes else {}
        return out | ({"settings": self.settings} if self.settings else {})

    @classmethod
    def from_json(cls, d: object, source: str) -> Plan:
        """A plan read back; its every field's type checked, and its batches: a non-empty list
        of non-empty lists of distinct row numbers, each in ascending order."""
        if not isinstance(d, dict) or not all(k in d for k in ("batches", "data", "model")):
            raise RunError(f"{source}: not a plan icm wrote")
        batches, hashes, settings = d["batches"], d.get("batch_hashes"), d.get("settings")
        ok = (
            isinstance(batches, list)
            and batches
            and all(
                isinstance(b, list)
                and b
                and all(type(i) is int and i >= 0 for i in b)
                and all(x < y for x, y in itertools.pairwise(b))
                for b in batches
            )
        )
        if not ok:
            raise RunError(
                f"{source}: 'batches' must be a non-empty list of non-empty lists of row "
                "numbers in ascending order (not what icm writes: was it edited?)"
            )
        if hashes is not None and not (
            isinstance(hashes, list)
            and len(hashes) == len(batches)
            and all(isinstance(h, str) for h in hashes)
        ):
            raise RunError(f"{source}: 'batch_hashes' must hold one fingerprint per batch")
        if not isinstance(d["data"], dict) or not isinstance(d["model"], dict):
            raise RunError(f"{source}: 'data' and 'model' must be objects")
        if settings is not None and not isinstance(settings, str):
            raise RunError(f"{source}: 'settings' must be a fingerprint")
        return cls(batches, dict(d["data"]), dict(d["model"]), settings, hashes)

    def check(self, now: Plan, folder: Path) -> None:
        """The run's data, task and model are those it started with."""
        again = f"start afresh with a new --out (or --overwrite {folder})"
        if self.data.get("rows_hash") != now.data.get("rows_hash"):
            raise RunError(
                f"{folder}: the data changed since the run started ({self.data.get('rows')} "
                f"rows then, {now.data.get('rows')} now, or edited): {again}"
            )
        if self.data.get("examples_hash") != now.data.get("examples_hash"):
            raise RunError(
                f"{folder}: the prompts, consistency keys or fixed labels differ from those the "
                f"run started with: {again}"
            )
        if self.settings and now.settings and self.settings != now.settings:
            raise RunError(
                f"{folder}: config.json no longer holds the options the run started with "
                f"(edited?): {again}"
            )
        if self.model != now.model:
            then, current = _short(self.model), _short(now.model)
            raise RunError(f"{folder}: the model changed ({then} then, {current} now): {again}")
        n = sum(len(b) for b in self.batches)
        if sorted(i for b in self.batches for i in b) != list(range(n)) or n != now.data["rows"]:
            raise RunError(f"{folder / PLAN}: its batches do not cover the data's rows")

    def check_batches(self, data: Dataset, folder: Path) -> None:
        """The batches' row lists are those the plan's fingerprints were made of."""
        if self.batch_hashes is None:
            return
        now = batch_fingerprints(data, self.batches)
        bad = [b for b, (h, n) in enumerate(zip(self.batch_hashes, now, strict=True)) if h != n]
        if bad:
            raise RunError(
                f"{folder / PLAN}: the rows of batch {bad[0] + 1} are not those it was planned "
                "with (its row lists were edited): start afresh with a new --out"
            )


def settings_fingerprint(cfg: RunConfig) -> str:
    """The options that decide what a run computes, fingerprinted (resumable ones left out)."""
    keep = resumable(type(cfg))
    return fingerprint({k: v for k, v in cfg.to_json().items() if k not in keep})


def _short(d: dict) -> str:
    text = ", ".join(f"{k}={v}" for k, v in d.items())
    return text if len(text) < 120 else text[:117] + "..."


class RunFolder:
    """A folder that holds one run. Opening it never writes; `lock()` before writing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    def _not_a_link(self) -> None:
        """A run folder icm writes in is never reached through a link (`--out`, `--resume`)."""
        if self.path.is_symlink():
            raise LinkError(
                f"{self.path}: is a link; give the folder it points at: icm does not write "
                "through links"
            )

    # -- layout ---------------------------------------------------------------------------------
    def batch(self, b: int) -> Path:
        return self.path / BATCHES / f"{b:03d}"

    def chain(self, b: int, c: int) -> Path:
        return self.batch(b) / f"chain-{c}"

    def mark(self) -> None:
        """Mark the folder as icm's: the marker names this very folder (its device and inode),
        so a marker copied into another folder proves nothing there."""
        st = os.stat(self.path)
        files.write_json(
            self.path / MARKER,
            {"made_by": "icm", "folder": [st.st_dev, st.st_ino], "note": MARKER_NOTE},
        )

    @property
    def made_by_icm(self) -> bool:
        """Whether icm made this folder: a marker (not a link) that names this folder."""
        marker = self.path / MARKER
        try:
            if marker.is_symlink() or not marker.is_file():
                return False
            saved = json.loads(marker.read_text(encoding="utf-8"))
            st = os.stat(self.path)
        except (OSError, ValueError):
            return False
        return isinstance(saved, dict) and saved.get("folder") == [st.st_dev, st.st_ino]

    # -- creating -------------------------------------------------------------------------------
    def check_new(self, overwrite: bool, inputs: Sequence[str] = ()) -> None:
        """A new run may go into a new or empty folder, or, with `overwrite`, into a folder icm
        made, and only when none of its `inputs` (data, task spec) lies inside it."""
        path = self.path
        self._not_a_link()
        if path.exists() and not path.is_dir():
            raise RunError(f"{path}: exists and is not a folder")
        try:
            busy = path.exists() and any(path.iterdir())
        except OSError as e:
            raise RunError(f"{path}: cannot read the folder: {e.strerror}") from e
        if not busy:
            return
        if not overwrite:
            raise RunError(
                f"{path}: already exists and is not empty: pass --overwrite, or --resume it"
            )
        if not self.made_by_icm:
            why = (
                "its marker was made for another folder"
                if (path / MARKER).exists()
                else (f"no {MARKER}")
            )
            raise RunError(
                f"{path}: not a run folder icm made here ({why}); --overwrite replaces only "
                "those: choose another --out"
            )
        blocked = blockers(self.path)
        if blocked:
            raise LinkError(
                f"{blocked[0]}: a link, a folder or a special file where --overwrite would "
                "write; nothing was changed: remove it, or choose another --out"
            )
        inside = [p for p in inputs if p and _within(Path(p), path)]
        if inside:
            raise RunError(
                f"{path}: holds {inside[0]}, an input of this run; --overwrite would replace "
                "it: choose another --out"
            )

    def create(self, cfg: RunConfig, overwrite: bool = False, inputs: Sequence[str] = ()) -> None:
        """Make (or, with `overwrite`, clear) the folder, mark it and write config.json, under
        the folder's lock (so of two new runs racing for one folder, one is refused)."""
        self.check_new(overwrite, inputs)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if not self.made_by_icm:
                self.mark()
            self.lock()
            try:
                if (self.path / CONFIG).exists() and not overwrite:
                    raise RunError(f"{self.path}: another run was just created here")
                if overwrite:
                    self.clear()
                files.write_json(self.path / CONFIG, cfg.to_json())
            finally:
                self.unlock()
        except OSError as e:
            raise RunError(f"{self.path}: cannot create the run folder: {e.strerror}") from e

    def check_writable(self) -> None:
        """Refused before a resume writes anything: a link or a folder under one of icm's names."""
        blocked = blockers(self.path)
        if blocked:
            raise LinkError(
                f"{blocked[0]}: a link, a folder or a special file where the run writes; nothing "
                "was changed: remove it to resume"
            )

    def clear(self) -> None:
        """Remove icm's outputs, never another file: what --overwrite replaces. Only icm's file
        names in icm's layout go (batches/NNN/, chain-C/, the finetuned/ model icm marked); a
        user's file among them, or a link under one of icm's names, stays."""
        for name in (*OUTPUTS, *EXTRA_OUTPUTS):
            _remove_file(self.path / name)
        batches = self.path / BATCHES
        if batches.is_symlink() or not batches.is_dir():
            return
        for batch in sorted(batches.iterdir()):
            if batch.is_symlink() or not batch.is_dir() or not batch.name.isdigit():
                continue
            for name in OUTPUTS:
                _remove_file(batch / name)
            for sub in sorted(batch.iterdir()):
                if sub.is_symlink() or not sub.is_dir():
                    continue
                if sub.name.startswith("chain-"):
                    for name in (STATE, TRACE, FINAL):
                        _remove_file(sub / name)
                elif sub.name == MODEL_DIR and (sub / TRAINED_META).is_file():
                    shutil.rmtree(sub)  # the model icm trained there, and marked
                _remove_empty(sub)
            _remove_empty(batch)
        _remove_empty(batches)

    # -- opening --------------------------------------------------------------------------------
    def read_config(self) -> RunConfig:
        path = self.path / CONFIG
        if not self.path.is_dir():
            raise RunError(f"{self.path}: no such run folder")
        if not path.exists():
            raise RunError(f"{self.path}: not a run folder (no {CONFIG})")
        try:
            return RunConfig.from_json(files.read_json(path, "run config"), str(path))
        except DataError as e:
            raise RunError(str(e)) from e

    def write_config(self, cfg: RunConfig) -> None:
        files.write_json(self.path / CONFIG, cfg.to_json())

    def read_plan(self) -> Plan | None:
        path = self.path / PLAN
        if not path.exists():
            return None
        try:
            return Plan.from_json(files.read_json(path, "run plan"), str(path))
        except DataError as e:
            raise RunError(str(e)) from e

    def write_plan(self, plan: Plan) -> None:
        files.write_json(self.path / PLAN, plan.to_json())

    # -- one process at a time ------------------------------------------------------------------
    def lock(self) -> None:
        """Hold the folder's lock for the life of this process (or until `unlock`); a second
        process that wants it is refused with one line. The kernel drops it if we are killed."""
        if self._lock_fd is not None:
            return
        self._not_a_link()
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise LinkError(f"{self.path / LOCK}: is a link icm did not make") from e
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another"
            os.close(fd)
            raise RunError(
                f"{self.path}: in use by icm process {holder}; wait for it to end or stop it"
            ) from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def input_files(cfg: RunConfig) -> list[str]:
    """Files a run reads, which no command may write over: the data, a custom task spec and the
    fixed labels."""
    given = (cfg.data, cfg.task, cfg.fixed_labels)
    return [
        p for p in given if p and not p.startswith("hf:") and (Path(p).suffix or Path(p).is_dir())
    ]


def _check_parent(out: Path) -> None:
    """The folder a new output goes into (the nearest that exists) is a folder icm can write,
    checked before the work that makes the output."""
    above = next(p for p in out.absolute().parents if p.exists() or p.is_symlink())
    if not above.is_dir():
        raise IcmError(f"{out}: {above} is a file, not a folder: choose another output")
    if not os.access(above, os.W_OK | os.X_OK):
        raise IcmError(f"{out}: cannot write into {above}: choose another output")


def _within(p: Path, folder: Path) -> bool:
    try:
        return p.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


# -- outputs of other commands ------------------------------------------------------------------
def check_output(
    out: str | Path,
    overwrite: bool,
    ours: bool,
    protected: Sequence[str | Path] = (),
    run: str | Path | None = None,
) -> Path:
    """An output path of `icm report`, `export`, `eval` or `finetune`.

    Never the run folder, a folder that holds it, one of the run's own files, an input
    (`protected`) or a folder that holds one, even with `overwrite`. An existing path that is
    not this command's own output (`ours`) is replaced only with `overwrite`, and a folder only
    when it is ours."""
    out = Path(out)
    target = out.resolve()
    if run is not None:
        root = Path(run).resolve()
        if root.is_relative_to(target):
            raise IcmError(f"{out}: is the run folder or holds it: choose another output")
        if target.parent == root and target.name in OUTPUTS or _within(target, root / BATCHES):
            raise IcmError(f"{out}: is one of the run's own files: choose another output")
    for p in protected:
        if p and Path(p).exists() and Path(p).resolve().is_relative_to(target):
            what = "is" if Path(p).resolve() == target else "holds"
            raise IcmError(f"{out}: {what} an input ({p}): choose another output")
    if out.is_symlink():  # refused here, before any output of the command is written
        raise LinkError(f"{out}: is a link; icm never writes through or replaces one")
    if not out.exists():
        _check_parent(out)
        return out
    files.refuse_special(out)
    if out.is_dir() and not ours:
        raise IcmError(f"{out}: is a folder icm did not write: choose another output")
    if not (ours or overwrite):
        raise IcmError(f"{out}: already exists: pass --overwrite to replace it")
    return out
