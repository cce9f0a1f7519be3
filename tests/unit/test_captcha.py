"""The sign-up captcha's checks (mailgate.services.captcha.Captcha), with altcha's solver."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import altcha

from mailgate.clock import FixedClock
from mailgate.services.captcha import LIFETIME, Captcha


def solved(captcha: Captcha) -> str:
    challenge = altcha.Challenge.from_dict(captcha.challenge())
    solution = altcha.solve_challenge(challenge)
    assert solution is not None
    return altcha.Payload(challenge, solution).to_base64()


def test_a_solved_challenge_passes_and_names_its_nonce() -> None:
    captcha = Captcha(b"secret", FixedClock(datetime(2026, 1, 5, tzinfo=UTC)), cost=1000)
    payload = solved(captcha)
    nonce = captcha.check(payload)
    assert nonce == json.loads(base64.b64decode(payload))["challenge"]["parameters"]["nonce"]


def test_expired_forged_or_foreign_payloads_fail() -> None:
    clock = FixedClock(datetime(2026, 1, 5, tzinfo=UTC))
    captcha = Captcha(b"secret", clock, cost=1000)
    payload = solved(captcha)
    assert Captcha(b"other secret", clock, cost=1000).check(payload) is None
    doc = json.loads(base64.b64decode(payload))
    doc["solution"]["counter"] += 1
    assert captcha.check(base64.b64encode(json.dumps(doc).encode()).decode()) is None
    doc = json.loads(base64.b64decode(payload))
    doc["challenge"]["parameters"]["data"]["expires"] += 86400  # signed: cannot be stretched
    assert captcha.check(base64.b64encode(json.dumps(doc).encode()).decode()) is None
    for junk in ("", "not base64!", base64.b64encode(b"[]").decode(), "A" * 5000):
        assert captcha.check(junk) is None
    clock.advance(seconds=LIFETIME.total_seconds() + 1)
    assert captcha.check(payload) is None
