"""The settings in sections by concern; ``config.settings.Settings`` joins them into one class."""
