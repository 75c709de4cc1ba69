"""Reading a blob as bytes or text in bounded memory.

Blobs are read with ranged GETs of ``DOWNLOAD_CHUNK_BYTES`` pinned to the ETag seen when the blob is
opened, so memory stays bounded whatever the client's ``max_single_get_size`` is, and a partition
rewritten while it is read is reported instead of being read half old, half new. gzip is detected by
its magic bytes; bytes that are not valid in the partition's encoding are marked, not fatal.
"""

from __future__ import annotations

import codecs
import gzip
import io
import itertools
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError
from azure.storage.blob import ContainerClient

from .errors import SegmentFormatError, SegmentSourceError, _storage_error

# One ranged GET. While it is received the storage SDK and its HTTP stack briefly hold several copies,
# so a reader peaks at roughly 10x this (about 20 MB), whatever the size of the blob.
DOWNLOAD_CHUNK_BYTES = 2 * 1024 * 1024
HEADER_CHUNK_BYTES = 64 * 1024  # first GET when only the header row is needed
_TEXT_CHUNK_CHARS = 64 * 1024  # bytes handed to the text decoder at a time
_GZIP_BLOCK_BYTES = 256 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
UNDECODABLE = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" turns bad bytes into


def _ranged_chunks(container: ContainerClient, name: str, chunk_size: int) -> Iterator[bytes]:
    """The blob's bytes in ranged GETs of ``chunk_size``, all pinned to the ETag the blob had first.

    The next range is fetched in a background thread while the current one is parsed (at most two
    ranges are in memory besides the one being decoded).
    """
    blob = container.get_blob_client(name)

    def fetch(offset: int, length: int) -> bytes:
        downloader = blob.download_blob(
            offset=offset,
            length=length,
            max_concurrency=1,
            decompress=False,
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )
        # chunks() hands over the response body without the copies readall() makes; a range no larger
        # than the client's max_single_get_size is one piece.
        data = b"".join(downloader.chunks())
        if len(data) != length:
            raise SegmentSourceError(
                f"{name}: the storage service returned {len(data)} bytes instead of {length} at byte {offset}; "
                "run the export again."
            )
        return data

    pool = None
    try:
        props = blob.get_blob_properties()
        size, etag = props.size, props.etag
        ranges = [(offset, min(chunk_size, size - offset)) for offset in range(0, size, chunk_size)]
        if len(ranges) <= 1:
            for offset, length in ranges:
                yield fetch(offset, length)
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment-read")
        pending = pool.submit(fetch, *ranges[0])
        for following in ranges[1:]:
            data = pending.result()
            pending = pool.submit(fetch, *following)
            yield data
        yield pending.result()
    except ResourceModifiedError:
        raise SegmentSourceError(
            f"{name} changed while it was being read (the platform rewrote it). Run the export again to read "
            "the new data."
        ) from None
    except HttpResponseError as exc:
        mapped = _storage_error(container, exc, f"reading partition {name}")
        if mapped is None:
            raise
        raise mapped from None
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class _IterRaw(io.RawIOBase):
    """A readable raw stream over an iterator of bytes blocks (feeds gzip.GzipFile)."""

    def __init__(self, blocks: Iterator[bytes]):
        self._blocks = blocks
        self._buf = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._pos >= len(self._buf):
            block = next(self._blocks, None)
            if block is None:
                return 0
            self._buf, self._pos = block, 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n


