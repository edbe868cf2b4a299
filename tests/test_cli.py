from multimae.cli.main import main


def test_help_and_info(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "semseg" in out and "norm_pix_mse" in out and "768/12/12" in out


def test_overrides_may_follow_a_flag():
    import pytest

    from multimae.cli.main import build_parser, parse

    parser = build_parser()
    args = parse(parser, ["pretrain", "--config", "cpu", "train.steps=3", "--quiet", "train.seed=1", "optim.lr=1e-3"])
    assert args.quiet and args.overrides == ["train.steps=3", "train.seed=1", "optim.lr=1e-3"]
    assert parse(parser, ["pretrain", "train.steps=3"]).overrides == ["train.steps=3"]
    with pytest.raises(SystemExit):  # anything else stays argparse's error
        parse(parser, ["pretrain", "train.steps=3", "--quiet", "stray"])
    with pytest.raises(SystemExit):
        parse(parser, ["info", "train.steps=3"])
