"""bench/run.py: the harness's pure parts."""

from __future__ import annotations

import httpx

from bench import run


def test_the_statement_load_sends_the_cookie_the_first_page_set() -> None:
    # As a browser does: the first page's Set-Cookie (its CSRF token added) replaces the link's cookie.
    first = httpx.Response(200, headers={"set-cookie": "encours_session=new.sig; path=/; httponly; samesite=lax"})
    assert run.kept_cookie(first, "encours_session=old.sig") == "encours_session=new.sig"
    unchanged = httpx.Response(200)
    assert run.kept_cookie(unchanged, "encours_session=new.sig") == "encours_session=new.sig"


def _phase(app_ms: float, postgres_ms: float | None, requests: int, per_s: float) -> dict[str, object]:
    return {"server_cpu_ms_per_request": app_ms, "postgres_cpu_ms_per_request": postgres_ms, "requests": requests,
            "requests_per_s": per_s, "non_2xx_3xx": 0, "socket_errors": "", "p99_ms": 2.0,
            "machine_busy_cores": 1.0}


def test_each_duplicate_phase_is_taken_against_the_new_phases_either_side() -> None:
    # A machine slowing down steadily: new events 1.0, 1.2, 1.4 ms; duplicates 0.33, 0.39 ms.
    new = [_phase(0.8, 0.2, 1000, 500.0), _phase(1.0, 0.2, 1000, 500.0), _phase(1.2, 0.2, 1000, 500.0)]
    duplicates = [_phase(0.3, 0.03, 4000, 2000.0), _phase(0.36, 0.03, 4000, 2000.0)]
    ratios = run.round_ratios(new, duplicates)
    assert [round(r, 3) for r in ratios] == [round(0.33 / 1.1, 3), round(0.39 / 1.3, 3)]


def test_phases_pooled_weigh_cpu_by_requests_and_rates_by_time() -> None:
    pooled = run.pooled([_phase(1.0, 0.5, 1000, 500.0), _phase(2.0, None, 3000, 1000.0)])
    assert pooled["requests"] == 4000
    assert pooled["requests_per_s"] == 4000 / (2.0 + 3.0)
    assert pooled["server_cpu_ms_per_request"] == 1.75
    assert "postgres_cpu_ms_per_request" not in pooled  # not measured in every phase: no figure
    assert pooled["machine_busy_cores"] == 1.0
    assert pooled["p99_ms"] == 2.0
    assert run.whole_cpu_ms(pooled) == 1.75


def test_the_open_loop_rate_is_half_the_median_of_the_maximum_and_its_rechecks() -> None:
    # The maximum measured while the VM ran fast (156), then twice right before the open loop.
    ctx = run.Context(url="sqlite://", duration=10, connections=32, threads=2, workers=2)
    asked: list[int] = []
    again = iter([120.0, 110.0])

    def recheck(seconds: int) -> dict[str, object]:
        asked.append(seconds)
        return {"requests_per_s": next(again)}

    rate, basis = run.steady_rate(156.0, recheck, ctx)
    assert (rate, asked) == (60.0, [3, 3])
    assert basis["maxima_per_s"] == [156.0, 120.0, 110.0] and basis["rate_basis_per_s"] == 120.0
    alone = run.Context(url="sqlite://", duration=10, connections=32, threads=2, workers=2, rate_rechecks=0)
    assert run.steady_rate(156.0, recheck, alone)[0] == 78.0  # the rule until tail14


def test_card_successes_are_prepared_again_twice_as_many_while_a_run_wraps_around() -> None:
    assert run.successes_again(2_000, 2_000, tries=1) is None  # each sent once
    assert run.successes_again(2_001, 2_000, tries=1) == 4_000  # not from what it sent: resent ones were cheap
    assert run.successes_again(30_000, 4_000, tries=2) == 8_000
    assert run.successes_again(30_000, 8_000, tries=run.SUCCESS_TRIES) is None  # the last wrap stays flagged
