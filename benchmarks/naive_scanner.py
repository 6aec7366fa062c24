"""The baseline a scan is measured against: a naive sequential scanner, and the camera-size web.

``naive_scan`` does what a first script would: ask the search for the name, then for each page
in turn fetch it, parse its ``<img>`` tags, download each image, decode it in full with Pillow,
``imagehash.phash`` it and compare with the reference's pHash (10 of 64 bits, as the monitor).
One request at a time, one core, no cache.

``CameraPhotos`` builds the photos of the benchmark web from the corpus's three camera-size
JPEGs (``../shared/corpus/fullsize``; generated photos when it is absent): re-encoded, cropped,
scaled and mirrored copies made in memory here (the corpus is read, never copied). The
person's reference is one of them (God-Rays at 1600 px, as a person would enrol it), a few
edited camera-size copies of it are planted, and the other images are unrelated photos
(the two other files, cropped and scaled), each made distinct by a trailer after the JPEG's end.

    python benchmarks/naive_scanner.py [--pages 20] [--images 103] [--planted 3]

runs the naive scanner alone on that web (``scan_throughput.py --command`` runs it beside the
monitor's ``scan`` command).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

REPO = Path(__file__).resolve().parents[1]
FULLSIZE = REPO.parent / "shared" / "corpus" / "fullsize"
PHASH_THRESHOLD = 10


def _jpeg(im, quality: int = 88, progressive: bool = False) -> bytes:  # noqa: ANN001
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, progressive=progressive, optimize=progressive)
    return buf.getvalue()


@dataclass
class CameraPhotos:
    reference: bytes  # what the person enrols
    planted: list[bytes]  # edited camera-size copies of it
    distractors: list[bytes]  # unrelated camera-size photos

    @staticmethod
    def _sources(only_reference: bool = False) -> list:  # noqa: ANN205 - PIL images
        """The reference's camera-size original, then the two unrelated photos."""
        from PIL import Image

        names = ["God-Rays"] if only_reference else ["God-Rays", "Bridge", "BytheWater"]
        files = {p.name.split("_")[0]: p for p in FULLSIZE.glob("*.jpg")}
        if set(names) <= set(files):
            return [Image.open(files[k]).convert("RGB") for k in names]
        from monitor.demo.photos import generate_photo  # no corpus: generated, camera size

        sizes = [(3840, 2160), (4352, 2448), (2560, 1600)][: len(names)]
        return [generate_photo(seed, size) for seed, size in enumerate(sizes, 1)]

    @staticmethod
    def _reference(original) -> bytes:  # noqa: ANN001
        small = original.copy()
        small.thumbnail((1600, 1600))  # as a person would enrol it
        return _jpeg(small, 90)

    @classmethod
    def reference_only(cls) -> bytes:
        """The reference photo alone (what the person enrols), without building the web."""
        return cls._reference(cls._sources(only_reference=True)[0])

    @classmethod
    def build(cls) -> CameraPhotos:
        from PIL import ImageOps

        ref, *others = cls._sources()
        w, h = ref.size
        planted = [
            _jpeg(ref, 85),  # recompressed
            _jpeg(ref.resize((w * 3 // 4, h * 3 // 4)), 80, progressive=True),  # scaled down
            _jpeg(ref.crop((w // 20, h // 20, w - w // 20, h - h // 20)), 90),  # cropped 10%
        ]
        distractors: list[bytes] = []
        for k, im in enumerate(others):
            w, h = im.size
            distractors += [
                _jpeg(im, 88, progressive=k == 0),
                _jpeg(im.crop((0, 0, w * 7 // 10, h * 7 // 10)).resize((w, h)), 85),
                _jpeg(im.crop((w * 3 // 10, h * 3 // 10, w, h)).resize((w, h)), 85, True),
                _jpeg(ImageOps.mirror(im).resize((w * 3 // 4, h * 3 // 4)), 90),
            ]
        return cls(cls._reference(ref), planted, distractors)

    @staticmethod
    def planted_at(n_images: int, n_planted: int) -> list[int]:
        """Which image numbers are planted copies: spread over the web."""
        return [(j * 2 + 1) * n_images // (2 * n_planted) for j in range(n_planted)]

    def image(self, i: int, planted_at: list[int]) -> bytes:
        """Image number i: a planted copy, or an unrelated photo made distinct by a trailer."""
        if i in planted_at:
            return self.planted[planted_at.index(i) % len(self.planted)] + f"copy-{i}".encode()
        return self.distractors[i % len(self.distractors)] + f"bench-{i}".encode()


class _Imgs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            src = dict(attrs).get("src")
            if src:
                self.srcs.append(src)


@dataclass
class NaiveResult:
    pages: int
    images: int
    matches: list[str]
    seconds: float


def naive_scan(search_url: str, name: str, reference: bytes) -> NaiveResult:
    """Search, then every page and every image in turn: full decode, pHash, compare."""
    import httpx
    import imagehash
    from PIL import Image

    started = time.perf_counter()
    ref = imagehash.phash(Image.open(io.BytesIO(reference)))
    pages = images = 0
    matches: list[str] = []
    with httpx.Client(timeout=30) as client:
        answer = client.get(f"{search_url}/search", params={"q": f'"{name}"', "format": "json"})
        urls = [r["url"] for r in answer.json()["results"]]
        for url in urls:
            page = client.get(url)
            pages += 1
            parser = _Imgs()
            parser.feed(page.text)
            for src in parser.srcs:
                image_url = urljoin(url, src)
                data = client.get(image_url).content
                images += 1
                im = Image.open(io.BytesIO(data))
                im.load()  # the whole image, at full size
                if imagehash.phash(im) - ref <= PHASH_THRESHOLD:
                    matches.append(image_url)
                del im, data
    return NaiveResult(pages, images, matches, time.perf_counter() - started)


def main() -> int:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from scan_throughput import start_web  # the loopback web in its own process

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=20)
    ap.add_argument("--images", type=int, default=103)
    ap.add_argument("--planted", type=int, default=3)
    args = ap.parse_args()
    parent, server, base_url = start_web(
        args.images, args.pages, photos="camera", planted=args.planted
    )
    try:
        result = naive_scan(base_url, "Bench Mark", CameraPhotos.reference_only())
    finally:
        parent.send("stop")
        server.join(timeout=10)
    print(
        f"naive scanner: {result.pages} pages, {result.images} images, "
        f"{len(result.matches)} matches (planted {args.planted}) in {result.seconds:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
