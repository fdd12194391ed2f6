"""The memory benchmark's arithmetic: the tree read from a process table, and what each thing costs."""

from benchmarks.memory import SHAPES, Measured, Sample, derived, sample_tree, table


def test_the_tree_is_the_arbiter_its_workers_and_the_rest_of_its_descendants_only() -> None:
    rows = [
        (10, 1, 100 * 1024, "python bentoml serve serving.service:ModelService"),
        (
            11,
            10,
            200 * 1024,
            "python -m _bentoml_impl.worker.service serving.service:ModelService --worker-id 1",
        ),
        (
            12,
            10,
            150 * 1024,
            "python -m _bentoml_impl.worker.service serving.service:ModelService --worker-id 2",
        ),
        (13, 11, 8 * 1024, "some helper"),
        (20, 1, 999 * 1024, "python -m _bentoml_impl.worker.service another tree"),
    ]
    sample = sample_tree(10, rows)
    assert sample == Sample(arbiter=100.0, workers=[150.0, 200.0], other=8.0)
    assert sample.tree == 458.0


def test_a_model_a_version_and_a_worker_cost_the_growth_over_the_one_model_worker() -> None:
    def shaped(index: int, workers: list[float], arbiter: float = 100.0) -> Measured:
        return Measured(
            SHAPES[index], Sample(arbiter, workers), Sample(arbiter, [w + 1 for w in workers]), 1.0
        )

    measured = [shaped(0, [140.0]), shaped(1, [150.0]), shaped(2, [146.0]), shaped(3, [140.0, 141.0])]
    cost = derived(measured)
    assert cost["model_idle"] == 5.0  # two more models, 10 MiB
    assert cost["version_idle"] == 2.0  # three versions, 6 MiB
    assert cost["worker_idle"] == 141.0 and cost["worker_loaded"] == 142.0
    text = table(measured, 5)
    assert "| one model, 2 workers (as shipped) | 100 | 140 / 141 | 381 |" in text
    assert "| each model served beyond the first, per worker | 5.0 | 5.0 |" in text
