"""Hardware presets (TOML). Each is a partial override of edgetune's config, used by `edgetune train --profile NAME`."""
