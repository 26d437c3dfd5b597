"""The run folder: the only code that knows paths, markers and manifests.

    runs/<name>/
      config.yaml            resolved recipe (a valid recipe itself), rewritten when a stage completes
      env.json               versions, git revision, accelerate state of the command that completed a stage last
      .lock                  pid and host of the command writing the folder now (pipeline.run_lock)
      .<stage>.previous/     a finished stage being rerun, kept until the new attempt completes
      <stage>/               one folder per stage, written only by that stage
        final/               model stages: save_pretrained model + tokenizer
        metrics.json         the stage's metrics
        _SUCCESS             written last: {"id", "fingerprint", "upstream", "finished"}

A stage is up to date when its marker exists, its fingerprint (config section without its result-neutral
fields, + seed; `Recipe.fingerprint`) is unchanged and the
upstream markers it was built from are still the ones on disk. Every write is atomic (temporary name, then
rename), so an interrupted stage never leaves a half-written file under a final name, and never a marker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a run, stage or dataset name: one path component
MARKER = "_SUCCESS"
STARTED = "_STARTED"  # present while a stage is running or was interrupted: its fingerprint, to resume safely


def atomic_write(path: Path, data: str | bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def check_plain_name(name: str, where: str) -> None:
    """A name that becomes one folder of a run: letters, digits, `_`, `.`, `-`, not starting with a dot (so no
    `..`, no `/`, no absolute path). Raises ValueError `where: ...` otherwise."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{where}: {name!r} is not a plain name (letters, digits, _ . -; no '/' or '..'): it names a "
                         "folder inside the run")


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place, replacing any older one."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


