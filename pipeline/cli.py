"""The `pipeline` command.

    pipeline run recipes/tiny.yaml [section.key=value ...] [--force]
    pipeline stage NAME --run runs/tiny [section.key=value ...] [--force]
    pipeline validate recipes/*.yaml
    pipeline list
    pipeline eval PATH_OR_HUB_ID [--suite NAME ...] [--json]       (pipeline.evaluation)
    pipeline chat PATH_OR_HUB_ID  |  pipeline generate PATH --prompts FILE   (pipeline.chat)
    pipeline report RUN                                           (pipeline.report)
    pipeline push RUN_OR_FOLDER --repo-id NAMESPACE/NAME          (pipeline.hub)

User errors (bad recipe, missing data) print one line on stderr and exit with status 2. Ctrl-C during a
training stage saves a checkpoint first (pipeline.interrupts), then prints one line and exits with status 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from pipeline import config as config_lib
from pipeline import registry
from pipeline.errors import PipelineError
from pipeline.runner import add_stage_options, exit_status, run_stages, stage_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a recipe's stages into its run folder")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. run.output_dir=/tmp/r data.world.n_people=20")
    p.add_argument("--force", action="store_true", help="rerun stages that are up to date")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show every library's output instead of one progress line per stage (<run>/<stage>/log.txt)")

    p = sub.add_parser("stage", help="run one stage of a run")
    p.add_argument("name", help=", ".join(registry.STAGES))
    add_stage_options(p)

    p = sub.add_parser("validate", help="type-check recipes without running anything")
    p.add_argument("recipes", nargs="+")

    sub.add_parser("list", help="list stages and shipped recipes")

    for name, (module, help_text) in TOOLS.items():  # each module: add_arguments(parser, name), run_command(args)
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=help_text), name)

    args, extra = parser.parse_known_args(argv)  # overrides may come before or after --options
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:  # one line, as for every other bad input (argparse's error would print its usage first)
        print(f"error: unrecognized arguments: {' '.join(extra)} (overrides are section.key=value)", file=sys.stderr)
        return 2
    if args.command in TOOLS:
        return exit_status(importlib.import_module(TOOLS[args.command][0]).run_command, args)
    return exit_status(COMMANDS[args.command], args)


def cmd_run(args) -> int:
    recipe = config_lib.load_recipe(args.recipe, args.overrides)
    if not recipe.stages:
        raise PipelineError(f"{args.recipe}: no stages to run (add stage sections or run.stages)")
    run_stages(recipe, recipe.stages, force=args.force, verbose=args.verbose)
    from accelerate import PartialState

    if PartialState().is_main_process:  # every rank ran the stages; one writes the report
        from pipeline.report import write_report

        print(f"report: {write_report(recipe.run.folder)}")
    return 0


def cmd_stage(args) -> int:
    stage_command(args.name, args)
    return 0


def cmd_validate(args) -> int:
    for path in args.recipes:
        recipe = config_lib.load_recipe(path)
        print(f"ok  {path}  (stages: {', '.join(recipe.stages) or 'none'})")
    return 0


def cmd_list(args) -> int:
    print("stages, in pipeline order:")
    for name in registry.STAGES:
        mod = registry.module(name)
        doc = (mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else ""
        needs = f" (needs {', '.join(mod.NEEDS)})" if mod.NEEDS else ""
        print(f"  {name:<12} {doc}{needs}")
    recipes = sorted(Path("recipes").glob("*.yaml"))
    if recipes:
        print("recipes:")
        for path in recipes:
            print(f"  {path}")
    return 0


# The commands that work on what stages wrote (one module each, which owns its options).
TOOLS: dict[str, tuple[str, str]] = {
    "eval": ("pipeline.evaluation", "evaluate a model, checkpoint, run folder or Hub id with the stages' metrics"),
    "chat": ("pipeline.chat", "chat in the terminal with a causal LM the pipeline wrote (or a Hub model)"),
    "generate": ("pipeline.chat", "reply to every prompt of a .txt or .jsonl file, as JSON lines"),
    "report": ("pipeline.report", "write <run>/report.md with plots of every finished stage"),
    "push": ("pipeline.hub", "push models, datasets and cards of a run (or one folder) to the Hub"),
}

COMMANDS = {"run": cmd_run, "stage": cmd_stage, "validate": cmd_validate, "list": cmd_list}

if __name__ == "__main__":
    sys.exit(main())
