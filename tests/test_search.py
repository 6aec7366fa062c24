"""The SearXNG search backend against a fake SearXNG on loopback, and the backend registry."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urlencode

import httpx
import pytest

from monitor.config import SearchBackendConfig
from monitor.errors import ConfigError, SearchBackendError
from monitor.search import (
    BackendUnavailableError,
    BadAnswerError,
    EnginesUnresponsiveError,
    JsonDisabledError,
    RateLimitedError,
    SearchAnswer,
    SearchBackend,
    SearxngBackend,
    available_kinds,
    create_backend,
    parse_retry_after,
    register_backend,
)
from monitor.search import base as search_base
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb, Response
from monitor.types import SearchHit, SearchQuery
from tests.search_support import IMAGES_Q, WEB_Q


@pytest.fixture
def fake(web: LoopbackWeb) -> FakeSearxng:
    f = FakeSearxng()
    assert f.install(web) == web.base_url
    return f


def backend_for(url: str, client: httpx.AsyncClient, **cfg: object) -> SearchBackend:
    return create_backend(SearchBackendConfig(url=url, **cfg), client)


@pytest.fixture
def backend(fake: FakeSearxng, web: LoopbackWeb, client: httpx.AsyncClient) -> SearchBackend:
    return backend_for(web.base_url, client)


# -- results


async def test_web_results_become_hits(fake: FakeSearxng, backend: SearchBackend) -> None:
    fake.add_results(
        "Jane Doe",
        "general",
        [
            {
                "url": "https://forum.example/t/1",
                "title": " A thread ",
                "content": "posted by someone",
                "engine": "duckduckgo",
                "thumbnail": "//cdn.example/t1.jpg",
            },
            {"url": "http://blog.example/p", "title": "Blog", "content": "", "engine": "bing"},
        ],
    )
    hits = (await backend.search(WEB_Q)).hits
    assert hits == [
        SearchHit(
            backend=backend.name,
            query=WEB_Q,
            page_url="https://forum.example/t/1",
            thumbnail_url="https://cdn.example/t1.jpg",
            title="A thread",
            snippet="posted by someone",
            engine="duckduckgo",
        ),
        SearchHit(
            backend=backend.name,
            query=WEB_Q,
            page_url="http://blog.example/p",
            title="Blog",
            engine="bing",
        ),
    ]
    assert fake.queries == [('"Jane Doe"', "general", 1)]


async def test_image_query_keeps_only_results_with_an_image(
    fake: FakeSearxng, backend: SearchBackend
) -> None:
    fake.add_result(
        "Jane Doe",
        "images",
        {
            "url": "https://pics.example/gallery/7",
            "img_src": "//img.example/full/7.jpg",
            "thumbnail_src": "https://img.example/thumb/7.jpg",
            "title": "photo",
            "engine": "bing images",
        },
    )
    fake.add_result("Jane Doe", "images", {"url": "https://pics.example/8", "img_src": ""})
    fake.add_result("Jane Doe", "general", {"url": "https://forum.example/t/1", "title": "t"})
    hits = (await backend.search(IMAGES_Q)).hits
    assert [(h.page_url, h.image_url, h.thumbnail_url) for h in hits] == [
        (
            "https://pics.example/gallery/7",
            "https://img.example/full/7.jpg",
            "https://img.example/thumb/7.jpg",
        )
    ]
    # the fake, like SearXNG, did mix the general result into the answer
    assert fake.queries == [('"Jane Doe"', "images", 1)]


async def test_general_results_are_mixed_into_image_answers_by_the_fake(
    fake: FakeSearxng, web: LoopbackWeb, client: httpx.AsyncClient
) -> None:
    fake.add_result("Jane Doe", "images", {"url": "https://a.example/", "img_src": "https://a/x"})
    fake.add_result("Jane Doe", "general", {"url": "https://b.example/", "img_src": "https://b/y"})
    resp = await client.get(
        web.base_url + "/search",
        params={"q": '"Jane Doe"', "format": "json", "categories": "images"},
    )
    results = resp.json()["results"]
    assert [r["url"] for r in results] == ["https://a.example/", "https://b.example/"]
    assert "img_src" not in results[1]


async def test_the_fakes_failure_can_wait_for_a_category(
    fake: FakeSearxng, web: LoopbackWeb, client: httpx.AsyncClient
) -> None:
    """A scan's searches arrive in any order: a test failing "the image search" must not fail
    whichever search comes first."""
    fake.add_result("Jane Doe", "general", {"url": "https://b.example/"})
    fake.fail_next(503, category="images")

    async def ask(category: str) -> int:
        params = {"q": "Jane Doe", "format": "json", "categories": category}
        return (await client.get(web.base_url + "/search", params=params)).status_code

    assert [await ask("general"), await ask("images"), await ask("images")] == [200, 503, 200]


async def test_absent_or_null_optional_fields_and_unusable_urls(
    fake: FakeSearxng, backend: SearchBackend
) -> None:
    fake.add_results(
        "Jane Doe",
        "general",
        [
            {"url": "https://ok.example/a"},
            {
                "url": "https://ok.example/b",
                "title": None,
                "content": None,
                "engine": None,
                "img_src": None,
                "thumbnail_src": None,
                "thumbnail": None,
            },
            {"title": "no url at all"},
            {"url": None},
            {"url": "javascript:alert(1)"},
            {"url": "/relative/path"},
            {"url": "ftp://files.example/x"},
        ],
    )
    hits = (await backend.search(WEB_Q)).hits
    assert [h.page_url for h in hits] == ["https://ok.example/a", "https://ok.example/b"]
    assert all(
        h.image_url is None and h.thumbnail_url is None and h.title == h.snippet == h.engine == ""
        for h in hits
    )


async def test_image_result_with_unusable_image_url_is_dropped(
    fake: FakeSearxng, backend: SearchBackend
) -> None:
    fake.add_results(
        "Jane Doe",
        "images",
        [
            {"url": "https://p.example/1", "img_src": "data:image/png;base64,AAAA"},
            {"url": "https://p.example/2", "img_src": "/image_proxy?url=x"},
            {"url": "https://p.example/3", "img_src": "https://i.example/3.png"},
        ],
    )
    hits = (await backend.search(IMAGES_Q)).hits
    assert [h.image_url for h in hits] == ["https://i.example/3.png"]


async def test_query_matches_unquoted_key_ignoring_case(
    fake: FakeSearxng, backend: SearchBackend
) -> None:
    fake.add_result("jane doe", "general", {"url": "https://x.example/"})
    fake.add_result("Someone Else", "general", {"url": "https://other.example/"})
    assert [h.page_url for h in (await backend.search(WEB_Q)).hits] == ["https://x.example/"]


# -- parameters and paging


async def test_configured_parameters_are_sent(
    fake: FakeSearxng, web: LoopbackWeb, client: httpx.AsyncClient
) -> None:
    backend = backend_for(
        web.base_url,
        client,
        categories_web="general,news",
        categories_images="images,social media",
        safesearch=2,
        language="nl-NL",
    )
    await backend.search(WEB_Q, page=3)
    await backend.search(IMAGES_Q)
    sent = [r.query for r in web.requests if r.path == "/search"]
    assert sent[0] == {
        "q": ['"Jane Doe"'],
        "format": ["json"],
        "categories": ["general,news"],
        "pageno": ["3"],
        "safesearch": ["2"],
        "language": ["nl-NL"],
    }
    assert sent[1]["categories"] == ["images,social media"]
    assert sent[1]["pageno"] == ["1"]


async def test_language_is_left_out_when_not_configured(
    fake: FakeSearxng, web: LoopbackWeb, backend: SearchBackend
) -> None:
    await backend.search(WEB_Q)
    assert "language" not in web.requests[-1].query
    assert web.requests[-1].query["safesearch"] == ["0"]


async def test_pages_are_requested_and_sliced(fake: FakeSearxng, backend: SearchBackend) -> None:
    fake.results_per_page = 2
    fake.add_results("Jane Doe", "general", [{"url": f"https://r.example/{i}"} for i in range(5)])
    pages = [[h.page_url for h in (await backend.search(WEB_Q, page=p)).hits] for p in (1, 2, 3, 4)]
    assert pages == [
        ["https://r.example/0", "https://r.example/1"],
        ["https://r.example/2", "https://r.example/3"],
        ["https://r.example/4"],
        [],
    ]
    assert [pageno for _, _, pageno in fake.queries] == [1, 2, 3, 4]


@pytest.mark.parametrize("suffix", ["", "/", "/search", "/search/"])
async def test_instance_url_may_end_with_slash_or_search(
    fake: FakeSearxng, web: LoopbackWeb, client: httpx.AsyncClient, suffix: str
) -> None:
    fake.add_result("Jane Doe", "general", {"url": "https://x.example/"})
    backend = backend_for(web.base_url + suffix, client)
    assert [h.page_url for h in (await backend.search(WEB_Q)).hits] == ["https://x.example/"]


async def test_instance_under_a_path_prefix(web: LoopbackWeb, client: httpx.AsyncClient) -> None:
    fake = FakeSearxng()
    url = fake.install(web, path="/searx/search")
    fake.add_result("Jane Doe", "general", {"url": "https://x.example/"})
    for configured in (url, url + "/", url + "/search"):
        backend = backend_for(configured, client)
        assert len((await backend.search(WEB_Q)).hits) == 1


# -- names and registry


async def test_backend_name_defaults_to_kind_at_host(
    fake: FakeSearxng, web: LoopbackWeb, client: httpx.AsyncClient
) -> None:
    fake.add_result("Jane Doe", "general", {"url": "https://x.example/"})
    backend = backend_for(web.base_url, client)
    assert backend.name == f"searxng@127.0.0.1:{web.port}"
    named = backend_for(web.base_url, client, name="home")
    assert named.name == "home"
    assert ((await named.search(WEB_Q)).hits)[0].backend == "home"
    assert isinstance(backend, SearchBackend)
    await backend.aclose()
    assert not client.is_closed  # the shared client belongs to the caller


def test_unknown_kind_is_a_config_error(client: httpx.AsyncClient) -> None:
    assert "searxng" in available_kinds()
    with pytest.raises(
        ConfigError, match="unknown search backend kind 'bing'; known: brave, searxng, serpapi"
    ):
        create_backend(SearchBackendConfig(kind="bing", url="http://x"), client)


@pytest.mark.parametrize("url", ["", "localhost:8888", "ftp://host/", "file:///etc"])
def test_url_that_is_not_http_is_a_config_error(client: httpx.AsyncClient, url: str) -> None:
    with pytest.raises(ConfigError, match="http:// or https://"):
        create_backend(SearchBackendConfig(url=url), client)


async def test_registering_a_backend_kind(
    monkeypatch: pytest.MonkeyPatch, client: httpx.AsyncClient
) -> None:
    monkeypatch.setattr(search_base, "_REGISTRY", dict(search_base._REGISTRY))

    class Canned:
        def __init__(self, cfg: SearchBackendConfig, client: httpx.AsyncClient) -> None:
            self.name = f"canned:{cfg.url}"

        async def search(self, query: SearchQuery, *, page: int = 1) -> SearchAnswer:
            return SearchAnswer([SearchHit(self.name, query, "https://canned.example/")])

        async def aclose(self) -> None:
            pass

    register_backend("canned")(Canned)
    assert available_kinds() == ["brave", "canned", "searxng", "serpapi"]
    backend = create_backend(SearchBackendConfig(kind="canned", url="x"), client)
    assert [h.page_url for h in (await backend.search(WEB_Q)).hits] == ["https://canned.example/"]
    with pytest.raises(ValueError, match="already registered"):
        register_backend("canned")(lambda cfg, client: Canned(cfg, client))


# -- failures


async def test_json_disabled_explains_the_settings_change(
    fake: FakeSearxng, web: LoopbackWeb, backend: SearchBackend
) -> None:
    fake.json_disabled = True
    with pytest.raises(JsonDisabledError) as info:
        await backend.search(WEB_Q)
    message = str(info.value)
    assert web.base_url in message
    assert "HTTP 403" in message
    assert "`json`" in message and "search.formats" in message and "settings.yml" in message
    assert isinstance(info.value, SearchBackendError)


async def test_rate_limit_with_retry_after_seconds(
    fake: FakeSearxng, backend: SearchBackend
) -> None:
    fake.fail_next(429, {"Retry-After": "42"})
    with pytest.raises(RateLimitedError) as info:
        await backend.search(WEB_Q)
    assert info.value.retry_after == 42
    assert "HTTP 429" in str(info.value) and "42" in str(info.value)
    fake.add_result("Jane Doe", "general", {"url": "https://x.example/"})
    assert len((await backend.search(WEB_Q)).hits) == 1  # only the next answer failed


async def test_rate_limit_with_retry_after_date_or_none(
    fake: FakeSearxng, backend: SearchBackend
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    fake.fail_next(429, {"Retry-After": format_datetime(later, usegmt=True)})
    fake.fail_next(429)
    with pytest.raises(RateLimitedError) as dated:
        await backend.search(WEB_Q)
    assert dated.value.retry_after is not None
    assert 3000 < dated.value.retry_after <= 3600
    with pytest.raises(RateLimitedError) as bare:
        await backend.search(WEB_Q)
    assert bare.value.retry_after is None


def test_parse_retry_after() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("120", now=now) == 120
    assert parse_retry_after(" 0 ", now=now) == 0
    assert parse_retry_after("Wed, 01 May 2024 12:01:30 GMT", now=now) == 90
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=now) == 0  # in the past
    assert parse_retry_after("-5", now=now) == 0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad, now=now) is None


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_error_is_a_backend_error(
    fake: FakeSearxng, backend: SearchBackend, status: int
) -> None:
    fake.fail_next(status)
    with pytest.raises(BackendUnavailableError, match=f"HTTP {status}"):
        await backend.search(WEB_Q)


async def test_not_found_hints_at_the_url(fake: FakeSearxng, backend: SearchBackend) -> None:
    fake.fail_next(404, body="no such page")
    with pytest.raises(SearchBackendError, match=r"HTTP 404.*url in \[\[search.backends\]\]"):
        await backend.search(WEB_Q)


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "<html><body>SearXNG</body></html>",
        "",
        json.dumps([1, 2, 3]),
        json.dumps({"query": "x", "results": "none"}),
    ],
)
async def test_malformed_answers_are_backend_errors(
    fake: FakeSearxng, backend: SearchBackend, body: str
) -> None:
    fake.fail_next(200, body=body)
    with pytest.raises(BadAnswerError, match="answer was not SearXNG JSON"):
        await backend.search(WEB_Q)


async def test_connection_refused_is_a_backend_error(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # find a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = backend_for(f"http://127.0.0.1:{port}", client)
    with pytest.raises(BackendUnavailableError, match="could not connect to SearXNG at"):
        await backend.search(WEB_Q)


async def test_timeout_is_a_backend_error(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # accepts connections (kernel backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        backend = backend_for(f"http://127.0.0.1:{sock.getsockname()[1]}", client, timeout=0.2)
        with pytest.raises(BackendUnavailableError, match="did not answer within 0.2 s"):
            await backend.search(WEB_Q)


async def test_unresponsive_engines_are_exposed(fake: FakeSearxng, backend: SearchBackend) -> None:
    answer = {
        "query": '"Jane Doe"',
        "results": [{"url": "https://x.example/"}],
        "unresponsive_engines": [["google", "timeout"], ["bing", "CAPTCHA"]],
    }
    fake.fail_next(200, body=json.dumps(answer))
    got = await backend.search(WEB_Q)
    assert len(got.hits) == 1
    assert got.partial
    assert got.unanswered == (("google", "timeout"), ("bing", "CAPTCHA"))
    assert isinstance(backend, SearxngBackend)
    assert backend.unresponsive_engines == [("google", "timeout"), ("bing", "CAPTCHA")]


async def test_all_engines_unresponsive_is_a_failed_search(
    fake: FakeSearxng, backend: SearchBackend
) -> None:
    """HTTP 200 with no results and every engine blocked is not "nothing found"."""
    answer = {
        "query": '"Jane Doe"',
        "results": [],
        "unresponsive_engines": [["google", "CAPTCHA"], ["bing", "too many requests"]],
    }
    fake.fail_next(200, body=json.dumps(answer))
    with pytest.raises(EnginesUnresponsiveError, match="no search engine answered") as err:
        await backend.search(WEB_Q)
    assert err.value.engines == (("google", "CAPTCHA"), ("bing", "too many requests"))


async def test_redirected_instance_is_followed(
    fake: FakeSearxng, web: LoopbackWeb, client: httpx.AsyncClient
) -> None:
    fake.add_result("Jane Doe", "general", {"url": "https://x.example/"})
    web.route(
        "/old/search",
        lambda req: Response(
            301, b"", headers={"Location": web.url("/search?" + urlencode(req.query, doseq=True))}
        ),
    )
    backend = backend_for(web.url("/old"), client)
    assert [h.page_url for h in (await backend.search(WEB_Q)).hits] == ["https://x.example/"]


async def test_short_retry_after_is_waited_out_and_asked_once_more(
    fake: FakeSearxng, backend: SearchBackend
) -> None:
    fake.add_result("Jane Doe", "general", {"url": "https://x.example/"})
    fake.fail_next(429, {"Retry-After": "0.2"})
    assert len((await backend.search(WEB_Q)).hits) == 1
    assert len(fake.queries) == 2
    fake.fail_next(429, {"Retry-After": "0.1"}, times=2)  # still limited: given up after one wait
    with pytest.raises(RateLimitedError, match="still limited after waiting once"):
        await backend.search(WEB_Q)
    assert len(fake.queries) == 4


async def test_an_oversized_answer_is_not_read(
    fake: FakeSearxng, backend: SearchBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.search import searxng

    monkeypatch.setattr(searxng, "MAX_ANSWER_BYTES", 1000)
    answer = {"results": [{"url": f"https://x.example/{i}"} for i in range(200)]}
    fake.fail_next(200, body=json.dumps(answer))
    with pytest.raises(BadAnswerError, match="larger than the 1 KB limit"):
        await backend.search(WEB_Q)


# -- hardening shared by every backend (monitor.search.base)


async def test_redirect_to_another_host_is_refused_naming_only_the_host(
    fake: FakeSearxng, web: LoopbackWeb, client: httpx.AsyncClient
) -> None:
    """A backend's 302 to an internal address is not followed, and its body is not quoted."""
    web.route(
        "/moved/search",
        lambda req: Response(
            302,
            b"SECRET internal page",
            headers={"Location": "http://169.254.169.254/latest/meta-data/?token=abc"},
        ),
    )
    backend = backend_for(web.url("/moved"), client)
    with pytest.raises(search_base.RedirectRefusedError) as info:
        await backend.search(WEB_Q)
    message = str(info.value)
    assert "169.254.169.254" in message and "not followed" in message
    assert "SECRET" not in message and "meta-data" not in message and "token" not in message
    assert isinstance(info.value, BackendUnavailableError)
    assert [r.path for r in web.requests] == ["/moved/search"]  # nothing else was asked


