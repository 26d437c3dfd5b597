"""The Hugging Face Hub: find what a user names (a local folder or a Hub id), push models, datasets and cards.

    pipeline push runs/tiny --repo-id me/tiny                    # every finished stage of the run
    pipeline push runs/tiny --repo-id me/tiny --stage sft        # one stage (`--stage data`: the datasets)
    pipeline push runs/tiny/sft/final --repo-id me/tiny-chat     # one model folder (or one dataset folder)
    pipeline push runs/tiny --repo-id me/tiny --private --revision experiment-2

Repo names. A run folder pushes one repo per thing it holds, named after `--repo-id` used as a prefix:
each finished model stage (pretrain, sft, reward, ppo) to the model repo `<repo-id>-<stage>`, each dataset of
the data stage to the dataset repo `<repo-id>-<dataset>` (`me/tiny-pretrain`, `me/tiny-corpus`, ...). So the
cards can link them: sft's `base_model` is `<repo-id>-pretrain`, every card's `datasets` are the dataset repos
its stage trained and was evaluated on. A single model folder (config.json + safetensors weights, or a LoRA
adapter) or dataset folder (`DatasetDict.save_to_disk`) pushes to `--repo-id` itself. Only stages with a
`_SUCCESS` marker are pushed. With `run.push_to_hub: true` in a recipe, each stage is pushed this way as it
finishes, with `run.hub_repo_prefix` as the repo id.

What a repo holds. A model repo: the stage's `final/` folder (safetensors only; a LoRA adapter's
`adapter_config.json` then names the pushed base model), for ppo also the value model in `value/`, the run's
`config.yaml`, and a model card (README.md) with YAML metadata (license, base_model, datasets, tags,
library_name, pipeline_tag) and a `model-index` of the stage's evaluated results (`pipeline.model_cards`). A
dataset repo: what `DatasetDict.push_to_hub` writes, parquet shards `data/<split>-00000-of-00001.parquet` and
the data stage's dataset card with its `configs` pointing at them, so `datasets.load_dataset(repo)` reads it.

The client is `huggingface_hub` (create_repo, create_branch, create_commit): it respects `HF_ENDPOINT`,
`HF_TOKEN` and the login cached by `hf auth login`. A missing token, a bad repo id, an unreachable endpoint or a
refused upload is a one-line `PipelineError` (exit status 2). Pushing only reads the run folder: nothing local is
written, and the token is never printed nor written into a card or an uploaded file.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import yaml

from pipeline.errors import PipelineError
from pipeline.model_cards import model_card

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MODEL_STAGES = ("pretrain", "sft", "reward", "ppo")
DATA_STAGE = "data"
NOT_UPLOADED = (".bin", ".pt", ".pth", ".pkl", ".ckpt")  # pickles: safetensors only
LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN to a token with write access"


def local_folder(path_or_id: str, repo_type: str = "model") -> Path:
    """The local folder behind `path_or_id`: an existing path as is; otherwise a Hub repo id, downloaded (or found
    in the local cache) with `huggingface_hub.snapshot_download`, which respects `HF_ENDPOINT`, `HF_TOKEN` and
    `HF_HUB_OFFLINE`. One-line `PipelineError` when it is neither, or when offline and not cached."""
    path = Path(path_or_id)
    if path.exists():
        return path
    if not REPO_ID.match(path_or_id):
        raise PipelineError(f"{path_or_id}: no such file or folder, and not a Hub repo id (namespace/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(path_or_id, repo_type=repo_type))
    except LocalEntryNotFoundError:
        raise PipelineError(f"{path_or_id}: not a local folder, and not in the local Hub cache (offline or the Hub "
                            "is unreachable): download it once with network access, or give a folder") from None
    except RepositoryNotFoundError:
        raise PipelineError(f"{path_or_id}: no such {repo_type} repo on the Hub (or no access to it)") from None
    except HfHubHTTPError as error:
        raise PipelineError(f"{path_or_id}: the Hub refused the download: {str(error).splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------------------------------
# The command


def add_arguments(parser, name: str) -> None:
    parser.add_argument("path", metavar="RUN_OR_FOLDER", help="a run folder, a model folder or a dataset folder")
    parser.add_argument("--repo-id", required=True, metavar="NAMESPACE/NAME",
                        help="target repo; for a run folder the prefix of one repo per stage and dataset")
    parser.add_argument("--stage", help=f"push only this stage of a run ({', '.join((DATA_STAGE, *MODEL_STAGES))})")
    parser.add_argument("--private", action="store_true", help="create the repos private")
    parser.add_argument("--revision", help="push to this branch (created from main if missing)")


def run_command(args) -> int:
    for url in push(Path(args.path), args.repo_id, stage=args.stage, private=args.private, revision=args.revision):
        print(f"pushed {url}")
    return 0


def push(path: Path, repo_id: str, stage: str | None = None, private: bool = False,
         revision: str | None = None) -> list[str]:
    """Push a run folder, a model folder or a dataset folder; returns the URLs of the repos pushed."""
    check_repo_id(repo_id, "--repo-id")
    require_token()
    with tempfile.TemporaryDirectory(prefix="pipeline-push-") as staging:
        uploads = plan(path, repo_id, stage, Path(staging))
        return upload(uploads, private=private, revision=revision)


def push_stage(run_root: Path, stage: str, prefix: str) -> list[str]:
    """Push one just-finished stage of a run (`run.push_to_hub`); stages with nothing to push push nothing."""
    if stage not in (DATA_STAGE, *MODEL_STAGES):
        return []
    try:
        urls = push(Path(run_root), prefix, stage=stage)
    except PipelineError as error:
        raise PipelineError(f"{error} (stage {stage} finished; push it again with `pipeline push {run_root} "
                            f"--repo-id {prefix} --stage {stage}`)") from None
    for url in urls:
        print(f"pushed {url}")
    return urls


def check_repo_id(repo_id: str, where: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if not REPO_ID.match(repo_id):
            raise HFValidationError("expected namespace/name")
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PipelineError(f"{where}: {repo_id!r} is not a valid Hub repo id (namespace/name: letters, digits, '-', "
                            "'_' and '.', not starting or ending with '-' or '.', at most 96 characters)") from None


# ---------------------------------------------------------------------------------------------------------------
# What to push: a plan of uploads, built from the local folder alone (no network, nothing written there)


@dataclass
class Upload:
    """One commit to one repo: files by their path in the repo, as a local file or bytes."""

    repo_id: str
    repo_type: str  # "model" or "dataset"
    files: dict[str, Path | bytes] = field(default_factory=dict)
    message: str = ""


def plan(path: Path, repo_id: str, stage: str | None, staging: Path) -> list[Upload]:
    """The uploads for `path`: a run folder (config.yaml), a model folder (config.json) or a dataset folder."""
    if (path / "config.yaml").is_file() and not (path / "config.json").is_file():
        return plan_run(path, repo_id, stage, staging)
    if stage:
        raise PipelineError(f"{path}: --stage needs a run folder (one with config.yaml)")
    if (path / "dataset_dict.json").is_file():
        return [dataset_upload(path, repo_id, staging)]
    if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        return [model_upload(path, repo_id, stage_in_run(path))]
    raise PipelineError(f"{path}: not a run folder (config.yaml), a model folder (config.json or "
                        "adapter_config.json) nor a dataset folder (dataset_dict.json)")


def plan_run(root: Path, prefix: str, stage: str | None, staging: Path) -> list[Upload]:
    finished = pushable_stages(root)
    if stage is not None and stage not in finished:
        raise PipelineError(f"{root}: --stage {stage}: not a finished stage of this run with something to push "
                            f"(finished: {', '.join(finished) or 'none'})")
    if not finished:
        raise PipelineError(f"{root}: no finished stage to push (stages with _SUCCESS: data, {', '.join(MODEL_STAGES)})")
    context = RunContext(root, prefix)
    chosen = [stage] if stage else finished
    datasets = dataset_folders(root) if DATA_STAGE in chosen else []
    models = [name for name in chosen if name != DATA_STAGE]
    for repo_id in [context.dataset_repo(f.name) for f in datasets] + [context.model_repo(m) for m in models]:
        check_repo_id(repo_id, f"--repo-id {prefix}")  # all of them before anything is built or sent
    return ([dataset_upload(folder, context.dataset_repo(folder.name), staging) for folder in datasets]
            + [model_upload(root / m / "final", context.model_repo(m), StageContext(context, m)) for m in models])


def pushable_stages(root: Path) -> list[str]:
    """Finished stages with something to push, in pipeline order."""
    stages = [DATA_STAGE] if (root / DATA_STAGE / "_SUCCESS").is_file() and dataset_folders(root) else []
    return stages + [s for s in MODEL_STAGES if (root / s / "_SUCCESS").is_file() and (root / s / "final").is_dir()]


def dataset_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in (root / DATA_STAGE).glob("*/dataset_dict.json"))  # as model_cards.model_license


@dataclass
class RunContext:
    """A run folder being pushed with a repo-id prefix: knows every repo name and the run's config."""

    root: Path
    prefix: str | None  # None: a folder pushed on its own, nothing else of its run pushed with it

    @property
    def config(self) -> dict:
        return yaml.safe_load((self.root / "config.yaml").read_text()) or {}

    def model_repo(self, stage: str) -> str | None:
        return f"{self.prefix}-{stage}" if self.prefix else None

    def dataset_repo(self, name: str) -> str:
        return f"{self.prefix}-{name}" if self.prefix else name


