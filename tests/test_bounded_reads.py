"""Bodies fetched outside the Fetcher (RDAP) are decoded here, bounded: a compression bomb
(br, gzip) answered by a hostile server stops at a cap instead of filling memory."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import brotli
import pytest

from monitor.cases.contacts import RDAP_MAX_BYTES, rdap_contacts
from monitor.config import Settings
from monitor.testing.web import LoopbackWeb, Response

IP_RDAP = {
    "objectClassName": "ip network",
    "entities": [
        {"roles": ["abuse"], "vcardArray": ["vcard", [["email", {}, "text", "abuse@net.test"]]]}
    ],
}
BOMB_SIZE = 200_000_000  # decoded bytes; the compressed answer is a few hundred bytes (br)


def _settings(tmp_path: Path, rdap: LoopbackWeb) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        fetch={"allow_private_networks": True, "timeout": 10},
        cases={"rdap_ip_url": rdap.url("/ip/"), "rdap_domain_url": ""},
    )


def _answer(body: bytes, encoding: str) -> Response:
    return Response(200, body, "application/rdap+json", {"Content-Encoding": encoding})


async def test_a_compressed_rdap_answer_is_decoded(tmp_path: Path) -> None:
    data = json.dumps(IP_RDAP).encode()
    with LoopbackWeb() as rdap:
        rdap.add("/ip/127.0.0.1", brotli.compress(data), headers={"Content-Encoding": "br"})
        found = await rdap_contacts(_settings(tmp_path, rdap), "http://127.0.0.1:9/page")
        assert [c.value for c in found] == ["abuse@net.test"]
        asked = [r for r in rdap.requests if r.path == "/ip/127.0.0.1"]
        assert "br" in asked[0].headers.get("accept-encoding", "")


@pytest.mark.parametrize("encoding", ["br", "gzip"])
async def test_an_rdap_compression_bomb_is_cut_off_not_inflated(
    tmp_path: Path, encoding: str
) -> None:
    raw = b"[" + b" " * BOMB_SIZE
    bomb = brotli.compress(raw, quality=5) if encoding == "br" else gzip.compress(raw, 6)
    del raw
    with LoopbackWeb() as rdap:
        rdap.route("/ip/127.0.0.1", lambda _req: _answer(bomb, encoding))
        tracemalloc.start()
        try:
            found = await rdap_contacts(_settings(tmp_path, rdap), "http://127.0.0.1:9/page")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert found == []  # the answer was not read: no contacts, no crash
    # A few times the cap at most (the decoded buffer and a copy), nowhere near 200 MB.
    assert peak < 8 * RDAP_MAX_BYTES + len(bomb) * 2