async def test_redirect_loop_within_the_instance_stops(
    web: LoopbackWeb, client: httpx.AsyncClient
) -> None:
    web.route("/loop/search", lambda req: Response(302, b"", headers={"Location": "/loop/search"}))
    backend = backend_for(web.url("/loop"), client)
    with pytest.raises(search_base.RedirectRefusedError, match="redirected more than 3 times"):
        await backend.search(WEB_Q)


async def test_deeply_nested_json_is_a_bad_answer_not_a_crash(
    fake: FakeSearxng, backend: SearchBackend
) -> None:
    fake.fail_next(200, body='{"results": [' + "[" * 100_000 + "]" * 100_000 + "]}")
    with pytest.raises(BadAnswerError, match="nested more than 64 levels deep"):
        await backend.search(WEB_Q)
    # unbalanced and deep: still refused without a RecursionError
    fake.fail_next(200, body="[" * 200_000)
    with pytest.raises(BadAnswerError):
        await backend.search(WEB_Q)


def test_json_depth_scan() -> None:
    depth = search_base.json_depth_exceeds
    assert not depth(b'{"a": [1, {"b": "[[[[[[ in a string ]"}], "c": "\\"[["}')
    assert not depth(b"[" * 64 + b"]" * 64)
    assert depth(b"[" * 65 + b"]" * 65)
    assert depth(b"[{}" * 64 + b"]" * 64)  # the 65th level is an object
    assert not depth(b"[" * 10 + b"]" * 10, limit=10) and depth(b"[" * 11 + b"]" * 11, limit=10)


