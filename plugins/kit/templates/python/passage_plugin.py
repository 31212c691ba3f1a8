"""Helpers for Passage plugins in Python: parameters, launches, timing with CUDA events,
statistics and the verification verdict, over the contract's bindings (`wit_world`)."""

import array
import traceback

import wit_world
from componentize_py_types import Err
from wit_world.imports import gpu, report, types

__all__ = [
    "Params", "param", "plugin_run", "f32_bytes", "bytes_f32", "launch_1d", "time_ms",
    "summarize", "report_summary", "report_verification", "gpu", "report",
]


def param(name, summary, default, minimum=None, maximum=None, unit=""):
    """A parameter's description; its kind follows the default's Python type."""
    if isinstance(default, bool):
        kind, value = types.ValueKind.BOOLEAN, types.Value_Boolean(default)
    elif isinstance(default, int):
        kind, value = types.ValueKind.INTEGER, types.Value_Integer(default)
    elif isinstance(default, float):
        kind, value = types.ValueKind.FLOAT, types.Value_Float(default)
    else:
        kind, value = types.ValueKind.TEXT, types.Value_Text(str(default))
    as_float = lambda x: None if x is None else float(x)
    return wit_world.ParamSpec(name, summary, kind, value, as_float(minimum), as_float(maximum), unit)


class Params:
    """The run's parameters by name (the host has filled in defaults and checked ranges)."""

    def __init__(self, params):
        self._values = {p.name: p.value.value for p in params}

    def __getitem__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise Err(f"parameter {name} is missing") from None


def plugin_run(body):
    """Wraps `run`: a GPU error or a Python exception becomes the run's error message, in words."""

    def run(self, params):
        try:
            body(self, Params(params))
        except Err as e:
            value = e.value
            if isinstance(value, str):
                raise
            # A GPU error: its case (OutOfMemory, CompileFailed, ...) and the host's message.
            kind = type(value).__name__.replace("GpuError_", "")
            raise Err(f"{kind}: {getattr(value, 'value', value)}") from None
        except Exception:
            raise Err(traceback.format_exc(limit=4)) from None

    return run


def f32_bytes(values):
    """Floats as the little-endian bytes of a float32 array."""
    return array.array("f", values).tobytes()


def bytes_f32(data):
    """The float32 values in `data`."""
    values = array.array("f")
    values.frombytes(data)
    return values


def launch_1d(n, block=256):
    """A one-dimensional launch of `n` threads in blocks of `block`."""
    return gpu.LaunchConfig((n + block - 1) // block, 1, 1, block, 1, 1, 0)


def time_ms(stream, work):
    """Milliseconds of device time of the work `work()` queues on `stream`, by CUDA events."""
    start, end = gpu.Event.create(), gpu.Event.create()
    start.record(stream)
    work()
    end.record(stream)
    end.synchronize()
    return end.elapsed_ms(start)


def summarize(samples):
    """(median, min, max) of the samples."""
    ordered = sorted(samples)
    n = len(ordered)
    if n == 0:
        return (0.0, 0.0, 0.0)
    middle = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return (middle, ordered[0], ordered[-1])


def report_summary(name, unit, summary):
    """Reports a summary as `name` (the median), `name min` and `name max`."""
    median, low, high = summary
    report.metric(name, median, unit)
    report.metric(f"{name} min", low, unit)
    report.metric(f"{name} max", high, unit)


def report_verification(passed):
    """Reports the verdict: True PASS, False FAIL, None skipped (nothing real to check)."""
    value, word = {True: (1.0, "PASS"), False: (0.0, "FAIL"), None: (-1.0, "SKIPPED")}[passed]
    report.metric("verification", value, "1=pass 0=fail -1=skipped")
    report.log(report.Level.ERROR if passed is False else report.Level.INFO, f"verification: {word}")