class RunDir:
    """A run folder and the settings every stage shares (seed, trackers)."""

    def __init__(self, root: str | Path, seed: int = 0, report_to: list[str] | None = None):
        self.root = Path(root)
        self.seed = seed
        self.report_to = list(report_to or ["none"])

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def env_path(self) -> Path:
        return self.root / "env.json"

    @property
    def lock_path(self) -> Path:
        """Held by the command writing this folder (`pipeline.run_lock`)."""
        return self.root / ".lock"

    def stage_dir(self, stage: str) -> Path:
        path = self.inside(self.root / stage)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def inside(self, path: Path) -> Path:
        """`path`, after checking that it stays inside the run folder once symlinks are resolved."""
        if not Path(path).resolve().is_relative_to(self.root.resolve()):
            raise PipelineError(f"{path}: resolves to {Path(path).resolve()}, outside the run folder {self.root} "
                                "(a symlink?): the pipeline writes only inside its run folder")
        return Path(path)

    def final(self, stage: str) -> Path:
        """Where a model stage saves its `save_pretrained` model and tokenizer; must exist to be read."""
        path = (self.root / stage / "final").resolve()  # absolute: adapters record their base model's path
        if not path.is_dir():
            raise PipelineError(f"{self.root}: stage {stage!r} has no final model at {path}: run it first")
        return path

    def dataset(self, name: str, where: str):
        """A dataset the data stage built, as a `datasets.DatasetDict`; `where` names the recipe field asking."""
        import datasets

        try:
            check_plain_name(name, where)
        except ValueError as e:
            raise PipelineError(str(e)) from None
        path = self.root / "data" / name
        if not (path / "dataset_dict.json").is_file():
            have = sorted(p.parent.name for p in (self.root / "data").glob("*/dataset_dict.json"))
            raise PipelineError(f"{where}: no dataset {name!r} in {self.root / 'data'} (built: {', '.join(have) or 'none'})")
        try:  # in memory: `map` in the trainers then caches nothing into the data stage's folder
            return datasets.load_from_disk(str(path), keep_in_memory=True)
        except Exception as e:  # a damaged folder: missing Arrow files, bad JSON (datasets and pyarrow errors)
            reason = " ".join(str(e).split())[:200]
            raise PipelineError(f"{where}: {path} is damaged ({type(e).__name__}: {reason}); rerun the data stage "
                                "with --force") from None

    def last_checkpoint(self, stage: str) -> str | None:
        """The newest complete checkpoint (`checkpoint-<step>/`, HF Trainer's or ppo's) or None. Complete: its
        trainer_state.json, written last, is a JSON object with the step, and every state file reads as what it
        claims (`files_damage`). A run killed while saving, or a file damaged since, leaves a folder that
        this skips for the one before it, with a warning."""
        folders = sorted(self.root.joinpath(stage).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])
                         if p.name.split("-")[-1].isdigit() else -1)
        for folder in reversed(folders):
            state = read_json_object(folder / "trainer_state.json")
            if state is None or not ({"global_step", "step"} & state.keys()):
                continue
            damaged = files_damage(folder)
            if damaged:
                print(f"warning: {folder}: skipped, {damaged}", file=sys.stderr)
                continue
            return str(folder)
        return None

    def marker(self, stage: str) -> dict | None:
        return read_json_object(self.root / stage / MARKER)

    def metrics(self, stage: str) -> dict:
        path = self.root / stage / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def up_to_date(self, stage: str, fingerprint: str, needs: tuple[str, ...]) -> bool:
        mark = self.marker(stage)
        if not mark or mark.get("fingerprint") != fingerprint:
            return False
        return mark.get("upstream", {}) == self.upstream_ids(needs)

    def upstream_ids(self, needs: tuple[str, ...]) -> dict[str, str | None]:
        return {need: (self.marker(need) or {}).get("id") for need in needs}

    def begin(self, stage: str, fingerprint: str = "", needs: tuple[str, ...] = ()) -> bool:
        """Start (or resume) a stage; returns True when it resumes an interrupted attempt.

        The marker goes first: from here until `complete`, the stage counts as not done. An interrupted attempt
        with the same fingerprint and upstream keeps its folder (checkpoints to resume from). A finished stage run
        again (changed config or upstream, or --force) is set aside as `.<stage>.previous/` until the new attempt
        completes, so that an attempt that fails before saving anything can put it back (`restore_previous`);
        an unfinished attempt that cannot be resumed is removed.
        """
        path = self.inside(self.root / stage)
        started = {"fingerprint": fingerprint, "upstream": self.upstream_ids(needs)}
        resumable = path.is_dir() and self.marker(stage) is None and read_json_object(path / STARTED) == started
        if not resumable and path.exists():
            if self.marker(stage) is not None:
                previous = self.previous_dir(stage)
                if previous.exists():
                    shutil.rmtree(previous)
                os.replace(path, previous)
            else:
                shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / STARTED, started)
        return resumable

    def previous_dir(self, stage: str) -> Path:
        return self.root / f".{stage}.previous"

    def restore_previous(self, stage: str, drop_attempt: bool = False) -> bool:
        """After a failed attempt that saved nothing to resume from (no checkpoint, no final model): put back the
        finished folder it replaced, if any; with `drop_attempt` (a user error: nothing worth a look) remove a
        first attempt's folder too. Returns True when the folder is as it was before the attempt."""
        path, previous = self.root / stage, self.previous_dir(stage)
        if (path / "final").exists() or any(path.glob("checkpoint-*")):
            return False
        if previous.is_dir():
            if path.exists():
                shutil.rmtree(path)
            os.replace(previous, path)
            return True
        if drop_attempt and path.exists():
            shutil.rmtree(path)
            return True
        return False

    def complete(self, stage: str, fingerprint: str, needs: tuple[str, ...], metrics: dict) -> None:
        write_json(self.root / stage / "metrics.json", metrics)
        (self.root / stage / STARTED).unlink(missing_ok=True)
        write_json(self.root / stage / MARKER, {
            "id": uuid.uuid4().hex,
            "fingerprint": fingerprint,
            "upstream": self.upstream_ids(needs),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        if self.previous_dir(stage).exists():
            shutil.rmtree(self.previous_dir(stage))


def files_damage(folder: Path) -> str | None:
    """What is wrong with the saved files of a model, tokenizer or checkpoint folder (and its subfolders), or
    None: every safetensors file's header must match its size, every torch.save file (optimizer, scheduler, RNG:
    `.pt`, `.pth`, `.bin`, `.pkl`) must be a whole zip archive (a cut one has no central directory), every JSON
    file must parse. Headers only: nothing is loaded."""
    import zipfile

    from safetensors import safe_open

    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as weights:
                    weights.keys()
            elif path.suffix in (".pt", ".pth", ".bin", ".pkl") and not zipfile.is_zipfile(path):
                return f"{path.name} is not a whole torch.save archive"
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except Exception as e:  # safetensors' own error type, JSON, decoding
            return f"{path.name} is unreadable ({type(e).__name__})"
    return None


def read_json_object(path: Path) -> dict | None:
    """A JSON object from `path`, or None when it is missing, unreadable, not JSON or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
