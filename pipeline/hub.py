"""The Hugging Face Hub: find what a user names (a local folder or a Hub id); pushing comes next.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import PipelineError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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