async def test_error_quotes_are_short_and_printable(
    fake: FakeSearxng, backend: SearchBackend
) -> None:
    fake.fail_next(500, body="\x1b[2J\x00boom\u202e" + "x" * 5000)
    with pytest.raises(BackendUnavailableError) as info:
        await backend.search(WEB_Q)
    message = str(info.value)
    assert "\x1b" not in message and "\x00" not in message and "\u202e" not in message
    assert "boom" in message and message.endswith("...")
    assert len(message) < 250


def test_snippet() -> None:
    snippet = search_base.snippet
    assert snippet(b"") == "an empty body"
    assert snippet("a\tb\n\nc") == "a b c"
    assert snippet(b"k=SECRET123 rest", secrets=["SECRET123"]) == "k=*** rest"
    assert snippet("x" * 500) == "x" * 120 + "..."


# -- SearXNG's own settings and its check


def test_unknown_or_misplaced_keys_are_config_errors(client: httpx.AsyncClient) -> None:
    with pytest.raises(ConfigError, match=r"unknown key `categories_imgs`.*categories_images"):
        create_backend(SearchBackendConfig(url="http://x", categories_imgs="images"), client)
    with pytest.raises(ConfigError, match="`engines` is only used by kind 'serpapi'"):
        create_backend(SearchBackendConfig(url="http://x", engines=["google"]), client)
    with pytest.raises(ConfigError, match="`safesearch`"):
        create_backend(SearchBackendConfig(url="http://x", safesearch=5), client)


