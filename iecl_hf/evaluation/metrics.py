"""Accuracy through `evaluate` where its metric loads; offline, the same numbers from our own code.

`evaluate.load("accuracy")` fetches the metric script from the Hub. Offline it fails with a misleading
"Couldn't find a module script" error, so `AccuracyMetric` falls back to its own (identical) definition,
the mean of `prediction == reference`, and says so in one line (`notice`). A local copy of the metric
(`evaluate.load("path/to/accuracy")`) works offline too.
"""

import numpy as np
import torch


class AccuracyMetric:
    """Top-1 and top-k accuracy (fractions in [0, 1]) of predictions against references.

    `source` says where the numbers come from: `"evaluate:<name>"` or `"builtin"`; `notice` is the one-line
    explanation of a fallback (None when `evaluate` loaded).

    Example:
        >>> metric = AccuracyMetric(load=False)
        >>> metric.accuracy([0, 1, 2, 2], [0, 1, 1, 2])
        0.75
    """

    def __init__(self, name_or_path: str = "accuracy", load: bool = True):
        self.metric, self.source, self.notice = None, "builtin", None
        if not load:
            return
        try:
            import evaluate

            self.metric = evaluate.load(name_or_path)
            self.source = f"evaluate:{name_or_path}"
        except Exception as error:  # offline (FileNotFoundError), missing dependency, broken cache, ...
            first_line = str(error).splitlines()[0] if str(error) else ""
            self.notice = (
                f"evaluate.load({name_or_path!r}) is unavailable ({type(error).__name__}: {first_line}); "
                "the accuracies "
                "below come from iecl_hf's own code, with the same definition (mean of prediction == reference)."
            )

    def accuracy(self, predictions, references) -> float:
        predictions, references = _as_int_array(predictions), _as_int_array(references)
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references.")
        if len(references) == 0:
            raise ValueError("Accuracy of an empty set of references is undefined.")
        if self.metric is not None:
            return float(
                self.metric.compute(predictions=predictions.tolist(), references=references.tolist())["accuracy"]
            )
        return float((predictions == references).mean())

    def top_k_accuracy(self, scores, references, k: int) -> float:
        """Fraction of references among the k highest scores (k <= number of classes).

        Expressed as predictions for the accuracy metric: the reference where it is in the top k, else the top-1
        class, so both sources compute the same figure.
        """
        scores = torch.as_tensor(scores).detach().cpu()
        references = torch.as_tensor(_as_int_array(references))
        if not 1 <= k <= scores.shape[1]:
            raise ValueError(f"top-{k} accuracy needs 1 <= k <= number of classes ({scores.shape[1]}).")
        top_k = scores.topk(k, dim=1).indices
        hit = (top_k == references[:, None]).any(dim=1)
        predictions = torch.where(hit, references, top_k[:, 0])
        return self.accuracy(predictions, references)


def _as_int_array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values).astype(np.int64).reshape(-1)


__all__ = ["AccuracyMetric"]
