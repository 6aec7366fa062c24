"""Finding image URLs in HTML."""

from __future__ import annotations

import pytest

from monitor.extract import (
    charset_from_content_type,
    extract_images,
    parse_srcset,
    pick_from_srcset,
)

PAGE = "https://example.org/blog/post.html"


def found(html: bytes | str, page_url: str = PAGE, **kw: object) -> list[tuple[str, str]]:
    return [(c.image_url, c.source) for c in extract_images(html, page_url, **kw)]


def urls(html: bytes | str, page_url: str = PAGE, **kw: object) -> list[str]:
    return [u for u, _ in found(html, page_url, **kw)]


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ('<img src="a.jpg">', ("https://example.org/blog/a.jpg", "img")),
        (
            '<img data-src="/lazy.jpg" src="data:image/gif;base64,R0lGOD">',
            ("https://example.org/lazy.jpg", "lazy"),
        ),
        ('<img data-lazy-src="/l.jpg">', ("https://example.org/l.jpg", "lazy")),
        ('<img data-original="/o.jpg">', ("https://example.org/o.jpg", "lazy")),
        ('<img data-srcset="/s1.jpg 1x, /s2.jpg 2x">', ("https://example.org/s2.jpg", "lazy")),
        (
            '<meta property="og:image" content="https://cdn.example.net/og.jpg">',
            ("https://cdn.example.net/og.jpg", "og:image"),
        ),
        (
            '<meta property="og:image:secure_url" content="/og2.jpg">',
            ("https://example.org/og2.jpg", "og:image"),
        ),
        (
            '<meta name="twitter:image" content="/tw.jpg">',
            ("https://example.org/tw.jpg", "twitter:image"),
        ),
        (
            '<meta name="twitter:image:src" content="/tw2.jpg">',
            ("https://example.org/tw2.jpg", "twitter:image"),
        ),
        ('<link rel="image_src" href="/is.jpg">', ("https://example.org/is.jpg", "image_src")),
        (
            '<video poster="/poster.jpg"></video>',
            ("https://example.org/poster.jpg", "poster"),
        ),
        (
            "<div style=\"background-image: url('/bg.jpg')\"></div>",
            ("https://example.org/bg.jpg", "background"),
        ),
        (
            '<div style="color:red; background: #fff url(/bg2.png) no-repeat">',
            ("https://example.org/bg2.png", "background"),
        ),
        ('<div data-bg="url(/bg3.webp)"></div>', ("https://example.org/bg3.webp", "background")),
        ('<a href="/full/1.JPG"><b>1</b></a>', ("https://example.org/full/1.JPG", "link")),
        ('<svg><image href="/s.png"/></svg>', ("https://example.org/s.png", "img")),
    ],
)
def test_each_kind_of_source(html: str, expected: tuple[str, str]) -> None:
    assert found(f"<html><head></head><body>{html}</body></html>") == [expected]


def test_videos_are_candidates_and_audio_is_not() -> None:
    html = """
    <head>
      <meta property="og:video" content="/og.mp4">
      <meta property="og:video:secure_url" content="https://cdn.example.org/og-secure.mp4">
    </head>
    <video poster="/poster.jpg"><source src="/v.webm" type="video/webm"><source src="/v.mp4"></video>
    <video src="clip.mov"></video>
    <audio><source src="/voice"><source src="/song.mp3"></audio>
    <video><source src="/talk.ogg" type="audio/ogg"></video>
    """
    assert found(html) == [
        ("https://example.org/og.mp4", "og:video"),
        ("https://cdn.example.org/og-secure.mp4", "og:video"),
        ("https://example.org/poster.jpg", "poster"),
        ("https://example.org/v.webm", "video"),
        ("https://example.org/v.mp4", "video"),
        ("https://example.org/blog/clip.mov", "video"),
    ]


def test_picture_sources_and_srcset_pick_the_largest() -> None:
    html = """
    <picture>
      <source type="image/webp" srcset="/p-400.webp 400w, /p-1600.webp 1600w, /p-800.webp 800w">
      <img src="/p-small.jpg" srcset="/p-1x.jpg 1x, /p-3x.jpg 3x, /p-2x.jpg 2x">
    </picture>
    """
    assert found(html) == [
        ("https://example.org/p-1600.webp", "srcset"),
        ("https://example.org/p-3x.jpg", "srcset"),
        ("https://example.org/p-small.jpg", "img"),
    ]


@pytest.mark.parametrize(
    ("srcset", "expected"),
    [
        ("a.jpg 100w, b.jpg 800w, c.jpg 400w", "b.jpg"),
        ("a.jpg, b.jpg 2x, c.jpg 1.5x", "b.jpg"),
        ("a.jpg, b.jpg", "b.jpg"),  # no descriptors: the last
        ("/c_fill,w_400/a.jpg 400w, /c_fill,w_800/b.jpg 800w", "/c_fill,w_800/b.jpg"),
        ("  single.jpg  ", "single.jpg"),
        ("", None),
        (" , ,", None),
    ],
)
def test_pick_from_srcset(srcset: str, expected: str | None) -> None:
    assert pick_from_srcset(srcset) == expected


def test_parse_srcset_keeps_commas_inside_urls() -> None:
    assert parse_srcset("/a,b.jpg 1x,/c.jpg 2x") == [("/a,b.jpg", "1x"), ("/c.jpg", "2x")]