@dataclass
class StageContext:
    run: RunContext
    stage: str

    @property
    def section(self) -> dict:
        return self.run.config.get(self.stage) or {}

    def datasets(self) -> list[str]:
        """The data stage's datasets this stage trained and was evaluated on (those the run holds)."""
        section = self.section
        names = [section.get("dataset"), section.get("eval_dataset")]
        if self.stage == "ppo" and (section.get("ptx_coef") or 0) > 0:
            names.append(section.get("ptx_dataset"))
        built = {p.name for p in dataset_folders(self.run.root)}
        return [name for name in dict.fromkeys(names) if name in built]

    def base_stage(self) -> str | None:
        return {"sft": "pretrain", "reward": self.section.get("model") or "sft", "ppo": "sft"}.get(self.stage)


def stage_in_run(folder: Path) -> StageContext | None:
    """`<run>/<stage>/final` pushed on its own still knows its stage's config and metrics."""
    root, stage = folder.resolve().parent.parent, folder.resolve().parent.name
    if folder.resolve().name == "final" and stage in MODEL_STAGES and (root / "config.yaml").is_file():
        return StageContext(RunContext(root, None), stage)
    return None


# ---------------------------------------------------------------------------------------------------------------
# Model repos


def model_upload(folder: Path, repo_id: str, context: StageContext | None) -> Upload:
    files = weights_and_tokenizer(folder)
    if context and context.stage == "ppo" and (context.run.root / "ppo" / "value").is_dir():
        files |= {f"value/{name}": path for name, path in weights_and_tokenizer(context.run.root / "ppo" / "value").items()}
    base_repo = context.run.model_repo(context.base_stage()) if context and context.base_stage() else None
    if "adapter_config.json" in files and base_repo:
        adapter = json.loads(Path(files["adapter_config.json"]).read_text())
        files["adapter_config.json"] = json.dumps({**adapter, "base_model_name_or_path": base_repo}, indent=2).encode()
    if context:
        files["config.yaml"] = redacted(context.run.root.joinpath("config.yaml").read_text()).encode()
    files["README.md"] = model_card(folder, repo_id, context, base_repo).encode()
    what = f"stage {context.stage} of run {context.run.root.name}" if context else f"model folder {folder.name}"
    return Upload(repo_id, "model", files, f"Upload {what} with pipeline push")


