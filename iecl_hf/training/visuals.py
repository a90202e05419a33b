"""The pictures a user gets: views.png (what SAIB does to the query view) and training_curves.png."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


@torch.no_grad()
def save_views_grid(model, augmentation, images: torch.Tensor, path: str, seed: int = 0):
    """Rows: original / standard view / SAIB view / amplified difference, one column per image.

    `images`: float [0, 1] (N, 3, S, S) at the training resolution. Uses a fixed seed so grids of successive
    checkpoints differ only by what SAIB learned.
    """
    device = next(model.parameters()).device
    # The training run's random streams (CPU and this GPU) are left exactly as they were: a resumed run and an
    # uninterrupted one draw the same numbers whether or not pictures were written in between.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        images = images.to(device)
        standard = augmentation(images)
        generated, delta = model.generate_view(standard)
    scale = max(delta.abs().max().item(), 1e-8)
    amplified = (0.5 + 0.5 * delta / scale).clamp(0, 1)
    rows = [
        ("original", images),
        ("standard view", standard),
        ("SAIB view", generated),
        ("difference (amplified)", amplified),
    ]
    n = images.shape[0]
    # One image per row (the N pictures side by side, 1 px apart): a few axes render much faster than 4 x N.
    figure, axes = plt.subplots(len(rows), 1, figsize=(1.2 * n, 1.3 * len(rows)), squeeze=False)
    for r, (title, batch) in enumerate(rows):
        batch = batch.float().clamp(0, 1).cpu()
        padded = torch.nn.functional.pad(batch, (0, 1, 0, 0), value=1.0)  # a white column after each picture
        strip = torch.cat(list(padded), dim=2)[:, :, :-1]
        axes[r][0].imshow(strip.permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[r][0].axis("off")
        axes[r][0].set_title(title, fontsize=8, loc="left")
    figure.suptitle(f"IE-CL views (mean |SAIB(x) - x| = {delta.abs().mean().item():.4f})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_training_curves(history: list[dict], path: str):
    """Loss, query entropy and KL, SAIB's log-det and the spectral norm, online kNN accuracy against the step."""
    panels = [
        ("loss", ["loss", "base_loss"]),
        ("entropy / KL (nats per dim)", ["entropy_query", "entropy_anchor", "kl_loss"]),
        ("SAIB log|det J| / max spectral norm", ["saib_logdet", "spectral_norm_max"]),
        ("online kNN top-1", ["knn_top1"]),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3))
    for axis, (title, keys) in zip(axes, panels):
        for key in keys:
            points = [(record["step"], record[key]) for record in history if key in record]
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, marker="o" if key == "knn_top1" else None, label=key)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("step")
        if axis.lines:
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
