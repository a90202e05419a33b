"""Evaluation of frozen IE-CL encoders: feature extraction, weighted kNN, linear probe."""

from .features import extract_features
from .knn import knn_accuracy, weighted_knn_predict

__all__ = ["extract_features", "knn_accuracy", "weighted_knn_predict"]
