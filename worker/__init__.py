"""The Celery app and the domain code the tasks call: producer, drain, upload, reconcile."""
