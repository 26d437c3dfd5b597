"""The bad-input matrix: each row is one mistake a user makes. Every row must give exactly one line on stderr
naming the file or field and what is wrong, exit status 2, no traceback, and leave the run folder, and whatever
the case made beside it, exactly as it was (every entry's kind and mode, every file's content hashed before and
after: no `_SUCCESS`, no config.yaml rewrite, no new folder, earlier stages untouched). A file the user cannot
read is not a row: the tests run as root here, who reads everything; a folder in a file's place stands for it.

Each row starts from a copy of the session's nano run (data .. ppo finished)."""

import gzip
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import datasets
import pytest

from pipeline.cli import main

pytestmark = pytest.mark.slow


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def recipe(tmp: Path, text: str) -> str:
    return str(write(tmp / "recipe.yaml", text))


def source_recipe(tmp: Path, path: Path, fmt: str = "text", extra: str = "") -> str:
    """A recipe whose data stage reads one local file (and builds the world as well)."""
    return recipe(tmp, f"data:\n  sources:\n    - {{name: extra, format: {fmt}, path: '{path}'{extra}}}\n")


def truncated_gzip(tmp: Path) -> Path:
    whole = gzip.compress(("a line of text\n" * 5000).encode())
    return write(tmp / "cut.txt.gz", whole[: len(whole) // 2])


def chat_file(tmp: Path, messages: list[dict]) -> Path:
    return write(tmp / "chat.jsonl", json.dumps({"messages": messages}) + "\n")


def evil_regression(run: Path, function: str) -> None:
    rows = [{"x": float(x), "y": float(x), "function": function, "curve": "evil", "true_params": '{"a": 1.0}',
             "noise_sd": 0.1} for x in range(5)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(run / "data" / "evil"))


def corrupt_weights(run: Path, copy: Path | None = None) -> None:
    """Cut pretrain/final/model.safetensors to 1,000 bytes; with `copy`, a copy of that folder there, cut."""
    folder = run / "pretrain" / "final"
    if copy is not None:
        folder = Path(shutil.copytree(folder, copy))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


# id: (prepare(run, tmp) -> argv, substrings the one error line must contain)
CASES = {
    "malformed yaml": (lambda run, tmp: ["run", recipe(tmp, "sft: {learning_rate: [1,\n"), f"run.output_dir={run}"],
                       ["recipe.yaml", "YAML"]),
    "duplicate key": (lambda run, tmp: ["run", recipe(tmp, "sft: {learning_rate: 0.1}\nsft: {learning_rate: 0.2}\n"),
                                        f"run.output_dir={run}"], ["recipe.yaml", "duplicate key 'sft'", "line 2"]),
    "unknown section": (lambda run, tmp: ["run", recipe(tmp, "sftt: {}\n"), f"run.output_dir={run}"],
                        ["recipe.yaml", "sftt"]),
    "unknown key": (lambda run, tmp: ["stage", "sft", "--run", str(run), "sft.learnig_rate=0.1"],
                    ["sft.learnig_rate", "unknown key"]),
    "wrong type": (lambda run, tmp: ["stage", "sft", "--run", str(run), "sft.learning_rate=fast"],
                   ["sft.learning_rate", "expected"]),
    "zero batch size": (lambda run, tmp: ["stage", "sft", "--run", str(run), "sft.per_device_train_batch_size=0"],
                        ["sft.per_device_train_batch_size"]),
    "negative block size": (lambda run, tmp: ["stage", "pretrain", "--run", str(run), "pretrain.block_size=-8"],
                            ["pretrain.block_size"]),
    "zero people": (lambda run, tmp: ["stage", "data", "--run", str(run), "data.world.n_people=0"],
                    ["data.world.n_people"]),
    "zero vocabulary": (lambda run, tmp: ["stage", "tokenizer", "--run", str(run), "tokenizer.vocab_size=0"],
                        ["tokenizer.vocab_size"]),
    "zero window": (lambda run, tmp: ["stage", "embeddings", "--run", str(run), "embeddings.window=0"],
                    ["embeddings.window"]),
    "unknown stage in run.stages": (lambda run, tmp: ["run", recipe(tmp, "run: {stages: [data, sfx]}\n"),
                                                      f"run.output_dir={run}"], ["stages", "sfx"]),
    "unknown stage command": (lambda run, tmp: ["stage", "sfx", "--run", str(run)], ["sfx"]),
    "override without =": (lambda run, tmp: ["stage", "sft", "--run", str(run), "sft.learning_rate"],
                           ["sft.learning_rate", "section.key=value"]),
    "missing dataset file": (lambda run, tmp: ["stage", "data", "--config", source_recipe(tmp, tmp / "nope.txt"),
                                               f"run.output_dir={run}"], ["data.sources[extra]", "nope.txt"]),
    "empty dataset file": (lambda run, tmp: ["stage", "data", "--config", source_recipe(tmp, write(tmp / "e.txt", "")),
                                             f"run.output_dir={run}"], ["data.sources[extra]", "e.txt"]),
    "binary dataset file": (lambda run, tmp: ["stage", "data", "--config",
                                              source_recipe(tmp, write(tmp / "b.txt", bytes(range(256)) * 64)),
                                              f"run.output_dir={run}"], ["data.sources[extra]", "b.txt"]),
    "truncated gzip": (lambda run, tmp: ["stage", "data", "--config", source_recipe(tmp, truncated_gzip(tmp)),
                                         f"run.output_dir={run}"], ["data.sources[extra]", "cut.txt.gz"]),
    "directory instead of a file": (lambda run, tmp: ["stage", "data", "--config",
                                                      source_recipe(tmp, (tmp / "folder").mkdir() or tmp / "folder"),
                                                      f"run.output_dir={run}"], ["data.sources[extra]", "folder"]),
    "missing column": (lambda run, tmp: ["stage", "data", "--config",
                                         source_recipe(tmp, write(tmp / "rows.jsonl", '{"body": "hello"}\n'),
                                                       extra=", file_type: jsonl"),
                                         f"run.output_dir={run}"], ["data.sources[extra]", "text"]),
    "chat roles out of order": (lambda run, tmp: ["stage", "data", "--config", source_recipe(
        tmp, chat_file(tmp, [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "hello"}]),
        fmt="messages", extra=", strict: true"), f"run.output_dir={run}"], ["chat.jsonl", "role"]),
    "chat unknown role": (lambda run, tmp: ["stage", "data", "--config", source_recipe(
        tmp, chat_file(tmp, [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "poof"}]),
        fmt="messages", extra=", strict: true"), f"run.output_dir={run}"], ["chat.jsonl", "role"]),
    "eval of an empty folder": (lambda run, tmp: ["eval", str((tmp / "empty").mkdir() or tmp / "empty")], ["empty"]),
    "eval of a folder with only a config": (
        lambda run, tmp: ["eval", str(write(tmp / "m" / "config.json", (run / "pretrain" / "final" / "config.json")
                                            .read_text()).parent)], [str(Path("m"))]),
    "eval of a folder with corrupt safetensors": (
        lambda run, tmp: corrupt_weights(run, tmp / "m") or ["eval", str(tmp / "m")], ["model.safetensors", "unreadable"]),
    "corrupt safetensors upstream": (lambda run, tmp: corrupt_weights(run) or ["stage", "sft", "--run", str(run),
                                                                              "sft.learning_rate=0.001"],
                                     ["pretrain", "model.safetensors"]),
    "corrupt tokenizer upstream": (lambda run, tmp: write(run / "pretrain" / "final" / "tokenizer.json", "{not json")
                                   and ["stage", "sft", "--run", str(run), "sft.learning_rate=0.001"],
                                   ["pretrain", "tokenizer"]),
    "upstream never ran": (lambda run, tmp: shutil.rmtree(run / "sft") or ["stage", "reward", "--run", str(run)],
                           ["reward", "needs sft"]),
    "config.yaml of an incompatible version": (
        lambda run, tmp: write(run / "config.yaml", (run / "config.yaml").read_text() + "pretrain_old: {size: 3}\n")
        and ["stage", "sft", "--run", str(run)], ["config.yaml", "pretrain_old"]),
    "recipe that is not UTF-8": (lambda run, tmp: ["run", str(write(tmp / "recipe.yaml", b"\xff\xfe\x00s\x00f\x00t")),
                                                   f"run.output_dir={run}"], ["recipe.yaml", "UTF-8"]),
    "recipe with a NUL byte": (lambda run, tmp: ["run", recipe(tmp, "sft:\x00 {}\n"), f"run.output_dir={run}"],
                               ["recipe.yaml"]),
    "output_dir is a file": (lambda run, tmp: ["run", recipe(tmp, "run: {stages: [data]}\n"),
                                               f"run.output_dir={write(tmp / 'afile', 'x')}"], ["afile", "is a file"]),
    "output_dir is another kind of folder": (
        lambda run, tmp: ["run", recipe(tmp, "run: {stages: [data]}\n"),
                          f"run.output_dir={write(tmp / 'home' / 'notes.txt', 'mine').parent}"],
        ["home", "not a run folder"]),
    "lock that is a folder": (lambda run, tmp: (run / ".lock").mkdir() or ["stage", "sft", "--run", str(run),
                                                                           "sft.learning_rate=0.001"], [".lock"]),
    "marker that is a JSON list": (lambda run, tmp: write(run / "sft" / "_SUCCESS", "[1, 2]")
                                   and ["stage", "reward", "--run", str(run), "reward.learning_rate=0.002"],
                                   ["needs sft"]),
    "marker that is binary": (lambda run, tmp: write(run / "sft" / "_SUCCESS", b"\xff\xfe\x00")
                              and ["stage", "reward", "--run", str(run), "reward.learning_rate=0.002"],
                              ["needs sft"]),
    "dataset missing an Arrow file": (
        lambda run, tmp: [f.unlink() for f in (run / "data" / "dialogue" / "train").glob("*.arrow")]
        and ["stage", "sft", "--run", str(run), "sft.learning_rate=0.001"], ["sft.dataset", "dialogue", "damaged"]),
    "dataset with a corrupt dataset_dict.json": (
        lambda run, tmp: write(run / "data" / "preferences" / "dataset_dict.json", "{splits")
        and ["stage", "reward", "--run", str(run), "reward.learning_rate=0.002"], ["preferences", "damaged"]),
    "regression expression __import__": (
        lambda run, tmp: evil_regression(run, "__import__('os').system('echo pwned') + a*x")
        or ["stage", "regression", "--run", str(run), "regression.dataset=evil"], ["__import__"]),
    "regression expression attribute access": (
        lambda run, tmp: evil_regression(run, "x.__class__ + a")
        or ["stage", "regression", "--run", str(run), "regression.dataset=evil"], ["attribute"]),
    "regression expression huge exponent": (
        lambda run, tmp: evil_regression(run, "a*x**999999999")
        or ["stage", "regression", "--run", str(run), "regression.dataset=evil"], ["exponent"]),
}


def tree_hash(folder: Path) -> dict[str, tuple]:
    """Every entry below `folder` (files, folders, links): its kind, mode and, for a file, its content's hash."""
    def entry(path: Path) -> tuple:
        info = path.lstat()
        content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
        return (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), content)
    return {str(p.relative_to(folder)): entry(p) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_the_run_folder_is_untouched(case, nano_run, tmp_path, capfd):
    run = tmp_path / "run"
    shutil.copytree(nano_run, run)
    prepare, expected = CASES[case]
    argv = prepare(run, tmp_path)
    before = tree_hash(tmp_path)  # the run and everything the case made beside it (model folders, other folders)
    capfd.readouterr()
    status = main(argv)
    err = capfd.readouterr().err
    lines = [line[line.index("error: "):] for line in err.splitlines() if "error: " in line]
    assert status == 2, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], lines[0]
    assert tree_hash(tmp_path) == before  # no _SUCCESS, no config.yaml rewrite, no .previous, no lock left
