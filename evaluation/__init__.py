"""Metrics and reports shared by the methods."""

from evaluation.detection import DetectionMetrics, detection_summary

__all__ = ["DetectionMetrics", "detection_summary"]
