"""core/verification.py: a third-party service's sign-up or verification mail, and not a
person writing about one."""

from __future__ import annotations

import pytest

from mailgate.core.verification import third_party_verification


@pytest.mark.parametrize(
    ("sender", "subject", "text"),
    [
        ("noreply@github.example", "[GitHub] Please verify your device",
         "Verification code: 482913\nIf you did not try to sign in, change your password."),
        ("no-reply@accounts.example", "Confirm your email address",
         "Thanks for signing up! Confirm your email address:\nhttps://accounts.example/c/abc"),
        ("verify@service.example", "Your security code", "Your code is 731204."),
        ("account-security-noreply@cloud.example", "Code de vérification",
         "Votre code de vérification : 731 204"),
        ("ne-pas-repondre@banque.example", "Activez votre compte",
         "Bienvenue ! Activez votre compte en suivant ce lien : https://banque.example/a/1"),
        ("notifications@tool.example", "Verify your email",
         "Please verify your email address by clicking https://tool.example/v?t=1"),
    ],
)
def test_sign_up_and_verification_mail_is_recognised(sender: str, subject: str, text: str):
    assert third_party_verification(sender, subject, text) is not None


@pytest.mark.parametrize(
    ("sender", "subject", "text"),
    [
        # A person writing about a code or a sign-up.
        ("jean@client.example", "Verification code", "My verification code 482913 fails."),
        ("marie@client.example", "Confirm your email address",
         "The confirm your email address link https://x.example does not work."),
        # A no-reply sender without a code or a confirmation link.
        ("noreply@shop.example", "Your invoice", "Invoice 2024-0012, total 48,00 EUR."),
        ("noreply@shop.example", "Confirm your email address", "Reply to confirm (no link)."),
        ("no-reply@shop.example", "Order 123456 shipped", "Your order 123456 is on its way."),
    ],
)
def test_other_mail_is_not(sender: str, subject: str, text: str):
    assert third_party_verification(sender, subject, text) is None
