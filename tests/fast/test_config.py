"""Configuration: flags, ALLINONE_* variables, validation."""

import pytest

from engine.errors import ConfigError
from ops.serving.config import REPETITION_GUARDS, build_parser, load_config


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
        (["--repetition-guard", "on"], {}, r"--repetition-guard 'on': choose one of stop, break, off"),
        ([], {"ALLINONE_REPETITION_GUARD": "penalty"}, "choose one of stop, break, off"),
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


def test_the_repetition_guard_is_a_setting_that_reaches_the_worker(monkeypatch, tmp_path):
    """``--repetition-guard`` (or ``ALLINONE_REPETITION_GUARD``): stop by default, carried to the worker's
    ``EngineConfig``, where admission gives it to every chat whose request does not say."""
    import app
    from engine.sampling import GUARDS

    assert tuple(GUARDS) == REPETITION_GUARDS  # the web process's list is the engine's
    assert load_config([], {}).repetition_guard == "stop"
    assert load_config([], {"ALLINONE_REPETITION_GUARD": "off"}).repetition_guard == "off"
    assert load_config(["--repetition-guard", "break"], {"ALLINONE_REPETITION_GUARD": "off"}).repetition_guard == (
        "break")
    assert "--repetition-guard {stop,break,off}" in build_parser().format_help()
    specs = []
    monkeypatch.setattr(app, "check_model_dir", lambda path: None)
    monkeypatch.setattr(app, "WorkerProcess", lambda spec: type("Started", (), {"start": lambda self: spec})())
    for name in REPETITION_GUARDS:
        start = app.make_worker_starter(load_config(["--repetition-guard", name], {}), lambda: None)
        specs.append(start(tmp_path))
    assert [spec.engine.repetition_guard for spec in specs] == list(REPETITION_GUARDS)
