"""Metrics computed on our own ground truth (QA exact match, reward accuracy and calibration)."""
