"""Thin Celery tasks: each takes ids, finds the runtime of its app and calls domain code in ``worker``."""
