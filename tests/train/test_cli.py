"""The training CLI: options come from the config dataclasses, `--help` stays light, commands run."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from crayonbox.train.model import TrainConfig
from crayonbox.train.options import add_config_arguments, config_from_args, config_spec, config_to_argv
from crayonbox.train.vqgan import VQGANTrainConfig


@pytest.mark.parametrize("module, cls", [("crayonbox.train.model", TrainConfig),
                                         ("crayonbox.train.vqgan", VQGANTrainConfig)])
def test_options_are_the_config_fields_with_their_defaults(module, cls):
    spec = config_spec(module, cls.__name__)
    fields = [(f.name, f.default) for f in dataclasses.fields(cls)]
    assert [(name, default) for name, default, _ in spec] == fields
    assert all(comment for _, _, comment in spec)  # every option has help text


def test_config_survives_a_trip_through_the_command_line():
    cfg = TrainConfig(tokens="t.parquet", tokenizer="tok", vqgan="vq", out="m", steps=7, learning_rate=2.5e-4,
                      resume=True, progress=False, precision="bfloat16")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, config_spec("crayonbox.train.model", "TrainConfig"))
    assert config_from_args(TrainConfig, parser.parse_args(config_to_argv(cfg))) == cfg


def test_registering_the_commands_does_not_import_torch():
    code = ("import argparse, sys; from crayonbox.train import cli; "
            "cli.register(argparse.ArgumentParser().add_subparsers()); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_tokenizer_and_encode_commands(toy_shards, toy_vqgan, tmp_path, capsys):
    from crayonbox.cli import main
    from crayonbox.text.tokenizer import Tokenizer
    from crayonbox.train.data import read_token_parquet

    assert main(["train", "tokenizer", "--data", str(toy_shards), "--out", str(tmp_path / "tok"),
                 "--vocab-size", "280", "--quiet"]) == 0
    assert "280 ids" in capsys.readouterr().out
    assert Tokenizer.from_folder(tmp_path / "tok").vocab_size == 280
    assert main(["encode", "--data", str(toy_shards), "--vqgan", str(toy_vqgan), "--out",
                 str(tmp_path / "t.parquet"), "--quiet"]) == 0
    assert "96 images from 2 shards" in capsys.readouterr().out
    assert len(read_token_parquet(tmp_path / "t.parquet")) == 96
    assert main(["train", "model", "--tokens", str(tmp_path / "t.parquet"), "--tokenizer",
                 str(tmp_path / "tok"), "--vqgan", str(toy_vqgan), "--out", str(tmp_path / "m"),
                 "--preset", "nope"]) == 1
    assert "unknown preset 'nope'" in capsys.readouterr().err
