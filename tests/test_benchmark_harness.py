"""benchmarks/harness.py: its timing and statistics against known inputs, the peak memory of a child against what the
child allocates, and its JSON (written atomically, with the machine's facts and the command line)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import harness  # noqa: E402


class FakeClock:
    """A clock that only moves when told: the contenders below advance it by known amounts."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_timed_and_per_call_read_the_clock_around_the_call():
    clock = FakeClock()
    seconds, value = harness.timed(lambda: (clock.advance(0.25), "done")[1], clock=clock)
    assert (seconds, value) == (0.25, "done")
    assert harness.per_call(lambda: clock.advance(0.5), 4, clock=clock) == pytest.approx(0.5)


def test_median_seconds_leaves_the_warm_up_out():
    clock = FakeClock()
    costs = iter([9.0, 9.0, 9.0, 1.0, 5.0, 3.0])  # three warm-up calls, then 1, 5, 3: median 3

    def call() -> None:
        clock.advance(next(costs))

    assert harness.median_seconds(call, 3, warmup=3, clock=clock) == 3.0


def test_alternate_runs_the_contenders_in_turn_and_times_each_call():
    clock = FakeClock()
    order = []
    cost = {"a": [2.0, 4.0, 3.0], "b": [1.0, 1.0, 2.0]}

    def contender(name: str):
        def call(r: int) -> str:
            order.append((r, name))
            clock.advance(cost[name][r])
            return f"{name}{r}"
        return call

    told = []
    rounds = harness.alternate({"a": contender("a"), "b": contender("b")}, 3, clock=clock,
                               each=lambda r, name, s, v: told.append((r, name, s, v)))
    assert order == [(0, "a"), (0, "b"), (1, "a"), (1, "b"), (2, "a"), (2, "b")]
    assert rounds.seconds == cost
    assert rounds.values == {"a": ["a0", "a1", "a2"], "b": ["b0", "b1", "b2"]}
    assert told[3] == (1, "b", 1.0, "b1")
    assert harness.medians(rounds.seconds) == {"a": 3.0, "b": 1.0}
    assert harness.ratio(rounds.seconds["a"], rounds.seconds["b"]) == 3.0
    # each round's own ratio: 2, 4, 1.5 -> median 2; quartiles of [1.5, 2, 4] (exclusive method): 1.5 and 4
    assert harness.round_ratios(rounds.seconds["a"], rounds.seconds["b"]) == (2.0, 1.5, 4.0)


def test_alternate_with_the_real_clock_sees_known_sleeps():
    """perf_counter by default: a call is never timed shorter than it slept (a loaded host may make it longer)."""
    rounds = harness.alternate({"long": lambda r: time.sleep(0.03), "short": lambda r: time.sleep(0.01)}, 3)
    assert all(0.03 <= s < 2 for s in rounds.seconds["long"]) and all(0.01 <= s < 2 for s in rounds.seconds["short"])
    assert rounds.values == {"long": [None] * 3, "short": [None] * 3}


def test_quartiles_against_hand_computed_values():
    # statistics.quantiles' default (exclusive) method: positions (n + 1) p, here 1.5 and 4.5 of 1..5
    assert harness.quartiles([5.0, 1.0, 4.0, 2.0, 3.0]) == (1.5, 4.5)
    assert harness.quartiles([7.0]) == (7.0, 7.0)
    with pytest.raises(ValueError):
        harness.round_ratios([1.0, 2.0], [1.0])  # rounds are paired: a missing one is an error


def test_peak_memory_of_a_child_that_allocates_a_known_amount():
    mb = 100
    big = harness.run_child(harness.python(f"x = b'x' * ({mb} << 20); print(len(x))"))
    assert big.returncode == 0 and big.stdout.strip() == str(mb << 20)
    assert big.peak_rss_mb >= mb
    assert big.minor_faults > 0
    # the next child is measured on its own: not the largest child so far, and not this process, even while this
    # process holds more than the child allocated (Linux counts what the forking process held in the child's
    # ru_maxrss: the harness starts children from a small launcher)
    ballast = b"y" * (2 * mb << 20)
    small = harness.run_child(harness.python("pass"))
    assert len(ballast) and small.peak_rss_mb < mb / 2


