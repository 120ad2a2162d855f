"""The root of every error a benchmark on an Android device raises, from adb itself or from benchmark_model's run.

It lives apart from export/adb.py because export/benchmark_model_output.py, which adb.py imports, raises it too:
a caller catching `AdbError` sees every device failure, `benchmark_model` printing nothing included.
"""


class AdbError(RuntimeError):
    """Base class of everything that goes wrong between this machine and the device, or on the device."""
