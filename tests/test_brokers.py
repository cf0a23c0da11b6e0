"""Celery's broker and redbeat on their own URLs (issue 17): the settings the guarantee relies on stay
whichever broker carries the messages."""

from __future__ import annotations

import pytest

from config.settings import Settings
from worker.app import celery_config, queue_names
from worker.errors import StoreConfigError

AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def test_defaults_keep_everything_on_the_data_redis() -> None:
    settings = Settings(_env_file=None, redis_url="redis://10.0.0.5:6379/0")
    assert settings.broker_url == settings.beat_redis_url == "redis://10.0.0.5:6379/0"
    config = celery_config(settings)
    assert config["broker_url"] == "redis://10.0.0.5:6379/0"
    assert config["broker_transport_options"]["visibility_timeout"] >= 10 * settings.upload_lock_seconds
    assert [q.name for q in config["task_queues"]] == ["calltrack.periodic", "calltrack.upload", "calltrack.notify"]


def test_rabbitmq_uses_quorum_queues_and_keeps_the_guarantee_settings() -> None:
    settings = Settings(_env_file=None, broker_url=AMQP, namespace="abc")
    config = celery_config(settings)
    assert config["broker_url"] == AMQP and config["redbeat_redis_url"] == settings.redis_url
    periodic, upload, notify = queue_names(settings)
    assert (periodic, upload) == ("abc.calltrack.periodic", "abc.calltrack.upload")
    for queue in config["task_queues"]:
        assert queue.durable and queue.queue_arguments == {"x-queue-type": "quorum"}
    assert config["task_routes"]["calltrack.upload_batch"]["queue"] == upload
    # Issue 22: every webhook task, the sweep too, on the webhooks' queue (their own worker pool).
    assert config["task_routes"]["calltrack.notify_sweep"]["queue"] == notify
    assert config["task_routes"]["calltrack.notify_webhook"]["queue"] == notify
    assert config["task_default_queue"] == periodic
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    assert "visibility_timeout" not in config["broker_transport_options"]  # no such thing on AMQP


def test_an_upload_longer_than_rabbitmqs_consumer_timeout_is_refused() -> None:
    settings = Settings(_env_file=None, broker_url=AMQP, upload_lock_seconds=1800)
    with pytest.raises(StoreConfigError, match="consumer_timeout"):
        celery_config(settings)


def test_broker_urls_are_checked() -> None:
    with pytest.raises(ValueError, match="broker_url"):
        Settings(_env_file=None, broker_url="kafka://x:1")
    with pytest.raises(ValueError, match="CALLTRACK_BEAT_REDIS_URL"):
        Settings(_env_file=None, redis_cluster=True, broker_url=AMQP)
    clustered = Settings(_env_file=None, redis_cluster=True, broker_url="redis://broker:6379/0")
    assert clustered.beat_redis_url == "redis://broker:6379/0" and clustered.shards == 128
    assert (
        Settings(
            _env_file=None, redis_cluster=True, broker_url=AMQP, beat_redis_url="redis://b:6379/0", shards=64
        ).shards
        == 64
    )
