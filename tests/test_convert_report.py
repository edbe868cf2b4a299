"""The conversion summary names the tensors of small missing / dropped groups, so "missing: 1
tensors ... encoder.*: 1" says which one."""

from multimae.convert.report import ConversionReport


def test_small_groups_of_missing_and_dropped_tensors_are_named():
    report = ConversionReport("timm", "multimae", missing=["encoder.3.attn.qkv.bias"],
                              dropped={"head.weight": "classifier", "head.bias": "classifier"})
    text = report.summary()
    assert "missing: 1 tensors" in text and "encoder.*: 1: encoder.3.attn.qkv.bias" in text
    assert "head (2: head.weight, head.bias): classifier" in text


def test_large_groups_are_counted_only():
    report = ConversionReport("timm", "multimae", missing=[f"encoder.{i}.mlp.fc1.weight" for i in range(12)])
    text = report.summary()
    assert "encoder.*: 12" in text and "encoder.0.mlp" not in text
