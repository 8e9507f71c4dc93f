"""A self-contained HTML run report: loss curve (inline SVG), metrics table, retrieval examples.

Self-contained (images inlined as base64, no scripts, no external CSS) so the file can be mailed,
attached to an issue or opened from a CI artifact without the run directory around it.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image


@dataclass
class RetrievalExample:
    image_path: Path
    ranked_captions: list[tuple[str, bool]]  # (caption, is it one of this image's captions?)
    true_captions: list[str] = field(default_factory=list)
    title: str = ""


def thumbnail_data_uri(path: Path, size: int = 128) -> str:
    """Upscale small images with nearest-neighbour (keeps 64-px scenes crisp), shrink large ones."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = size / max(image.size)
        resample = Image.NEAREST if scale > 1 else Image.BICUBIC
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def loss_curve_svg(points: list[tuple[int, float]], width: int = 640, height: int = 240) -> str:
    if len(points) < 2:
        return "<p>(not enough logged steps for a curve)</p>"
    pad = 40
    steps = [p[0] for p in points]
    losses = [p[1] for p in points]
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(losses), max(losses)
    y1 = y1 if y1 > y0 else y0 + 1.0

    def sx(step: float) -> float:
        return pad + (width - 2 * pad) * (step - x0) / max(x1 - x0, 1)

    def sy(loss: float) -> float:
        return height - pad - (height - 2 * pad) * (loss - y0) / (y1 - y0)

    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(s):.1f},{sy(v):.1f}" for i, (s, v) in enumerate(points))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="training loss">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#444"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#444"/>'
        f'<path d="{path}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>'
        f'<text x="{pad}" y="{pad - 8}" font-size="11">{y1:.3f}</text>'
        f'<text x="{pad}" y="{height - pad + 14}" font-size="11">{y0:.3f}</text>'
        f'<text x="{pad}" y="{height - 8}" font-size="11">step {x0}</text>'
        f'<text x="{width - pad}" y="{height - 8}" font-size="11" text-anchor="end">step {x1}</text>'
        "</svg>"
    )


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    if not metrics:
        return "<p>(no metrics)</p>"
    columns = sorted({k for values in metrics.values() for k in values if not _is_detail(k)}, key=_metric_order)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for split, values in metrics.items():
        cells = "".join(f"<td>{_fmt(values.get(c))}</td>" for c in columns)
        rows.append(f"<tr><th>{html.escape(split)}</th>{cells}</tr>")
    return f"<table><tr><th>split</th>{head}</tr>{''.join(rows)}</table>"


def _is_detail(name: str) -> bool:
    """Per-foil-kind breakdowns stay in eval.json; the table shows the headline numbers."""
    return "_binding_" in name


def _metric_order(name: str) -> tuple[int, str]:
    order = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "r_mean", "itc_binding", "itm_binding"]
    return (order.index(name), name) if name in order else (len(order), name)


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 100 else f"{value:.2f}"


def write_report(
    path: Path,
    title: str,
    loss_points: list[tuple[int, float]],
    metrics: dict[str, dict[str, float]],
    examples: list[RetrievalExample],
    notes: list[str] | None = None,
) -> Path:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        ".ex{display:flex;gap:12px;margin:12px 0;align-items:flex-start}.ex img{image-rendering:pixelated;border:1px solid #ccc}"
        ".hit{color:#176e17;font-weight:bold}.miss{color:#888}ol{margin:0}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for note in notes or []:
        parts.append(f"<p>{html.escape(note)}</p>")
    parts += ["<h2>Training loss</h2>", loss_curve_svg(loss_points)]
    parts += ["<h2>Retrieval recall@K (%)</h2>", metrics_table(metrics)]
    if examples:
        parts.append("<h2>Image &rarr; text examples</h2><p>Top captions from the test gallery; "
                     "<span class='hit'>green</span> = one of the image's own captions.</p>")
        for example in examples:
            items = "".join(
                f"<li class='{'hit' if ok else 'miss'}'>{html.escape(text)}</li>" for text, ok in example.ranked_captions
            )
            truth = "".join(f"<li>{html.escape(t)}</li>" for t in example.true_captions)
            parts.append(
                f"<div class='ex'><img src='{thumbnail_data_uri(example.image_path)}' width='128' height='128' alt='{html.escape(example.title)}'>"
                f"<div><b>{html.escape(example.title)}</b><ol>{items}</ol>"
                f"<details><summary>its captions</summary><ul>{truth}</ul></details></div></div>"
            )
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path
