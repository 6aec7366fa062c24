"""The SerpApi backend against the loopback fake (monitor.testing.serpapi)."""

from __future__ import annotations

import json

import httpx
import pytest

from monitor.config import SearchBackendConfig
from monitor.errors import ConfigError
from monitor.search import (
    BackendCheck,
    BackendRefusedError,
    BackendUnavailableError,
    EnginesUnresponsiveError,
    RateLimitedError,
    SearchBackend,
    SerpApiBackend,
    create_backend,
)
from monitor.testing.serpapi import FakeSerpApi
from monitor.testing.web import LoopbackWeb
from monitor.types import ResultKind, SearchHit
from tests.search_support import IMAGES_Q, WEB_Q

KEY = "serp-test-key-abcdef0123456789"
ALL = ["google", "google_images", "bing_images", "yandex_images"]


@pytest.fixture
def fake(web: LoopbackWeb) -> FakeSerpApi:
    f = FakeSerpApi(api_key=KEY)
    assert f.install(web) == web.base_url
    return f


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)


def serpapi(url: str, client: httpx.AsyncClient, **cfg: object) -> SerpApiBackend:
    backend = create_backend(SearchBackendConfig(kind="serpapi", url=url, **cfg), client)
    assert isinstance(backend, SerpApiBackend) and isinstance(backend, SearchBackend)
    return backend


@pytest.fixture
def backend(fake: FakeSerpApi, web: LoopbackWeb, client: httpx.AsyncClient) -> SerpApiBackend:
    return serpapi(web.base_url, client, engines=ALL)


def image(n: int, **extra: object) -> dict[str, object]:
    return {
        "link": f"https://pics.example/{n}",
        "original": f"https://img.example/{n}.jpg",
        "thumbnail": f"https://serpapi.com/thumb/{n}",
        "title": f"photo {n}",
        "source": "pics.example",
        **extra,
    }


# -- results


async def test_web_query_asks_google_only(fake: FakeSerpApi, backend: SerpApiBackend) -> None:
    fake.add_result(
        "google",
        "Jane Doe",
        {"link": "https://forum.example/t/1", "title": "A thread", "snippet": "posted by x"},
    )
    answer = await backend.search(WEB_Q)
    assert answer.hits == [
        SearchHit(
            backend=backend.name,
            query=WEB_Q,
            page_url="https://forum.example/t/1",
            title="A thread",
            snippet="posted by x",
            engine="google",
        )
    ]
    assert answer.requests == 1 and not answer.partial
    assert [r.engine for r in fake.requests] == ["google"]


async def test_image_query_fans_out_to_every_image_engine(
    fake: FakeSerpApi, backend: SerpApiBackend
) -> None:
    fake.add_result("google_images", "Jane Doe", image(1))
    fake.add_result("bing_images", "Jane Doe", image(2))
    fake.add_result("yandex_images", "Jane Doe", image(3))
    fake.add_result("yandex_images", "Jane Doe", image(1))  # the same image twice: one hit
    answer = await backend.search(IMAGES_Q)
    assert sorted((h.engine, h.page_url, h.image_url) for h in answer.hits) == [
        ("bing_images", "https://pics.example/2", "https://img.example/2.jpg"),
        ("google_images", "https://pics.example/1", "https://img.example/1.jpg"),
        ("yandex_images", "https://pics.example/3", "https://img.example/3.jpg"),
    ]
    assert answer.requests == 3 and not answer.partial
    assert sorted(r.engine for r in fake.requests) == [
        "bing_images",
        "google_images",
        "yandex_images",
    ]
    assert all(
        h.thumbnail_url and h.thumbnail_url.startswith("https://serpapi.com/") for h in answer.hits
    )


async def test_image_without_original_falls_back_to_its_page(
    fake: FakeSerpApi, backend: SerpApiBackend
) -> None:
    fake.add_results(
        "google_images",
        "Jane Doe",
        [
            {"link": "https://pics.example/a", "thumbnail": "https://t/a"},
            {"source": "https://pics.example/b"},  # no link either: source when it is a URL
            {"source": "pics.example", "title": "nothing usable"},
        ],
    )
    hits = (await backend.search(IMAGES_Q)).hits
    assert [(h.page_url, h.image_url) for h in hits] == [
        ("https://pics.example/a", None),
        ("https://pics.example/b", None),
    ]


async def test_safe_search_is_off_for_each_engine(
    fake: FakeSerpApi, backend: SerpApiBackend
) -> None:
    for engine in ("google_images", "bing_images"):
        fake.add_result(engine, "Jane Doe", image(9, adult=True))
    fake.add_result("google", "Jane Doe", {"link": "https://x.example/", "adult": True})
    assert len((await backend.search(IMAGES_Q)).hits) == 1  # same image from two engines
    assert len((await backend.search(WEB_Q)).hits) == 1
    sent = {r.engine: r.params for r in fake.requests}
    assert sent["google"]["safe"] == "off"
    assert sent["google_images"]["safe"] == "off"
    assert sent["bing_images"]["safeSearch"] == "off"


