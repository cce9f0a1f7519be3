"""Which ticket a mail threads into: token, then In-Reply-To, References, subject tag; the
guessable three only for a sender allowed on that ticket."""

from __future__ import annotations

from mailgate.core.match import PRIORITY, Candidate, choose, subject_ticket_ids


def test_priority_order_is_token_then_headers_then_subject() -> None:
    assert PRIORITY == ("token", "in-reply-to", "references", "subject")


def test_token_wins_over_every_other_clue() -> None:
    chosen = choose(
        [
            Candidate(1, "subject", True),
            Candidate(2, "references", True),
            Candidate(3, "in-reply-to", True),
            Candidate(4, "token", True),
        ]
    )
    assert chosen == Candidate(4, "token", True)


def test_in_reply_to_before_references_before_subject() -> None:
    cands = [Candidate(7, "subject", True), Candidate(8, "references", True)]
    assert choose(cands) == Candidate(8, "references", True)
    assert choose([*cands, Candidate(9, "in-reply-to", True)]) == Candidate(9, "in-reply-to", True)


def test_a_verified_token_stands_on_its_own() -> None:
    # The ingest only makes a token candidate for the account the token is bound to.
    assert choose([Candidate(5, "token", False)]) == Candidate(5, "token", False)


def test_guessable_clues_never_thread_a_stranger() -> None:
    cands = [
        Candidate(1, "in-reply-to", False),
        Candidate(2, "references", False),
        Candidate(3, "subject", False),
    ]
    assert choose(cands) is None


def test_a_refused_clue_falls_through_to_an_allowed_one() -> None:
    # In-Reply-To points at someone else's ticket; the sender's own tag still threads.
    cands = [Candidate(1, "in-reply-to", False), Candidate(2, "subject", True)]
    assert choose(cands) == Candidate(2, "subject", True)


def test_no_clue_means_a_new_ticket() -> None:
    assert choose([]) is None


def test_subject_tags() -> None:
    assert subject_ticket_ids("Re: [#42] Imprimante en panne") == (42,)
    assert subject_ticket_ids("TR: RE: [#42] [#7] re [#42]") == (42, 7)
    assert subject_ticket_ids("#42 [42] [# 42] [#] [#abc]") == ()
    assert subject_ticket_ids("[#12345678901]") == ()  # longer than any id we hand out
