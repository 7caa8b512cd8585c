"""`make bench` works as a user runs it: every comparison runs and its table is printed.

A benchmark asserts no speed (tests check behaviour, benchmarks print figures): this checks that
each row and line is there and holds figures, on small synthetic splits, one round, no presets.
"""

import re

from support import mnist
from support.synthetic import write_processed


def test_bench_prints_every_comparison(tmp_path):
    processed = write_processed(tmp_path / "processed", n_train=1280, n_val=1000, n_test=200)
    result = mnist("bench", "--rounds", "1", "--skip-presets", "--threads", "1",
                     "--processed-dir", str(processed), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"^threads: 1 \(torch ", out, re.M)
    number = r"\s+[\d.]+\s+\|"
    for protocol in ("tutorial: 100 steps + 20 validations of 1000", "one epoch (859 steps of 64), no validation"):
        assert re.search(rf"^\| {re.escape(protocol)}, bare loop\s+\|{number}{number}\s+-\s+\|\s+-\s+\|$", out, re.M)
        assert re.search(rf"^\| {re.escape(protocol)}, pipeline\s+\|{number * 4}$", out, re.M)
        assert re.search(rf"{re.escape(protocol)}: data time [\d.]+% of the pipeline's loop", out)
    assert re.search(r"^\| one epoch .*, Lightning alone \(nothing of the pipeline\)\s+\|" + number * 2
                     + r"\s+-\s+\|\s+[\d.]+\s+\|$", out, re.M)
    assert re.search(r"pipeline end of run \(.*\): median [\d.]+ s", out)
    assert re.search(r"whole process, tutorial preset: bare script [\d.]+ s, pipeline [\d.]+ s, ratio [\d.]+", out)
    assert re.search(r"breakdown \(last run\): startup [\d.]+ s, setup [\d.]+ s, train_loop [\d.]+ s, "
                     r"end_of_run [\d.]+ s, exit -?[\d.]+ s", out)
    assert re.search(r"mnist predict, one picture, the champion, cold process: bare process .* [\d.]+ s; "
                     r"first call \(fills the cache\) [\d.]+ s", out)
    assert re.search(r"store unchanged since the last call: [\d.]+ s, [\d.]+x the bare process", out)
    assert re.search(r"store written since: [\d.]+ s, [\d.]+x the bare process", out)
