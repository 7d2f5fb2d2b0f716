"""One table of UI strings in English and Chinese (``ui/strings.toml``), and the three ways to use it.

``t(key)`` labels a component, and Gradio translates it in the browser; ``text(key, lang)`` is for what
a handler builds at run time, in the viewer's language (``ui.viewer``); ``detail(message, lang)`` shows
a text that ops/ or engine/ wrote in English in the viewer's language where the table knows its wording.
Label names per language come from the task's ``display``. Gradio is imported only when asked for.
"""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path

from engine.types import TaskInfo

__all__ = ["LANGS", "text", "t", "detail", "gradio_i18n", "tab_title", "label_names", "language_of"]

LANGS = ("en", "zh")
STRINGS_FILE = Path(__file__).with_name("strings.toml")
# The browser languages Gradio is given the Chinese table for; ``language_of`` maps every zh-* to it too.
_CHINESE_LOCALES = ("zh", "zh-CN", "zh-TW", "zh-HK", "zh-SG")


@functools.cache
def table() -> dict[str, dict[str, str]]:
    """language -> key -> text, from ``strings.toml`` (read once)."""
    flat: dict[str, dict[str, str]] = {}
    _flatten(tomllib.loads(STRINGS_FILE.read_text(encoding="utf-8")), "", flat)
    return {lang: {key: entry[lang] for key, entry in flat.items()} for lang in LANGS}


def _flatten(node: dict, prefix: str, out: dict[str, dict[str, str]]) -> None:
    for name, value in node.items():
        key = prefix + name
        if isinstance(value, dict) and set(value) == set(LANGS) and all(isinstance(v, str) for v in value.values()):
            out[key] = value
        elif isinstance(value, dict) and not set(value) & set(LANGS):
            _flatten(value, key + ".", out)
        else:
            raise ValueError(f"{STRINGS_FILE}: [{key}] needs exactly an 'en' and a 'zh' string.")


def language_of(browser_language: str | None) -> str:
    """``zh`` for any Chinese browser language (zh, zh-CN, zh-TW...), else ``en``."""
    return "zh" if str(browser_language or "").lower().startswith("zh") else "en"


def text(key: str, lang: str = "en", **params: object) -> str:
    """The string ``key`` in ``lang`` (``en`` or ``zh``), with ``{name}`` filled from ``params``."""
    template = table()["zh" if lang == "zh" else "en"][key]
    return template.format(**params) if params else template


def t(key: str):
    """A component label: Gradio shows it in the browser's language. An unknown key fails at build time."""
    from gradio.i18n import I18nData

    if key not in table()["en"]:
        raise KeyError(f"no string {key!r} in {STRINGS_FILE.name}")
    return I18nData(key)


def gradio_i18n():
    """The table for ``gr.mount_gradio_app(i18n=...)``."""
    import gradio as gr

    english, chinese = table()["en"], table()["zh"]
    return gr.I18n(en=english, **{locale: chinese for locale in _CHINESE_LOCALES})


def tab_title(info: TaskInfo):
    """A translated tab title for the shipped tasks; a task added later shows its own title."""
    key = f"task.{info.name}"
    return t(key) if key in table()["en"] else info.title


def label_names(info: TaskInfo, lang: str) -> dict[str, str]:
    """label -> the name shown in ``lang``: the task's ``display`` names, else the label itself."""
    names = info.display.get(lang) or ()
    return {label: names[i] if i < len(names) else label for i, label in enumerate(info.labels)}


@functools.cache
def _detail_patterns() -> tuple[tuple[re.Pattern, str], ...]:
    """Each ``detail.*`` string's English wording as a pattern, the most specific (longest) first."""
    english = {key: value for key, value in table()["en"].items() if key.startswith("detail.")}
    ordered = sorted(english, key=lambda key: -len(re.sub(r"\{\w+\}", "", english[key])))
    return tuple((re.compile(_pattern(english[key])), key) for key in ordered)


def _pattern(template: str) -> str:
    parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, name, ...
    return "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>.+?)" for i, part in enumerate(parts))


def detail(message: str, lang: str) -> str:
    """``message`` (English, from ops/ or engine/) in ``lang``; its parts are translated the same way.
    Wording the table does not know shows as written."""
    if lang != "zh" or not message:
        return message
    for pattern, key in _detail_patterns():
        match = pattern.fullmatch(message)
        if match:
            return text(key, lang, **{name: detail(value, lang) for name, value in match.groupdict().items()})
    return message
