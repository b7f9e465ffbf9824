"""The self-contained HTML page of a report (images embedded, tables as fragments written by the writer)."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from .flags import degenerate_models
from .results_io import lambda_text

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1400px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em;
       margin-top: 2em; }
table.aerobust-table, table.settings { border-collapse: collapse; font-size: 0.8em; margin: .5em 0 1em; }
table.aerobust-table caption { caption-side: top; text-align: left; color: #444; padding: 0 0 .3em; }
table.aerobust-table th, table.aerobust-table td, table.settings th, table.settings td {
       border: 1px solid #ddd; padding: 2px 6px; }
/* headers wrap so that a wide table stays inside the page; numbers never do */
table.aerobust-table th { background: #f2f4f7; text-align: center; vertical-align: bottom; white-space: normal; }
table.aerobust-table td { white-space: nowrap; vertical-align: top; }
table.aerobust-table td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: normal; }
table.aerobust-table td.num .pm { display: block; font-size: .85em; color: #666; white-space: nowrap; }
table.aerobust-table .text { text-align: left; }
table.aerobust-table td.text { white-space: normal; min-width: 4em; }
table.settings th { text-align: left; background: #f7f7f7; }
table.settings td { text-align: left; }
.warning { background: #fff1f0; border: 1px solid #e0a0a0; padding: .6em; }
.scroll { overflow-x: auto; } img { max-width: 100%; } .note { color: #555; font-size: .9em; }
.examples img { max-width: 560px; margin: 0 1em 1em 0; } .examples { display: flex; flex-wrap: wrap; }
pre { background: #f7f7f7; padding: .7em; font-size: .8em; overflow-x: auto; }
"""


def _image_tag(path: Path, alt: str) -> str:
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _settings_table(values: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
                   for k, v in values.items())
    return f'<table class="settings">{rows}</table>'


def _manifest_fields(manifest: dict) -> dict:
    versions = manifest.get("versions") or {}
    fields = {key: manifest.get(key) for key in ("command", "created", "seed", "device", "platform")}
    fields.update({f"version {k}": versions.get(k) for k in ("aerobust", "torch", "pytorch-msssim") if k in versions})
    return {k: v for k, v in fields.items() if v is not None}


def html_page(title: str, written: dict, settings: dict | None, sources, results: pd.DataFrame,
               flags: pd.DataFrame | None) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    counts = (f"{results['model'].nunique()} model(s), {results['attack'].nunique()} attack(s), "
              f"λ ∈ {{{', '.join(lambda_text(v) for v in sorted(results['lambda'].unique()))}}}, "
              f"{results['trial'].nunique()} trial(s), {results['image_id'].nunique()} image(s), "
              f"{len(results)} rows.")
    parts.append(f"<p class='note'>{html.escape(counts)} Every cell is the mean ± standard deviation over trials "
                 f"of the per-trial mean over images, and n the rows it averages (\"n=800 of 1000\": 200 rows of "
                 f"that cell hold no finite value).</p>")
    degenerate = [] if flags is None else degenerate_models(flags)
    if degenerate:
        parts.append(f"<p class='warning'><b>degenerate-model: {html.escape(', '.join(degenerate))}.</b> The "
                     "reconstructions of these models do not depend on their input, so no attack can change them: "
                     "their robustness scores mean nothing (see the sanity flags and the fidelity table).</p>")
    sections = (
        ("table1_msssim", "Table 1: MS-SSIM under attack",
         "x_r is the reference image: the target x_t for targeted attacks, the input x otherwise; x̃ are "
         "reconstructions. ↓: lower means a more robust model; ↑: higher means a more robust model."),
        ("table3_latent_classifier", "Table 3: latent-space classifier accuracy (%)", ""),
        ("fidelity", "Clean fidelity and code sensitivity",
         "Clean behaviour on the audited images (no attack): MS-SSIM and MSE between x and its reconstruction x̃. "
         "Code sensitivity: how far the attack moved the code, ‖g(x_a) − g(x)‖, in units of the code separation "
         "(the median distance from g(x) to the codes of the other audited images); 1 means the attack moved the "
         "code as far as the code of a typical other image lies."),
        ("summary", "All metrics per model, attack and λ", ""),
        ("intervals", "95 % intervals of every cell", "Percentile cluster bootstrap over images, each image "
         "resampled with all of its trials (2000 resamples); counts of images, trials and rows beside each mean."),
        ("paired_tests", "Paired tests between models", "Same images and targets; per-image trial means, "
         "sign-flip permutation test of the mean difference (model_b − model_a), Holm-corrected over the table; "
         "holds: p_holm < 0.05."),
        ("universal_share", "Universal perturbation against per-image maximum damage",
         "share = mean ‖x̃_a − x̃_r‖ of the universal attack / that of the max-damage attack, same rows."),
        ("auddc", "AUDDC (area under the distortion-distortion curve)", "Higher = more robust; needs λ = 0 "
         "in the grid. The curve is the figure below."),
    )
    for key, heading, note in sections:
        if key in written:
            fragment = Path(written[key]["html"]).read_text()
            parts.append(f"<h2>{html.escape(heading)}</h2>"
                         + (f"<p class='note'>{html.escape(note)}</p>" if note else "")
                         + f"<div class='scroll'>{fragment}</div>")
    if len(sources) == 1 and "flags" in sources[0][1]:
        parts.append("<h2>Sanity flags</h2><p class='note'>Checks in the spirit of AutoAttack's: zero or NaN "
                     "gradients, attack loss not monotone in λ (per sample, across the audit's λ), an unbounded latent "
                     "attack that misses its target, an attack weaker than random noise of the same norm; NaN/inf "
                     "values (non-finite); a model whose reconstructions ignore the input (degenerate-model). A flag "
                     "means the numbers of that block may overstate robustness. A flag raised at several λ is one "
                     "row with summed counts.</p>")
        parts.append(f"<div class='scroll'>{Path(written['sanity_flags']['html']).read_text()}</div>"
                     if "sanity_flags" in written else "<p>No flag was raised.</p>")
    parts.append("<h2>Figure 2: attack loss against λ</h2>" + _image_tag(written["fig2_attack_loss"], "attack loss"))
    parts.append("<h2>Robustness against clean fidelity</h2>"
                 + _image_tag(written["robustness_vs_fidelity"], "robustness against fidelity"))
    if "fig_distortion_curve" in written:
        parts.append("<h2>Distortion-distortion curve</h2>" + _image_tag(written["fig_distortion_curve"], "AUDDC"))
    example_keys = [k for k in written if k.startswith("fig3_")]
    if example_keys:
        parts.append("<h2>Figure 3: examples</h2><p class='note'>input | clean reconstruction | adversarial input | "
                     "adversarial reconstruction | target (targeted attacks)</p>")
        parts.append("<div class='examples'>" + "".join(_image_tag(written[k], k) for k in example_keys) + "</div>")
    parts.append("<h2>MS-SSIM settings</h2>")
    parts.append(_settings_table(settings) if settings else "<p>No MS-SSIM settings recorded.</p>")
    for directory, manifest in sources:
        parts.append(f"<h2>Audit {html.escape(str(directory))}</h2>" + _settings_table(_manifest_fields(manifest)))
        if manifest.get("config") is not None:
            parts.append("<details><summary>audit config</summary><pre>"
                         + html.escape(json.dumps(manifest["config"], indent=2, sort_keys=True)) + "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)
