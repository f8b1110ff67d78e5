"""Inference: sliding windows, the infer stage, segmenting a user's own scans."""
