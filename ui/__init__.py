"""The Gradio UI: one builder per tab over the engine's typed interface.
Never imports torch; per-session state lives in Gradio state."""
