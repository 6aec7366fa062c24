"""`subject remove NAME` erases everything about the person: after it, no file under the data
folder (the SQLite database with its -wal/-shm files, the outbox Maildir, evidence, image
copies) holds their name, an alias or their e-mail address, in any byte."""

from __future__ import annotations

import zlib
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from monitor.cli import main
from monitor.demo.photos import photo_bytes
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb

NAME = "Jane Erasmus"
ALIAS = "J. Erasmus-Quist"
EMAIL = "jane.erasmus@example.org"
OTHER = "Bob Bystander"
OTHER_EMAIL = "bob.bystander@example.org"
PAGE = """<html lang="en"><head><title>{who} photos</title></head><body><h1>{who}</h1>
<p>contact {who} / {alias}</p><img src="/img/{n}.jpg"><img src="/img/other.jpg"></body></html>"""


def _cli(capsys: pytest.CaptureFixture[str], cfg: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--config", str(cfg), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _needles(*values: str) -> list[bytes]:
    out: set[bytes] = set()
    for value in values:
        for form in (value, value.lower(), quote(value), quote_plus(value), quote(value, safe="")):
            out.add(form.encode("utf-8"))
            out.add(form.encode("utf-16-le"))
    return sorted(out)


def _gunzip(data: bytes) -> bytes:
    """Every member of a (multi-member, as WARCs are) gzip file, decompressed."""
    out = b""
    while data[:2] == b"\x1f\x8b" and len(out) < 50_000_000:
        d = zlib.decompressobj(wbits=31)
        try:
            out += d.decompress(data, 50_000_000)
        except zlib.error:
            break
        data = d.unused_data
    return out


def _files_holding(folder: Path, needles: list[bytes]) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if data[:2] == b"\x1f\x8b":  # the evidence WARCs are gzipped: look inside too
                data += _gunzip(data)
            hits = [n for n in needles if n in data]
            if hits:
                found[str(path.relative_to(folder))] = hits
    return found


@pytest.fixture
def scanned(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Two people enrolled and scanned through the CLI against a loopback web; alerts written
    to the local outbox Maildir (no SMTP server configured), evidence captured, image copies
    kept, a removal request drafted."""
    with LoopbackWeb() as web:
        search = FakeSearxng()
        searxng = search.install(web)
        for n, (who, alias) in enumerate(((NAME, ALIAS), (OTHER, OTHER)), start=1):
            web.add(f"/img/{n}.jpg", photo_bytes(10 + n, (640, 480)), "image/jpeg")
            url = web.add(f"/post/{n}.html", PAGE.format(who=who, alias=alias, n=n))
            search.add_result(who, "general", {"url": url, "title": f"{who} photos"})
            search.add_result(alias, "images", {"url": url, "img_src": web.url(f"/img/{n}.jpg")})
        web.add("/img/other.jpg", photo_bytes(99, (640, 480)), "image/jpeg")
        data = tmp_path / "data"
        cfg = tmp_path / "monitor.toml"
        cfg.write_text(
            f'data_dir = "{data}"\n'
            f'[[search.backends]]\nkind = "searxng"\nurl = "{searxng}"\n'
            "[fetch]\nallow_private_networks = true\n"
            '[cases]\nscreenshots = false\nrdap_domain_url = ""\nrdap_ip_url = ""\n'
        )
        for n, (who, alias, email) in enumerate(
            ((NAME, ALIAS, EMAIL), (OTHER, "", OTHER_EMAIL)), start=1
        ):
            argv = ["subject", "add", who, "--email", email, "--keep-image-copies"]
            argv += ["--alias", alias] if alias else []
            code, _, err = _cli(capsys, cfg, *argv)
            assert code == 0, err
            photo = tmp_path / f"ref{n}.jpg"
            photo.write_bytes(photo_bytes(10 + n, (640, 480)))
            assert _cli(capsys, cfg, "enroll", who, str(photo))[0] == 0
            photo.unlink()
            code, out, err = _cli(capsys, cfg, "scan", who)
            assert code == 0 and "1/1 delivered" in out, out + err
        assert _cli(capsys, cfg, "case", "confirm", "1")[0] == 0
        code, out, err = _cli(capsys, cfg, "case", "notice", "1", "--reply-to", EMAIL)
        assert code == 0, err
        yield cfg, data


@pytest.mark.sqlite_default  # reads the SQLite files byte by byte
def test_subject_remove_leaves_no_trace_of_the_person_in_any_file(
    scanned: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, data = scanned
    needles = _needles(NAME, ALIAS, EMAIL)
    before = _files_holding(data, needles)
    # The test sees what it looks for: the outbox, the evidence and the database hold it.
    assert any(p.startswith("outbox/") for p in before), before
    assert any(p.startswith("evidence/") for p in before), before
    assert any(p.startswith("monitor.db") for p in before), before
    bystander = _needles(OTHER_EMAIL)
    assert any(p.startswith("outbox/") for p in _files_holding(data, bystander))

    code, out, err = _cli(capsys, cfg, "subject", "remove", NAME, "--yes")
    assert code == 0, err

    assert _files_holding(data, needles) == {}
    # The other person's alert, case and evidence are still there.
    assert any(p.startswith("outbox/") for p in _files_holding(data, bystander))
    code, out, _ = _cli(capsys, cfg, "cases", "--json")
    assert code == 0 and OTHER in out and NAME not in out