def test_peak_memory_counts_a_childs_own_children():
    """As a study's workers: the grandchild allocates, the child only waits for it."""
    mb = 100
    grandchild = f"x = b'x' * ({mb} << 20)"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)"
    assert harness.run_child(harness.python(code)).peak_rss_mb >= mb


def test_children_side_by_side_are_measured_apart():
    big = harness.spawn(harness.python("import time; x = b'x' * (80 << 20); time.sleep(0.1)"))
    small = harness.spawn(harness.python("import time; time.sleep(0.1)"))
    small_child, big_child = small.wait(), big.wait()
    assert small_child.peak_rss_mb < 40 and big_child.peak_rss_mb >= 80
    assert small_child.seconds >= 0.1 and big_child.seconds >= 0.1  # the child's own wall time, sleep included


def test_a_failing_child_ends_the_script_with_its_error():
    with pytest.raises(SystemExit, match="boom"):
        harness.run_child(harness.python("import sys; sys.exit('boom')"))
    assert harness.run_child(harness.python("raise SystemExit(3)"), check=False).returncode == 3


def test_common_arguments():
    threads = torch.get_num_threads()
    try:
        ap = harness.parser("doc", "allocator-{setting}", repeats=2, threads=1)
        ap.add_argument("--setting", default="thp")
        args = harness.parse(ap, ["--setting", "keep"])
        assert (args.repeats, args.threads, torch.get_num_threads()) == (2, 1, 1)
        assert args.json == harness.OUT / "allocator-keep.json"
        assert harness.parse(ap, ["--out", "x.json"]).json == Path("x.json")  # --out, the old spelling, still works
        bare = harness.parse(harness.parser("doc", "train_epoch"), [])
        assert not hasattr(bare, "repeats") and not hasattr(bare, "threads")
        torch.set_num_threads(2)
        harness.parse(harness.parser("doc", "x", threads=0), [])  # 0: torch's own choice, left as it is
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_machine_facts():
    facts = harness.machine()
    assert facts["threads"] == torch.get_num_threads() and facts["torch"] == torch.__version__
    assert set(facts["cpu_flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert facts["cpu_model"] and facts["cpu"].startswith(facts["cpu_model"])
    if Path("/proc/cpuinfo").exists():
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
        assert facts["cpu_flags"]["avx2"] == ("avx2" in flags.split())
    assert ("gpu" in facts) == torch.cuda.is_available()


def test_json_is_written_atomically_with_the_machine_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/likelihood.py", "--repeats", "3"])
    args = harness.parse(harness.parser("doc", "likelihood", repeats=1), ["--repeats", "3",
                                                                           "--json", str(tmp_path / "r.json")])
    path = tmp_path / "r.json"
    path.write_text('{"old": true}')
    with open(path) as before:  # a reader that opened the old file
        harness.write_json(args, {"speedup": 1.5, "seconds": {"a": [1.0, 2.0]}})
        assert before.read() == '{"old": true}'  # it keeps the whole old file: the new one was renamed into place
    data = json.loads(path.read_text())
    assert data["benchmark"] == "likelihood"
    assert data["command"].endswith("benchmarks/likelihood.py --repeats 3")
    assert data["arguments"]["repeats"] == 3 and data["arguments"]["json"] == str(path)
    assert data["machine"]["cpu"] and data["machine"]["threads"] == torch.get_num_threads()
    assert (data["speedup"], data["seconds"]) == (1.5, {"a": [1.0, 2.0]})
    assert os.listdir(tmp_path) == ["r.json"]  # no temporary file left behind
