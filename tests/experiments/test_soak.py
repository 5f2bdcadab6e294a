"""The real service under a short soak: valid, invalid and oversized requests from many clients
while slow clients trickle bytes. The long run (about 10,000 requests) is
benchmarks/soak_service.py; see results/reliability.md."""

from __future__ import annotations

from deepautodnn.experiments.soak import soak


def test_soak_no_5xx_every_invalid_request_4xx_slow_clients_cut_off(tiny_run, data_dir):
    run_dir, _ = tiny_run
    result = soak(
        run_dir,
        requests=1500,
        clients=16,
        slow_clients=4,
        warmup=300,
        client_timeout=2,
        time_limit=120,
        data_dir=data_dir,
    )
    assert result["finished_in_time"] and result["answered"] == 1500, result
    assert result["server_errors_5xx"] == 0, result["by_kind"]
    assert result["unexpected_status"] == {}, result["by_kind"]  # each kind got exactly its status
    assert result["connection_errors"] == {} and result["wrong_answers"] == 0
    kinds = {key.rsplit(" ", 1)[0] for key in result["by_kind"]}
    assert {"garbage-image", "bomb-image", "oversized-declared", "oversized-chunked", "malformed-multipart"} <= kinds
    # Slow clients neither blocked the others nor kept their connections.
    assert result["valid_latency_ms"]["p99"] < 2000
    for slow in result["slow_client_outcomes"]:
        assert slow["outcome"] == "closed by the server" and slow["seconds"] < 2 + 2, slow
        assert slow["server_answer"] == ("HTTP/1.1 408 Request Timeout" if slow["slow"] == "body" else None)
    assert result["server_alive_after"]
    assert result["server_rss_mib"]["growth_percent"] < 10
