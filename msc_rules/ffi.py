"""Fast access to TVM FFI containers.

`tvm_ffi.Array.__iter__` is written in Python (a length call and an index check per
element); calling the two FFI functions directly is several times faster, which
matters when every binding of a 100k-binding module is read.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

import tvm_ffi
from tvm_ffi import _ffi_api

_get = _ffi_api.ArrayGetItem
_size = _ffi_api.ArraySize
_Array = tvm_ffi.Array


def items(arr: Any) -> list[Any]:
    """The elements of an FFI Array (or any sequence) as a Python list."""
    if type(arr) is not _Array and isinstance(arr, (list, tuple)):
        return list(arr)
    n = _size(arr)
    # Most arrays read are short (a call's arguments, axes, shapes): direct calls there
    # (an FFI function called through `map` takes a slower calling convention, ~2x per
    # call), `map` for long ones (no Python frame per element).
    if n == 1:
        return [_get(arr, 0)]
    if n == 2:
        return [_get(arr, 0), _get(arr, 1)]
    if n == 3:
        return [_get(arr, 0), _get(arr, 1), _get(arr, 2)]
    if n == 4:
        return [_get(arr, 0), _get(arr, 1), _get(arr, 2), _get(arr, 3)]
    if n < 8:
        return [_get(arr, i) for i in range(n)]
    return list(map(_get, repeat(arr, n), range(n)))
