"""TotalSegmentator's organ labels in AMOS's classes, for the real CT of ``shared/reference/real_ct``.

That CT and its labels come from the TotalSegmentator repository (github.com/wasserth/
TotalSegmentator, commit 0e65a44, ``tests/reference_files``) under the Apache License 2.0; the
labels were predicted by TotalSegmentator, not drawn by a radiologist.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# TotalSegmentator v2 "total" class id -> AMOS class id (micd.data.classes.AMOS_CLASSES);
# every other TotalSegmentator class (bones, lungs, muscles, ...) is background.
TOTALSEGMENTATOR_TO_AMOS: dict[int, int] = {
    1: 1,  # spleen
    2: 2,  # kidney_right
    3: 3,  # kidney_left
    4: 4,  # gallbladder
    15: 5,  # esophagus
    5: 6,  # liver
    6: 7,  # stomach
    52: 8,  # aorta
    63: 9,  # inferior_vena_cava
    7: 10,  # pancreas
    8: 11,  # adrenal_gland_right
    9: 12,  # adrenal_gland_left
    19: 13,  # duodenum
    21: 14,  # urinary_bladder
    22: 15,  # prostate
}

REAL_CT_SOURCE = (
    "one abdominal CT and its TotalSegmentator-predicted labels from github.com/wasserth/TotalSegmentator "
    "(commit 0e65a44, tests/reference_files/example_ct_sm.nii.gz and example_seg.nii.gz), Apache License 2.0"
)


def to_amos(labels: np.ndarray) -> np.ndarray:
    """A TotalSegmentator label map with AMOS's class ids (uint8)."""
    lookup = np.zeros(max(int(labels.max()), max(TOTALSEGMENTATOR_TO_AMOS)) + 1, dtype=np.uint8)
    for total_id, amos_id in TOTALSEGMENTATOR_TO_AMOS.items():
        lookup[total_id] = amos_id
    return lookup[np.asarray(labels, dtype=np.int64)]


REAL_CT_VARIABLE = "MICD_REAL_CT"


def real_ct_dir(default: Path) -> Path:
    """Where the real CT lies: the folder ``MICD_REAL_CT`` names, else ``default`` (the caller's
    knowledge of its checkout, e.g. ``shared/reference/real_ct`` beside a clone)."""
    named = os.environ.get(REAL_CT_VARIABLE)
    return Path(named) if named else Path(default)
