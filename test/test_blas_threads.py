"""numpy's BLAS on one thread around the pair loop's own linear algebra (blas_threads.py)."""
import pytest

from distillmatch_ros import blas_threads
from distillmatch_ros.pipeline import PairPipeline, PipelineConfig
from distillmatch_ros.testing.fakes import FakeMatcher, frames

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_count() -> int:
    info = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    if not info:
        pytest.skip("numpy's BLAS is not one threadpoolctl can see")
    return info[0]["num_threads"]


@pytest.fixture()
def two_threads():
    """Two BLAS threads whatever this machine's core count, so that one thread is a change."""
    blas_count()
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        assert blas_count() == 2
        yield


def test_one_thread_inside_restored_after(two_threads):
    with blas_threads.one_thread():
        assert blas_count() == 1
        with blas_threads.one_thread():  # nested: still one, and the inner exit restores nothing
            assert blas_count() == 1
        assert blas_count() == 1
    assert blas_count() == 2


def test_the_pair_loop_runs_blas_on_one_thread(two_threads):
    seen = []

    class Recording(FakeMatcher):
        def match(self, visible, thermal):
            seen.append(blas_count())
            return super().match(visible, thermal)
    pipe = PairPipeline(Recording(), PipelineConfig(rig_mode=True, match_rate_hz=0.0, fuse=False))
    for k in range(3):
        out = pipe.step(*frames(k), k * 100_000_000)
    assert seen == [1, 1, 1] and out.homography is not None
    assert blas_count() == 2
