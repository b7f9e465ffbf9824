"""The self-contained HTML page of a report (images embedded, tables as fragments written by the writer)."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from .flags import degenerate_models
from ..results import lambda_text

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
/* Fig. 3 grids are drawn at print size: shown at their own width (at most the page's), labels stay legible */
.examples img { width: 860px; max-width: 100%; display: block; margin: 0 0 1.5em; }
figure { margin: 1em 0 2em; } figcaption { color: #444; font-size: .9em; max-width: 60em; }
.summary { background: #f4f8fc; border-left: 4px solid #0072B2; padding: .4em 1em; }
.summary li { margin: .3em 0; } nav.toc ol { columns: 2; font-size: .95em; }
code { background: #f2f2f2; padding: 0 .3em; }
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
    fields = {key: manifest.get(key) for key in ("created", "seed", "device", "platform")}
    fields.update({f"version {k}": versions.get(k) for k in ("aerobust", "torch", "pytorch-msssim") if k in versions})
    return {k: v for k, v in fields.items() if v is not None}


def _protocol(manifest: dict, results: pd.DataFrame, settings: dict | None) -> dict:
    """What was audited and how, in one table a reader can cite."""
    config = manifest.get("config") or {}
    attacks = manifest.get("attacks") or {}
    attack_settings = []
    for attack in dict.fromkeys(results["attack"]):
        recorded = attacks.get(attack) or {}
        parts = [f"{k} {recorded[k]}" for k in ("budget", "norm", "optimizer", "steps", "restarts") if k in recorded]
        attack_settings.append(f"{attack} ({', '.join(parts)})" if parts else attack)
    data = ", ".join(str(config[k]) if k == "data" else f"{k} {config[k]}"
                     for k in ("data", "split", "pad_to", "resize") if config.get(k) is not None)
    return {"models": ", ".join(dict.fromkeys(results["model"])), "attacks": "; ".join(attack_settings),
            "λ": ", ".join(lambda_text(v) for v in sorted(results["lambda"].unique())),
            "trials × images": f"{results['trial'].nunique()} × {results['image_id'].nunique()} ({len(results)} rows)",
            "data": data or None, "MS-SSIM preset": (settings or {}).get("preset"),
            "audit seed": manifest.get("seed")}


def _plain_table(values: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in values.items() if v is not None)
    return f'<table class="settings">{rows}</table>'


# (written key, heading, note for tables without their own caption)
TABLE_SECTIONS = (
    ("table2_ablation", "Table 2: ablation", ""),
    ("table3_latent_classifier", "Table 3: latent-space classifier accuracy", ""),
    ("fidelity", "Clean fidelity and code sensitivity", ""),
    ("summary", "All metrics per model, attack and λ", ""),
    ("intervals", "95 % intervals of every cell", "Percentile cluster bootstrap over images, each image "
     "resampled with all of its trials (2000 resamples); counts of images, trials and rows beside each mean."),
    ("paired_tests", "Paired tests between models", "Same images and targets; per-image trial means, "
     "sign-flip permutation test of the mean difference (model_b − model_a), Holm-corrected over the table; "
     "holds: p_holm < 0.05."),
    ("universal_share", "Universal perturbation against per-image maximum damage",
     "share = mean ‖x̃_a − x̃_r‖ of the universal attack / that of the max-damage attack, same rows."),
    ("ensemble_wins", "Which member of the --ensemble gave each row's worst case",
     "default: the attack as configured; extra-restarts: the same with more random starts; reference-lbfgs: the "
     "reference code's L-BFGS-B. Ties go to the earlier member, so a win is a strictly stronger point."),
    ("auddc", "AUDDC (area under the distortion-distortion curve)", "Higher = more robust; needs λ = 0 "
     "in the grid. The curve is in the figures."),
)
LONG_TABLE_ROWS = 40
FLAGS_NOTE = ("Checks in the spirit of AutoAttack's: zero or NaN gradients, attack loss not monotone in λ (per "
              "sample, across the audit's λ), an unbounded latent attack that misses its target, an attack weaker "
              "than random noise of the same norm; NaN/inf values (non-finite); a model whose reconstructions ignore "
              "the input (degenerate-model). A flag raised at several λ is one row with summed counts.")


def _fragment(written: dict, key: str) -> str:
    return f"<div class='scroll'>{Path(written[key]['html']).read_text()}</div>"


def _figure(path: Path, alt: str, caption: str) -> str:
    return f"<figure>{_image_tag(path, alt)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _page_head(title: str) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>")


def table_page(title: str, note: str, fragment: str) -> str:
    """A page of one table in the report's style (the leaderboard): title, a note on how to read it, and the
    writer's HTML fragment, scrolling sideways rather than running past the page."""
    return f"{_page_head(title)}<p class='note'>{html.escape(note)}</p><div class='scroll'>{fragment}</div></body></html>\n"