async def test_check_reports_a_working_instance(fake: FakeSearxng, backend: SearchBackend) -> None:
    fake.add_result("weather", "images", {"url": "https://p.example/", "img_src": "https://i/x"})
    result = await backend.check()
    assert result == search_base.BackendCheck(
        True, f"SearXNG at {fake_url(backend)} works: 1 image results", None, 1
    )
    assert fake.queries == [("weather", "images", 1)]  # a neutral word, never a name


def fake_url(backend: SearchBackend) -> str:
    assert isinstance(backend, SearxngBackend)
    return backend.instance_url


async def test_check_says_how_to_enable_json(fake: FakeSearxng, backend: SearchBackend) -> None:
    fake.json_disabled = True
    result = await backend.check()
    assert not result.ok and "enable json in search.formats" in result.message


async def test_check_without_image_engines_fails_with_the_fix(
    fake: FakeSearxng, backend: SearchBackend
) -> None:
    fake.add_result("weather", "general", {"url": "https://w.example/"})  # mixed in, no image
    result = await backend.check()
    assert not result.ok and "image engines" in result.message
    fake.fail_next(
        200, body=json.dumps({"results": [], "unresponsive_engines": [["bing images", "CAPTCHA"]]})
    )
    result = await backend.check()
    assert not result.ok and "bing images (CAPTCHA)" in result.message


