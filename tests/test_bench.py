"""`rewardserve bench` end to end on the tiny bundle: a real server process, the raw engine and
the naive baseline server, all on the same HH sequences, in one report."""

import re

from rewardserve.bench.load import server_counts
from rewardserve.cli import main


def figure(report: str, label: str) -> float:
    match = re.search(rf"^  {re.escape(label)}\s+([\d.]+)", report, re.MULTILINE)
    assert match, f"{label!r} missing from the report:\n{report}"
    return float(match.group(1))


def test_bench_prints_server_engine_and_baseline_figures_and_their_ratios(tiny_bundle, tiny_checkpoint, capsys):
    args = ["bench", "--bundle", str(tiny_bundle), "--baseline-checkpoint", str(tiny_checkpoint)]
    assert main([*args, "--sequences", "96", "--concurrency", "6", "--items", "4", "--single-requests", "8"]) == 0
    report = capsys.readouterr().out
    assert "96 distinct HH sequences" in report
    # the server, in both load shapes, and the naive baseline answered every request
    assert report.count("errors 0") == 3
    ratios = ("server / engine throughput", "server / naive throughput", "1-item p50 / engine batch-1 p50")
    for label in (*ratios, "128 x 1 / 6 x 4 throughput"):
        assert figure(report, label) > 0
    for shape in ("6 x 4", "128 x 1"):  # the server's CPU per request: its event loop's and its workers'
        cpu = re.search(rf"CPU, {shape}\s+event loop\s+([\d.]+) ms/request.*workers\s+([\d.]+) ms/request", report)
        assert cpu and float(cpu.group(1)) > 0 and float(cpu.group(2)) > 0, report
    assert 0 <= figure(report, "padding") < 100
    sizes = re.search(r"batch sizes\s+(.*)", report).group(1)
    assert sum(int(n) for n in re.findall(r": (\d+)", sizes)) == figure(report, "engine calls")


def test_server_counts_are_differences_between_two_scrapes():
    before = {
        "rewardserve_batch_size_count": 2,
        "rewardserve_batch_size_sum": 10,
        "rewardserve_batch_tokens_sum": 1000,
        "rewardserve_padding_tokens_total": 100,
        'rewardserve_batch_size_bucket{le="4.0"}': 1,
        'rewardserve_batch_size_bucket{le="8.0"}': 2,
        'rewardserve_batch_size_bucket{le="+Inf"}': 2,
    }
    after = {
        "rewardserve_batch_size_count": 5,
        "rewardserve_batch_size_sum": 25,
        "rewardserve_batch_tokens_sum": 3000,
        "rewardserve_padding_tokens_total": 200,
        'rewardserve_batch_size_bucket{le="4.0"}': 2,
        'rewardserve_batch_size_bucket{le="8.0"}': 5,
        'rewardserve_batch_size_bucket{le="+Inf"}': 5,
    }
    counts = server_counts(before, after)
    assert (counts.batches, counts.sequences, counts.padding_ratio) == (3, 15, 0.05)
    assert counts.batch_sizes == {"4.0": 1, "8.0": 2, "+Inf": 0}
