"""The audit report page as a reader sees it: rendered by headless Chromium at 1300 px.

Skipped where Chromium is not installed (`apt-get install -y chromium` on Debian; .ci/run installs it).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from aerobust.metrics import MSSSIMSettings
from aerobust.report import RESULT_COLUMNS, build_report
from aerobust.runtime import write_manifest

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="headless Chromium is not installed "
                                "(apt-get install -y chromium); the page layout check needs a browser")

PAGE_WIDTH = 1300
# Runs after every image has loaded; writes what it measured into the DOM that --dump-dom prints.
MEASURE = """
window.addEventListener('load', () => {
  const root = document.documentElement;
  const images = Array.from(document.images);
  const result = {
    scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, images: images.length,
    broken: images.filter(image => !(image.complete && image.naturalWidth > 0)).map(image => image.alt),
    wideTables: Array.from(document.querySelectorAll('table'))
      .filter(table => table.getBoundingClientRect().right > root.clientWidth + 0.5)
      .map(table => table.textContent.trim().slice(0, 60)),
  };
  const out = document.createElement('pre');
  out.id = 'layout-check';
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
"""


def _wide_audit(directory):
    """An audit shaped like the demo (3 attacks x 3 lambdas: an 18-column Table 1), values made up."""
    generator = np.random.default_rng(0)
    models, attacks, lambdas, trials, images = ("plain-autoencoder", "coupled-ks-alpha-0.9"), \
        ("latent", "max-damage", "latent-classifier"), (1.0, 3.0, 5.0), 2, 3
    rows, examples = [], {}
    for model in models:
        for attack in attacks:
            for lam in lambdas:
                for trial in range(trials):
                    for image in range(images):
                        row = {column: generator.random() for column in RESULT_COLUMNS}
                        row.update(model=model, attack=attack, **{"lambda": lam}, trial=trial, image_id=image,
                                   target_id=image + 10, label=image, target_label=image + 1,
                                   classifier_correct=float(generator.random() > 0.5),
                                   clean_classifier_correct=1.0)
                        if attack != "latent":
                            row.update(target_id=-1, target_label=-1, msssim_target_advrecon=np.nan,
                                       l2_target_advrecon=np.nan, latent_target_distance=np.nan)
                        rows.append(row)
                if lam == lambdas[0]:  # example grids for one lambda per attack keep the test quick
                    grid = generator.random((2, 5, 1, 32, 32)).astype(np.float32)  # the scored size: Fig. 3 scores it
                    if attack != "latent":
                        grid[:, 4] = np.nan
                    examples[f"{model}::{attack}::{lam:g}"] = grid
    directory.mkdir(parents=True)
    pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(directory / "results.csv", index=False)
    np.savez(directory / "examples.npz", **examples)
    write_manifest(directory, command="audit", config={"lambdas": list(lambdas), "trials": trials}, seed=0,
                   device="cpu", metrics=MSSSIMSettings.from_preset("small").as_dict(), flags=[])
    return directory


def _measure(page, tmp_path) -> dict:
    checked = tmp_path / "checked.html"
    checked.write_text(page.read_text().replace("</body>", f"<script>{MEASURE}</script></body>"))
    run = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                          f"--window-size={PAGE_WIDTH},1000", "--virtual-time-budget=10000", "--dump-dom",
                          checked.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', run.stdout)
    assert found, f"Chromium printed no measurement (exit {run.returncode}): {run.stderr[-1500:]}"
    return json.loads(found.group(1))


def test_report_page_fits_1300px_and_every_image_loads(tmp_path):
    written = build_report(_wide_audit(tmp_path / "audit"), tmp_path / "report")
    page = written["report.html"]
    measured = _measure(page, tmp_path)
    assert measured["clientWidth"] == PAGE_WIDTH
    assert measured["scrollWidth"] <= PAGE_WIDTH, measured
    assert measured["wideTables"] == [], "tables wider than the page (hidden behind a scroll bar)"
    assert measured["images"] == page.read_text().count("<img") >= 1 + 3  # Fig. 2 and three Fig. 3 grids
    assert measured["broken"] == []
    text = page.read_text()
    # the summary names the most robust model per attack with its numbers; the contents link every section
    summary = text.split("<section id='summary'", 1)[1].split("</section>", 1)[0]
    assert "most robust" in summary and "Clean fidelity" in summary and "images" in summary
    assert text.index("id='summary'") < text.index("id='contents'") < text.index("id='protocol'") < \
        text.index("id='table1'")
    anchors = re.findall(r"<li><a href='#([a-z0-9_]+)'>", text)
    assert {"protocol", "flags", "table1", "figures", "examples"} <= set(anchors)
    assert all(f"<section id='{anchor}'>" in text for anchor in anchors)
    assert "aerobust report " in text and "version torch" in text