async def test_each_engine_pages_its_own_way(
    fake: FakeSerpApi, web: LoopbackWeb, client: httpx.AsyncClient
) -> None:
    backend = serpapi(web.base_url, client, engines=ALL, gl="nl", hl="nl", bing_count=50)
    await backend.search(WEB_Q, page=3)
    await backend.search(IMAGES_Q, page=2)
    sent = {r.engine: r.params for r in fake.requests}
    assert sent["google"] == {
        "engine": "google",
        "q": '"Jane Doe"',
        "safe": "off",
        "start": "20",
        "gl": "nl",
        "hl": "nl",
        "api_key": KEY,
    }
    assert sent["google_images"]["ijn"] == "1" and sent["google_images"]["gl"] == "nl"
    assert (sent["bing_images"]["first"], sent["bing_images"]["count"]) == ("51", "50")
    assert sent["yandex_images"]["p"] == "1" and sent["yandex_images"]["text"] == '"Jane Doe"'
    assert "q" not in sent["yandex_images"] and "gl" not in sent["bing_images"]
    assert {r.path for r in web.requests} == {"/search.json"}


async def test_paging_slices_the_fakes_results(fake: FakeSerpApi, backend: SerpApiBackend) -> None:
    fake.add_results("google", "Jane Doe", [{"link": f"https://r.example/{i}"} for i in range(13)])
    first = (await backend.search(WEB_Q, page=1)).hits
    second = (await backend.search(WEB_Q, page=2)).hits
    assert len(first) == 10 and [h.page_url for h in second] == [
        f"https://r.example/{i}" for i in (10, 11, 12)
    ]


async def test_no_results_is_an_empty_answer_not_a_failure(
    fake: FakeSerpApi, backend: SerpApiBackend
) -> None:
    """SerpApi says "Google hasn't returned any results for this query." with status Success."""
    answer = await backend.search(IMAGES_Q)
    assert answer.hits == [] and not answer.partial and answer.requests == 3
    answer = await backend.search(WEB_Q)
    assert answer.hits == [] and not answer.partial


# -- partial and failed searches


async def test_one_engine_failing_makes_the_answer_partial(
    fake: FakeSerpApi, backend: SerpApiBackend
) -> None:
    fake.add_result("google_images", "Jane Doe", image(1))
    fake.fail_next(
        200,
        engine="bing_images",
        error="We couldn't get valid results for this search. Please try again later.",
        search_status="Error",
    )
    fake.fail_next(503, engine="yandex_images", error="Service Unavailable")
    answer = await backend.search(IMAGES_Q)
    assert [h.engine for h in answer.hits] == ["google_images"]
    assert answer.partial and answer.requests == 3
    reasons = dict(answer.unanswered)
    assert set(reasons) == {"bing_images", "yandex_images"}
    assert "couldn't get valid results" in reasons["bing_images"]
    assert "HTTP 503" in reasons["yandex_images"]


async def test_no_results_reported_with_status_error_is_a_failure(
    fake: FakeSerpApi, backend: SerpApiBackend
) -> None:
    """Status Error means the search did not complete: "no results" is then not true."""
    fake.fail_next(
        200,
        engine="google",
        error="Google hasn't returned any results for this query.",
        search_status="Error",
    )
    with pytest.raises(EnginesUnresponsiveError) as info:
        await backend.search(WEB_Q)
    assert info.value.engines[0][0] == "google"


async def test_every_engine_failing_is_a_failed_search(
    fake: FakeSerpApi, backend: SerpApiBackend
) -> None:
    fake.fail_next(500, error="Internal error", times=3)
    with pytest.raises(EnginesUnresponsiveError, match="no engine answered") as info:
        await backend.search(IMAGES_Q)
    assert sorted(e for e, _ in info.value.engines) == [
        "bing_images",
        "google_images",
        "yandex_images",
    ]


