"""Configuration: flags, ALLINONE_* variables, validation."""

import pytest

from engine.errors import ConfigError
from ops.serving.config import load_config


def test_defaults_bind_locally():
    config = load_config([], {})
    assert config.host == "127.0.0.1" and config.port == 7860
    assert config.context_tokens == 512
    assert config.resolved_model_dir.name == "current"


def test_environment_and_flags_flag_wins():
    config = load_config(["--port", "9000"], {"ALLINONE_PORT": "8000", "ALLINONE_LOG_TEXT": "true",
                                              "ALLINONE_CONTEXT_TOKENS": "1024"})
    assert config.port == 9000 and config.log_text is True and config.context_tokens == 1024


@pytest.mark.parametrize(
    "argv, env, fragment",
    [
        (["--host", "0.0.0.0"], {}, "--auth"),
        (["--host", "0.0.0.0", "--auth", "nopassword"], {}, "user:password"),
        (["--fault-injection"], {}, "--admin-token"),
        ([], {"ALLINONE_PORT": "eighty"}, "ALLINONE_PORT"),
        (["--max-new-tokens", "0"], {}, "positive"),
        (["--peers", "10.0.0.2:7860"], {}, "--peers"),
    ],
)
def test_bad_settings_are_refused(argv, env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(argv, env)


def test_lan_binding_with_auth_or_explicit_no_auth():
    assert load_config(["--host", "0.0.0.0", "--auth", "teacher:secret"], {}).auth_pair == ("teacher", "secret")
    assert load_config(["--host", "0.0.0.0", "--no-auth"], {}).no_auth


def test_peers_are_a_comma_separated_list_of_base_urls():
    config = load_config([], {"ALLINONE_PEERS": "http://10.0.0.2:7860/, https://b.example ,"})
    assert config.peer_urls == ("http://10.0.0.2:7860", "https://b.example")
    assert load_config([], {}).peer_urls == ()
