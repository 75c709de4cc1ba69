"""Generate realistic sample segments and write them the way Dynamics 365 Customer Insights does.

Used by the demo, the tests and the benchmarks::

    python -m devtools.sample_segment --rows 100000 --segment VIPCustomers --container cdp --folder ci \\
        [--partitions 4] [--header] [--gzip] [--seed 7] [--invalid-share 0.02] [--duplicate-share 0.01]

uploads to the storage account of AzureWebJobsStorage (default: Azurite, UseDevelopmentStorage=true).

All email addresses use the reserved example.com / example.org / example.net domains, so exporting a
sample segment to a real Omnisend account never mails anybody.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import io
import itertools
import json
import operator
import os
import random
import sys
import tempfile
import unicodedata
import zlib
from datetime import datetime, timezone
from typing import Iterable, Iterator, Sequence
from urllib.parse import quote

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from exporter.segments.cdm import MODEL_JSON, CsvFormat, format_settings_json

COLUMNS: tuple[str, ...] = (
    "CustomerId",
    "FirstName",
    "LastName",
    "PrimaryEmail",
    "StreetAddress",
    "City",
    "State",
    "PostCode",
    "Country",
)

FIRST_NAMES = (
    "Anna", "Jonas", "Lukas", "Emma", "Mia", "Noah", "Olivia", "Liam", "Sophia", "Ben", "Marie", "Paul",
    "Hannah", "Leon", "Emilia", "Jack", "Amelia", "Oliver", "Isla", "Matas", "Ieva", "Greta", "Mantas",
    "Jūratė", "Žygimantas", "Gintarė", "Ąžuolas", "Zoë", "José", "Åsa", "Łukasz", "Søren", "François",
    "Chloé", "Björn", "Inês", "Tomás", "Małgorzata", "Anne-Marie", "Jean-Luc",
)
QUOTED_FIRST_NAMES = ('Anna "Ann"', 'Robert "Bob"', 'Elizabeth "Liz"')
LAST_NAMES = (
    "Smith", "Johnson", "Brown", "Miller", "Davis", "Wilson", "Müller", "Schmidt", "Schneider", "Fischer",
    "Weber", "Kazlauskas", "Petrauskas", "Jankauskas", "Žukauskas", "Vasiliauskaitė", "García", "Martínez",
    "Nowak", "Kowalski", "Wiśniewski", "Andersson", "Nilsson", "Dubois", "Lefèvre", "de Vries",
    "van der Berg", "O'Brien", "D'Angelo", "Lee", "Nguyen", "Kim", "Østergaard",
)
COMMA_LAST_NAMES = ("Smith, Jr.", "García, III", "King, Sr.")

# iso, full name, weight, [(city, state, postcode pattern)], streets, street format
COUNTRIES = (
    ("US", "United States", 30,
     (("New York", "NY", "100##"), ("San Francisco", "CA", "941##"), ("Austin", "TX", "787##"),
      ("Chicago", "IL", "606##"), ("Seattle", "WA", "981##")),
     ("Main St", "Oak Ave", "Maple Dr", "Broadway", "Market St"), "{n} {s}"),
    ("DE", "Germany", 25,
     (("Berlin", "Berlin", "10###"), ("München", "Bayern", "80###"), ("Köln", "Nordrhein-Westfalen", "50###"),
      ("Hamburg", "Hamburg", "20###")),
     ("Hauptstraße", "Bahnhofstraße", "Schillerstraße", "Gartenweg"), "{s} {n}"),
    ("LT", "Lithuania", 20,
     (("Vilnius", "Vilniaus apskritis", "LT-0####"), ("Kaunas", "Kauno apskritis", "LT-4####"),
      ("Klaipėda", "Klaipėdos apskritis", "LT-9####"), ("Šiauliai", "Šiaulių apskritis", "LT-7####")),
     ("Gedimino pr.", "Laisvės al.", "Vilniaus g.", "Žalgirio g."), "{s} {n}"),
    ("GB", "United Kingdom", 8,
     (("London", "", "SW1A #AA"), ("Manchester", "", "M# #AB"), ("Edinburgh", "Scotland", "EH# #BT")),
     ("High Street", "Station Road", "Church Lane"), "{n} {s}"),
    ("FR", "France", 7,
     (("Paris", "Île-de-France", "750##"), ("Lyon", "Auvergne-Rhône-Alpes", "690##")),
     ("rue de la Paix", "avenue Victor Hugo"), "{n} {s}"),
    ("PL", "Poland", 5,
     (("Warszawa", "mazowieckie", "00-###"), ("Kraków", "małopolskie", "30-###")),
     ("ul. Długa", "ul. Piękna"), "{s} {n}"),
    ("SE", "Sweden", 5,
     (("Stockholm", "Stockholms län", "11# ##"), ("Göteborg", "Västra Götalands län", "41# ##")),
     ("Storgatan", "Kungsgatan"), "{s} {n}"),
)
_COUNTRY_WEIGHTS = tuple(c[2] for c in COUNTRIES)
DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "shop.example.org")
INVALID_EMAILS = (
    "", "no-at-sign", "a@b", "john doe@example.com", "@example.com", "user@", "user@@example.com", "   ",
    "jane@exa mple.com",
)
SECOND_LINES = ("c/o Reception", "Building B", "2nd floor")
_ASCII_FOLD = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "ß": "ss", "đ": "d", "æ": "ae"})
_RESERVOIR = 1000  # earlier emails a duplicate may repeat


def _slug(name: str) -> str:
    folded = unicodedata.normalize("NFKD", name.translate(_ASCII_FOLD)).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if "a" <= ch <= "z") or "user"


def _digit_format(pattern: str) -> tuple[str, int]:
    """"LT-0####" -> ("LT-0{0}{1}{2}{3}", 4): a format filled with one digit per '#'."""
    out, k = [], 0
    for ch in pattern:
        if ch == "#":
            out.append("{%d}" % k)
            k += 1
        else:
            out.append(ch.replace("{", "{{").replace("}", "}}"))
    return "".join(out), k


# Precomputed per country: (iso, full name, [(city, state, postcode format, digits)], streets, street format)
_PLACES = tuple(
    (iso, full, tuple((city, state, *_digit_format(pc)) for city, state, pc in cities), streets, fmt)
    for iso, full, _, cities, streets, fmt in COUNTRIES
)
_CUM_WEIGHTS = tuple(itertools.accumulate(_COUNTRY_WEIGHTS))
_SLUGS = {name: _slug(name) for name in FIRST_NAMES + QUOTED_FIRST_NAMES + LAST_NAMES + COMMA_LAST_NAMES}


class CountedProfiles(Iterator[dict]):
    """An iterator that knows how many items are left (``operator.length_hint``), so a writer can split
    it into equal partitions without holding it."""

    def __init__(self, gen: Iterator[dict], count: int):
        self._gen = gen
        self._left = count

    def __next__(self) -> dict:
        item = next(self._gen)
        self._left -= 1
        return item

    def __length_hint__(self) -> int:
        return max(self._left, 0)


def generate_profiles(
    count: int, seed: int = 7, invalid_share: float = 0.02, duplicate_share: float = 0.0
) -> Iterator[dict[str, str]]:
    """``count`` deterministic profiles (same arguments, same rows), each a dict with exactly COLUMNS.

    Exactly ``round(count * invalid_share)`` rows, spread evenly, have an invalid PrimaryEmail;
    ``round(count * duplicate_share)`` other rows (fewer only when the share leaves too few rows)
    repeat an earlier valid email in different letter case. All other emails are unique. Some names
    hold commas, quotes and non-ASCII letters, about
    0.5% of street addresses a line break, and Country is mostly ISO alpha-2, sometimes a full name,
    lower case or empty.
    """
    if count < 0:
        raise ValueError("count must not be negative")
    if not (0 <= invalid_share <= 1 and 0 <= duplicate_share <= 1):
        raise ValueError("shares must be between 0 and 1")
    return CountedProfiles(_profiles(count, seed, invalid_share, duplicate_share), count)


def _profiles(count: int, seed: int, invalid_share: float, duplicate_share: float) -> Iterator[dict[str, str]]:
    rng = random.Random(seed)
    rand = rng.random  # seq[int(rand() * len(seq))] is a fast, deterministic choice
    bits = rng.getrandbits
    total_weight = _CUM_WEIGHTS[-1]
    n_invalid = round(count * invalid_share)
    n_dup = round(count * duplicate_share)
    dups_done = 0
    reservoir: list[str] = []
    for i in range(count):
        if rand() < 0.01:
            first = QUOTED_FIRST_NAMES[int(rand() * len(QUOTED_FIRST_NAMES))]
        else:
            first = FIRST_NAMES[int(rand() * len(FIRST_NAMES))]
        if rand() < 0.02:
            last = COMMA_LAST_NAMES[int(rand() * len(COMMA_LAST_NAMES))]
        else:
            last = LAST_NAMES[int(rand() * len(LAST_NAMES))]
        iso, full, cities, streets, street_fmt = _PLACES[bisect.bisect(_CUM_WEIGHTS, rand() * total_weight)]
        city, state, postcode_fmt, ndigits = cities[int(rand() * len(cities))]
        postcode = postcode_fmt.format(*f"{int(rand() * 10 ** ndigits):0{ndigits}d}")
        street = street_fmt.format(n=1 + int(rand() * 250), s=streets[int(rand() * len(streets))])
        r = rand()
        if r < 0.005:
            street += "\n" + SECOND_LINES[int(rand() * len(SECOND_LINES))]
        elif r < 0.05:
            street += f", Apt {1 + int(rand() * 40)}"
        r = rand()
        country = iso if r < 0.82 else full if r < 0.90 else iso.lower() if r < 0.92 else ""
        if rand() < 0.05:
            state = ""

        if (i + 1) * n_invalid // count > i * n_invalid // count:
            email = INVALID_EMAILS[int(rand() * len(INVALID_EMAILS))]
        elif ((i + 1) * n_dup + count // 2) // count > dups_done and reservoir:  # due half-way between
            original = reservoir[int(rand() * len(reservoir))]
            email = original.upper() if rand() < 0.5 else original.swapcase()
            if email == original:
                email = original.lower()
            dups_done += 1
        else:
            given, family = _SLUGS[first], _SLUGS[last]
            style = rand()
            local = (f"{given}.{family}" if style < 0.5 else f"{given[0]}{family}" if style < 0.8
                     else f"{given}_{family}")
            email = f"{local}{i + 1}@{DOMAINS[int(rand() * len(DOMAINS))]}"
            if rand() < 0.1:
                email = email[0].upper() + email[1:]
            if len(reservoir) < _RESERVOIR:
                reservoir.append(email)
            else:
                reservoir[int(rand() * _RESERVOIR)] = email
        h = f"{bits(128):032x}"
        yield {
            "CustomerId": f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}",
            "FirstName": first,
            "LastName": last,
            "PrimaryEmail": email,
            "StreetAddress": street,
            "City": city,
            "State": state,
            "PostCode": postcode,
            "Country": country,
        }


# --------------------------------------------------------------------------- writing

_BLOCK_BYTES = 4 * 1024 * 1024
_TEXT_FLUSH_CHARS = 256 * 1024


class _PartitionWriter:
    """Writes CSV rows into a block blob in 4 MiB blocks (optionally gzip), holding one block at most."""

    def __init__(self, container: ContainerClient, name: str, columns: Sequence[str], header: bool, gz: bool):
        self._blob = container.get_blob_client(name)
        self._columns = list(columns)
        self._text = io.StringIO()
        self._csv = csv.writer(self._text, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        self._gz = zlib.compressobj(6, zlib.DEFLATED, 31) if gz else None
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._blocks: list[str] = []
        self._content_type = "application/gzip" if gz else "text/csv; charset=utf-8"
        if header:
            self._csv.writerow(self._columns)

    def write(self, profile: dict) -> None:
        self._csv.writerow([profile.get(c, "") for c in self._columns])
        if self._text.tell() >= _TEXT_FLUSH_CHARS:
            self._flush_text()

    def _flush_text(self) -> None:
        data = self._text.getvalue().encode("utf-8")
        self._text.seek(0)
        self._text.truncate()
        if self._gz:
            data = self._gz.compress(data)
        self._add(data)

    def _add(self, data: bytes) -> None:
        if data:
            self._pending.append(data)
            self._pending_len += len(data)
        if self._pending_len >= _BLOCK_BYTES:
            self._stage()

    def _stage(self) -> None:
        if not self._pending_len:
            return
        block_id = f"{len(self._blocks):08d}"
        self._blob.stage_block(block_id, b"".join(self._pending))
        self._blocks.append(block_id)
        self._pending, self._pending_len = [], 0

    def close(self) -> None:
        self._flush_text()
        if self._gz:
            self._add(self._gz.flush())
        self._stage()
        self._blob.commit_block_list(self._blocks, content_settings=ContentSettings(content_type=self._content_type))


def _time_folder(folder: str, segment: str, when: datetime) -> str:
    if when.tzinfo:
        when = when.astimezone(timezone.utc)
    folder = folder.strip("/")
    base = f"{folder}/{segment}/" if folder else f"{segment}/"
    return f"{base}{when:%Y/%m/%d/%H%M}/"


def _spooled(profiles: Iterable[dict]) -> tuple[int, Iterator[dict]]:
    """(count, iterator) for an iterable of unknown length, spooled through a temporary file."""
    spool = tempfile.TemporaryFile("w+", encoding="utf-8")
    count = 0
    for p in profiles:
        spool.write(json.dumps(p, ensure_ascii=False))
        spool.write("\n")
        count += 1
    spool.seek(0)

    def replay() -> Iterator[dict]:
        with spool:
            for line in spool:
                yield json.loads(line)

    return count, replay()


def write_segment_refresh(
    container: ContainerClient,
    *,
    folder: str,
    segment: str,
    profiles: Iterable[dict],
    when: datetime,
    partitions: int = 1,
    header: bool = False,
    gzip: bool = False,
    model_json: bool = True,
    columns: Sequence[str] = COLUMNS,
) -> list[str]:
    """Write one refresh of ``segment`` in the Customer Insights layout; returns the partition blob names.

    Rows are split into ``partitions`` contiguous, nearly equal parts (``_1`` holds the first rows), each
    streamed to its blob in blocks, so a large segment is never held in memory. Fields are all quoted,
    lines end with CRLF; a value missing from a profile is written empty. When ``model_json`` is set,
    ``<folder>/model.json`` gets (or has replaced) an entity named ``segment`` describing the columns
    and these partitions.
    """
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    time_folder = _time_folder(folder, segment, when)
    ext = ".csv.gz" if gzip else ".csv"
    names = [f"{time_folder}{segment}_{k}{ext}" for k in range(1, partitions + 1)]

    rows: Iterator[dict] = iter(profiles)
    if partitions == 1:
        total = None
    else:
        total = operator.length_hint(profiles, -1)
        if total <= 0 and not isinstance(profiles, Sequence):
            total, rows = _spooled(rows)
    # rows per partition: contiguous and as equal as possible
    if total:
        sizes = [total // partitions + (1 if k < total % partitions else 0) for k in range(partitions)]
    else:
        sizes = [0] * partitions

    for k, name in enumerate(names):
        writer = _PartitionWriter(container, name, columns, header, gzip)
        last = k == partitions - 1
        if last:
            for p in rows:  # the rest (also whatever exceeds a length hint)
                writer.write(p)
        else:
            for p in _take(rows, sizes[k]):
                writer.write(p)
        writer.close()

    if model_json:
        _update_model_json(container, folder, segment, columns, names, header, when)
    return names


def _take(it: Iterator[dict], n: int) -> Iterator[dict]:
    for _ in range(n):
        try:
            yield next(it)
        except StopIteration:
            return


def _update_model_json(
    container: ContainerClient, folder: str, segment: str, columns: Sequence[str], names: list[str],
    header: bool, when: datetime,
) -> str:
    folder = folder.strip("/")
    model_name = f"{folder}/{MODEL_JSON}" if folder else MODEL_JSON
    blob = container.get_blob_client(model_name)
    doc = None
    try:
        doc = json.loads(blob.download_blob().readall())
        if not isinstance(doc, dict) or not isinstance(doc.get("entities"), list):
            doc = None
    except ResourceNotFoundError:
        pass
    except ValueError:
        doc = None  # unreadable: replace it
    if doc is None:
        doc = {"name": "cdp-segment-export", "description": "Segments exported by the customer data platform",
               "version": "1.0", "entities": []}
    refresh_time = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    stamp = refresh_time.isoformat().replace("+00:00", "Z")
    settings = format_settings_json(CsvFormat(header=header))
    entity = {
        "$type": "LocalEntity",
        "name": segment,
        "description": f"Segment {segment}",
        "attributes": [{"name": c, "dataType": "string"} for c in columns],
        "partitions": [
            {
                "name": name.rsplit("/", 1)[-1].split(".", 1)[0],
                "location": f"{container.url}/{quote(name)}",
                "refreshTime": stamp,
                "fileFormatSettings": settings,
            }
            for name in names
        ],
    }
    doc["entities"] = [e for e in doc["entities"] if not (isinstance(e, dict) and e.get("name") == segment)]
    doc["entities"].append(entity)
    doc["modifiedTime"] = stamp
    blob.upload_blob(
        json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8"),
        overwrite=True,
        content_settings=ContentSettings(content_type="application/json"),
    )
    return model_name


# --------------------------------------------------------------------------- CLI


def _container_client(name: str) -> ContainerClient:
    from azure.storage.blob import BlobServiceClient

    conn = os.environ.get("AzureWebJobsStorage") or None
    blob_uri = os.environ.get("AzureWebJobsStorage__blobServiceUri") or None
    if conn:
        service = BlobServiceClient.from_connection_string(conn)
    elif blob_uri:
        from azure.identity import DefaultAzureCredential

        service = BlobServiceClient(blob_uri, credential=DefaultAzureCredential())
    else:
        service = BlobServiceClient.from_connection_string("UseDevelopmentStorage=true")
    container = service.get_container_client(name)
    try:
        container.create_container()
    except ResourceExistsError:
        pass
    return container


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.sample_segment",
        description="Write a sample segment refresh in the Customer Insights layout to blob storage "
        "(AzureWebJobsStorage; default Azurite).",
    )
    parser.add_argument("--rows", type=int, required=True, help="number of profiles")
    parser.add_argument("--segment", required=True, help="segment name (folder and file name)")
    parser.add_argument("--container", required=True, help="blob container (created when missing)")
    parser.add_argument("--folder", default="", help="root folder inside the container ('' for the root)")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--header", action="store_true", help="write a header row in every partition")
    parser.add_argument("--gzip", action="store_true", help="write .csv.gz partitions")
    parser.add_argument("--no-model-json", action="store_true", help="do not write/update model.json")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--invalid-share", type=float, default=0.02)
    parser.add_argument("--duplicate-share", type=float, default=0.0)
    parser.add_argument("--when", help="refresh time, ISO 8601 (default: now, UTC)")
    args = parser.parse_args(argv)

    when = datetime.fromisoformat(args.when.replace("Z", "+00:00")) if args.when else datetime.now(timezone.utc)
    container = _container_client(args.container)
    names = write_segment_refresh(
        container,
        folder=args.folder,
        segment=args.segment,
        profiles=generate_profiles(args.rows, args.seed, args.invalid_share, args.duplicate_share),
        when=when,
        partitions=args.partitions,
        header=args.header,
        gzip=args.gzip,
        model_json=not args.no_model_json,
    )
    print(f"Wrote {args.rows} profiles of segment {args.segment!r} to container {args.container!r}:")
    for name in names:
        print(f"  {name}")
    if not args.no_model_json:
        folder = args.folder.strip("/")
        print(f"  {folder + '/' if folder else ''}{MODEL_JSON} (updated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
