"""Evidence of a sighting, as police advise: captured with its address and UTC time, kept
before removal is asked for, and never holding a copy of the image.

* :mod:`~monitor.evidence.warc`: a WARC of the page and the image exchanges; the image's bytes
  are replaced by its SHA-256, PDQ and pHash.
* :mod:`~monitor.evidence.screenshot`: a Chromium screenshot with every image blurred and a
  banner with the URL and UTC time.
* :mod:`~monitor.evidence.bundle`: a zip with the files, a printable report and a manifest of
  SHA-256 hashes.
* :mod:`~monitor.evidence.store`: ``<data_dir>/evidence/<key>/``, owner-only.
* :mod:`~monitor.evidence.capture`: one call that captures a sighting into its folder.

See docs/evidence.md.
"""

from monitor.evidence.bundle import (
    BundledFile,
    BundleInfo,
    CaptureInfo,
    CaseInfo,
    EvidenceFile,
    ImageCopy,
    SightingInfo,
    build_bundle,
    render_report,
)
from monitor.evidence.capture import SightingCapture, capture_sighting
from monitor.evidence.errors import EvidenceError, MinorSafetyRefusal, ScreenshotError
from monitor.evidence.screenshot import (
    ScreenshotInfo,
    Screenshotter,
    TakenShot,
    capture_screenshot,
    chromium_path,
)
from monitor.evidence.store import (
    capture_file_name,
    evidence_dir,
    evidence_root,
    remove_evidence,
)
from monitor.evidence.warc import (
    HttpExchange,
    WarcCapture,
    WarcInfo,
    WithheldImage,
    capture_warc,
    fetch_and_capture_warc,
)

__all__ = [
    "BundleInfo",
    "BundledFile",
    "CaptureInfo",
    "CaseInfo",
    "EvidenceError",
    "EvidenceFile",
    "HttpExchange",
    "ImageCopy",
    "MinorSafetyRefusal",
    "ScreenshotError",
    "ScreenshotInfo",
    "Screenshotter",
    "SightingCapture",
    "SightingInfo",
    "TakenShot",
    "WarcCapture",
    "WarcInfo",
    "WithheldImage",
    "build_bundle",
    "capture_file_name",
    "capture_screenshot",
    "capture_sighting",
    "capture_warc",
    "chromium_path",
    "evidence_dir",
    "evidence_root",
    "fetch_and_capture_warc",
    "remove_evidence",
    "render_report",
]
