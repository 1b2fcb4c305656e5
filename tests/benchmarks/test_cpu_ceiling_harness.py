"""benchmarks/cpu_ceiling.py on tiny-llama: the three rates are measured and the table's bound is printed."""

from __future__ import annotations

import re

import pytest

from tests.benchmarks.harness import run_script


@pytest.mark.timeout(300)
def test_rates_are_measured_and_the_table_is_scaled_by_the_lower_efficiency():
    out = run_script("cpu_ceiling.py", ["--backbone", "tiny-llama", "--repeats", "1", "--table-minutes", "100"])
    assert "the table's 100 min, all of it products at the ceiling" in out
    assert re.search(r"^tiny-llama scoring, 16 x 128 tokens +\d+ +\d+%", out, re.M), out
    assert re.search(r"^tiny-llama LoRA training step, 4 x 128 tokens +\d+ +\d+%", out, re.M), out
    ceiling = re.search(r"^fp32 matmul 4096 x 4096 \(the ceiling\) +(\d+) +100%", out, re.M)
    assert ceiling and int(ceiling.group(1)) > 0, out
    minutes = float(re.search(r"ceiling: (\d+) min \(([\d.]+)x faster\)", out).group(1))
    assert 0 <= minutes <= 100  # the table scaled by an efficiency below 1
