"""The per-call counts render as the Prometheus counter and histogram they stand for."""

from service_runtime.metrics import RpcMetrics


def test_a_duration_on_a_bucket_bound_counts_in_that_bucket_and_buckets_are_cumulative() -> None:
    metrics = RpcMetrics()
    calls = metrics.method("/pkg.Service/Call")
    for code, seconds in [("OK", 0.0005), ("OK", 0.0007), ("NOT_FOUND", 7.0)]:
        calls.record(code, seconds)
    handled, timed = metrics.collect()
    assert {(s.name, s.labels["grpc_code"]): s.value for s in handled.samples} == {
        ("grpc_server_handled_total", "OK"): 2, ("grpc_server_handled_total", "NOT_FOUND"): 1}
    buckets = {s.labels["le"]: s.value for s in timed.samples if s.name.endswith("_bucket")}
    assert (buckets["0.0005"], buckets["0.001"], buckets["5.0"], buckets["+Inf"]) == (1, 2, 2, 3)
    [total] = [s.value for s in timed.samples if s.name.endswith("_sum")]
    assert total == 0.0005 + 0.0007 + 7.0
