"""``MODEL.md``: the model card in plain words, written beside ``model.json`` for every model.

``model.json`` is the machine-readable card (what ``segment`` checks data against).
``MODEL.md`` says the same for a reader, in the order of bioimage.io model cards: what
the model does and how to run it, what it was trained on, at what voxel size and
nucleus size it works, how well it did (with the number of nuclei behind each figure),
where it is known to fail, and how to reproduce it. It is generated from ``model.json``
alone, so it works for any backend's card and can be regenerated at any time
(``spheroid model-card MODEL``).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.segment.card import FORMATS, read_card_json
from pipeline.io.atomic import write_atomic

LOG = logging.getLogger(__name__)

MD_NAME = "MODEL.md"

#: Below this instance F1 a model misses or merges too many nuclei to be trusted on that data.
POOR_F1 = 0.5
#: Fewer validation nuclei than this make the figures rough (said with their uncertainty).
FEW_NUCLEI = 200

_BACKENDS = {
    "unet": "a 3D U-Net (spheroid's own) that predicts background / edge / nucleus for every voxel"
    " and grows one nucleus from each seed by a watershed",
    "stardist": "a StarDist 3D model (star-convex polyhedra around each nucleus' centre)",
    "cellpose": "a Cellpose model (a 2D network run on the three views of the stack, its flows combined in 3D)",
}


def write_model_md(folder: str | Path) -> Path:
    """Write ``folder/MODEL.md`` from ``folder/model.json`` (atomically); returns its path.

    Raises
    ------
    pipeline.errors.InputError
        When the folder holds no readable model card.
    """
    folder = Path(folder)
    text = model_md(read_card_json(folder), folder=folder)
    path = folder / MD_NAME
    write_atomic(path, text)
    LOG.info("wrote %s", path)
    return path


def model_md(card: dict[str, Any], *, folder: str | Path | None = None) -> str:
    """The text of ``MODEL.md`` for a card (the parsed ``model.json`` of any backend)."""
    backend = FORMATS.get(card.get("format", ""), card.get("format", "?"))
    training = card.get("training") or {}
    metrics = card.get("metrics") or {}
    name = card.get("name", "model")
    where = str(folder) if folder is not None else "MODEL"
    shipped = folder is not None and Path(folder).resolve() == (Path(__file__).resolve().parents[1] / "data" / "models" / "unet-default")
    voxel = card.get("voxel_size") or [None, None, None]
    channels = [c.replace("|", " or ") for c in card.get("channels", [])]
    lines = [
        f"# {name}",
        "",
        f"A model that finds every cell nucleus in 3D fluorescence stacks: {_BACKENDS.get(backend, backend)}. "
        f"It takes one nuclear stain ({', '.join(channels) or 'unnamed'}) and gives a label image: 0 = background, "
        "one number per nucleus. This file is generated from `model.json` (the card `spheroid segment` reads).",
        "",
        "## How to use it",
        "",
        "```bash",
        f"spheroid segment exp1.zarr --model {where}" + (f" --backend {backend}" if backend != "unet" else "") + "          # every field and time point of a store",
        f"spheroid segment volume.tif --model {where}" + (f" --backend {backend}" if backend != "unet" else "") + " --out labels.tif",
        "```",
        "",
        *(["It is the shipped default: without `--model`, `spheroid segment` uses it.", ""] if shipped else []),
        f"Give it the nuclear channel: `--channel NAME` (another stain than {' / '.join(channels) or 'its own'} is fed to it "
        "as it is; the log says so). Each volume is normalised by its own percentiles "
        f"({_normalization(card)}) and resampled to the voxel size below.",
        "",
        "## Voxel size and nucleus size",
        "",
        f"It works at a voxel size of {_um(voxel)} (z, y, x); data at another voxel size is resampled to it "
        f"(within {card.get('voxel_tolerance', 0.1):.0%} per axis it is used as it is).",
    ]
    diameter = card.get("nucleus_diameter_um")
    if diameter:
        across = ", ".join(f"{diameter / v:.1f}" for v in voxel) if all(voxel) else "?"
        lines.append(
            f"Its training nuclei were about {diameter:.1f} um across (median, as a sphere of equal volume): "
            f"{across} voxels in z, y, x. Where your nuclei are of another size, say so with `--diameter UM`: "
            "the data is then scaled so that its nuclei take as many voxels as these did."
        )
        per_axis = card.get("nucleus_diameters_um")
        lines.append(
            (f"Along z, y and x they measured {_um(per_axis)}. " if per_axis else "")
            + "Where your nuclei are not round in the data (drawn out along z by the axial blur, as is common), "
            "give their size per axis, `--diameter Z,Y,X` (um): each axis is then scaled on its own."
        )
    else:
        lines.append(
            "The card does not record the training nuclei's size (written before it was recorded): `--diameter` "
            "cannot rescale for it; give data whose nuclei look like the training data's at this voxel size."
        )
    lines += ["", "## What it was trained on", ""]
    lines += _training(training)
    lines += ["", "## How well it does", ""]
    lines += _figures(metrics)
    lines += ["", "## Where it is known to fail", ""]
    lines += [f"- {text}" for text in _failures(card, training, metrics)]
    lines += ["", "## Reproduce", ""]
    command = card.get("command")
    lines.append(f"Made by `{command}`" + (f" on {card['created'][:10]}" if card.get("created") else "") + "." if command else "No command recorded.")
    versions = card.get("versions") or {}
    if versions:
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    lines.append(f"Weights: `{card.get('weights', 'weights')}` (state dict; read without running code). Full details: `model.json`.")
    return "\n".join(lines) + "\n"


def _um(values) -> str:
    return " x ".join(f"{v:.3g}" for v in values) + " um" if all(v is not None for v in values) else "an unrecorded size"


def _normalization(card: dict[str, Any]) -> str:
    n = card.get("normalization") or {}
    return f"percentile {n.get('low', 1.0):g} -> 0, {n.get('high', 99.8):g} -> 1" + (", clipped" if n.get("clip") else "")


def _training(training: dict[str, Any]) -> list[str]:
    items = training.get("items") or []
    if not items:
        return ["The card lists no training items."]
    out = []
    by = Counter((i.get("split", "?"), i.get("source", "?")) for i in items)
    nuclei = Counter()
    for i in items:
        nuclei[(i.get("split", "?"), i.get("source", "?"))] += int(i.get("n_instances") or 0)
    out.append("| split | source | volumes | nuclei | voxel sizes (um) | shapes (z, y, x) |")
    out.append("|---|---|---|---|---|---|")
    for (split, source), count in sorted(by.items(), key=lambda kv: (kv[0][0] != "train", kv[0])):
        group = [i for i in items if (i.get("split"), i.get("source")) == (split, source)]
        voxels = sorted({tuple(round(v, 3) for v in i.get("voxel_size", [])) for i in group})
        shapes = sorted({tuple(i.get("shape", [])) for i in group})
        out.append(
            f"| {split} | {source} | {count} | {nuclei[(split, source)]} | {'; '.join(' x '.join(f'{v:g}' for v in vs) for vs in voxels[:3])}"
            f"{' ...' if len(voxels) > 3 else ''} | {'; '.join(str(s) for s in shapes[:3])}{' ...' if len(shapes) > 3 else ''} |"
        )
    out.append("")
    out.append(
        "`train` volumes taught the model; `val` volumes chose the best step (and the labelling thresholds), so "
        "figures on them are somewhat optimistic. Voxel sizes are those the model saw (after resampling)."
    )
    run = []
    if training.get("steps"):
        run.append(f"{training['steps']} steps")
    if training.get("time_s"):
        run.append(f"{training['time_s'] / 60:.0f} min" + (f" on {training['device']}" if training.get("device") else ""))
    if training.get("cpu_s"):
        run.append(f"{training['cpu_s'] / 60:.0f} CPU-min")
    if run:
        out += ["", "Training: " + ", ".join(run) + "."]
    init = training.get("init_from")
    if init:
        out += ["", f"Fine-tuned from `{init.get('name')}` ({init.get('path')}, {len(init.get('items') or [])} training items of its own)."]
    return out


def _f1_line(m: dict[str, Any]) -> str:
    n_true = m.get("n_true")
    parts = [f"instance F1 {m['match_f1']:.2f}"]
    if "match_precision" in m and "match_recall" in m:
        parts.append(f"precision {m['match_precision']:.2f}, recall {m['match_recall']:.2f}")
    if "f1_nucleus" in m:
        parts.append(f"voxel F1 nucleus {m['f1_nucleus']:.2f}" + (f", edge {m['f1_edge']:.2f}" if "f1_edge" in m else ""))
    if n_true is not None:
        parts.append(f"on {n_true} nuclei ({m.get('n_pred', '?')} predicted){_spread(m['match_f1'], n_true)}")
    return "; ".join(parts)


def _spread(f1: float, n: int) -> str:
    """Roughly one standard error of a proportion over ``n`` nuclei, when they are few."""
    if not n or n >= FEW_NUCLEI:
        return ""
    return f", about +-{math.sqrt(max(f1 * (1 - f1), 0.01) / n):.2f} from so few"


def _figures(metrics: dict[str, Any]) -> list[str]:
    out = [
        "Instance F1 is the share of nuclei found one to one: a predicted nucleus counts when it overlaps a true one "
        "with IoU >= 0.5 (precision: the share of predictions that are right; recall: the share of true nuclei found). "
        "Voxel F1 scores each voxel's class (nucleus, edge) and is higher than instance F1 when nuclei are found "
        "but merged or cut.",
        "",
    ]
    best = {k: v for k, v in (metrics.get("best") or {}).items() if isinstance(v, (int, float))}
    if "match_f1" in best:
        step = metrics.get("best_step")
        out.append(f"- Validation (`val` volumes{f', best step {step}' if step else ''}): {_f1_line(best)}.")
        tuned = {k: v for k, v in (metrics.get("card_labeling") or {}).items() if isinstance(v, (int, float))}
        if "match_f1" in tuned:
            out.append(f"- Validation with the card's labelling (re-chosen on split `{(metrics.get('labeling_tuned_on') or {}).get('split', 'val')}` "
                       f"by `spheroid tune-labeling`): {_f1_line(tuned)}.")
    else:
        out.append("- Validation: none (no `val` volumes): nothing measured how well this model segments.")
    heldout = metrics.get("heldout") or {}
    for group, m in (heldout.get("metrics") or {}).items():
        if "match_f1" in m:
            label = "all held-out volumes" if group == "all" else f"held-out {group}"
            out.append(f"- {label.capitalize()} (split `{heldout.get('split', 'test')}`, never seen in training or model selection): {_f1_line(m)}.")
    if not heldout:
        out.append("- Held-out: not measured (`spheroid test-model MODEL --trainset TS --update-card` adds it).")
    return out


def _failures(card: dict[str, Any], training: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    out = []
    sources = sorted({i.get("source", "?") for i in training.get("items") or []})
    if sources:
        out.append(
            f"Data unlike its training data ({', '.join(sources)}): other stains, optics, noise or tissue. "
            "Check a few volumes by eye (the overlay of `spheroid evaluate`) before trusting counts."
        )
    groups = dict((metrics.get("heldout") or {}).get("metrics") or {})
    best = metrics.get("best") or {}
    if "match_f1" in best:
        groups = {"validation": best, **groups}
    for group, m in groups.items():
        if group == "all" or "match_f1" not in m:
            continue
        label = group if group == "validation" else f"held-out {group}"
        if m["match_f1"] < POOR_F1:
            out.append(f"On {label} it finds few nuclei right: instance F1 {m['match_f1']:.2f} on {m.get('n_true', '?')} nuclei.")
        if "match_precision" in m and "match_recall" in m and m.get("n_true"):
            p, r = m["match_precision"], m["match_recall"]
            if r < p - 0.1:
                out.append(f"On {label} it misses nuclei more often than it invents them (recall {r:.2f}, precision {p:.2f}): dim or touching nuclei are lost or merged.")
            elif p < r - 0.1:
                out.append(f"On {label} it cuts nuclei into parts or finds nuclei that are not there (precision {p:.2f}, recall {r:.2f}).")
        if m.get("n_true") is not None and m["n_true"] < FEW_NUCLEI:
            out.append(f"The {label} figures rest on only {m['n_true']} nuclei: treat them as rough.")
    if "match_f1" not in best:
        out.append("Trained without validation volumes: its quality was never measured.")
    diameter = card.get("nucleus_diameter_um")
    scale = f"about {diameter:.0f} um" if diameter else "those it was trained on"
    out.append(f"Nuclei much smaller or larger than {scale} at the stated voxel size, unless `--diameter` says their size.")
    out.append("Nuclei cut by the volume's border, and very dense clusters, are scored and segmented worst.")
    return out
