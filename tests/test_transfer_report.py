"""The transfer experiment's report (experiments/transfer.py) on made-up unit results: the table,
the spread rule, the claim checks and the figure. The experiment itself never runs in the tests."""

from __future__ import annotations

import pytest
from PIL import Image

from conftest import load_experiment


@pytest.fixture(scope="module")
def transfer():
    return load_experiment("transfer")


def test_mean_sd_and_the_spread_rule(transfer):
    assert transfer.mean_sd([1.0, 3.0]) == pytest.approx((2.0, 2**0.5))
    gain, verdict = transfer.compare([0.5, 0.7], [0.1, 0.1], True)
    assert gain == pytest.approx(0.5) and verdict == "better"
    gain, verdict = transfer.compare([0.5, 0.7], [0.4, 0.6], True)  # 0.1 apart, sds 0.14 + 0.14
    assert verdict == "within spread"
    gain, verdict = transfer.compare([2.0, 2.0], [1.0, 1.0], False)  # lower is better: 2 is worse
    assert gain == pytest.approx(-1.0) and verdict == "worse"


def fake_results(transfer):
    pre = [{"unit": f"pretrain-{a}-s{s}", "arm": a, "seed": s, "steps": 10, "train_wall_s": 5.0, "unit_wall_s": 6.0,
            "step_s": 0.5, "val": {"rgb": 0.5, "total": 1.0}} for s in (0, 1) for a in ("multimae", "mae")]
    fine = []
    for s in (0, 1):
        for task, (_, _, _, metrics) in transfer.TASKS.items():
            for init, base in (("multimae", 0.6), ("mae", 0.4 if task in transfer.WITH_DEPTH else 0.6), ("scratch", 0.2)):
                test = {m: base + 0.01 * s for m, _, _ in metrics}
                fine.append({"unit": f"ft-{task}-{init}-s{s}", "task": task, "init": init, "seed": s, "steps": 5,
                             "train_wall_s": 2.0, "unit_wall_s": 3.0, "step_s": 0.4, "test": test, "val": test})
    return pre, fine


def test_report_table_claims_and_figure(transfer, tmp_path):
    pre, fine = fake_results(transfer)
    plan = transfer.Plan(out=tmp_path, seeds=(0, 1))
    md = transfer.write_report(pre, fine, plan, "python experiments/transfer.py", tmp_path / "docs")
    text = md.read_text()
    assert "Produced by `python experiments/transfer.py`" in text
    assert "| segmentation, depth | mIoU ↑ | 0.605 ± 0.007 | 0.405 ± 0.007 | 0.205 ± 0.007 | +0.200 (better) |" in text
    assert "classification, RGB (top-1 acc.): claim *MultiMAE matches MAE* holds here" in text
    assert "segmentation, RGB + depth (mIoU): claim *MultiMAE is better than MAE* holds here" in text
    assert Image.open(tmp_path / "docs" / "transfer.png").size[0] >= 900
    train, other = transfer.estimate(pre, fine, plan)
    assert train > 0 and other == pytest.approx((4 * 1.0 + len(fine) * 1.0) / 60)
