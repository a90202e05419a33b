"""Evaluation of frozen IE-CL encoders: feature extraction, weighted kNN, linear probe, embedding a dataset."""

from .embed import embed_split, embedded_dataset, load_embed_split
from .eval_card import render_linear_eval_card, update_model_card
from .features import extract_features
from .knn import knn_accuracy, weighted_knn_predict
from .linear_probe import LinearProbe, build_classifier, fit_linear_probe, load_frozen_encoder, prepare_eval_splits
from .metrics import TopKAccuracy, top_k_accuracy
from .plots import save_features_2d

__all__ = [
    "LinearProbe",
    "build_classifier",
    "embed_split",
    "embedded_dataset",
    "extract_features",
    "fit_linear_probe",
    "knn_accuracy",
    "load_embed_split",
    "load_frozen_encoder",
    "prepare_eval_splits",
    "render_linear_eval_card",
    "TopKAccuracy",
    "save_features_2d",
    "top_k_accuracy",
    "update_model_card",
    "weighted_knn_predict",
]
