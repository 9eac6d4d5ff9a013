"""The store's draft → job path: confirming is constant work; each recipient's row is written right
before its request goes (or when the job stops), and a restart picks up where the rows end."""

from __future__ import annotations

from bot.core.store import RecipientState, Store, _runs


def payload(n: int, segments: int = 2) -> dict:
    return {
        "user_id": "U1",
        "channel_id": "C1",
        "total_segments": n * segments,
        "recipients": [
            {
                "e164": f"+6581{i:06d}",
                "cc": 65,
                "national": f"81{i:06d}",
                "region": "SG",
                "message": f"Hi P{i}",
                "segments": segments,
            }
            for i in range(n)
        ],
    }


def confirmed(store: Store, n: int) -> tuple[str, str]:
    draft_id = store.create_draft("U1")
    assert store.fill_draft(draft_id, payload(n))
    job_id, created = store.claim_draft_into_job(
        draft_id, kind="batch", created_by="U1", total=n, est_segments=2 * n
    )
    assert created
    return draft_id, job_id


def rows(store: Store, job_id: str) -> dict[int, str]:
    return dict(store.db.execute("SELECT idx, state FROM recipients WHERE job_id = ?", (job_id,)).fetchall())


def test_the_draft_keeps_only_a_count_and_confirming_writes_no_recipient_rows(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    draft_id, job_id = confirmed(store, 5)
    _, state, head, linked = store.get_draft(draft_id)
    assert (state, linked, head["count"]) == ("confirmed", job_id, 5)
    assert "recipients" not in head
    assert rows(store, job_id) == {}
    summary = store.summary(job_id)
    assert (summary.total, summary.pending, summary.accepted) == (5, 5, 0)
    pending = store.pending(job_id)
    assert [(p.idx, p.number.e164, p.message) for p in pending] == [
        (i, f"+6581{i:06d}", f"Hi P{i}") for i in range(5)
    ]
    again = store.claim_draft_into_job(draft_id, kind="batch", created_by="U1", total=5, est_segments=10)
    assert again == (job_id, False)


def test_rows_are_written_in_flight_as_they_are_sent_and_the_draft_copy_goes_at_the_end(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    _, job_id = confirmed(store, 5)
    store.mark_in_flight(job_id, [0, 1])
    assert rows(store, job_id) == {0: "in_flight", 1: "in_flight"}
    assert [p.idx for p in store.pending(job_id)] == [2, 3, 4]
    store.mark_in_flight(job_id, [2, 3, 4])
    assert set(rows(store, job_id).values()) == {"in_flight"}
    assert store.pending(job_id) == []
    assert store.db.execute("SELECT COUNT(*) FROM draft_recipients").fetchone()[0] == 0
    assert store.db.execute("SELECT COUNT(*) FROM job_sources").fetchone()[0] == 0
    stored = store.recipients(job_id)
    assert [(r.idx, r.number.e164, r.message) for r in stored][:2] == [
        (0, "+6581000000", "Hi P0"),
        (1, "+6581000001", "Hi P1"),
    ]


def test_a_restart_resumes_from_the_stored_rows_and_never_resends_in_flight_ones(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    _, job_id = confirmed(store, 6)
    store.mark_in_flight(job_id, [0, 1, 2])
    store.close()  # the process dies with three requests in flight and three never sent

    store = Store(tmp_path / "s.sqlite3")
    assert store.in_flight_to_unknown(job_id) == 3
    assert [p.idx for p in store.pending(job_id)] == [3, 4, 5]
    summary = store.summary(job_id)
    assert (summary.unknown, summary.pending, summary.total) == (3, 3, 6)


def test_a_stopped_job_stores_every_unsent_recipient_as_failed(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    _, job_id = confirmed(store, 5)
    store.mark_in_flight(job_id, [0])
    assert store.queued_to_failed(job_id, "Not sent: stopped.") == 4
    states = rows(store, job_id)
    assert states == {0: "in_flight", 1: "failed", 2: "failed", 3: "failed", 4: "failed"}
    assert all(
        r.code == "NOT_SENT" and r.retryable for r in store.recipients(job_id, [RecipientState.FAILED])
    )


def test_one_unsendable_recipient_is_failed_without_touching_the_others(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    _, job_id = confirmed(store, 4)
    store.fail_unsent(job_id, 2, "INVALID", "The message is empty.")
    assert rows(store, job_id) == {0: "queued", 1: "queued", 2: "failed"}
    assert [p.idx for p in store.pending(job_id)] == [0, 1, 3]


def test_the_daily_budget_counts_recipients_not_yet_stored(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    _, job_id = confirmed(store, 10)  # 2 segments each
    assert store.segments_today("U1") == 20
    store.mark_in_flight(job_id, range(4))
    assert store.segments_today("U1") == 20  # 4 rows of 2 stored, 6 of 2 still counted from the draft
    store.queued_to_failed(job_id, "Not sent.")
    assert store.segments_today("U1") == 8  # failed unsent recipients cost nothing


def test_discarding_a_draft_drops_its_recipients(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    draft_id = store.create_draft("U1")
    store.fill_draft(draft_id, payload(3))
    assert store.discard_draft(draft_id)
    assert store.db.execute("SELECT COUNT(*) FROM draft_recipients").fetchone()[0] == 0
    try:
        store.claim_draft_into_job(draft_id, kind="batch", created_by="U1", total=3, est_segments=3)
    except LookupError:
        pass
    else:
        raise AssertionError("a discarded draft was confirmed")
    assert store.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


def test_runs_of_consecutive_indices():
    assert _runs([0, 1, 2, 5, 6, 9]) == [(0, 2), (5, 6), (9, 9)]
    assert _runs([7]) == [(7, 7)]