async def test_invalid_key_is_one_clear_refusal(
    fake: FakeSerpApi, web: LoopbackWeb, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERPAPI_API_KEY", "wrong-key-123")
    backend = serpapi(web.base_url, client, engines=ALL)
    with pytest.raises(BackendRefusedError) as info:
        await backend.search(IMAGES_Q)
    message = str(info.value)
    assert message.startswith("SerpApi rejected the API key in $SERPAPI_API_KEY")
    assert "Invalid API key" in message and "wrong-key-123" not in message


async def test_invalid_key_reported_with_http_200_is_recognised(
    fake: FakeSerpApi, backend: SerpApiBackend
) -> None:
    fake.fail_next(200, error="Invalid API key. Your API key should be here: https://x")
    with pytest.raises(BackendRefusedError, match="rejected the API key"):
        await backend.search(WEB_Q)


async def test_out_of_searches_is_a_clear_refusal(
    fake: FakeSerpApi, backend: SerpApiBackend
) -> None:
    fake.used_this_month = fake.searches_per_month
    with pytest.raises(BackendRefusedError) as info:
        await backend.search(IMAGES_Q)
    assert "has run out of searches" in str(info.value) and "$SERPAPI_API_KEY" in str(info.value)


async def test_hourly_limit_is_rate_limited(fake: FakeSerpApi, backend: SerpApiBackend) -> None:
    fake.fail_next(429, error="Too many requests this hour.")
    with pytest.raises(RateLimitedError, match="more searches this hour"):
        await backend.search(WEB_Q)


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "[1]",
        json.dumps({"organic_results": "nope", "search_metadata": {"status": "Success"}}),
        json.dumps({"unexpected": 1}),
        "[" * 500,
    ],
)
async def test_malformed_answers(fake: FakeSerpApi, backend: SerpApiBackend, body: str) -> None:
    fake.fail_next(200, body=body)
    with pytest.raises(EnginesUnresponsiveError) as info:
        await backend.search(WEB_Q)
    assert "answer was not a SerpApi answer" in info.value.engines[0][1]


async def test_a_key_in_an_error_is_not_quoted(fake: FakeSerpApi, backend: SerpApiBackend) -> None:
    fake.fail_next(502, body=f"upstream said: api_key={KEY}\x1b[0m oops")
    with pytest.raises(EnginesUnresponsiveError) as info:
        await backend.search(WEB_Q)
    assert KEY not in str(info.value) and "***" in str(info.value) and "\x1b" not in str(info.value)


# -- configuration


def test_defaults(client: httpx.AsyncClient) -> None:
    backend = serpapi("", client)
    assert backend.engines == ("google", "google_images")
    assert backend.base_url == "https://serpapi.com" and backend.name == "serpapi@serpapi.com"
    assert backend.engines_for(ResultKind.IMAGES) == ("google_images",)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"engines": ["google", "duckduckgo"]}, "unknown engines 'duckduckgo'"),
        ({"engines": ["google_images"]}, "must include 'google'"),
        ({"engines": ["google"]}, "must include an image engine"),
        ({"num": 100}, "unknown key `num`"),
        ({"bing_count": 1000}, "`bing_count`"),
    ],
)
def test_bad_settings_are_config_errors(
    client: httpx.AsyncClient, extra: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        serpapi("", client, **extra)


def test_missing_key_names_the_variable(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SERPAPI_API_KEY")
    with pytest.raises(ConfigError, match=r"\$SERPAPI_API_KEY"):
        serpapi("", client)


# -- check


async def test_check_uses_the_free_account_api(fake: FakeSerpApi, backend: SerpApiBackend) -> None:
    fake.used_this_month = 10
    result = await backend.check()
    assert result == BackendCheck(
        True,
        f"SerpApi at {backend.base_url} works with the key in $SERPAPI_API_KEY (Free Plan); "
        "240 searches left this month; engines: google, google_images, bing_images, yandex_images",
        240,
        1,
    )
    assert fake.requests == [] and fake.account_requests == 1
    assert KEY not in result.message


async def test_check_with_no_searches_left_fails(
    fake: FakeSerpApi, backend: SerpApiBackend
) -> None:
    fake.used_this_month = 250
    result = await backend.check()
    assert not result.ok and result.quota_remaining == 0 and "no searches left" in result.message


async def test_check_with_a_bad_key(
    fake: FakeSerpApi, web: LoopbackWeb, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERPAPI_API_KEY", "nope")
    result = await serpapi(web.base_url, client).check()
    assert not result.ok and "SerpApi rejected the API key in $SERPAPI_API_KEY" in result.message


async def test_check_unreachable(client: httpx.AsyncClient) -> None:
    result = await serpapi("http://127.0.0.1:9", client, timeout=2).check()
    assert not result.ok and isinstance(result.message, str) and result.requests == 1


async def test_unreachable_search_is_a_failed_search(client: httpx.AsyncClient) -> None:
    backend = serpapi("http://127.0.0.1:9", client, timeout=2)
    with pytest.raises(EnginesUnresponsiveError) as info:
        await backend.search(WEB_Q)
    assert isinstance(info.value, BackendUnavailableError)
    assert "could not connect" in info.value.engines[0][1]


def test_fake_rejects_unknown_engines() -> None:
    with pytest.raises(ValueError, match="bing"):
        FakeSerpApi().add_result("bing", "x", {})


async def test_one_bad_answer_is_a_reason_not_a_crash(
    fake: FakeSerpApi, backend: SerpApiBackend
) -> None:
    fake.add_result("bing_images", "Jane Doe", image(4))
    fake.fail_next(200, body="{oops", engine="google_images")
    answer = await backend.search(IMAGES_Q)
    assert [h.engine for h in answer.hits] == ["bing_images"]
    assert "answer was not a SerpApi answer" in dict(answer.unanswered)["google_images"]
