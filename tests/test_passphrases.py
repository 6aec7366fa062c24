"""Passphrases (web app, operators) are kept only as scrypt hashes that verify what they should."""

from __future__ import annotations

import pytest

from monitor import passphrases


@pytest.fixture(autouse=True)
def _cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passphrases, "COST", 2**10)


def test_a_hash_verifies_its_passphrase_only_and_never_holds_it() -> None:
    stored = passphrases.hash_passphrase("correct horse battery")
    assert "correct horse" not in stored and stored.startswith("scrypt$1024$")
    assert passphrases.verify_passphrase(stored, "correct horse battery")
    assert not passphrases.verify_passphrase(stored, "correct horse batterY")
    assert stored != passphrases.hash_passphrase("correct horse battery")  # salted


def test_a_hash_made_at_an_older_cost_still_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    old = passphrases.hash_passphrase("a long passphrase")
    monkeypatch.setattr(passphrases, "COST", 2**11)
    assert passphrases.verify_passphrase(old, "a long passphrase")


@pytest.mark.parametrize("bad", ["", "scrypt$x", "bcrypt$1$2$3$4$5", "scrypt$1024$8$1$!!$??"])
def test_a_malformed_hash_never_verifies_and_never_raises(bad: str) -> None:
    assert passphrases.verify_passphrase(bad, "anything") is False
