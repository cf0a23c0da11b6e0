"""The process entry point for the ``celery`` command: ``celery -A worker.main worker --beat``.

The only module that reads the environment at import time, because it is where a process starts.
"""

from config.settings import load_settings
from worker.app import create_app

app = create_app(load_settings())
app.set_current()  # so process-level signal handlers (logging set-up) find its settings