class _CheckedBytes(io.BufferedIOBase):
    """Bytes for the text decoder, checked on the way for bytes that are not valid in ``encoding``.

    ``dirty`` turns True once any invalid byte has passed; rows decoded before that cannot contain
    undecodable characters, so the per-row check is only needed after it (cheap for clean files).
    """

    def __init__(self, blocks: Iterator[bytes], encoding: str, on_close=None, name: str = ""):
        self._blocks = blocks
        self._name = name
        self._encoding = encoding
        self._first = True
        self._on_close = on_close
        self._buf = b""
        self._pos = 0
        self._eof = False
        self.dirty = False
        self._ascii_fast = encoding == "utf-8"
        self._decoder = codecs.getincrementaldecoder(encoding)("strict")

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed and self._on_close is not None:
            self._on_close()  # stops the download (and its background fetch) early
        self._buf = b""
        super().close()

    def _check(self, block: bytes, final: bool = False) -> None:
        if self.dirty:
            return
        if self._ascii_fast and not final and block.isascii() and not self._decoder.getstate()[0]:
            return
        try:
            self._decoder.decode(block, final)
        except UnicodeDecodeError:
            self.dirty = True

    def read1(self, size: int = -1) -> bytes:
        while self._pos >= len(self._buf):
            if self._eof:
                return b""
            block = next(self._blocks, None)
            if block is None:
                self._eof = True
                self._check(b"", final=True)
                return b""
            if self._first:
                self._first = False
                _refuse_foreign_encoding(self._name, self._encoding, block)
            self._check(block)
            self._buf, self._pos = block, 0
        if size is None or size < 0 or (self._pos == 0 and size >= len(self._buf)):
            out = self._buf[self._pos :] if self._pos else self._buf
        else:
            out = self._buf[self._pos : self._pos + size]
        self._pos += len(out)
        return out

    def read(self, size: int = -1) -> bytes:
        if size is not None and size >= 0:
            return self.read1(size)
        return b"".join(iter(self.read1, b""))


_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32 LE"), (b"\x00\x00\xfe\xff", "UTF-32 BE"), (b"\xff\xfe", "UTF-16 LE"),
         (b"\xfe\xff", "UTF-16 BE"))
_SNIFF_BYTES = 4096


def _wide_encoding(block: bytes) -> str | None:
    """The UTF-16 or UTF-32 a partition's first bytes show (a byte order mark, or text in which every
    other byte is NUL), or None. Such a file decodes as "valid UTF-8" full of NULs: without this, each
    row would be rejected as an invalid email and the run would not say why."""
    for bom, name in _BOMS:
        if block.startswith(bom):
            return f"{name}, byte order mark {bom.hex(' ').upper()}"
    head = block[:_SNIFF_BYTES]
    if len(head) >= 16 and head.count(0) * 3 >= len(head):
        even, odd = head[0::2].count(0), head[1::2].count(0)
        return f"UTF-16 {'BE' if even > odd else 'LE'} without a byte order mark, {head.count(0)} NUL bytes " \
               f"in its first {len(head)}"
    return None


def _refuse_foreign_encoding(name: str, encoding: str, block: bytes) -> None:
    if encoding.replace("_", "-").startswith(("utf-16", "utf-32")):
        return  # model.json says so: the codec reads it
    found = _wide_encoding(block)
    if found is not None:
        raise SegmentFormatError(
            f"{name} is not {'UTF-8' if encoding == 'utf-8' else encoding}: it is encoded as {found}. Export "
            "the segment as UTF-8 (the CDM default), or name its encoding in model.json (fileFormatSettings "
            "encoding)."
        )


def _gunzip_blocks(gz: gzip.GzipFile, name: str) -> Iterator[bytes]:
    try:
        while True:
            block = gz.read(_GZIP_BLOCK_BYTES)
            if not block:
                return
            yield block
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise SegmentFormatError(f"{name} is not a valid gzip file ({exc}). Re-export it.") from None


def open_text(container: ContainerClient, name: str, encoding: str, chunk_size: int):
    """(checker, text stream) for a partition; gzip is detected by its magic bytes."""
    chunks = _ranged_chunks(container, name, chunk_size)
    first = next(chunks, b"")
    source: Iterator[bytes] = itertools.chain([first], chunks) if first else iter(())
    if first[:2] == _GZIP_MAGIC:
        source = _gunzip_blocks(gzip.GzipFile(fileobj=_IterRaw(source), mode="rb"), name)
    checked = _CheckedBytes(source, encoding, on_close=chunks.close, name=name)
    text = io.TextIOWrapper(
        checked,
        encoding="utf-8-sig" if encoding == "utf-8" else encoding,
        errors="surrogateescape",
        newline="",
    )
    text._CHUNK_SIZE = _TEXT_CHUNK_CHARS
    return checked, text