def test_relative_urls_resolve_against_the_page() -> None:
    html = '<img src="../up.jpg"><img src="//cdn.example.net/proto.jpg"><img src="same.jpg?v=2">'
    assert urls(html) == [
        "https://example.org/up.jpg",
        "https://cdn.example.net/proto.jpg",
        "https://example.org/blog/same.jpg?v=2",
    ]


def test_base_href_is_used() -> None:
    html = '<head><base href="https://static.example.com/assets/"></head><img src="a.jpg">'
    assert urls(html) == ["https://static.example.com/assets/a.jpg"]


def test_relative_base_href_and_only_the_first_base_count() -> None:
    html = '<base href="/media/"><base href="https://other.example/"><img src="b.jpg">'
    assert urls(html) == ["https://example.org/media/b.jpg"]


def test_unusable_urls_are_dropped() -> None:
    html = """
    <img src="data:image/png;base64,iVBORw0KGgo=">
    <img src="javascript:alert(1)">
    <img src="blob:https://example.org/123">
    <img src="about:blank">
    <img src="ftp://example.org/x.jpg">
    <img src="mailto:a@example.org">
    <img src="">
    <img src="   ">
    <img src="#top">
    <img>
    <img src="ok.jpg#frag">
    """
    assert found(html) == [("https://example.org/blog/ok.jpg", "img")]


def test_duplicates_keep_the_first_occurrence_in_document_order() -> None:
    html = """
    <head><meta property="og:image" content="/hero.jpg"></head>
    <body>
      <img src="/hero.jpg">
      <img src="https://example.org/hero.jpg#x">
      <img src="/second.jpg">
      <img data-src="/second.jpg">
    </body>
    """
    assert found(html) == [
        ("https://example.org/hero.jpg", "og:image"),
        ("https://example.org/second.jpg", "img"),
    ]


def test_limit_bounds_the_result() -> None:
    html = "".join(f'<img src="/{i}.jpg">' for i in range(50))
    got = urls(html, limit=7)
    assert got == [f"https://example.org/{i}.jpg" for i in range(7)]
    assert urls(html, limit=0) == []


def test_malformed_html_does_not_raise() -> None:
    html = b'<html><body><div <img src="/a.jpg"><p><img src=/b.jpg alt="x<y>" <table><td><img src="/c.jpg"\x00'
    got = urls(html)
    assert "https://example.org/b.jpg" in got
    assert urls(b"") == []
    assert urls("   ") == []
    assert urls(b"\xff\xfe\x00garbage<<<>>>") == []


def test_latin1_page_with_non_ascii_file_name() -> None:
    html = '<html><head><meta charset="iso-8859-1"></head><body><img src="/café.jpg"></body></html>'
    data = html.encode("latin-1")
    expected = ["https://example.org/caf%C3%A9.jpg"]
    assert urls(data) == expected  # from the <meta charset>
    assert urls(data.replace(b"iso-8859-1", b"utf-8"), encoding="latin-1") == expected  # HTTP wins
    assert urls(b'<img src="/caf\xe9.jpg">') == expected  # not UTF-8 and no charset: windows-1252
    assert urls('<img src="/café.jpg">'.encode()) == expected  # UTF-8 without a charset
    assert urls('<img src="/café.jpg">') == expected  # already text


def test_unknown_encoding_is_ignored() -> None:
    assert urls('<img src="/café.jpg">'.encode(), encoding="no-such-charset") == [
        "https://example.org/caf%C3%A9.jpg"
    ]


def test_candidates_carry_the_page_url() -> None:
    (cand,) = extract_images('<img src="/a.jpg">', PAGE)
    assert cand.page_url == PAGE


@pytest.mark.parametrize(
    ("header", "charset"),
    [
        ("text/html; charset=ISO-8859-1", "iso-8859-1"),
        ('text/html; charset="utf-8"', "utf-8"),
        ("text/html;charset=windows-1252", "windows-1252"),
        ("text/html", None),
        ("text/html; charset=bogus", None),
        ("", None),
    ],
)
def test_charset_from_content_type(header: str, charset: str | None) -> None:
    assert charset_from_content_type(header) == charset


def test_a_page_nested_too_deep_for_lxml_is_still_read() -> None:
    # lxml stops building the tree 2048 levels down; what follows must not be hidden by that.
    html = "<div>" * 5000 + "<base href='/x/'><img src='a.jpg'><img srcset='b.jpg 1x, c.jpg 2x'>"
    assert urls(html) == ["https://example.org/x/a.jpg", "https://example.org/x/c.jpg"]


def test_repeated_and_junk_values_are_bounded_work() -> None:
    from monitor.extract import MAX_DISTINCT_VALUES

    same = "<img src='/a.jpg'>" * 50_000 + "<img src='/b.jpg'>"
    assert urls(same) == ["https://example.org/a.jpg", "https://example.org/b.jpg"]
    junk = "".join(f"<img src='javascript:{i}'>" for i in range(MAX_DISTINCT_VALUES + 10))
    assert urls(junk + "<img src='/late.jpg'>", limit=10) == []  # the page used its budget
    huge_srcset = ", ".join(f"/i{i}.jpg {i}w" for i in range(1, 100_000))
    assert len(urls(f"<img srcset='{huge_srcset}'>")) == 1
