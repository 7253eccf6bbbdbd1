"""Where an exported model goes: its card, the web page, a Triton repository and zoo serve."""
