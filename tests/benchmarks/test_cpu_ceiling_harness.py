"""benchmarks/cpu_ceiling.py on tiny-llama: the three rates are measured and the table's bound is printed."""

from __future__ import annotations

import re

import pytest

from tests.benchmarks.harness import run_script


@pytest.mark.timeout(300)
def test_rates_are_measured_and_the_table_is_scaled_by_the_lower_efficiency():
    out = run_script("cpu_ceiling.py", ["--backbone", "tiny-llama", "--repeats", "1", "--table-minutes", "100"])
    ceiling = re.search(r"^fp32 matmul 4096 x 4096 \(the ceiling\) +(\d+) +100%", out, re.M)
    scoring = re.search(r"^tiny-llama scoring, 16 x 128 tokens +\d+ +(\d+)%", out, re.M)
    training = re.search(r"^tiny-llama LoRA training step, 4 x 128 tokens +\d+ +(\d+)%", out, re.M)
    bound = re.search(r"^the table's 100 min, all of it products at the ceiling: (\d+) min", out, re.M)
    assert ceiling and scoring and training and bound, out
    assert int(ceiling.group(1)) > 0
    shares = [int(scoring.group(1)), int(training.group(1))]  # percent of the ceiling, rounded
    assert abs(int(bound.group(1)) - min(shares)) <= 1, out  # 100 minutes scaled by the lower share
