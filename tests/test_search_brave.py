"""The Brave Search API backend against the loopback fake (monitor.testing.brave)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from monitor.config import SearchBackendConfig, load_settings
from monitor.errors import ConfigError, SearchBackendError
from monitor.search import (
    BackendCheck,
    BackendRefusedError,
    BackendUnavailableError,
    BadAnswerError,
    BraveBackend,
    RateInfo,
    RateLimitedError,
    SearchBackend,
    create_backend,
)
from monitor.search.brave import RateWindow, binding_window, parse_rate_headers
from monitor.testing.brave import FakeBrave
from monitor.testing.web import LoopbackWeb, Response
from monitor.types import ResultKind, SearchHit, SearchQuery
from tests.search_support import IMAGES_Q, WEB_Q

KEY = "BSA-test-key-0123456789"


@pytest.fixture
def fake(web: LoopbackWeb) -> FakeBrave:
    f = FakeBrave(api_key=KEY, limits=(50, 2000))  # 1 a second is tested on its own
    assert f.install(web) == web.base_url
    return f


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAVE_API_KEY", KEY)


def brave(url: str, client: httpx.AsyncClient, **cfg: object) -> BraveBackend:
    backend = create_backend(SearchBackendConfig(kind="brave", url=url, **cfg), client)
    assert isinstance(backend, BraveBackend) and isinstance(backend, SearchBackend)
    return backend


@pytest.fixture
def backend(fake: FakeBrave, web: LoopbackWeb, client: httpx.AsyncClient) -> BraveBackend:
    return brave(web.base_url, client)


# -- results


async def test_web_results_become_hits(fake: FakeBrave, backend: BraveBackend) -> None:
    fake.add_webs(
        "Jane Doe",
        [
            {
                "url": "https://forum.example/t/1",
                "title": "A <strong>Jane Doe</strong> thread",
                "description": "posted by <strong>someone</strong>",
                "thumbnail": {"src": "https://imgs.search.brave.com/t1"},
            },
            {"url": "http://blog.example/p", "title": "Blog"},
            {"url": "javascript:alert(1)", "title": "unusable"},
            {"title": "no url"},
        ],
    )
    answer = await backend.search(WEB_Q)
    assert answer.hits == [
        SearchHit(
            backend=backend.name,
            query=WEB_Q,
            page_url="https://forum.example/t/1",
            thumbnail_url="https://imgs.search.brave.com/t1",
            title="A Jane Doe thread",
            snippet="posted by someone",
            engine="brave",
        ),
        SearchHit(
            backend=backend.name,
            query=WEB_Q,
            page_url="http://blog.example/p",
            title="Blog",
            engine="brave",
        ),
    ]
    assert answer.requests == 1 and not answer.partial
    assert answer.rate == RateInfo(limit=50, remaining=49, reset_seconds=1)


async def test_image_results_page_image_and_thumbnail(
    fake: FakeBrave, backend: BraveBackend
) -> None:
    fake.add_images(
        "Jane Doe",
        [
            {
                "url": "https://pics.example/gallery/7",
                "title": "photo",
                "properties": {"url": "https://img.example/full/7.jpg"},
                "thumbnail": {"src": "https://imgs.search.brave.com/7"},
            },
            # no image URL: the page is still a hit (it is fetched, its images extracted)
            {"url": "https://pics.example/gallery/8", "properties": {}},
        ],
    )
    hits = (await backend.search(IMAGES_Q)).hits
    assert [(h.page_url, h.image_url, h.thumbnail_url) for h in hits] == [
        (
            "https://pics.example/gallery/7",
            "https://img.example/full/7.jpg",
            "https://imgs.search.brave.com/7",
        ),
        ("https://pics.example/gallery/8", None, None),
    ]


async def test_safe_search_is_off_on_both_endpoints(fake: FakeBrave, backend: BraveBackend) -> None:
    """Brave filters these results by default (images: strict); the fake models that."""
    fake.add_image(
        "Jane Doe",
        {"url": "https://x.example/", "properties": {"url": "https://x/i"}, "adult": True},
    )
    fake.add_web("Jane Doe", {"url": "https://y.example/", "adult": True})
    assert len((await backend.search(IMAGES_Q)).hits) == 1
    assert len((await backend.search(WEB_Q)).hits) == 1
    assert [r.params["safesearch"] for r in fake.requests] == ["off", "off"]


async def test_requests_endpoints_key_and_paging(
    fake: FakeBrave, web: LoopbackWeb, client: httpx.AsyncClient
) -> None:
    backend = brave(web.base_url, client, country="NL", search_lang="nl", images_count=150)
    await backend.search(IMAGES_Q)
    await backend.search(WEB_Q, page=1)
    await backend.search(WEB_Q, page=3)
    images, web1, web3 = fake.requests
    assert images.endpoint == "images" and images.token == KEY
    assert images.params == {
        "q": '"Jane Doe"',
        "safesearch": "off",
        "spellcheck": "false",
        "count": "150",
        "country": "NL",
        "search_lang": "nl",
    }
    assert web1.endpoint == "web" and web1.token == KEY
    assert (web1.params["count"], web1.params["offset"]) == ("20", "0")
    assert web3.params["offset"] == "2"
    assert [r.path for r in web.requests] == [
        "/res/v1/images/search",
        "/res/v1/web/search",
        "/res/v1/web/search",
    ]
    # the key travels in the header only
    assert all(KEY not in json.dumps(r.query) for r in web.requests)


async def test_web_pages_slice_results(fake: FakeBrave, backend: BraveBackend) -> None:
    fake.add_webs("Jane Doe", [{"url": f"https://r.example/{i}"} for i in range(25)])
    first = (await backend.search(WEB_Q, page=1)).hits
    second = (await backend.search(WEB_Q, page=2)).hits
    third = await backend.search(WEB_Q, page=3)
    assert [h.page_url for h in first] == [f"https://r.example/{i}" for i in range(20)]
    assert [h.page_url for h in second] == [f"https://r.example/{i}" for i in range(20, 25)]
    assert third.hits == [] and third.requests == 1  # asked: Brave had nothing more


async def test_pages_brave_does_not_have_are_not_asked(
    fake: FakeBrave, backend: BraveBackend
) -> None:
    images_2 = await backend.search(IMAGES_Q, page=2)
    web_11 = await backend.search(WEB_Q, page=11)
    assert images_2.hits == [] and images_2.requests == 0
    assert web_11.hits == [] and web_11.requests == 0
    assert fake.requests == []


async def test_no_web_key_is_an_empty_answer_not_an_error(
    fake: FakeBrave, backend: BraveBackend
) -> None:
    answer = await backend.search(WEB_Q)  # the fake, like Brave, leaves "web" out
    assert answer.hits == [] and answer.requests == 1


# -- configuration


def test_url_defaults_to_the_public_api(client: httpx.AsyncClient) -> None:
    backend = brave("", client)
    assert backend.base_url == "https://api.search.brave.com"
    assert backend.name == "brave@api.search.brave.com"
    assert brave("", client, name="mine").name == "mine"


def test_missing_key_names_the_variable(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BRAVE_API_KEY")
    with pytest.raises(ConfigError, match=r"set the environment variable \$BRAVE_API_KEY"):
        brave("", client)
    monkeypatch.setenv("MY_BRAVE", "  ")
    with pytest.raises(ConfigError, match=r"\$MY_BRAVE") as info:
        brave("", client, api_key_env="MY_BRAVE")
    assert "api_key_env" not in str(info.value)
    monkeypatch.setenv("MY_BRAVE", "k2")
    assert brave("", client, api_key_env="MY_BRAVE").api_key_env == "MY_BRAVE"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"engines": ["google"]}, "`engines` is only used by kind 'serpapi'"),
        ({"categories_web": "general"}, "unknown key `categories_web`"),
        ({"images_count": 500}, "`images_count`"),
        ({"url": "ftp://x"}, "http:// or https://"),
    ],
)
def test_bad_settings_are_config_errors(
    client: httpx.AsyncClient, extra: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_backend(SearchBackendConfig(kind="brave", **extra), client)


# -- rate limits


def test_rate_headers_per_window() -> None:
    headers = {
        "X-RateLimit-Limit": "1, 15000",
        "X-RateLimit-Remaining": "1, 1000",
        "X-RateLimit-Reset": "1, 1419704",
    }
    windows = parse_rate_headers(httpx.Headers(headers))
    assert windows == [RateWindow(1, 1, 1), RateWindow(15000, 1000, 1419704)]
    assert binding_window(windows) == RateWindow(1, 1, 1)
    spent = parse_rate_headers(
        httpx.Headers({**headers, "X-RateLimit-Remaining": "0, 0"})
    )  # both spent: the month binds
    assert binding_window(spent) == RateWindow(15000, 0, 1419704)
    assert parse_rate_headers(httpx.Headers({})) == []
    odd = parse_rate_headers(httpx.Headers({"X-RateLimit-Remaining": "x, -3, 7"}))
    assert [w.remaining for w in odd] == [None, None, 7]


async def test_monthly_quota_used_up_is_rate_limited_with_the_reset(
    fake: FakeBrave, backend: BraveBackend
) -> None:
    fake.used_this_month = 2000
    with pytest.raises(RateLimitedError) as info:
        await backend.search(WEB_Q)
    assert info.value.retry_after == 1_419_704
    message = str(info.value)
    assert "$BRAVE_API_KEY" in message and "used up 2000 requests" in message
    assert "16 days" in message and "RATE_LIMITED" in message
    assert len(fake.requests) == 1  # a month is not waited out


async def test_per_second_limit_is_waited_out_once(fake: FakeBrave, backend: BraveBackend) -> None:
    fake.add_web("Jane Doe", {"url": "https://x.example/"})
    fake.fail_next(
        429, headers={"X-RateLimit-Remaining": "0, 1500", "X-RateLimit-Reset": "0.2, 9999"}
    )
    answer = await backend.search(WEB_Q)
    assert len(answer.hits) == 1 and answer.requests == 2
    fake.fail_next(
        429,
        headers={"X-RateLimit-Remaining": "0, 1500", "X-RateLimit-Reset": "0.1, 9999"},
        times=2,
    )
    with pytest.raises(RateLimitedError, match="still limited after waiting once") as info:
        await backend.search(WEB_Q)
    assert info.value.retry_after == pytest.approx(0.1)


# -- errors


async def test_invalid_key_is_a_clear_refusal(
    fake: FakeBrave, web: LoopbackWeb, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRAVE_API_KEY", "wrong-key")
    backend = brave(web.base_url, client)
    with pytest.raises(BackendRefusedError) as info:
        await backend.search(IMAGES_Q)
    message = str(info.value)
    assert message.startswith("Brave rejected the API key in $BRAVE_API_KEY")
    assert "SUBSCRIPTION_TOKEN_INVALID" in message and "wrong-key" not in message


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [
        (403, BackendRefusedError, "Brave refused image search for the key in $BRAVE_API_KEY"),
        (422, BackendRefusedError, "Brave did not accept the request (HTTP 422, VALIDATION"),
        (500, BackendUnavailableError, "failed (HTTP 500, INTERNAL_ERROR"),
        (503, BackendUnavailableError, "failed (HTTP 503"),
        (404, SearchBackendError, "answered HTTP 404"),
    ],
)
async def test_error_statuses(
    fake: FakeBrave, backend: BraveBackend, status: int, error: type[Exception], text: str
) -> None:
    fake.fail_next(status)
    with pytest.raises(error) as info:
        await backend.search(IMAGES_Q)
    assert text in str(info.value)


async def test_error_without_json_quotes_a_short_snippet(
    fake: FakeBrave, backend: BraveBackend
) -> None:
    fake.fail_next(502, body="<html>\x1b[31m" + "bad gateway " * 100 + "</html>")
    with pytest.raises(BackendUnavailableError) as info:
        await backend.search(WEB_Q)
    message = str(info.value)
    assert "\x1b" not in message and len(message) < 220 and message.endswith("...)")


@pytest.mark.parametrize(
    "body",
    ["{not json", "[1, 2]", json.dumps({"type": "search", "web": {"results": "x"}}), "[" * 200],
)
async def test_malformed_answers(fake: FakeBrave, backend: BraveBackend, body: str) -> None:
    fake.fail_next(200, body=body)
    with pytest.raises(BadAnswerError, match="answer was not a Brave Search answer"):
        await backend.search(WEB_Q)


async def test_error_response_with_status_200_is_not_an_empty_answer(
    fake: FakeBrave, backend: BraveBackend
) -> None:
    fake.fail_next(
        200,
        body=json.dumps(
            {
                "type": "ErrorResponse",
                "error": {"status": 401, "code": "SUBSCRIPTION_TOKEN_INVALID"},
            }
        ),
    )
    with pytest.raises(BackendRefusedError, match="rejected the API key"):
        await backend.search(WEB_Q)


async def test_redirect_away_is_refused(web: LoopbackWeb, client: httpx.AsyncClient) -> None:
    web.route(
        "/proxy/res/v1/web/search",
        lambda req: Response(302, b"internal", headers={"Location": "http://10.0.0.5/admin"}),
    )
    backend = brave(web.url("/proxy"), client)
    with pytest.raises(BackendUnavailableError, match=r"another host, 10\.0\.0\.5; not followed"):
        await backend.search(WEB_Q)


# -- check


async def test_check_reports_the_quota(fake: FakeBrave, backend: BraveBackend) -> None:
    fake.used_this_month = 500
    result = await backend.check()
    assert result == BackendCheck(
        True,
        f"Brave Search at {backend.base_url} works with the key in $BRAVE_API_KEY; "
        "1499 requests left in this plan's period",
        1499,
        1,
    )
    (sent,) = fake.requests
    assert sent.params["q"] == "weather" and sent.params["count"] == "1"


async def test_check_with_a_bad_key_says_what_to_do(
    fake: FakeBrave, web: LoopbackWeb, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRAVE_API_KEY", "nope")
    result = await brave(web.base_url, client).check()
    assert not result.ok and result.requests == 1
    assert "Brave rejected the API key in $BRAVE_API_KEY" in result.message
    assert "api-dashboard.search.brave.com" in result.message


def test_a_brave_table_in_the_config_file(
    tmp_path: Path, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_KEY", "k")
    path = tmp_path / "monitor.toml"
    path.write_text(
        '[[search.backends]]\nkind = "brave"\napi_key_env = "MY_KEY"\ncountry = "NL"\n'
        "images_count = 50\n"
    )
    (cfg,) = load_settings(path).search.backends
    backend = create_backend(cfg, client)
    assert isinstance(backend, BraveBackend)
    assert (backend.options.country, backend.options.images_count) == ("NL", 50)
    assert backend._key == "k"


async def test_a_one_per_second_plan_is_paced_not_refused(
    web: LoopbackWeb, client: httpx.AsyncClient
) -> None:
    fake = FakeBrave(api_key=KEY, limits=(1, 2000))
    fake.enforce_per_second = True
    fake.install(web)
    backend = brave(web.base_url, client)
    queries = [SearchQuery(f'"Name {i}"', ResultKind.WEB) for i in range(3)]
    started = time.monotonic()
    answers = await asyncio.gather(*(backend.search(q) for q in queries))
    assert time.monotonic() - started >= 1.9  # one a second
    assert [a.requests for a in answers] == [1, 1, 1]  # none was refused and asked again
    assert len(fake.requests) == 3
    assert all(a.rate == RateInfo(limit=1, remaining=0, reset_seconds=1) for a in answers)