async def test_check_does_not_raise_when_unreachable(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await backend_for(f"http://127.0.0.1:{port}", client).check()
    assert not result.ok and "could not connect" in result.message and result.requests == 1


async def test_partial_answers_carry_a_reason_for_every_engine(
    fake: FakeSearxng, backend: SearchBackend
) -> None:
    fake.add_result("Jane Doe", "general", {"url": "https://x.example/"})
    fake.unresponsive_engines = [("google", "CAPTCHA")]
    answer = await backend.search(WEB_Q)
    assert answer.unanswered == (("google", "CAPTCHA"),) and len(answer.hits) == 1
    fake.fail_next(
        200,
        body=json.dumps(
            {
                "results": [{"url": "https://x.example/"}],
                "unresponsive_engines": [["bing"], "qwant"],
            }
        ),
    )
    answer = await backend.search(WEB_Q)
    assert answer.unanswered == (("bing", "no reason given"), ("qwant", "no reason given"))


async def test_failed_search_counts_its_requests(fake: FakeSearxng, backend: SearchBackend) -> None:
    fake.unresponsive_engines = [("google", "timeout")]
    with pytest.raises(EnginesUnresponsiveError) as info:
        await backend.search(WEB_Q)
    assert info.value.requests == 1 and info.value.engines == (("google", "timeout"),)
