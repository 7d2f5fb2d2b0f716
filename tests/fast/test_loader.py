"""Loading only from local directories, with clear errors and no downloads."""

import json
import shutil

import pytest

from engine.errors import ModelNotFound, ModelUnavailable
from engine.loader import describe_model_dir, load_model


def test_missing_directory_names_the_path_and_the_install_command(tmp_path):
    with pytest.raises(ModelNotFound) as err:
        load_model(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    assert "python -m ops.models install-default" in str(err.value)


def test_directory_without_config_is_not_a_model(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(ModelNotFound, match="no config.json"):
        load_model(tmp_path)


def test_hub_style_name_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFound):
        load_model("Qwen/Qwen1.5-0.5B-Chat")  # a hub id is just a missing local path here


def test_model_without_chat_template_is_refused(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "no-template")
    (copy / "chat_template.jinja").unlink()
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotFound, match="chat template"):
        load_model(copy)


def test_corrupt_weights_are_a_clear_error(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    (copy / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelUnavailable, match=str(copy)):
        load_model(copy)


def test_store_directories_carry_name_and_version(tmp_path):
    (tmp_path / "qwen@1.2").mkdir()
    (tmp_path / "current").symlink_to("qwen@1.2")
    assert describe_model_dir(tmp_path / "current") == ("qwen", "1.2")
    assert describe_model_dir(tmp_path) == (tmp_path.name, "local")
