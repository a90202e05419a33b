"""Model cards with linear-evaluation results: `model-index` entries (`huggingface_hub.EvalResult`) and a table.

- `render_linear_eval_card`: the README.md of a linear-eval output folder (the image classifier).
- `update_model_card`: adds the results to an existing card (e.g. the pretrained checkpoint's), keeping its content;
  results of the same dataset, split and metric are replaced, others kept; the table is rebuilt from the
  `model-index`, between two HTML comments, so re-running the evaluation never duplicates it.
"""

import os

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data.loading import EMBEDDED_DATASET
from ..hub.checkpoints import is_hub_id

TASK_TYPE = "image-classification"
TABLE_START, TABLE_END = "<!-- iecl-linear-eval:start -->", "<!-- iecl-linear-eval:end -->"


def dataset_identity(dataset_name: str | None) -> tuple[str, str]:
    """(model-index dataset type, readable name): a Hub id stays itself; a local path becomes its folder name."""
    if dataset_name in (None, "", EMBEDDED_DATASET):
        return "sklearn-digits", "scikit-learn digits (embedded)"
    if os.path.exists(dataset_name):
        name = os.path.basename(os.path.normpath(dataset_name))
        return name, name
    return dataset_name, dataset_name


def metric_display_name(key: str, augment: bool = False) -> str:
    """'linear_top1' -> 'Linear probe top-1'; 'knn_k20_top1' -> 'kNN (k=20) top-1'."""
    if key.startswith("linear_top"):
        return f"Linear probe{' (augmented)' if augment else ''} top-{key[len('linear_top') :]}"
    if key.startswith("knn_k"):
        k, top = key[len("knn_k") :].split("_top")
        return f"kNN (k={k}) top-{top}"
    return key


def eval_results_from(results: dict) -> list[EvalResult]:
    """One `EvalResult` per figure of an `eval_results.json` dict (accuracies as fractions in [0, 1])."""
    dataset = results["dataset"]
    augment = results["protocol"]["linear_probe"]["augment"]
    prefix = "Random-init " if results.get("random_init") else ""
    return [
        EvalResult(
            task_type=TASK_TYPE,
            task_name="Image Classification",
            dataset_type=dataset["type"],
            dataset_name=dataset["pretty_name"],
            dataset_config=dataset.get("config"),
            dataset_split=dataset["test_split"],
            metric_type="accuracy",
            metric_name=prefix + metric_display_name(key, augment),
            metric_value=round(float(value), 4),
        )
        for key, value in results["figures"].items()
        if value is not None
    ]


def results_table(eval_results: list[EvalResult]) -> str:
    """Markdown table: one row per (dataset, config, split), one column per metric name, values in %."""
    rows, columns = {}, []
    for result in eval_results:
        row = (result.dataset_name, result.dataset_config, result.dataset_split)
        rows.setdefault(row, {})[result.metric_name] = result.metric_value
        if result.metric_name not in columns:
            columns.append(result.metric_name)
    lines = ["| dataset | split | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
    for (name, config, split), values in rows.items():
        cells = [f"{100 * values[c]:.2f} %" if isinstance(values.get(c), (int, float)) else "" for c in columns]
        lines.append(f"| {name}{f' ({config})' if config else ''} | {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The card's Jinja template: a file beside this module, installed as package data.
TEMPLATE_PATH = os.path.join(os.path.dirname(__file__), "eval_card_template.md")


def render_linear_eval_card(results: dict, repo_id: str | None = None, *, command: str) -> ModelCard:
    """The README.md of a linear-eval output folder, from its `eval_results.json` dict; `command` is the shell command
    that reproduces it."""
    dataset = results["dataset"]
    checkpoint = results["checkpoint"]
    model_name = (repo_id or "").split("/")[-1] or f"{os.path.basename(os.path.normpath(checkpoint))}-linear-eval"
    eval_results = eval_results_from(results)
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["iecl", "self-supervised", "linear-probe", "image-classification", "custom_code"],
        base_model=checkpoint if is_hub_id(checkpoint) else None,
        datasets=[dataset["type"]] if is_hub_id(dataset["name"]) else None,
        metrics=["accuracy"],
        eval_results=eval_results,
    )
    label_names = dataset["label_names"]
    return ModelCard.from_template(
        card_data,
        template_path=TEMPLATE_PATH,
        model_name=model_name,
        repo_id=repo_id or "path/to/this/folder",
        checkpoint=checkpoint,
        random_init=results.get("random_init", False),
        dataset_name=dataset["pretty_name"],
        label_preview=", ".join(map(str, label_names[:10])) + (", ..." if len(label_names) > 10 else ""),
        table_start=TABLE_START,
        table=results_table(eval_results),
        table_end=TABLE_END,
        test_split=dataset["test_split"],
        num_test=dataset["num_test"],
        num_train=dataset["num_train"],
        num_features=results["num_features"],
        image_size=results["image_size"],
        probe=results["protocol"]["linear_probe"],
        knn=results["protocol"]["knn"],
        seed=results["seed"],
        metrics_source=_metrics_source_text(results["metrics_source"]),
        embedding_2d=results["protocol"]["embedding_2d"],
        command=command,
    )


def _metrics_source_text(source: str) -> str:
    """'evaluate:pkg.module.Metric' -> the metric's class, computed through `evaluate`."""
    return f"`evaluate` (metric `{source.split(':', 1)[-1]}`)"


def update_model_card(folder: str, results: dict) -> ModelCard:
    """Add the results of `results` (an `eval_results.json` dict) to `folder/README.md` and save it.

    The existing text and metadata stay; `model-index` results with the same dataset, config, split and metric name
    are replaced; the results table (built from all `model-index` results) sits between `TABLE_START` and
    `TABLE_END`, inserted before `## Citation` (or at the end) the first time. Without a README.md, a short card is
    created.
    """
    path = os.path.join(folder, "README.md")
    if os.path.exists(path):
        card = ModelCard.load(path, ignore_metadata_errors=True)
    else:
        card = ModelCard(f"---\n---\n\n# {os.path.basename(os.path.normpath(folder))}\n\nAn IE-CL encoder.\n")
    new_results = eval_results_from(results)

    def identity(result):
        return (result.task_type, result.dataset_type, result.dataset_config, result.dataset_split, result.metric_name)

    replaced = {identity(result) for result in new_results}
    kept = [result for result in (card.data.eval_results or []) if identity(result) not in replaced]
    card.data.eval_results = kept + new_results
    if not card.data.model_name:
        card.data.model_name = os.path.basename(os.path.normpath(folder))
    section = (
        f"{TABLE_START}\n## Linear evaluation\n\n{results_table(card.data.eval_results)}\n\n"
        "Measured with `recipes/linear_eval.py` (frozen encoder; "
        "see the linear-eval output's card for the protocol).\n"
        f"{TABLE_END}"
    )
    card.text = _with_section(card.text, section)
    card.save(path)
    return card


def _with_section(text: str, section: str) -> str:
    if TABLE_START in text and TABLE_END in text:
        before, rest = text.split(TABLE_START, 1)
        return before + section + rest.split(TABLE_END, 1)[1]
    marker = "\n## Citation"
    if marker in text:
        before, after = text.split(marker, 1)
        return f"{before.rstrip()}\n\n{section}\n{marker}{after}"
    return f"{text.rstrip()}\n\n{section}\n"


__all__ = [
    "dataset_identity",
    "eval_results_from",
    "metric_display_name",
    "render_linear_eval_card",
    "results_table",
    "update_model_card",
]
