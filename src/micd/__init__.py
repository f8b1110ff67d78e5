"""MICD: a reproducibility pipeline for semi-supervised 3D multi-organ CT segmentation."""

__version__ = "0.1.0"
