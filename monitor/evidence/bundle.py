"""An evidence bundle: one zip to hand to the police, a lawyer or a platform.

    info = build_bundle(case_info, [warc.path, shot.path], out_zip)

The zip holds:

* ``warc/*.warc.gz`` and ``screenshots/*.png`` (other files under ``files/``), byte for byte as
  captured: each file is read once, its SHA-256 checked against the one recorded at capture
  (when given) and those same bytes are stored;
* ``report.html``: a printable report (what was found, where, when, how it was captured, the
  hashes and distances), from the editable template ``monitor/templates/report.html.j2``;
* ``manifest.json``: the case and every file above with its SHA-256 and size;
* ``SHA256SUMS``: the same hashes (and the manifest's), so ``sha256sum -c SHA256SUMS`` in the
  unpacked folder verifies everything.

No image is ever bundled except this tool's blurred screenshots: any other file that looks
like an image or video is refused. The one exception is explicit: ``image_copies`` (a person's
decrypted copy of the found image, which they asked for, see :mod:`monitor.cases.image_copies`)
go under ``images/`` and are listed in the manifest like every other file.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import jinja2
from PIL import Image

import monitor
from monitor.evidence.errors import EvidenceError
from monitor.evidence.store import write_new_file
from monitor.evidence.warc import looks_like_media

__all__ = [
    "BUNDLE_FORMAT",
    "BundleInfo",
    "BundledFile",
    "CaptureInfo",
    "CaseInfo",
    "EvidenceFile",
    "ImageCopy",
    "SightingInfo",
    "build_bundle",
    "render_report",
]

BUNDLE_FORMAT = "exposure-monitor-evidence-bundle/1"
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
REPORT_TEMPLATE = "report.html.j2"
_HASH_BITS = {"pdq": 256, "phash": 64}


def _utc(when: datetime | None, what: str) -> datetime | None:
    if when is None:
        return None
    if when.tzinfo is None:
        raise EvidenceError(f"{what} must be a timezone-aware time (UTC)")
    return when.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class CaptureInfo:
    """One capture of a sighting: ``kind`` is ``"warc"`` or ``"screenshot"``."""

    kind: str
    file_name: str
    captured_at: datetime
    sha256: str
    url: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "captured_at", _utc(self.captured_at, "captured_at"))


@dataclass(frozen=True, slots=True)
class SightingInfo:
    """One place the image was seen, the match that flagged it and its captures.

    ``distance`` is the Hamming distance between the found image's ``algorithm`` hash and the
    closest reference hash (``threshold``: the largest distance counted as a match).
    """

    page_url: str
    image_url: str
    first_seen: datetime
    last_seen: datetime
    algorithm: str
    distance: int
    threshold: int | None = None
    sha256: str | None = None
    pdq: str | None = None
    phash: str | None = None
    captures: tuple[CaptureInfo, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "first_seen", _utc(self.first_seen, "first_seen"))
        object.__setattr__(self, "last_seen", _utc(self.last_seen, "last_seen"))
        object.__setattr__(self, "captures", tuple(self.captures))

    @property
    def bits(self) -> int | None:
        return _HASH_BITS.get(self.algorithm)


@dataclass(frozen=True, slots=True)
class CaseInfo:
    """What the report says about a case.

    ``subject_label`` names the person in the report. It is a label ("Subject", "Case 12"),
    not their name, unless a person chooses to put the name there: bundles get passed on.
    """

    case_id: str
    subject_label: str = "Subject"
    sightings: tuple[SightingInfo, ...] = ()
    notes: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        object.__setattr__(self, "sightings", tuple(self.sightings))
        object.__setattr__(self, "created_at", _utc(self.created_at, "created_at"))

    def as_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass(frozen=True, slots=True)
class EvidenceFile:
    """A file to bundle. ``sha256``, when given, is the hash recorded at capture: a file that
    no longer has it is refused (it changed after capture)."""

    path: Path
    sha256: str | None = None
    kind: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class ImageCopy:
    """The found image itself, decrypted in memory, put in a bundle only when a person asks."""

    name: str  # file name inside ``images/``
    data: bytes = field(repr=False)
    description: str = ""


@dataclass(frozen=True, slots=True)
class BundledFile:
    name: str  # path inside the zip
    sha256: str
    size: int
    kind: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class BundleInfo:
    path: Path
    sha256: str
    size: int
    files: tuple[BundledFile, ...]  # every file in the zip except manifest.json and SHA256SUMS
    created_at: datetime


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _kind_and_folder(path: Path, kind: str) -> tuple[str, str]:
    name = path.name.lower()
    if not kind:
        if name.endswith((".warc.gz", ".warc")):
            kind = "warc"
        elif name.endswith(".png"):
            kind = "screenshot"
        else:
            kind = "file"
    folder = {"warc": "warc", "screenshot": "screenshots"}.get(kind, "files")
    return kind, folder


def _is_our_screenshot(data: bytes) -> bool:
    """A PNG written by :mod:`monitor.evidence.screenshot` (blurred, with its text chunks)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    try:
        with Image.open(io.BytesIO(data)) as im:
            text = dict(getattr(im, "text", {}) or {})
    except Exception:
        return False
    return str(text.get("Software", "")).startswith("exposure-monitor/") and "blurred" in str(
        text.get("Comment", "")
    )


