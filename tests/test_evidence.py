"""Evidence capture: WARC without image bytes, blurred and stamped screenshots, bundles.

Everything is served from loopback. The screenshot tests share one Chromium for the module and
skip (with the reason) only when no Chromium is installed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import stat
import threading
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image
from warcio.archiveiterator import ArchiveIterator

from monitor.config import FetchConfig, Settings
from monitor.demo.photos import photo_bytes
from monitor.evidence import (
    CaseInfo,
    EvidenceError,
    EvidenceFile,
    HttpExchange,
    MinorSafetyRefusal,
    ScreenshotError,
    Screenshotter,
    SightingInfo,
    WithheldImage,
    build_bundle,
    capture_sighting,
    capture_warc,
    chromium_path,
    evidence_dir,
    fetch_and_capture_warc,
    remove_evidence,
)
from monitor.evidence.screenshot import BANNER_BACKGROUND
from monitor.hashing import compute_hashes
from monitor.testing.web import LoopbackWeb, Request, Response

PHOTO = photo_bytes(7, (400, 300))
PHOTO_BOX = (100, 120, 500, 420)  # where the page places the photo: left, top, right, bottom
BG_BOX = (600, 120, 1000, 420)  # a CSS background image
HEADING_BOX = (20, 10, 700, 70)  # text, never blurred
PAGE = f"""<!DOCTYPE html>
<html><head><title>A post</title>
<style>body {{ margin: 0; background: #fff; font: 40px sans-serif; }}</style></head>
<body>
<h1 style="position:absolute; left:20px; top:10px; margin:0; font-size:40px">Posted by someone</h1>
<img src="/photo.jpg" alt="" style="position:absolute; left:{PHOTO_BOX[0]}px;
  top:{PHOTO_BOX[1]}px; width:400px; height:300px">
<div style="position:absolute; left:{BG_BOX[0]}px; top:{BG_BOX[1]}px; width:400px;
  height:300px; background-image:url('/bg.jpg'); background-size:100% 100%"></div>
</body></html>"""

SHOOTER_TIMEOUT = 60.0
needs_chromium = pytest.mark.skipif(
    chromium_path() is None,
    reason="no Chromium at /usr/bin/chromium (apt-get install chromium) or $MONITOR_CHROMIUM",
)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web():
    with LoopbackWeb() as site:
        site.add("/page.html", PAGE)
        site.add("/photo.jpg", PHOTO, "image/jpeg")
        site.add("/bg.jpg", photo_bytes(8, (400, 300)), "image/jpeg")
        site.add("/old-post", b"", status=301, headers={"Location": "/page.html"})
        yield site


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shooter():
    if chromium_path() is None:
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium)")
    async with Screenshotter(allow_private_networks=True, timeout=SHOOTER_TIMEOUT) as s:
        yield s


def loopback_config(**kw: object) -> FetchConfig:
    return FetchConfig(allow_private_networks=True, timeout=10, **kw)


def read_warc(path: Path) -> list:
    """Every record (type, WARC headers, HTTP headers, content), digests checked."""
    out = []
    with path.open("rb") as fh:
        for rec in ArchiveIterator(fh, check_digests="raise"):
            out.append(
                (rec.rec_type, rec.rec_headers, rec.http_headers, rec.content_stream().read())
            )
    return out


def contains_run_of(haystack: bytes, needle: bytes, run: int = 256, step: int = 97) -> bool:
    """True if any ``run``-byte window of ``needle`` (sampled every ``step`` bytes) is in it."""
    return any(
        needle[i : i + run] in haystack for i in range(0, max(1, len(needle) - run + 1), step)
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- WARC ----------------------------------------------------------------------------------


async def test_warc_records_the_scans_known_hashes_without_decoding_again(
    web, tmp_path, monkeypatch
):
    import monitor.evidence.warc as warc_module

    decoded: list[int] = []
    real = warc_module.hash_media

    def counting(data, *a, **k):
        decoded.append(len(data))
        return real(data, *a, **k)

    monkeypatch.setattr(warc_module, "hash_media", counting)
    known = compute_hashes(PHOTO)  # what the scan stored for this image
    out = tmp_path / "known.warc.gz"
    cap = await fetch_and_capture_warc(
        loopback_config(), web.url("/page.html"), web.url("/photo.jpg"), out, known_hashes=known
    )
    assert decoded == []
    assert cap.image_error is None and cap.image_hashes == known
    records = read_warc(out)
    by = {(t, h.get_header("WARC-Target-URI")): (h, http, body) for t, h, http, body in records}
    _, img_http, img_body = by[("response", web.url("/photo.jpg"))]
    assert img_http.get_statuscode() == "200" and img_body == b""
    meta = json.loads(by[("metadata", web.url("/photo.jpg"))][2])
    assert meta["sha256"] == known.sha256 and meta["length"] == len(PHOTO)
    assert meta["hashes"]["pdq"]["value"] == known.get("pdq").value
    assert meta["hashes"]["phash"]["value"] == known.get("phash").value
    assert (meta["width"], meta["height"]) == (400, 300)

    # the site now serves other bytes: the stored hashes are not theirs, so it is hashed whole
    stale = compute_hashes(photo_bytes(8, (400, 300)))
    cap = await fetch_and_capture_warc(
        loopback_config(),
        web.url("/page.html"),
        web.url("/photo.jpg"),
        tmp_path / "stale.warc.gz",
        known_hashes=stale,
    )
    assert decoded == [len(PHOTO)]
    assert cap.image_hashes == known


async def test_warc_holds_page_and_image_hashes_but_no_image_bytes(web, tmp_path):
    out = tmp_path / "capture.warc.gz"
    cap = await fetch_and_capture_warc(
        loopback_config(), web.url("/old-post"), web.url("/photo.jpg"), out
    )
    assert cap.image_error is None and cap.image_on_page is True
    assert mode(out) == 0o600
    assert cap.warc.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()

    records = read_warc(out)
    assert records[0][0] == "warcinfo"
    by = {(t, h.get_header("WARC-Target-URI")): (h, http, body) for t, h, http, body in records}
    # the redirect, the page with its HTML, and the requests we sent
    hop = by[("response", web.url("/old-post"))]
    assert hop[1].get_statuscode() == "301" and hop[1].get_header("Location") == "/page.html"
    page_h, page_http, page_body = by[("response", web.url("/page.html"))]
    assert page_http.get_statuscode() == "200"
    assert page_body == PAGE.encode()
    assert page_h.get_header("WARC-IP-Address") == "127.0.0.1"
    assert page_h.get_header("WARC-Truncated") is None
    req_h, req_http, _ = by[("request", web.url("/page.html"))]
    assert req_http.protocol == "GET" and req_http.statusline.startswith("/page.html ")
    assert "ExposureMonitor" in req_http.get_header("User-Agent")
    assert req_h.get_header("WARC-Concurrent-To") == page_h.get_header("WARC-Record-ID")
    # WARC-Date is UTC, close to now
    when = datetime.strptime(page_h.get_header("WARC-Date"), "%Y-%m-%dT%H:%M:%S.%fZ")
    assert abs(when.replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=1)

    # the image: status and headers as served, no payload, and a metadata record of hashes
    img_h, img_http, img_body = by[("response", web.url("/photo.jpg"))]
    assert img_http.get_statuscode() == "200"
    assert img_http.get_header("Content-Type") == "image/jpeg"
    assert img_http.get_header("Content-Length") == str(len(PHOTO))
    assert img_body == b""
    assert img_h.get_header("WARC-Truncated") == "unspecified"
    assert ("request", web.url("/photo.jpg")) in by
    meta_h, _, meta_body = by[("metadata", web.url("/photo.jpg"))]
    assert meta_h.get_header("WARC-Concurrent-To") == img_h.get_header("WARC-Record-ID")
    meta = json.loads(meta_body)
    expected = compute_hashes(PHOTO)
    assert meta["withheld"] is True
    assert meta["sha256"] == hashlib.sha256(PHOTO).hexdigest() == cap.image_sha256
    assert meta["length"] == len(PHOTO)
    assert meta["hashes"]["pdq"]["value"] == expected.get("pdq").value
    assert meta["hashes"]["phash"]["value"] == expected.get("phash").value
    assert (meta["width"], meta["height"]) == (400, 300)
    assert cap.image_hashes == expected

    # no 256-byte run of the image anywhere, compressed or not
    raw = out.read_bytes()
    assert not contains_run_of(gzip.decompress(raw), PHOTO, step=1)
    assert not contains_run_of(raw, PHOTO)
    # ...while the same check does find the page (it is not a check that cannot fail)
    assert contains_run_of(gzip.decompress(raw), PAGE.encode(), run=64)


def test_capture_warc_refuses_image_bodies(tmp_path):
    jpeg = HttpExchange("http://x.test/a.jpg", 200, {"Content-Type": "image/jpeg"}, body=PHOTO)
    with pytest.raises(EvidenceError, match="image"):
        capture_warc([jpeg], tmp_path / "a.warc.gz")
    disguised = HttpExchange("http://x.test/a", 200, {"Content-Type": "text/html"}, body=PHOTO)
    with pytest.raises(EvidenceError, match="image"):
        capture_warc([disguised], tmp_path / "b.warc.gz")
    with pytest.raises(EvidenceError, match="never kept"):
        HttpExchange(
            "http://x.test/a.jpg",
            200,
            {"Content-Type": "image/jpeg"},
            body=PHOTO,
            withheld=WithheldImage.from_bytes(PHOTO),
        )
    assert not list(tmp_path.iterdir())


def test_capture_warc_from_caller_data_and_never_overwrites(tmp_path):
    page = HttpExchange(
        "http://x.test/p",
        200,
        [("Content-Type", "text/html"), ("Content-Encoding", "gzip"), ("Content-Length", "9")],
        body=b"<p>hi</p>!",
        request_headers=[("User-Agent", "test")],
        fetched_at=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
    )
    image = HttpExchange(
        "http://x.test/i.png",
        200,
        {"Content-Type": "image/png"},
        withheld=WithheldImage.from_bytes(b"not an image at all"),
    )
    info = capture_warc([page, image], tmp_path / "c.warc.gz")
    assert info.records == 1 + 2 + 3
    records = read_warc(info.path)
    resp = next(r for r in records if r[0] == "response" and r[3])
    assert resp[1].get_header("WARC-Date") == "2024-05-06T07:08:09.000000Z"
    # the body is stored decoded, so headers about the wire form are kept under another name
    assert resp[2].get_header("Content-Encoding") is None
    assert resp[2].get_header("X-Archive-Orig-Content-Encoding") == "gzip"
    assert resp[2].get_header("X-Archive-Orig-Content-Length") == "9"
    meta = json.loads(next(r for r in records if r[0] == "metadata")[3])
    assert meta["sha256"] == hashlib.sha256(b"not an image at all").hexdigest()
    assert "not a decodable image" in meta["note"] and "hashes" not in meta
    with pytest.raises(EvidenceError, match="never overwritten"):
        capture_warc([page], tmp_path / "c.warc.gz")
    assert info.sha256 == hashlib.sha256(info.path.read_bytes()).hexdigest()


async def test_inline_images_in_the_page_are_redacted(tmp_path):
    inline = base64.b64encode(PHOTO)
    html = b"<p>post</p><img src='data:image/jpeg;base64," + inline + b"'>"
    with LoopbackWeb() as site:
        url = site.add("/inline.html", html)
        cap = await fetch_and_capture_warc(loopback_config(), url, None, tmp_path / "i.warc.gz")
    raw = gzip.decompress(cap.warc.path.read_bytes())
    assert not contains_run_of(raw, inline) and not contains_run_of(raw, PHOTO)
    page = next(r for r in read_warc(cap.warc.path) if r[0] == "response")
    assert b"<p>post</p>" in page[3] and b"withheld-sha256-" in page[3]
    note = page[1].get_header("Exposure-Monitor-Redacted")
    assert note and hashlib.sha256(html).hexdigest() in note


async def test_encoded_page_is_stored_decoded_with_valid_digests(tmp_path):
    html = PAGE.encode()
    with LoopbackWeb() as site:
        url = site.add(
            "/gz.html", gzip.compress(html), headers={"Content-Encoding": "gzip"}
        )  # sent compressed although we asked for identity
        cap = await fetch_and_capture_warc(loopback_config(), url, None, tmp_path / "g.warc.gz")
        assert site.requests[-1].headers["accept-encoding"] == "identity"
    page = next(r for r in read_warc(cap.warc.path) if r[0] == "response")
    assert page[3] == html
    assert page[2].get_header("X-Archive-Orig-Content-Encoding") == "gzip"


async def test_image_failure_keeps_the_page_and_the_answer(web, tmp_path):
    cap = await fetch_and_capture_warc(
        loopback_config(), web.url("/page.html"), web.url("/gone.jpg"), tmp_path / "f.warc.gz"
    )
    assert cap.image is None and cap.image_error == "HTTP 404" and cap.image_on_page is False
    statuses = {
        r[1].get_header("WARC-Target-URI"): r[2].get_statuscode()
        for r in read_warc(cap.warc.path)
        if r[0] == "response"
    }
    assert statuses == {web.url("/page.html"): "200", web.url("/gone.jpg"): "404"}


async def test_private_addresses_are_refused_by_default(web, tmp_path):
    out = tmp_path / "p.warc.gz"
    with pytest.raises(EvidenceError, match="private, local or reserved"):
        await fetch_and_capture_warc(FetchConfig(), web.url("/page.html"), None, out)
    assert not out.exists()


# --- storage -------------------------------------------------------------------------------


def test_evidence_dir_is_owner_only_and_erasable(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    folder = evidence_dir(settings, "case-12")
    assert folder == tmp_path / "data" / "evidence" / "case-12"
    assert mode(folder) == mode(folder.parent) == 0o700
    for bad in ("../x", "a/b", "", ".hidden", "x" * 200):
        with pytest.raises(EvidenceError, match="not a usable evidence folder name"):
            evidence_dir(settings, bad)
    (folder / "f").write_bytes(b"x")
    assert remove_evidence(settings, "case-12") and not folder.exists()
    assert not remove_evidence(settings, "case-12")


# --- screenshots ---------------------------------------------------------------------------


def sharpness(im: Image.Image) -> float:
    """Mean absolute Laplacian of the grey image: high-frequency energy."""
    a = np.asarray(im.convert("L"), dtype=np.float64)
    lap = 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
    return float(np.abs(lap).mean())


def inset(box: tuple[int, int, int, int], by: int, dy: int = 0) -> tuple[int, int, int, int]:
    return (box[0] + by, box[1] + by + dy, box[2] - by, box[3] - by + dy)


@needs_chromium
@pytest.mark.asyncio(loop_scope="module")
async def test_screenshot_blurs_images_and_stamps_url_and_time(shooter, web, tmp_path):
    url = web.url("/page.html?from=search&q=a%20b")
    before = datetime.now(UTC)
    info = await shooter.capture(url, tmp_path / "shot.png", may_show_minor=False)
    after = datetime.now(UTC)
    assert mode(info.path) == 0o600
    data = info.path.read_bytes()
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG" and im.width == 1280 and 900 <= im.height <= 2000
    assert before <= info.captured_at <= after and info.captured_at.tzinfo is UTC
    assert im.text["Source"] == url
    assert im.text["Creation Time"] == info.captured_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    rgb = np.asarray(im.convert("RGB")).astype(int)

    # the banner: a strip of its colour above the page, with dark text on it
    h = info.banner_height
    assert 40 <= h <= 200
    is_banner = (np.abs(rgb - np.array(BANNER_BACKGROUND)).sum(axis=2) < 30).astype(float)
    assert is_banner[: h - 4].mean() > 0.8
    assert is_banner[h:].mean() < 0.001  # the page has none of that colour
    dark = (rgb[: h - 4].sum(axis=2) < 150).mean()
    assert 0.003 < dark < 0.3  # text was drawn

    # the photo and the background image are blurred; the page's text is not
    shot = im.convert("RGB")
    original = Image.open(io.BytesIO(PHOTO)).convert("RGB")
    photo_in_shot = sharpness(shot.crop(inset(PHOTO_BOX, 40, h)))
    photo_itself = sharpness(original.crop((40, 40, 360, 260)))
    assert photo_in_shot < 0.15 * photo_itself, (photo_in_shot, photo_itself)
    bg_itself = sharpness(
        Image.open(io.BytesIO(photo_bytes(8, (400, 300)))).crop((40, 40, 360, 260))
    )
    assert sharpness(shot.crop(inset(BG_BOX, 40, h))) < 0.15 * bg_itself
    assert sharpness(shot.crop(inset(HEADING_BOX, 0, h))) > 0.3 * photo_itself
    assert info.blurred_elements >= 2


@needs_chromium
@pytest.mark.asyncio(loop_scope="module")
async def test_no_screenshot_when_the_person_may_be_a_minor(shooter, web, tmp_path):
    seen = len(web.requests)
    with pytest.raises(MinorSafetyRefusal, match="minor"):
        await shooter.capture(web.url("/page.html"), tmp_path / "m.png", may_show_minor=True)
    assert not (tmp_path / "m.png").exists()
    assert len(web.requests) == seen  # nothing was even loaded


@needs_chromium
@pytest.mark.asyncio(loop_scope="module")
async def test_screenshot_timeout_is_a_readable_error(shooter, tmp_path):
    release = threading.Event()

    def slow(_req: Request) -> Response:
        release.wait(30)
        return Response(200, b"<p>late</p>")

    with LoopbackWeb() as site:
        url = site.route("/slow.html", slow)
        try:
            with pytest.raises(ScreenshotError, match=r"gave up after 2 s"):
                await shooter.capture(url, tmp_path / "t.png", may_show_minor=False, timeout=2)
        finally:
            release.set()
    assert not (tmp_path / "t.png").exists()


async def test_screenshot_refuses_private_addresses_before_loading(tmp_path):
    shooter = Screenshotter()  # not started: the address is refused first
    with pytest.raises(ScreenshotError, match="private, local or reserved"):
        await shooter.capture("http://127.0.0.1:9/x", tmp_path / "x.png", may_show_minor=False)


@needs_chromium
async def test_screenshot_blocks_page_requests_to_refused_addresses(tmp_path):
    """A page on an allowed host cannot make the browser load from a refused one."""
    with LoopbackWeb() as page_site, LoopbackWeb(host="127.0.0.2") as other:
        other.add("/x.jpg", PHOTO, "image/jpeg")
        url = page_site.add("/p.html", f"<p>hello</p><img src='{other.url('/x.jpg')}'>")
        page_site.add("/ok.jpg", PHOTO, "image/jpeg")
        refuse = lambda ip: str(ip) == "127.0.0.2"  # noqa: E731
        async with Screenshotter(is_blocked=refuse, timeout=SHOOTER_TIMEOUT) as s:
            info = await s.capture(url, tmp_path / "p.png", may_show_minor=False)
        assert info.path.exists()
        assert other.requests == []
        assert "/p.html" in [r.path for r in page_site.requests]


def _profile_dirs_of_children() -> list[Path]:
    """The --user-data-dir of browser processes started by this test process."""
    me = os.getpid()
    parents: dict[int, int] = {}
    cmdlines: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(stat_fields[1])
            cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, IndexError, ValueError):
            continue
    found = []
    for pid, args in cmdlines.items():
        p, depth = pid, 0
        while p in parents and p != me and depth < 10:
            p, depth = parents[p], depth + 1
        if p == me:
            found += [Path(a.split("=", 1)[1]) for a in args if a.startswith("--user-data-dir=")]
    return sorted(set(found))


@needs_chromium
@pytest.mark.asyncio(loop_scope="module")
async def test_browser_writes_no_image_to_disk(shooter, web, tmp_path):
    await shooter.capture(web.url("/page.html"), tmp_path / "d.png", may_show_minor=False)
    profiles = _profile_dirs_of_children()
    if not profiles:
        pytest.skip("could not find the browser's profile folder in /proc")
    scanned = 0
    for profile in profiles:
        for f in profile.rglob("*"):
            if f.is_file():
                scanned += 1
                assert not contains_run_of(f.read_bytes(), PHOTO), f
    assert scanned > 0


# --- capture a sighting and bundle it ------------------------------------------------------


@needs_chromium
@pytest.mark.asyncio(loop_scope="module")
async def test_capture_sighting_and_bundle(shooter, web, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", fetch={"allow_private_networks": True})
    page_url, image_url = web.url("/page.html"), web.url("/photo.jpg")
    result = await capture_sighting(
        settings, "case-7", page_url, image_url, may_show_minor=False, screenshotter=shooter
    )
    assert result.screenshot is not None and result.screenshot_error is None
    folder = tmp_path / "data" / "evidence" / "case-7"
    assert result.directory == folder and mode(folder) == 0o700
    assert sorted(p.suffix for p in folder.iterdir()) == [".gz", ".png"]
    assert all(mode(p) == 0o600 for p in folder.iterdir())

    hashes = result.warc.image_hashes
    assert hashes is not None
    first_seen = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    case = CaseInfo(
        case_id="case-7",
        subject_label="Subject A",
        sightings=(
            SightingInfo(
                page_url=page_url,
                image_url=image_url,
                first_seen=first_seen,
                last_seen=first_seen + timedelta(days=2),
                algorithm="pdq",
                distance=12,
                threshold=31,
                sha256=hashes.sha256,
                pdq=hashes.get("pdq").value,
                phash=hashes.get("phash").value,
                captures=result.captures,
            ),
        ),
    )
    out = tmp_path / "bundle.zip"
    bundle = build_bundle(case, result.files, out)
    assert mode(out) == 0o600
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
        listed = {f["name"]: f for f in manifest["files"]}
        assert names == set(listed) | {"manifest.json", "SHA256SUMS"}
        assert {n.split("/")[0] for n in names} == {
            "warc",
            "screenshots",
            "report.html",
            "manifest.json",
            "SHA256SUMS",
        }
        for name, entry in listed.items():
            content = zf.read(name)
            assert hashlib.sha256(content).hexdigest() == entry["sha256"]
            assert len(content) == entry["size"]
        # the bundled files are the captured files, byte for byte
        for f in result.files:
            kind = "warc" if f.kind == "warc" else "screenshots"
            assert zf.read(f"{kind}/{f.path.name}") == f.path.read_bytes()
        sums = dict(
            reversed(line.split("  ", 1)) for line in zf.read("SHA256SUMS").decode().splitlines()
        )
        assert sums["manifest.json"] == hashlib.sha256(zf.read("manifest.json")).hexdigest()
        assert all(sums[n] == listed[n]["sha256"] for n in listed)
        report = zf.read("report.html").decode()
    assert manifest["case"]["sightings"][0]["first_seen"] == "2024-03-01T09:30:00Z"
    assert page_url in report and image_url in report
    assert "2024-03-01 09:30:00 UTC" in report and "2024-03-03 09:30:00 UTC" in report
    shot_time = result.screenshot.captured_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert shot_time in report
    assert hashes.sha256 in report and hashes.get("pdq").value in report
    assert "PDQ distance 12 of 256 bits" in report
    assert "Subject A" in report
    assert bundle.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()

    # a file changed after capture, or an image that is not our screenshot, is refused
    warc_file = next(f for f in result.files if f.kind == "warc")
    with warc_file.path.open("ab") as fh:
        fh.write(b"x")
    with pytest.raises(EvidenceError, match="changed since it was captured"):
        build_bundle(case, [warc_file], tmp_path / "again.zip")
    raw = tmp_path / "photo.jpg"
    raw.write_bytes(PHOTO)
    with pytest.raises(EvidenceError, match="images are never put in evidence bundles"):
        build_bundle(case, [EvidenceFile(raw)], tmp_path / "again.zip")
    assert not (tmp_path / "again.zip").exists()


async def test_capture_sighting_skips_the_screenshot_for_a_possible_minor(web, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", fetch={"allow_private_networks": True})
    result = await capture_sighting(
        settings, "s-1", web.url("/page.html"), web.url("/photo.jpg"), may_show_minor=True
    )
    assert result.screenshot is None and "minor" in (result.screenshot_error or "")
    assert [c.kind for c in result.captures] == ["warc"]
    assert [p.name.endswith(".warc.gz") for p in result.directory.iterdir()] == [True]


def test_bundle_report_template_is_replaceable(tmp_path):
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "report.html.j2").write_text(
        "<p>{{ case.case_id }}: {{ files|length }}</p>"
    )
    note = tmp_path / "note.txt"
    note.write_text("called the site on Monday")
    info = build_bundle(CaseInfo("c-1"), [note], tmp_path / "b.zip", template_dir=tmp_path / "tpl")
    with zipfile.ZipFile(info.path) as zf:
        assert zf.read("report.html") == b"<p>c-1: 1</p>"
        assert zf.read("files/note.txt") == note.read_bytes()
