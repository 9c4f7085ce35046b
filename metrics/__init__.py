"""Metrics of both methods: detection (AP, false calls), pixel, calibration, clustering (NMI, ACC, MDR, FDR, EACC)."""

from metrics.detection import DetectionMetrics, detection_summary

__all__ = ["DetectionMetrics", "detection_summary"]
