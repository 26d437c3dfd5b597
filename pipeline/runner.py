"""Runs stages of a recipe into its run folder: skip what is up to date, seed, time, mark done.

Every process of an `accelerate launch` runs this same code: all ranks run each stage (a stage decides what
to distribute), only the main process writes config, markers, metrics and the console summary.

    pipeline run recipes/tiny.yaml                     # all stages, skipping finished ones
    pipeline stage data --run runs/tiny --force        # one stage again
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml -m pipeline.stages.data --run runs/tiny
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import set_seed
from rich.console import Console
from rich.table import Table

from pipeline import config as config_lib
from pipeline import registry
from pipeline.artifacts import RunDir, atomic_write, write_json
from pipeline.checkpoints import verify_files
from pipeline.console import stage_output
from pipeline.errors import PipelineError
from pipeline.interrupts import StageInterrupted, graceful_interrupts
from pipeline.run_lock import RunLock

console = Console(stderr=True)
PACKAGES = ("torch", "transformers", "datasets", "accelerate", "trl", "peft", "tokenizers", "huggingface_hub", "evaluate")


def open_run(recipe: config_lib.Recipe, state: PartialState) -> RunDir:
    """The run folder, created with its resolved config.yaml if new (main process only writes). An existing
    folder's config.yaml and env.json are rewritten only when a stage completes and when every stage asked for is
    done or up to date (`record_run`), so a command that fails leaves them as they were."""
    run = RunDir(recipe.run.folder, seed=recipe.run.seed, report_to=recipe.run.report_to)
    if state.is_main_process and not run.config_path.is_file():
        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write(run.config_path, config_lib.dump_yaml(recipe))
    state.wait_for_everyone()
    return run


def record_run(recipe: config_lib.Recipe, run: RunDir, state: PartialState) -> None:
    """config.yaml and env.json of the command whose stage just completed (main process)."""
    atomic_write(run.config_path, config_lib.dump_yaml(recipe))
    write_json(run.env_path, environment(state))


def on_main_process(state: PartialState, action) -> None:
    """Run `action()` on the main process only; a `PipelineError` it raises is raised on every rank, so that no
    rank is left waiting at a barrier for a main process that has given up."""
    failure = None
    if state.is_main_process:
        try:
            action()
        except PipelineError as e:
            failure = str(e)
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        failure = broadcast_object_list([failure])[0]
    if failure:
        raise PipelineError(failure)


@contextmanager
def locked(folder: Path, state: PartialState):
    """Check the folder can be a run folder and hold `<run>/.lock` for this command (main process); every rank
    raises the main one's refusal."""
    lock = RunLock.of_run(folder)

    def check_and_take() -> None:  # on the main process only: the others would see its .lock as a stranger's file
        check_run_folder(Path(folder))
        lock.acquire()

    on_main_process(state, check_and_take)
    try:
        yield
    finally:
        lock.release()


def check_run_folder(folder: Path) -> None:
    """The run folder is new, empty, or a run folder (config.yaml inside): never a file, nor an existing folder
    of something else (`run.output_dir: /` would otherwise write config.yaml and data/ into the root)."""
    if folder.exists() and not folder.is_dir():
        raise PipelineError(f"run.output_dir: {folder} is a file, not a folder")
    if folder.is_dir() and not (folder / "config.yaml").is_file() and any(p.name != ".lock" for p in folder.iterdir()):
        raise PipelineError(f"run.output_dir: {folder} is a folder that holds other things and no config.yaml, "
                            "so not a run folder: choose a new or empty folder")


def stage_needs(recipe: config_lib.Recipe, name: str) -> tuple[str, ...]:
    """The stages whose outputs `name` reads under this recipe (`needs(cfg)`, else every possible one, NEEDS)."""
    mod = registry.module(name)
    return tuple(mod.needs(recipe.sections[name]) if hasattr(mod, "needs") else mod.NEEDS)


def check_upstream(run: RunDir, recipe: config_lib.Recipe, stages: list[str]) -> None:
    """Before anything is written: every stage's inputs are finished already or come earlier in `stages`, and
    the models and tokenizers they saved are readable (`checkpoints.verify_files`: headers, not weights)."""
    for position, name in enumerate(stages):
        needs = stage_needs(recipe, name)
        missing = [need for need in needs if need not in stages[:position] and run.marker(need) is None]
        if missing:
            raise PipelineError(f"{run.root}: stage {name!r} needs {', '.join(missing)}: run {' and '.join(missing)} first")
        for need in needs:
            if need not in stages[:position] and (run.root / need / "final").is_dir():
                try:
                    verify_files(run.root / need / "final")
                except PipelineError as e:
                    raise PipelineError(f"{e}: rerun {need} (pipeline stage {need} --run {run.root} --force)") from None


def distributed_state() -> PartialState:
    """accelerate's process state, shared by every `PartialState()` in the stages.

    Without an accelerator, launched ranks join a gloo group only with `cpu=True` (accelerate otherwise treats
    each CPU rank as a lone process). Building a `TrainingArguments` (as resolving a recipe with a trainer stage
    does) resets the shared state without that flag, so the runner calls this again before every stage.
    """
    accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    state = PartialState(cpu=not accelerator)
    if not accelerator and state.num_processes == 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        PartialState._reset_state()
        state = PartialState(cpu=True)
    return state


