"""Byte-reproducible ``.npz`` files.

``np.savez`` stamps the current time into the zip headers, so the same arrays give different
bytes. :func:`write_npz` fixes the member dates (1980-01-01), order and permissions, so identical
input gives identical files: the OpenHand asset and the synthetic manifests rely on it.
"""
from __future__ import annotations

import io
import zipfile

import numpy as np


def write_npz(file, arrays: dict, compresslevel: int | None = None) -> None:
    """Write ``arrays`` (members in dict order, each as given) to ``file`` (a path or binary file)."""
    with zipfile.ZipFile(file, "w") as zf:
        for key, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, value, allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=compresslevel)
