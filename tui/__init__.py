"""edgetune.tui: the Textual app over the headless core (edgetune/ itself never imports textual)."""