def weights_and_tokenizer(folder: Path) -> dict[str, Path]:
    """The files of a save_pretrained folder to upload: everything but pickles, hidden files and its README."""
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()
             and not p.name.startswith(".") and p.suffix not in NOT_UPLOADED and p.name != "README.md"}
    if not any(name.endswith(".safetensors") for name in files):
        raise PipelineError(f"{folder}: no safetensors weights to push (pickled weights are never uploaded)")
    return files


def redacted(text: str) -> str:
    """config.yaml as uploaded: any token a recipe set (hub_token, or the one in use) replaced by null."""
    text = re.sub(r"^(\s*hub_token:)[ \t]*(?!null\s*$)\S.*$", r"\1 null", text, flags=re.MULTILINE)
    token = current_token()
    return text.replace(token, "<redacted>") if token else text


def require_token() -> str:
    token = current_token()
    if not token:
        raise PipelineError(f"no Hugging Face token: {LOGIN_HINT}")
    return token


def current_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


# ---------------------------------------------------------------------------------------------------------------
# Dataset repos


def dataset_upload(folder: Path, repo_id: str, staging: Path) -> Upload:
    """Parquet shards per split and the dataset card, laid out as `DatasetDict.push_to_hub` lays them out."""
    import datasets
    from huggingface_hub import DatasetCard

    ds = datasets.load_from_disk(str(folder))
    if isinstance(ds, datasets.Dataset):
        ds = datasets.DatasetDict({"train": ds})
    out = staging / repo_id.replace("/", "--")
    files: dict[str, Path | bytes] = {}
    (out / "data").mkdir(parents=True, exist_ok=True)
    quiet = datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        for split, rows in ds.items():
            path_in_repo = f"data/{split}-00000-of-00001.parquet"
            rows.to_parquet(str(out / path_in_repo))
            files[path_in_repo] = out / path_in_repo
    finally:
        if not quiet:
            datasets.utils.enable_progress_bars()
    card = DatasetCard.load(folder / "README.md") if (folder / "README.md").is_file() else DatasetCard("---\n---\n")
    card.data.configs = [{"config_name": "default",
                          "data_files": [{"split": split, "path": f"data/{split}-*"} for split in ds]}]
    files["README.md"] = card.content.encode()
    return Upload(repo_id, "dataset", files, f"Upload dataset {folder.name} with pipeline push")


