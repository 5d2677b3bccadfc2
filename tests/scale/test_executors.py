"""Tests of nucseg.scale.executors: results in order, failures raised or collected, models shared."""

from __future__ import annotations

import pytest

from nucseg.inference.model import load_model
from nucseg.inference.runners import default_threads
from nucseg.scale.executors import InProcessExecutor, TaskFailed, resolve_model, worker_model, worker_threads


def _divide(a, b):
    return a / b


def test_results_come_back_in_the_order_of_the_arguments():
    results = InProcessExecutor().run(_divide, [(6, 3), (1, 4), (9, 9)], description="dividing")
    assert results == [2.0, 0.25, 1.0]


def test_the_first_failure_is_raised_unless_failures_are_collected():
    executor = InProcessExecutor()
    with pytest.raises(ZeroDivisionError):
        executor.run(_divide, [(1, 1), (1, 0), (2, 1)], description="dividing")
    results = executor.run(_divide, [(1, 1), (1, 0), (2, 1)], description="dividing", collect_failures=True)
    assert results[0] == 1.0 and results[2] == 2.0
    assert isinstance(results[1], TaskFailed) and isinstance(results[1].error, ZeroDivisionError)


def test_in_process_tasks_get_the_model_itself_and_names_load_once_per_process():
    model = load_model("classical")
    assert resolve_model(InProcessExecutor().share_model(model)) is model
    worker_model.cache_clear()
    assert resolve_model("classical") is resolve_model("classical")
    assert worker_model.cache_info().misses == 1


def _intra_op_threads(model) -> int:
    return model.runner("onnxruntime").session.get_session_options().intra_op_num_threads


@pytest.mark.parametrize("value, expected", [("1", 1), ("3", 3), (None, None), ("", None), ("many", None), ("0", None)])
def test_a_worker_uses_the_threads_its_omp_num_threads_gives(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert worker_threads() == expected
    worker_model.cache_clear()
    assert _intra_op_threads(worker_model("dsb2018")) == (expected or default_threads())
    worker_model.cache_clear()


def test_progress_goes_to_logs_as_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    import nucseg.scale.executors as executors

    monkeypatch.setattr(executors, "LOG_INTERVAL", 0.0)
    assert list(executors.progress_of(iter(range(4)), "segmenting blocks of slide.tif", 4, True)) == [0, 1, 2, 3]
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"nucseg: segmenting blocks of slide.tif: {n} of 4 done (0 s)" for n in (1, 2, 3)]
    assert list(executors.progress_of(range(3), "quiet", 3, False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_tile_progress_logs_each_pass_of_a_large_image_and_nothing_for_small_ones(monkeypatch, capsys):
    import nucseg.scale.executors as executors

    monkeypatch.setattr(executors, "LOG_INTERVAL", 0.0)
    report = executors.TileProgress("slide.tif")
    for done in range(1, 3):  # a 2-tile first pass (automatic sizing): silent
        report(done, 2)
    for done in range(1, 5):
        report(done, 4)
    assert report.passes == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"nucseg: slide.tif, pass 2: {n} of 4 tiles (0 s)" for n in (1, 2, 3, 4)]
    monkeypatch.setattr(executors, "LOG_INTERVAL", 3600.0)
    later = executors.TileProgress("slide.tif")
    for done in range(1, 5):
        later(done, 4)
    assert capsys.readouterr().err.splitlines() == ["nucseg: slide.tif, pass 1: 4 of 4 tiles (0 s)"]  # the end only


def _slow_square(x, running, peak, lock):
    import time

    with lock:
        running.append(x)
        peak.append(len(running))
    time.sleep(0.02)
    with lock:
        running.remove(x)
    if x == 3:
        raise ValueError("three")
    return x * x


def test_calls_side_by_side_come_back_in_order_with_failures_in_place():
    import threading

    running, peak, lock = [], [], threading.Lock()
    arguments = [(x, running, peak, lock) for x in range(8)]
    results = InProcessExecutor(workers=3).run(_slow_square, arguments, description="squaring", collect_failures=True)
    assert all(results[x] == x * x for x in range(8) if x != 3)
    assert isinstance(results[3], TaskFailed) and str(results[3].error) == "three"
    assert max(peak) > 1  # they did run side by side
    with pytest.raises(ValueError, match="three"):
        InProcessExecutor(workers=2).run(_slow_square, arguments, description="squaring")


def test_a_memory_budget_keeps_calls_that_do_not_fit_together_apart():
    import threading

    running, peak, lock = [], [], threading.Lock()
    arguments = [(x, running, peak, lock) for x in (0, 1, 2, 4, 5)]
    executor = InProcessExecutor(workers=4, max_memory=100)
    # 60 + anything else above 40 does not fit: every call needs 60 or more, except the last, which needs more
    # than the whole budget and so runs alone
    results = executor.run(_slow_square, arguments, description="squaring", memory=[60, 60, 70, 60, 500])
    assert results == [0, 1, 4, 16, 25]
    assert max(peak) == 1
    running, peak = [], []
    arguments = [(x, running, peak, lock) for x in (0, 1, 2, 4)]
    executor.run(_slow_square, arguments, description="squaring", memory=[30, 30, 30, 30])
    assert max(peak) > 1


def test_a_memory_budget_waits_for_room_and_gives_it_back():
    import threading

    from nucseg.scale.executors import MemoryBudget

    budget = MemoryBudget(10)
    entered, leave = threading.Event(), threading.Event()

    def hold_five():
        with budget.reserve(5):
            entered.set()
            leave.wait(5)

    thread = threading.Thread(target=hold_five)
    with budget.reserve(8):
        thread.start()
        assert not entered.wait(0.1)  # 8 + 5 > 10: it waits
        assert budget.used == 8
    assert entered.wait(5)
    assert budget.used == 5
    leave.set()
    thread.join()
    assert budget.used == 0
    with pytest.raises(ValueError, match="workers"):
        InProcessExecutor(workers=0)