def _read_checked(item: EvidenceFile) -> bytes:
    path = Path(item.path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EvidenceError(f"cannot read evidence file {path}: {exc.strerror or exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if item.sha256 and item.sha256.lower() != digest:
        raise EvidenceError(
            f"{path} has changed since it was captured (SHA-256 {digest}, recorded "
            f"{item.sha256}); it is not bundled"
        )
    if looks_like_media(data) and not _is_our_screenshot(data):
        raise EvidenceError(
            f"{path} looks like an image or video that is not one of this tool's blurred "
            "screenshots; images are never put in evidence bundles"
        )
    return data


def _templates(template_dir: Path | None) -> jinja2.Environment:
    dirs = [str(template_dir)] if template_dir else []
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*dirs, str(TEMPLATES_DIR)]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["utc"] = lambda d: d.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if d else ""
    env.filters["size"] = _size
    return env


def _size(n: int) -> str:
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def render_report(
    case_info: CaseInfo,
    files: Sequence[BundledFile],
    *,
    created_at: datetime | None = None,
    template_dir: Path | None = None,
) -> str:
    """The report's HTML. ``template_dir`` may hold a ``report.html.j2`` that replaces ours."""
    template = _templates(template_dir).get_template(REPORT_TEMPLATE)
    return template.render(
        case=case_info,
        files=files,
        created_at=created_at or datetime.now(UTC),
        version=monitor.__version__,
        bundle_format=BUNDLE_FORMAT,
    )


def build_bundle(
    case_info: CaseInfo,
    files: Sequence[EvidenceFile | Path | str],
    out_zip: Path | str,
    *,
    template_dir: Path | None = None,
    image_copies: Sequence[ImageCopy] = (),
) -> BundleInfo:
    """Write the evidence zip ``out_zip`` (owner-only; it must not exist yet).

    ``image_copies``: the found image itself, only when the person explicitly asked for it.

    Raises :class:`EvidenceError` when a file cannot be read, has changed since capture, is an
    image other than one of our blurred screenshots, or two files have the same name.
    """
    created_at = datetime.now(UTC)
    items = [f if isinstance(f, EvidenceFile) else EvidenceFile(Path(f)) for f in files]
    entries: list[tuple[BundledFile, bytes]] = []
    names: set[str] = set()
    for item in items:
        data = _read_checked(item)
        kind, folder = _kind_and_folder(Path(item.path), item.kind)
        name = f"{folder}/{Path(item.path).name}"
        if name in names:
            raise EvidenceError(f"two evidence files would both be {name} in the bundle")
        names.add(name)
        entry = BundledFile(
            name, hashlib.sha256(data).hexdigest(), len(data), kind, item.description
        )
        entries.append((entry, data))
    for copy in image_copies:
        name = f"images/{Path(copy.name).name}"
        if name in names:
            raise EvidenceError(f"two evidence files would both be {name} in the bundle")
        names.add(name)
        entry = BundledFile(
            name,
            hashlib.sha256(copy.data).hexdigest(),
            len(copy.data),
            "image_copy",
            copy.description,
        )
        entries.append((entry, copy.data))

    listed = [e for e, _ in entries]
    report = render_report(
        case_info, listed, created_at=created_at, template_dir=template_dir
    ).encode("utf-8")
    report_entry = BundledFile(
        "report.html",
        hashlib.sha256(report).hexdigest(),
        len(report),
        "report",
        "printable report",
    )
    entries.append((report_entry, report))
    listed.append(report_entry)

    manifest = {
        "format": BUNDLE_FORMAT,
        "created_at": _iso(created_at),
        "software": f"exposure-monitor {monitor.__version__}",
        "verify": "unzip, then run: sha256sum -c SHA256SUMS",
        "case": case_info.as_json(),
        "files": [_jsonable(asdict(e)) for e in listed],
    }
    manifest_bytes = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    sums = "".join(f"{e.sha256}  {e.name}\n" for e in listed)
    sums += f"{hashlib.sha256(manifest_bytes).hexdigest()}  manifest.json\n"

    stamp = created_at.timetuple()[:6]

    def write(fh: IO[bytes]) -> None:
        with zipfile.ZipFile(fh, "w") as zf:
            for entry, data in entries:
                compress = (
                    zipfile.ZIP_STORED
                    if entry.kind in ("warc", "screenshot", "image_copy")
                    else (zipfile.ZIP_DEFLATED)
                )
                _add(zf, entry.name, data, stamp, compress)
            _add(zf, "manifest.json", manifest_bytes, stamp, zipfile.ZIP_DEFLATED)
            _add(zf, "SHA256SUMS", sums.encode("ascii"), stamp, zipfile.ZIP_DEFLATED)

    path = write_new_file(Path(out_zip), write)
    data = path.read_bytes()
    return BundleInfo(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        files=tuple(listed),
        created_at=created_at,
    )


def _add(
    zf: zipfile.ZipFile, name: str, data: bytes, stamp: tuple[int, ...], compress: int
) -> None:
    info = zipfile.ZipInfo(name, date_time=stamp)  # type: ignore[arg-type]
    info.compress_type = compress
    info.external_attr = 0o600 << 16
    zf.writestr(info, data)
