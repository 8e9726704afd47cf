"""Fast access to TVM FFI containers.

`tvm_ffi.Array.__iter__` is written in Python (a length call and an index check per
element); calling the two FFI functions directly is about four times faster, which
matters when every binding of a 100k-binding module is read.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

from tvm_ffi import _ffi_api

_get = _ffi_api.ArrayGetItem
_size = _ffi_api.ArraySize


def items(arr: Any) -> list[Any]:
    """The elements of an FFI Array (or any sequence) as a Python list."""
    if isinstance(arr, (list, tuple)):
        return list(arr)
    n = _size(arr)
    return list(map(_get, repeat(arr, n), range(n)))  # no Python frame per element
