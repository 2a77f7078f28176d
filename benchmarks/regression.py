"""The pre-merge regression check: fastbn's CPU kernels only, float32, both sizes.

``asv continuous --factor 1.1 -b regression main HEAD`` (see the README's
"asv" section) times these in both commits and fails when any got more than
10% slower.  They are the cpu rows of :mod:`benchmarks.bench_norms` (the same
classes, the same inputs), timings only: without the NumPy and GPU backends,
float64, the GB/s tracks (asv would flag their increases) and the peak-memory
runs, so that the check takes minutes, not an hour.
"""

from . import bench_norms as B


def _regression(cls):
    """``cls`` restricted to the CPU backend, float32, its layouts, both sizes."""
    params = [["cpu"], ["float32"], cls.params[2], B.SIZE]
    methods = {name: getattr(cls, name) for name in dir(cls) if name.startswith("time_")}
    # asv counts any increase as a regression, so the higher-is-better GB/s
    # tracks would read backwards here: times only
    hidden = {name: None for name in dir(cls)
              if name.startswith("peakmem_") or name == "track_gbps"}
    return type(f"Regression{cls.__name__}", (cls,),
                {"params": params, "repeat": (5, 20, 10.0), **methods, **hidden,
                 "__module__": __name__})


RegressionBatchNormForwardTrain = _regression(B.BatchNormForwardTrain)
RegressionBatchNormInference = _regression(B.BatchNormInference)
RegressionBatchNormBackward = _regression(B.BatchNormBackward)
RegressionLayerNormForward = _regression(B.LayerNormForward)
RegressionLayerNormBackward = _regression(B.LayerNormBackward)
RegressionGroupNormForward = _regression(B.GroupNormForward)
RegressionGroupNormBackward = _regression(B.GroupNormBackward)
