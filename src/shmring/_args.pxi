# Argument checks of the binding, in one place so that an argument gets the
# same rule and the same message wherever it is passed (included by _ring.pyx;
# the pure-Python layer calls check_count at the end).
#
# bool is rejected wherever a number is expected: True is an int to Python but
# never what a caller meant by a timeout, a spin budget or a count.

import numbers

from cpython.float cimport PyFloat_AS_DOUBLE
from libc.math cimport isfinite

# Timeouts above this wait forever: the deadline would not fit the clock.
DEF TIMEOUT_FOREVER = 1e9


cdef str _describe(object value):
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (int, float)) else repr(value)


cdef double _seconds_slow(object value, str what) except -2.0:
    """value as seconds (finite, >= 0), for every type but the exact float/int fast path."""
    cdef double v
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be a number of seconds, not a bool ({value!r})")
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number of seconds, not {_describe(value)}")
    try:
        v = float(value)
    except OverflowError:
        raise ValueError(f"{what} is too large ({len(str(value))} digits; at most {TIMEOUT_FOREVER:g} s, "
                         f"None waits forever)") from None
    if not isfinite(v) or v < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, not {value!r}")
    return v


cdef inline double _seconds(object value, str what) except -2.0:
    """A duration argument: a finite int or float >= 0 (not None)."""
    cdef double v
    if type(value) is float:
        v = PyFloat_AS_DOUBLE(value)
        if isfinite(v) and v >= 0:
            return v
    elif type(value) is int and 0 <= value <= TIMEOUT_FOREVER:
        return <double>value
    return _seconds_slow(value, what)


cdef inline double _timeout_arg(object timeout) except -2.0:
    """-1.0 for None (wait forever), else the timeout in seconds (checked)."""
    if timeout is None:
        return -1.0
    return _seconds(timeout, "timeout")


cdef inline bint _is_zero_timeout(object timeout):
    """True for an explicit 0 (int or float): the call must not wait at all."""
    return (type(timeout) is int or type(timeout) is float) and timeout == 0


cdef double _spin_arg(object spin) except -2.0:
    return _seconds(spin, "spin")


cdef double _liveness_arg(object liveness_interval) except -2.0:
    cdef double v = _seconds(liveness_interval, "liveness_interval")
    if not (0.001 <= v <= 60):
        raise ValueError(f"liveness_interval must be in [0.001, 60] seconds, not {liveness_interval!r}")
    return v


cdef Py_ssize_t _count_arg(object value, str what, Py_ssize_t lo, Py_ssize_t hi) except -1:
    """An integer argument in [lo, hi]: int or numpy integer, never bool, float or str."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an int, not {_describe(value)}")
    if not (lo <= value <= hi):
        raise ValueError(f"{what} must be in {lo}..{hi}, got {value}")
    return <Py_ssize_t>value


def check_count(value, str what, Py_ssize_t lo, Py_ssize_t hi):
    """The integer-argument rule for the Python layer (max_consumers)."""
    return _count_arg(value, what, lo, hi)


cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