def html_page(title: str, written: dict, settings: dict | None, sources, results: pd.DataFrame,
              flags: pd.DataFrame | None, command: str) -> str:
    """The page: summary, contents, protocol and versions, flags, tables, figures, then the full settings."""
    from .figures import FIGURE_CAPTIONS, incomparable_code_scales
    from .summary import summary_sentences

    sections: list[tuple[str, str, str]] = []  # (anchor, heading, body)
    degenerate = [] if flags is None else degenerate_models(flags)
    # the summary's verdicts come from the same paired tests (and Holm family) as the page's paired-test table
    paired = pd.read_csv(written["paired_tests"]["csv"]) if "paired_tests" in written else None
    summary = "".join(f"<li>{html.escape(s)}</li>" for s in summary_sentences(results, degenerate, paired))
    warning = (f"<p class='warning'><b>degenerate-model: {html.escape(', '.join(degenerate))}.</b> The "
               "reconstructions of these models do not depend on their input, so no attack can change them: "
               "their robustness scores mean nothing (see the sanity flags and the fidelity table).</p>"
               if degenerate else "")
    provenance = (f"<p>Regenerate this page with <code>{html.escape(command)}</code> (it reads the saved results; "
                  "nothing is re-run). Every table is also written as CSV, Markdown and LaTeX (booktabs) beside "
                  "this page, every figure as PNG and PDF.</p>")
    for directory, source in sources:
        provenance += (f"<h3>{html.escape(str(directory))}: <code>aerobust {html.escape(str(source.get('command')))}"
                       f"</code></h3>" + _plain_table(_protocol(source, results, settings))
                       + _plain_table(_manifest_fields(source)))
    sections.append(("protocol", "Protocol, command and versions", provenance))
    if len(sources) == 1 and "flags" in sources[0][1]:
        body = f"<p class='note'>{html.escape(FLAGS_NOTE)}</p>" + (
            _fragment(written, "sanity_flags") if "sanity_flags" in written else "<p>No flag was raised.</p>")
        sections.append(("flags", "Sanity flags", body))
    panels = [k for k in written if k.startswith("table1_msssim_")]
    if panels:  # one table per attack: each fits the page (and a paper's text width)
        body = "".join(_fragment(written, key) for key in panels)
        sections.append(("table1", "Table 1: MS-SSIM under attack", body + "<p class='note'>All attacks in one "
                         "table: table1_msssim.csv / .md / .tex beside this page.</p>"))
    for key, heading, note in TABLE_SECTIONS:
        if key in written:
            fragment = _fragment(written, key)
            rows = fragment.count("<tr>") - fragment.count("<thead>")
            if rows > LONG_TABLE_ROWS:  # folded, so that the figures below stay a scroll away, not pages
                fragment = f"<details><summary>show the table ({rows} rows)</summary>{fragment}</details>"
            sections.append((key, heading, (f"<p class='note'>{html.escape(note)}</p>" if note else "") + fragment))
    scale_note = ""
    scales = incomparable_code_scales(results)
    if scales is not None:
        scale_note = (" Latent distances are not comparable across these models: their codes have different scales "
                      "(median distance between two codes: " + ", ".join(f"{m} {v:.3g}" for m, v in scales.items())
                      + "), as the reference paper warns; compare them within a model, or use Table 1.")
    figures = _figure(written["fig2_attack_loss"], "Figure 2: attack loss", FIGURE_CAPTIONS["fig2_attack_loss"]
                      + scale_note)
    figures += _figure(written["robustness_vs_fidelity"], "robustness against fidelity",
                       FIGURE_CAPTIONS["robustness_vs_fidelity"])
    if "fig_distortion_curve" in written:
        figures += _figure(written["fig_distortion_curve"], "distortion-distortion curve",
                           "Distortion-distortion curve (its area is the AUDDC table).")
    sections.append(("figures", "Figures", figures))
    example_keys = [k for k in written if k.startswith("fig3_")]
    if example_keys:
        sections.append(("examples", "Figure 3: examples", f"<p class='note'>{html.escape(FIGURE_CAPTIONS['fig3'])}"
                         "</p><div class='examples'>" + "".join(_image_tag(written[k], k) for k in example_keys)
                         + "</div>"))
    appendix = "<h3>MS-SSIM settings</h3>" + (_settings_table(settings) if settings else
                                              "<p>No MS-SSIM settings recorded.</p>")
    for directory, source in sources:
        if source.get("config") is not None:
            appendix += (f"<details><summary>audit config of {html.escape(str(directory))}</summary><pre>"
                         + html.escape(json.dumps(source["config"], indent=2, sort_keys=True)) + "</pre></details>")
    sections.append(("settings", "Settings", appendix))
    toc = "".join(f"<li><a href='#{anchor}'>{html.escape(heading)}</a></li>" for anchor, heading, _ in sections)
    parts = [_page_head(title),
             f"<section id='summary' class='summary'><h2>Summary</h2><ul>{summary}</ul></section>", warning,
             f"<nav class='toc' id='contents'><h2>Contents</h2><ol>{toc}</ol></nav>"]
    parts += [f"<section id='{anchor}'><h2>{html.escape(heading)}</h2>{body}</section>"
              for anchor, heading, body in sections]
    parts.append("</body></html>")
    return "\n".join(parts)
