"""Conformance: rush's tests/testthat/test-AppenderRedis.R, written fresh for rushhpc's log handler
(`rushhpc.network.logs.RedisLogHandler`, which sends Python log records to the network's log stream).
Each test names the R test it mirrors; deliberate differences are in docs/from-r.md."""

from __future__ import annotations

import logging
import uuid

import pytest

from rushhpc.network.logs import RedisLogHandler

FIELDS = {"worker_id", "level", "logger", "msg", "timestamp"}


@pytest.fixture
def logger():
    lg = logging.getLogger("conformance.appender." + uuid.uuid4().hex[:6])
    lg.setLevel(logging.INFO)
    lg.propagate = False
    yield lg
    for h in list(lg.handlers):
        lg.removeHandler(h)


def _records(rush):
    return [fields for _, fields in rush.connector.xrange(rush.keys.log)]


# test-AppenderRedis.R: "saving logs with redis appender works"
def test_records_reach_the_log_stream(rush, logger):
    logger.addHandler(RedisLogHandler(rush.connector, rush.keys.log, "worker_1"))
    logger.info("test-1")
    records = _records(rush)
    assert len(records) == 1 and set(records[0]) == FIELDS
    assert records[0]["msg"] == "test-1" and records[0]["worker_id"] == "worker_1"
    assert records[0]["level"] == "INFO" and records[0]["logger"] == logger.name
    logger.info("test-2")
    assert [r["msg"] for r in _records(rush)] == ["test-1", "test-2"]
    assert rush.read_log()["msg"].tolist() == ["test-1", "test-2"]


# test-AppenderRedis.R: "settings the buffer size in redis appender works"
def test_each_record_is_sent_at_once(rush, logger):
    # deliberate difference: no buffer (R: buffer_size); every record is in Redis when the call returns
    with pytest.raises(TypeError):
        RedisLogHandler(rush.connector, rush.keys.log, "worker_1", buffer_size=2)
    logger.addHandler(RedisLogHandler(rush.connector, rush.keys.log, "worker_1"))
    for i in range(1, 4):
        logger.info("test-%d", i)
        assert len(_records(rush)) == i


class _Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


# test-AppenderRedis.R: "custom fields are stripped for the redis appender only"
def test_extra_fields_stay_out_of_redis_only(rush, logger):
    logger.addHandler(RedisLogHandler(rush.connector, rush.keys.log, "worker_1"))
    keep = _Keep()
    logger.addHandler(keep)
    logger.info("test-1", extra={"rush": rush})
    records = _records(rush)
    assert len(records) == 1 and set(records[0]) == FIELDS and records[0]["msg"] == "test-1"
    assert keep.records[0].rush is rush  # another handler still sees the extra field
