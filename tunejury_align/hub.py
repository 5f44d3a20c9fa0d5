"""Resolve "hub id or local path" arguments to files, with errors that say what is missing."""

from __future__ import annotations

import os
from pathlib import Path


class ModelNotFoundError(FileNotFoundError):
    """A model, checkpoint or config that cannot be found locally nor on the hub."""


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def hub_file(repo_id: str, filename: str, *, what: str, optional: bool = False,
             revision: str | None = None) -> Path | None:
    """Download (or find in the Hugging Face cache) ``filename`` from model repo ``repo_id``.

    Returns ``None`` for a missing ``optional`` file; otherwise raises :class:`ModelNotFoundError`
    naming the repo, the file and how to get it.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except LocalEntryNotFoundError as err:
        if optional:
            return None
        mode = "HF_HUB_OFFLINE is set and it is" if is_offline() else "it is"
        raise ModelNotFoundError(
            f"{what}: '{filename}' from hub repo '{repo_id}' could not be fetched ({mode} not in the "
            f"Hugging Face cache). On a machine with network run "
            f"`huggingface-cli download {repo_id} {filename}` (and copy the cache), or pass a local path."
        ) from err
    except EntryNotFoundError:
        if optional:
            return None
        raise ModelNotFoundError(f"{what}: the hub repo '{repo_id}' has no file '{filename}'") from None
    except RepositoryNotFoundError as err:
        raise ModelNotFoundError(
            f"{what}: no hub repo '{repo_id}' (or it is private/gated: log in with `huggingface-cli login`); "
            "a local path must exist on disk"
        ) from err
    except (OSError, ValueError) as err:
        if optional:
            return None
        raise ModelNotFoundError(f"{what}: cannot fetch '{filename}' from '{repo_id}': {err}") from err


def looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) >= 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_file(name: str, default_filename: str, *, what: str) -> Path:
    """``name`` is a local file, a local folder holding ``default_filename``, ``owner/repo``
    (file ``default_filename``) or ``owner/repo/path/in/repo.ext``."""
    local = Path(name).expanduser()
    if local.is_file():
        return local
    if local.is_dir():
        candidate = local / default_filename
        if candidate.is_file():
            return candidate
        raise ModelNotFoundError(f"{what}: folder {local} has no '{default_filename}'")
    if not looks_like_repo_id(name):
        raise ModelNotFoundError(f"{what}: '{name}' is neither an existing local path nor a hub id like 'owner/repo'")
    try:
        return hub_file(*split_hub_path(name, default_filename), what=what)
    except ModelNotFoundError as err:  # a mistyped local path looks like a hub id: say both
        raise ModelNotFoundError(f"{what}: no local file '{name}' (nothing at {local.absolute()}), and as a hub "
                                 f"id: {str(err).removeprefix(what + ': ')}") from err


def split_hub_path(name: str, default_filename: str) -> tuple[str, str]:
    """``owner/repo`` -> (``owner/repo``, default file); ``owner/repo/path/f.pt`` -> (``owner/repo``, ``path/f.pt``)."""
    parts = name.split("/")
    return "/".join(parts[:2]), "/".join(parts[2:]) or default_filename
