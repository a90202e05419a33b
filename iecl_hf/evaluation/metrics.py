"""Top-k accuracy as an `evaluate` metric: every accuracy the package reports (the linear probe's top-1 and top-5, the
weighted kNN's top-1, online during pretraining and offline in `recipes/linear_eval.py`) is computed by
`TopKAccuracy.compute`.

The metric is a class in the package rather than a script that `evaluate.load` fetches from the Hub, so it computes
the same figures with or without a network.
"""

import datasets
import evaluate
import numpy as np
import torch

# How eval_results.json and the model card name the metric that computed the figures.
METRIC_SOURCE = "evaluate:iecl_hf.evaluation.metrics.TopKAccuracy"

_DESCRIPTION = "Fraction of the references found among the k best-ranked predicted classes, for each requested k."
_INPUTS = """
Args:
    predictions (`list` of `list` of `int`): per example, class indices ranked best first (at least max(top_k)).
    references (`list` of `int`): the true class of each example.
    top_k (`tuple` of `int`, defaults to `(1,)`): the k of each reported accuracy.
Returns:
    `{"top1": float, ...}`: one accuracy in [0, 1] per k.
"""


class TopKAccuracy(evaluate.Metric):
    """Top-k accuracy from ranked predictions.

    Example:
        >>> metric = TopKAccuracy(keep_in_memory=True)
        >>> metric.compute(predictions=[[0, 1], [2, 0], [1, 2], [1, 0]], references=[0, 0, 2, 0], top_k=(1, 2))
        {'top1': 0.25, 'top2': 1.0}
    """

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, top_k=(1,)):
        if len(references) == 0:
            raise ValueError("Accuracy of an empty set of references is undefined.")
        ranked, references = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
        if ranked.ndim != 2 or ranked.shape[1] < max(top_k):
            raise ValueError(f"top-{max(top_k)} accuracy needs at least {max(top_k)} ranked classes per prediction.")
        hits = ranked == references[:, None]
        return {f"top{k}": float(hits[:, :k].any(axis=1).mean()) for k in top_k}


def top_k_accuracy(scores, references, top_k=(1,)) -> dict:
    """`TopKAccuracy` of class scores (N, num_classes) against references (N,): `{"top1": ..., "top5": ...}`."""
    scores = torch.as_tensor(scores).detach().float().cpu()
    references = torch.as_tensor(references).detach().cpu().reshape(-1)
    if scores.ndim != 2 or len(scores) != len(references):
        raise ValueError(f"scores of shape {tuple(scores.shape)} for {len(references)} references.")
    if not 1 <= max(top_k) <= scores.shape[1]:
        raise ValueError(f"top-{max(top_k)} accuracy needs 1 <= k <= number of classes ({scores.shape[1]}).")
    ranked = scores.topk(max(top_k), dim=1).indices
    metric = TopKAccuracy(keep_in_memory=True)
    return metric.compute(predictions=ranked.tolist(), references=references.tolist(), top_k=tuple(top_k))


__all__ = ["METRIC_SOURCE", "TopKAccuracy", "top_k_accuracy"]
