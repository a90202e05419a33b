"""features_2d.png: a 2-D embedding (PCA or t-SNE) of test features, coloured by class."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

EMBEDDING_METHODS = ("pca", "tsne")


def embed_2d(features, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, 2) coordinates of (N, C) features: PCA, or t-SNE on the top-50 PCA components (cosine geometry: the
    features are L2-normalized first, as the kNN classifier sees them)."""
    from sklearn.decomposition import PCA

    if method not in EMBEDDING_METHODS:
        raise ValueError(f"`method` {method!r} is not supported; allowed values: {', '.join(EMBEDDING_METHODS)}.")
    features = torch.nn.functional.normalize(torch.as_tensor(features).float(), dim=1).numpy()
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(features)
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    reduced = PCA(n_components=min(50, *features.shape), random_state=seed).fit_transform(features)
    perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
    # One OpenMP thread: on a busy 2-core machine, t-SNE's threads spin against each other (measured: 1.6 s with
    # one thread, 31 s with two, for 360 points).
    with threadpool_limits(1, user_api="openmp"):
        return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(reduced)


def save_features_2d(
    features,
    labels,
    label_names,
    path: str,
    method: str = "pca",
    max_points: int = 2000,
    seed: int = 0,
    title: str | None = None,
) -> np.ndarray:
    """Scatter of `embed_2d` (a seeded subset of at most `max_points`), one colour per class; returns the points."""
    features, labels = torch.as_tensor(features), torch.as_tensor(labels).cpu().numpy()
    if len(features) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(features), max_points, replace=False))
        features, labels = features[keep], labels[keep]
    points = embed_2d(features, method, seed)
    num_classes = len(label_names)
    colours = plt.get_cmap("tab10" if num_classes <= 10 else "tab20" if num_classes <= 20 else "turbo")
    figure, axis = plt.subplots(figsize=(6.5, 5.5))
    for class_index in range(num_classes):
        mask = labels == class_index
        if mask.any():
            colour = colours(class_index if num_classes <= 20 else class_index / max(num_classes - 1, 1))
            axis.scatter(
                points[mask, 0], points[mask, 1], s=6, color=colour, label=str(label_names[class_index]), alpha=0.8
            )
    if num_classes <= 20:
        axis.legend(markerscale=3, fontsize=7, loc="best", frameon=False)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(
        title or f"Test features ({method.upper() if method == 'pca' else 't-SNE'}, {len(points)} images)", fontsize=9
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return points


__all__ = ["EMBEDDING_METHODS", "embed_2d", "save_features_2d"]
