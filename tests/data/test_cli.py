from PIL import Image

from multimae.cli.main import main


def test_data_show_writes_a_png_in_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "show", "--count", "2", "--size", "32"]) == 0
    with Image.open(tmp_path / "world.png") as im:
        assert im.width >= 5 * 32 and im.height >= 2 * 32


def test_data_generate(tmp_path):
    out = tmp_path / "gen"
    assert main(["data", "generate", "--out", str(out), "--count", "3", "--size", "16", "--format", "shards",
                 "--shard-size", "2", "--quiet"]) == 0
    assert sorted(p.name for p in (out / "train").iterdir()) == ["shard-000000.tar", "shard-000001.tar"]
    assert (out / "manifest.json").is_file()
