"""A loopback "web" to scan: pages holding edited copies of a person's photos among others.

``build_web`` serves, on one :class:`~monitor.testing.web.LoopbackWeb`:

* HTML pages ``/site-N/page-M.html`` whose images are referenced every way real sites do it:
  ``<img src>`` (absolute, root-relative and relative URLs, some pages with a ``<base>``),
  ``srcset``, lazy ``data-src`` with a ``data:`` placeholder, ``<picture><source srcset>``, a CSS
  ``background-image`` and ``og:image`` (the only reference to one image of each page);
* the images themselves under ``/media/<token>.<ext>`` (a unique URL per placement): each
  reference photo once per edit in ``edits``, and the distractor bytes as given;
* with ``image_results``, one copy that no page's markup shows (a script-built gallery): only
  the image search finds it;
* ``/robots.txt`` allowing everything, and a :class:`~monitor.testing.searxng.FakeSearxng` at
  ``/search`` answering each exact name phrase with the pages (``general``) and with some
  images (``images``: planted copies and distractors with ``img_src``, plus a couple of results
  without one, which clients must drop).

``DemoWeb.planted`` says exactly which copy sits where, so a test can check every copy is found
and no distractor is. Reference bytes are decoded and re-encoded: they are never served as is.
"""

from __future__ import annotations

import hashlib
import html
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.demo.photos import photo_bytes
from monitor.demo.transforms import EDITS, decode, encode
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb, Request, Response

__all__ = [
    "DemoWeb",
    "PlantedImage",
    "build_bulk_web",
    "build_web",
    "demo_distractor_photos",
    "demo_reference_photos",
    "sniff_image_type",
]

#: Seeds of the demo photos: references from 0, distractors from 1000 (disjoint ranges).
REFERENCE_SEED = 0
DISTRACTOR_SEED = 1000

_PLACEHOLDER = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
_ROBOTS = "User-agent: *\nAllow: /\n"
_COPY_QUALITY = 90  # planted copies are served as JPEG at this quality, after their edit
_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"GIF87a", "image/gif", "gif"),
    (b"GIF89a", "image/gif", "gif"),
)
_STYLES = 7  # body markup styles, see _markup


@dataclass(frozen=True)
class PlantedImage:
    """One edited copy of reference photo ``reference_index`` (edit ``edit``), at ``image_url``,
    shown on ``page_url`` (for the image-search-only copy: the page the search result names)."""

    page_url: str
    image_url: str
    reference_index: int
    edit: str


@dataclass
class DemoWeb:
    """What :func:`build_web` serves; URLs are absolute."""

    web: LoopbackWeb
    searxng_url: str  # the SearXNG instance URL for ``[[search.backends]] url``
    planted: list[PlantedImage]
    distractors: list[str]  # image URLs of distractor placements (never a copy of a reference)
    pages: list[str]  # HTML page URLs, all listed as web results of every name
    searxng: FakeSearxng | None = field(default=None, repr=False)


def sniff_image_type(data: bytes) -> tuple[str, str]:
    """``(content_type, extension)`` of image bytes by their signature (JPEG, PNG, GIF, WebP)."""
    for magic, ctype, ext in _SIGNATURES:
        if data.startswith(magic):
            return ctype, ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    raise ValueError("not a JPEG, PNG, GIF or WebP image: " + repr(data[:12]))


def demo_reference_photos(n: int = 3) -> list[bytes]:
    """``n`` generated "photos of the person" (JPEG, 800x600), seeds 0, 1, ..."""
    return [photo_bytes(REFERENCE_SEED + i) for i in range(n)]


def demo_distractor_photos(n: int = 12) -> list[bytes]:
    """``n`` generated unrelated photos (JPEG, 800x600), seeds 1000, 1001, ..."""
    return [photo_bytes(DISTRACTOR_SEED + i) for i in range(n)]


def _phrase(name: str) -> str:
    return '"' + " ".join(name.replace('"', " ").split()) + '"'


@dataclass
class _Placed:
    url: str  # absolute image URL
    content_type: str
    copy: tuple[int, str] | None = None  # (reference_index, edit) for planted copies


