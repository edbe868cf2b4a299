from multimae.cli.main import main


def test_help_and_info(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "semseg" in out and "norm_pix_mse" in out and "768/12/12" in out
