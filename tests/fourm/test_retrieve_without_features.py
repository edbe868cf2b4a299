"""`multimae retrieve` on a 4M run without global feature tokens names what the run has."""

from __future__ import annotations

import pytest

from multimae.cli.main import main


def test_a_run_without_a_feature_output_is_named(tmp_path, trained_run):
    with pytest.raises(SystemExit, match=r"predicts no global feature tokens: its outputs are \['caption', "
                                         r"'tok_depth', 'tok_rgb'\]"):
        main(["retrieve", "--checkpoint", str(trained_run), "--query", "rgb=a.png", "--gallery", "world",
              "--out", str(tmp_path / "o")])