# ---------------------------------------------------------------------------------------------------------------
# Talking to the Hub


def upload(uploads: list[Upload], private: bool = False, revision: str | None = None) -> list[str]:
    """Create each repo (and branch) and commit its files; returns the URLs pushed."""
    from huggingface_hub import CommitOperationAdd, HfApi

    token = require_token()
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    urls = []
    for item in uploads:
        with hub_errors(api.endpoint, item.repo_id, token):
            url = str(api.create_repo(item.repo_id, repo_type=item.repo_type, private=True if private else None,
                                      exist_ok=True))
            if revision and revision != "main":
                api.create_branch(item.repo_id, repo_type=item.repo_type, branch=revision, exist_ok=True)
            operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=content if isinstance(content, bytes)
                                             else str(content)) for path, content in item.files.items()]
            api.create_commit(item.repo_id, operations, commit_message=item.message, repo_type=item.repo_type,
                              revision=revision)
        urls.append(f"{url}/tree/{revision}" if revision else url)
    return urls


@contextmanager
def hub_errors(endpoint: str, repo_id: str, token: str) -> Iterator[None]:
    """Turn what the Hub client raises into one-line `PipelineError`s (never showing the token)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        yield
    except OfflineModeIsEnabled:
        raise PipelineError("the Hub is disabled here (HF_HUB_OFFLINE=1): unset it to push") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        hint = f"; {LOGIN_HINT}" if status == 401 else ""
        raise PipelineError(_one_line(f"{repo_id}: the Hub at {endpoint} refused the upload (HTTP {status}): "
                                      f"{_server_message(error)}{hint}", token)) from None
    except _network_errors() as error:
        raise PipelineError(_one_line(f"{repo_id}: cannot reach the Hub at {endpoint} (set HF_ENDPOINT to change it): "
                                      f"{type(error).__name__}: {error}", token)) from None
    except ValueError as error:  # the Hub's validation of a card's metadata; anything else is a bug: raise it
        if "metadata" not in str(error):
            raise
        raise PipelineError(_one_line(f"{repo_id}: {error}", token)) from None


def _server_message(error) -> str:
    server = getattr(error, "server_message", None)
    return server or str(error).splitlines()[0]


def _one_line(text: str, token: str) -> str:
    return " ".join(text.replace(token, "<token>").split())


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection failures and timeouts of whichever HTTP client this huggingface_hub uses (httpx2 or httpx)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)
