"""The M3AE experiment's report (experiments/m3ae.py) on made-up unit results: the spread rule, the
claim lines, the tables, notes kept across rewrites and the figure. The experiment never runs here."""

from __future__ import annotations

import pytest
from PIL import Image

from conftest import load_experiment


@pytest.fixture(scope="module")
def m3ae():
    return load_experiment("m3ae")


def test_the_spread_rule(m3ae):
    assert m3ae.verdict([0.6, 0.7], [0.4, 0.5]) == (pytest.approx(0.2), "holds")
    assert m3ae.verdict([0.4, 0.5], [0.6, 0.7]) == (pytest.approx(-0.2), "reversed")
    diff, how = m3ae.verdict([0.5, 0.7], [0.5, 0.6])  # 0.05 apart, sd 0.14
    assert diff == pytest.approx(0.05) and how.startswith("within the seeds' spread (0.141)")


def fake_results(m3ae, color: dict[str, float]) -> list[dict]:
    """Two seeds per arm; the colour probe is ``color[arm]`` ± 0.01, the other targets 0.3; relation
    words 0.8 from the image and 0.5 without it, except for skipflip (0.6)."""
    out = []
    for arm in [*m3ae.ARMS, "random"]:
        for s, jitter in ((0, -0.01), (1, 0.01)):
            probe = {p: {t: {"val": (color[arm] + jitter) if t == "color" else 0.3} for t in m3ae.TARGETS}
                     for p in m3ae.POOLINGS}
            r = {"unit": f"{arm}-s{s}", "arm": arm, "seed": s, "probe": probe, "unit_wall_s": 60.0}
            if arm not in ("mae", "random"):
                r["relation"] = {"image": {"accuracy": 0.6 if arm == "skipflip" else 0.8, "scenes": 10},
                                 "no image": {"accuracy": 0.5, "scenes": 10}}
                r["val"] = {"rgb": 0.4, "caption_acc": 0.7}
            if arm != "random":
                r.update(steps=10, train_wall_s=5.0)
            out.append(r)
    return out


def test_report_tables_claims_notes_and_figure(m3ae, tmp_path):
    color = {"text15": 0.4, "text50": 0.6, "text75": 0.6, "text90": 0.6, "unpaired": 0.6, "skipflip": 0.6,
             "mae": 0.5, "random": 0.3}
    results = fake_results(m3ae, color)
    plan = m3ae.Plan(out=tmp_path / "out", seeds=(0, 1))
    for r in results:
        r["command"] = "python experiments/m3ae.py --arms x" if r["arm"] == "mae" else "python experiments/m3ae.py"
    md = m3ae.write_report(results, plan, "python experiments/m3ae.py", tmp_path,
                           {"label": 0.25, "objects": 0.2, "color": 0.1})
    text = md.read_text()
    assert "the units ran as `python experiments/m3ae.py --arms x`." in text.split("\n")[2]
    assert "| most frequent train value | 0.250 | 0.200 | 0.100 |" in text
    assert "| M3AE, text mask 0.15 | 0.300 ± 0.000 | 0.300 ± 0.000 | 0.400 ± 0.014 |" in text
    assert "| random encoder | 0.300 ± 0.000 | 0.300 ± 0.000 | 0.300 ± 0.014 |" in text
    claims = text.split("## The paper's claims at this scale")[1].split("## Every run")[0]
    assert "color (t0.75 − t0.15): +0.200, holds" in claims
    assert "label (t0.75 − t0.15): +0.000, within the seeds' spread" in claims
    assert "color (t0.75 − MAE): +0.100, holds" in claims
    assert "color (+unpaired − t0.75): +0.000, within the seeds' spread" in claims
    assert "relation word, with − without the image (t0.75): +0.300, holds" in claims
    assert "relation word from the image (t0.75 − no flip): +0.200, holds" in claims
    assert text.count("| text75 | ") == 2 and "0.800 / 0.500 (10 scenes)" in text
    with Image.open(tmp_path / "m3ae.png") as im:
        assert im.width > 500 and im.height > 400
    # hand-written notes below the marker survive a rewrite; the tables are rewritten
    md.write_text(text + "\nWhy it differs: a note.\n")
    color["text15"] = 0.7
    m3ae.write_report(fake_results(m3ae, color), plan, "python experiments/m3ae.py", tmp_path)
    again = md.read_text()
    assert again.count("Why it differs: a note.") == 1 and again.count(m3ae.NOTES_MARK) == 1
    assert "color (t0.75 − t0.15): -0.100, reversed" in again


def test_majority_rates(m3ae):
    train = {"facts": {t: [1, 1, 2] for t in m3ae.TARGETS}}
    val = {"facts": {t: [1, 2, 2, 2] for t in m3ae.TARGETS}}
    assert m3ae.majority_rates(train, val) == dict.fromkeys(m3ae.TARGETS, 0.25)


def test_report_leaves_out_claims_whose_arms_did_not_run(m3ae, tmp_path):
    only = [r for r in fake_results(m3ae, dict.fromkeys([*m3ae.ARMS, "random"], 0.5)) if r["arm"] in ("text75", "mae")]
    text = m3ae.write_report(only, m3ae.Plan(out=tmp_path, seeds=(0, 1)), "cmd", tmp_path).read_text()
    assert "M3AE's encoder beats an image-only MAE's" in text
    assert "BERT's 0.15" not in text and "unpaired" not in text.split("## The paper's claims")[1]