class _Media:
    """Serves image bytes at fresh ``/media/<token>.<ext>`` URLs."""

    def __init__(self, web: LoopbackWeb, rng: random.Random) -> None:
        self.web, self.rng, self.used = web, rng, set[str]()

    def serve(self, data: bytes, copy: tuple[int, str] | None = None) -> _Placed:
        ctype, ext = sniff_image_type(data)
        token = f"{self.rng.getrandbits(48):012x}"
        while token in self.used:
            token = f"{self.rng.getrandbits(48):012x}"
        self.used.add(token)
        headers = {"Cache-Control": "public, max-age=86400"}
        url = self.web.add(f"/media/{token}.{ext}", data, ctype, headers=headers)
        return _Placed(url, ctype, copy)


def _page_path(index: int, pages: int) -> str:
    sites = max(1, (pages + 2) // 3)
    return f"/site-{index % sites}/page-{index // sites}.html"


def _markup(style: int, item: _Placed, base_url: str, has_base: bool, alt: str) -> str:
    """The HTML that shows ``item`` in markup style ``style`` (0 .. _STYLES - 1)."""
    absolute = item.url
    root = absolute.removeprefix(base_url)  # "/media/x.jpg"
    relative = root.rsplit("/", 1)[1] if has_base else ".." + root  # pages live in /site-N/
    alt = html.escape(alt)
    return [
        f'<figure><img src="{absolute}" alt="{alt}" loading="lazy">'
        f"<figcaption>{alt}</figcaption></figure>",
        f'<p><img src="{root}" alt="{alt}"></p>',
        f'<a href="{relative}"><img src="{relative}" alt="{alt}" class="thumb"></a>',
        f'<img srcset="{root} 1200w" sizes="(max-width: 1200px) 100vw, 1200px" alt="{alt}">',
        f'<img class="lazyload" src="{_PLACEHOLDER}" data-src="{relative}" alt="{alt}">',
        f'<picture><source srcset="{absolute}" type="{item.content_type}">'
        f'<img alt="{alt}"></picture>',
        f'<div class="cover" style="background-image: url(\'{root}\')" role="img" '
        f'aria-label="{alt}"></div>',
    ][style % _STYLES]


_PARAGRAPHS = (
    "Posted in the community gallery. Comments are moderated.",
    "More pictures from the weekend, uploaded by a member.",
    "Thread continues on the next page. Please keep it civil.",
    "Shared from another site; original source unknown.",
)


def _page_html(
    *,
    title: str,
    items: Sequence[_Placed],
    base_url: str,
    has_base: bool,
    style_start: int,
    links: Sequence[str],
    rng: random.Random,
) -> str:
    head = [
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
    ]
    if has_base:
        head.append(f'<base href="{base_url}/media/">')
    if items:  # the first image is referenced only by og:image
        head.append(f'<meta property="og:image" content="{items[0].url}">')
    head.append("<style>.cover{width:100%;height:320px;background-size:cover}</style>")
    body = [
        "<header><nav>"
        + "".join(f'<a href="{base_url}{link}">{link.rsplit("/", 1)[1]}</a> ' for link in links)
        + "</nav></header>",
        f"<main><article><h1>{html.escape(title)}</h1>",
        f"<p>{rng.choice(_PARAGRAPHS)}</p>",
    ]
    for n, item in enumerate(items[1:]):
        body.append(_markup(style_start + n, item, base_url, has_base, f"photo {n + 1}"))
    body.append("</article></main><footer><p>&copy; community site</p></footer>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n'
        + "\n".join(head)
        + "\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _gallery_html(title: str, image_url: str, base_url: str) -> str:
    """A page whose only photo is inserted by a script: no markup names its URL."""
    path = image_url.removeprefix(base_url)
    pieces = ", ".join(f'"{path[i : i + 4]}"' for i in range(0, len(path), 4))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n</head>\n<body>\n"
        f'<h1>{html.escape(title)}</h1>\n<div id="viewer">Loading&hellip;</div>\n'
        "<script>\n"
        f"  var parts = [{pieces}];\n"
        '  var img = document.createElement("img");\n'
        '  img.src = parts.join("");\n'
        '  document.getElementById("viewer").replaceChildren(img);\n'
        "</script>\n</body>\n</html>\n"
    )


def _check_build_args(
    subject_names: Sequence[str],
    references: Sequence[bytes],
    distractors: Sequence[bytes],
    edits: Sequence[str],
    pages: int,
    images_per_page: int,
) -> None:
    if not any(name.strip() for name in subject_names):
        raise ValueError("subject_names must hold at least one name")
    unknown = [e for e in edits if e not in EDITS]
    if unknown:
        raise ValueError(f"unknown edits {unknown}; known: {', '.join(EDITS)}")
    if pages < 1 or images_per_page < 1:
        raise ValueError("pages and images_per_page must be 1 or more")
    ref_digests = {hashlib.sha256(r).digest() for r in references}
    for i, data in enumerate(distractors):
        if hashlib.sha256(data).digest() in ref_digests:
            raise ValueError(f"distractor {i} is byte for byte one of the references")


def build_web(
    web: LoopbackWeb,
    *,
    subject_names: Sequence[str],
    references: Sequence[bytes],
    distractors: Sequence[bytes],
    edits: Sequence[str] = ("resize_half", "recompress_q50"),
    pages: int = 6,
    images_per_page: int = 6,
    image_results: bool = True,
    seed: int = 0,
) -> DemoWeb:
    """Serve the demo web on ``web`` (started or not) and return what was placed where.

    Each reference (image bytes in any format Pillow reads) is placed once per edit name in
    ``edits`` (keys of :data:`monitor.demo.transforms.EDITS`), re-encoded as JPEG q90. Copies are
    spread round-robin over the ``pages`` pages; the distractors fill the other image slots
    (``images_per_page`` per page, more when needed so every distractor is shown; when there
    are more slots than images, distractors are shown again at new URLs). The same ``seed``
    gives the same pages and URL paths.
    """
    _check_build_args(subject_names, references, distractors, edits, pages, images_per_page)
    rng = random.Random(seed)
    media = _Media(web, rng)
    base_url = web.base_url

    copies = []
    for index, ref in enumerate(references):
        original = decode(ref)
        for edit in edits:
            data = encode(EDITS[edit](original), "JPEG", _COPY_QUALITY)
            copies.append(media.serve(data, (index, edit)))
    search_only = copies[-1:] if image_results and len(copies) >= 2 else []
    on_pages = copies[: len(copies) - len(search_only)]

    total = max(pages * images_per_page, len(on_pages) + len(distractors))
    fill = [
        media.serve(distractors[j % len(distractors)])
        for j in range(total - len(on_pages) if distractors else 0)
    ]
    counts = [total // pages + (1 if p < total % pages else 0) for p in range(pages)]
    slots = [(p, k) for k in range(max(counts)) for p in range(pages) if k < counts[p]]
    page_items: list[list[_Placed]] = [[] for _ in range(pages)]
    for (p, _k), item in zip(slots, on_pages + fill, strict=False):
        page_items[p].append(item)

    name = " ".join(next(n for n in subject_names if n.strip()).split())
    paths = [_page_path(p, pages) for p in range(pages)]
    planted: list[PlantedImage] = []
    style = 0
    for p, items in enumerate(page_items):
        rng.shuffle(items)
        site_dir = paths[p].rsplit("/", 1)[0]
        links = [q for q in paths if q.startswith(site_dir + "/") and q != paths[p]]
        page = _page_html(
            title=f"{name} - gallery {p + 1}",
            items=items,
            base_url=base_url,
            has_base=p % 3 == 2,
            style_start=style,
            links=links,
            rng=rng,
        )
        style += max(len(items) - 1, 0)
        page_url = web.add(paths[p], page)
        planted += [PlantedImage(page_url, i.url, *i.copy) for i in items if i.copy]
    page_urls = [web.url(path) for path in paths]
    for item in search_only:
        assert item.copy is not None
        gallery = web.add(
            "/site-0/gallery.html", _gallery_html(f"{name} - album", item.url, base_url)
        )
        page_urls.append(gallery)
        planted.append(PlantedImage(gallery, item.url, *item.copy))
    web.add("/robots.txt", _ROBOTS, "text/plain; charset=utf-8")

    fake = _fake_search(subject_names, page_urls, planted, search_only, fill, image_results)
    searxng_url = fake.install(web, "/search")
    planted.sort(key=lambda p: (p.reference_index, list(edits).index(p.edit)))
    return DemoWeb(web, searxng_url, planted, [d.url for d in fill], page_urls, fake)


def _fake_search(
    subject_names: Sequence[str],
    page_urls: Sequence[str],
    planted: Sequence[PlantedImage],
    search_only: Sequence[_Placed],
    fill: Sequence[_Placed],
    image_results: bool,
) -> FakeSearxng:
    """Web results (every page) and image results for each name's exact phrase."""
    general = [
        {
            "url": url,
            "title": f"Gallery page {i + 1}",
            "content": "Photos shared by members of the community.",
            "engine": ("duckduckgo", "brave", "startpage")[i % 3],
        }
        for i, url in enumerate(page_urls)
    ]
    images: list[dict[str, Any]] = []
    if image_results:
        shown: list[PlantedImage] = []
        only = {item.url for item in search_only}
        seen_refs: set[int] = set()
        for p in planted:  # the search-only copy, and one on-page copy of each reference
            if p.image_url in only or p.reference_index not in seen_refs:
                shown.append(p)
                seen_refs.add(p.reference_index)
        images += [_image_result(p.page_url, p.image_url, "bing images") for p in shown]
        images += [_image_result(page_urls[0], d.url, "google images") for d in fill[:2]]
        images += [  # image answers can carry results with no image: clients must drop them
            {
                "url": url,
                "title": "Related discussion",
                "content": "No image.",
                "engine": "wikipedia",
            }
            for url in page_urls[:2]
        ]
    # one results page holds everything (images answers also carry the general results)
    fake = FakeSearxng(results_per_page=max(10, len(general) + len(images)))
    for raw in subject_names:
        if raw.strip():
            fake.add_results(_phrase(raw), "general", general)
            fake.add_results(_phrase(raw), "images", images)
    return fake


def _image_result(page_url: str, image_url: str, engine: str) -> dict[str, Any]:
    return {
        "url": page_url,
        "img_src": image_url,
        "thumbnail_src": image_url,
        "title": "Photo",
        "content": "",
        "engine": engine,
    }


def build_bulk_web(
    web: LoopbackWeb,
    *,
    subject_name: str,
    images: Sequence[bytes],
    pages: int,
    images_per_page: int,
    unique: bool = False,
) -> DemoWeb:
    """A large, plain web for throughput runs: ``pages`` pages of ``images_per_page`` images.

    Page ``p`` is ``/bulk/page-{p}.html``; image ``i`` (``/img/{i}.<ext>``) serves
    ``images[i % len(images)]``, with a unique trailer after the image data when ``unique`` (so
    every URL has a distinct SHA-256 but the same pixels). All pages are web results of the
    name's exact phrase, on one results page. ``planted`` is empty: which images match is up to
    the caller; ``distractors`` lists every image URL, in order.
    """
    if not images:
        raise ValueError("images must not be empty")
    if pages < 1 or images_per_page < 1:
        raise ValueError("pages and images_per_page must be 1 or more")
    types = [sniff_image_type(data) for data in images]

    def serve_unique(req: Request) -> Response:
        i = int(req.path.rsplit("/", 1)[1].split(".", 1)[0])
        body = images[i % len(images)] + f"\n<!-- bulk image {i} -->".encode()
        return Response(200, body, types[i % len(images)][0])

    image_urls: list[str] = []
    page_urls: list[str] = []
    for p in range(pages):
        tags = []
        for k in range(images_per_page):
            i = p * images_per_page + k
            ctype, ext = types[i % len(images)]
            path = f"/img/{i}.{ext}"
            if unique:
                image_urls.append(web.route(path, serve_unique))
            else:
                image_urls.append(web.add(path, images[i % len(images)], ctype))
            tags.append(f'<img src="{path}" alt="image {i}">')
        body = f"<!DOCTYPE html><html><head><title>Page {p}</title></head><body><h1>Page {p}</h1>"
        page_urls.append(web.add(f"/bulk/page-{p}.html", body + "".join(tags) + "</body></html>"))
    web.add("/robots.txt", _ROBOTS, "text/plain; charset=utf-8")
    fake = FakeSearxng(results_per_page=max(10, pages))
    fake.add_results(
        _phrase(subject_name),
        "general",
        [{"url": u, "title": f"Page {p}", "engine": "bulk"} for p, u in enumerate(page_urls)],
    )
    return DemoWeb(web, fake.install(web, "/search"), [], image_urls, page_urls, fake)