def run_stages(recipe: config_lib.Recipe, stages: list[str], force: bool = False,
               verbose: bool = False) -> dict[str, dict]:
    """Run `stages` in pipeline order; returns {stage: metrics} for every stage (run or skipped). Each stage's
    library output goes to `<run>/<stage>/log.txt` behind one progress line, unless `verbose`."""
    state = distributed_state()
    _setup_logging(state)
    with locked(recipe.run.folder, state):
        check_upstream(RunDir(recipe.run.folder), recipe, stages)
        run = open_run(recipe, state)
        results = {}
        for name in stages:
            results[name] = run_stage(recipe, name, run, force=force, verbose=verbose)
        if state.is_main_process:  # every stage done or up to date: the folder's recipe is this command's
            record_run(recipe, run, state)
    if state.is_main_process:
        console.print(summary_table(results))
    return results


def run_stage(recipe: config_lib.Recipe, name: str, run: RunDir, force: bool = False, verbose: bool = False) -> dict:
    state = distributed_state()
    mod = registry.module(name)
    fingerprint = recipe.fingerprint(name)
    needs = stage_needs(recipe, name)
    if not force and run.up_to_date(name, fingerprint, needs):
        if state.is_main_process:
            console.print(f"[dim]- {name}: up to date, skipped (--force reruns it)[/dim]")
        return run.metrics(name)
    check_upstream(run, recipe, [name])
    if state.is_main_process:
        resumed = run.begin(name, fingerprint, needs)
        console.rule(f"[bold]{name}" + (" (resuming)" if resumed else ""))
    state.wait_for_everyone()
    if state.num_processes > 1:
        print(f"rank {state.process_index}/{state.num_processes}: {name}", file=sys.stderr, flush=True)
    set_seed(recipe.run.seed)
    start = time.perf_counter()
    try:
        with stage_output(name, run.root / name / "log.txt", verbose, state.is_main_process), \
                graceful_interrupts(enabled=getattr(mod, "SAVES_ON_INTERRUPT", False)):
            metrics = dict(mod.run(recipe.sections[name], run) or {})
    except BaseException as failure:
        if state.is_main_process and run.restore_previous(name, drop_attempt=isinstance(failure, PipelineError)):
            console.print(f"[dim]- {name}: failed before saving anything; the folder is as it was[/dim]")
        raise
    metrics.setdefault("seconds", round(time.perf_counter() - start, 3))
    metrics.setdefault("num_processes", state.num_processes)
    state.wait_for_everyone()
    if state.is_main_process:
        run.complete(name, fingerprint, needs, metrics)
        record_run(recipe, run, state)
        console.print(f"[green]✓ {name}[/green] {metrics['seconds']:.1f}s  {headline(mod, metrics)}")
    if recipe.run.push_to_hub:  # models, datasets and cards of this stage (pipeline.hub), from the main process
        from pipeline.hub import push_stage

        on_main_process(state, lambda: push_stage(run.root, name, recipe.run.hub_repo_prefix))
    state.wait_for_everyone()
    return metrics


def headline(mod, metrics: dict) -> str:
    keys = getattr(mod, "HEADLINE", ())
    return "  ".join(f"{k}={_fmt(metrics[k])}" for k in keys if k in metrics)


def summary_table(results: dict[str, dict]) -> Table:
    table = Table(title="stages")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("headline metrics")
    for name, metrics in results.items():
        table.add_row(name, _fmt(metrics.get("seconds", "")), headline(registry.module(name), metrics))
    return table


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def environment(state: PartialState) -> dict:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "argv": sys.argv,
        "packages": versions,
        "git": _git_revision(),
        "accelerate": {
            "distributed_type": str(state.distributed_type),
            "num_processes": state.num_processes,
            "device": str(state.device),
        },
    }


def _git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _setup_logging(state: PartialState) -> None:
    level = logging.INFO if state.is_main_process else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level)
    for noisy in ("httpx", "urllib3", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def recipe_for_run(folder: str, overrides: list[str]) -> config_lib.Recipe:
    """The recipe of an existing run folder (its config.yaml), with overrides, kept in that folder."""
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        raise PipelineError(f"{folder}: not a run folder (no config.yaml); start one with `pipeline run RECIPE`")
    return config_lib.load_recipe(path, [*overrides, f"run.output_dir={folder}"])


def add_stage_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `pipeline stage NAME` and of `python -m pipeline.stages.NAME` (the same on purpose)."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", help="an existing run folder (holding at least config.yaml)")
    where.add_argument("--config", help="a recipe: start or continue its run folder")
    parser.add_argument("--force", action="store_true", help="rerun even if the stage is up to date")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the libraries' output instead of "
                        "one progress line (it goes to <run>/<stage>/log.txt otherwise)")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    return parser


def stage_command(name: str, args: argparse.Namespace) -> dict:
    registry.module(name)  # unknown names fail here, before any folder is touched
    if args.run:
        recipe = recipe_for_run(args.run, args.overrides)
    else:
        recipe = config_lib.load_recipe(args.config, args.overrides)
    return run_stages(recipe, [name], force=args.force, verbose=getattr(args, "verbose", False))[name]


def exit_status(command, args) -> int:
    """Run `command(args)`; a user error is one line on stderr and status 2, Ctrl-C one line and 130."""
    try:
        return command(args)
    except PipelineError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, whatever the message holds
        return 2
    except StageInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted: the stage that was running has no _SUCCESS marker and reruns next time", file=sys.stderr)
        return 130


def stage_main(name: str) -> None:
    """Entry point of `python -m pipeline.stages.<name>` (and so of `accelerate launch -m ...`)."""
    parser = argparse.ArgumentParser(prog=f"python -m pipeline.stages.{name}", description=f"Run the {name} stage.")
    args = add_stage_options(parser).parse_args()

    def command(parsed) -> int:
        stage_command(name, parsed)
        return 0

    status = exit_status(command, args)
    if status:
        sys.exit(status)
