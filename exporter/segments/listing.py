"""What the platform's storage holds, for choosing an export's source: the containers, and the
folders and segments directly under a folder.

Storage may hold millions of blobs, so nothing here walks a container: each answer is one page of a
listing with the ``/`` delimiter (one level), capped, plus one single-result probe per child folder
to tell a segment (``<Segment>/<yyyy>/<MM>/<dd>/<HHmm>/...``) from a folder of segments.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobPrefix, BlobServiceClient, ContainerClient

from .cdm import ModelJsonError, parse_model
from .errors import SegmentSourceError, _storage_error
from .refresh import _TIME_FOLDER, _model_json_name
from .schema import _download_small

MAX_ENTRIES = 100  # containers, or child folders of one folder, in one answer
_LEVEL_PAGE = 500  # entries (folders and loose files) read of one level; the rest is not read
_PROBES = 8  # child folders probed at the same time


@dataclass(frozen=True)
class ContainerListing:
    names: tuple[str, ...]
    truncated: bool  # there are more than were listed


@dataclass(frozen=True)
class FolderListing:
    folders: tuple[str, ...]  # paths of the child folders that are not segments (to look into)
    segments: tuple[str, ...]  # names of the segments directly under the folder
    truncated: bool  # the folder holds more than was listed


def list_containers(service: BlobServiceClient, prefix: str, hidden: frozenset[str] = frozenset(),
                    limit: int = MAX_ENTRIES) -> ContainerListing:
    """The first ``limit`` container names starting with ``prefix`` (sorted, as storage lists them),
    leaving out ``hidden`` ones (the app's own containers when segments share its account)."""
    pages = service.list_containers(name_starts_with=prefix or None, results_per_page=limit + 1).by_page()
    names = [c.name for c in next(pages, [])]
    truncated = len(names) > limit or bool(pages.continuation_token)
    return ContainerListing(tuple(n for n in names[:limit] if n not in hidden), truncated)


def list_folder(container: ContainerClient, folder: str, limit: int = MAX_ENTRIES) -> FolderListing:
    """The folders and segments directly under ``folder`` ('' for the container's root).

    A child folder is a segment when its first blob sits in a time folder of the layout, or when the
    folder's model.json describes an entity of its name (a segment before its first refresh).
    """
    folder = folder.strip("/")
    prefix = f"{folder}/" if folder else ""
    try:
        pages = container.walk_blobs(name_starts_with=prefix or None, delimiter="/",
                                     results_per_page=_LEVEL_PAGE).by_page()
        entries = list(next(pages, []))
        truncated = bool(pages.continuation_token)
        children = [e.name for e in entries if isinstance(e, BlobPrefix)]
        if len(children) > limit:
            children, truncated = children[:limit], True
        has_model = any(not isinstance(e, BlobPrefix) and e.name == _model_json_name(folder) for e in entries)
        described = _entities(container, folder) if has_model else set()
        with ThreadPoolExecutor(max_workers=_PROBES, thread_name_prefix="segment-probe") as pool:
            is_segment = list(pool.map(lambda child: _holds_refreshes(container, child), children))
    except HttpResponseError as exc:
        mapped = _storage_error(container, exc, f"listing folder '{folder or '/'}'")
        if mapped is None:
            raise
        raise mapped from None
    names = [child[len(prefix):].rstrip("/") for child in children]
    segments = {n for n, seg in zip(names, is_segment) if seg} | described
    folders = tuple(f"{prefix}{n}" for n in names if n not in segments)
    return FolderListing(folders=folders, segments=tuple(sorted(segments)), truncated=truncated)


def _holds_refreshes(container: ContainerClient, child: str) -> bool:
    """One listing of one name: does the first blob under ``child`` lie in a yyyy/MM/dd/HHmm folder?"""
    first = next(iter(container.list_blob_names(name_starts_with=child, results_per_page=1).by_page()), None)
    name = next(iter(first), None) if first is not None else None
    return bool(name and re.match(re.escape(child) + _TIME_FOLDER, name))


def _entities(container: ContainerClient, folder: str) -> set[str]:
    """The entity names of the folder's model.json (none when it cannot be read: it is only a hint here;
    reading the columns says what is wrong with it)."""
    try:
        data = _download_small(container, _model_json_name(folder), "reading model.json")
        doc = parse_model(data) if data is not None else {"entities": []}
    except (SegmentSourceError, ModelJsonError):
        return set()
    return {e["name"] for e in doc["entities"]
            if isinstance(e, dict) and isinstance(e.get("name"), str) and e["name"] and "/" not in e["name"]}
