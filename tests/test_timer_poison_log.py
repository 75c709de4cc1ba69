"""The timer's tick logs a warning naming each poison queue that holds messages (the poison alert
of infra/app/alerts.bicep reads that line), and nothing when they are empty."""

import logging

from azure.functions.timer import TimerRequest

import function_app
from exporter import config
from exporter.devhost.local_runner import user_function
from exporter.lifecycle import poison

tick = user_function(function_app.app, "export_schedule")
RUNS_POISON = config.QUEUE_RUNS + config.POISON_SUFFIX
BATCHES_POISON = config.QUEUE_BATCHES + config.POISON_SUFFIX


def poison_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.getMessage().startswith("poison queue ")]


def test_tick_warns_about_each_poison_queue_that_holds_messages(services, caplog):
    # No workers run in this test: nothing consumes the poison queues, as when their function is down.
    batches_poison = services.clients.queue(BATCHES_POISON)
    batches_poison.send_message("not a message of the app")
    batches_poison.send_message("nor this")
    caplog.set_level(logging.INFO)

    tick(TimerRequest(past_due=False))

    assert poison_lines(caplog) == [f"poison queue {BATCHES_POISON} holds 2 message(s)"]
    assert any(r.getMessage().startswith("timer: ") for r in caplog.records), "the tick itself is logged too"

    caplog.clear()
    services.clients.queue(RUNS_POISON).send_message("x")
    tick(TimerRequest(past_due=False))
    assert sorted(poison_lines(caplog)) == [f"poison queue {BATCHES_POISON} holds 2 message(s)",
                                           f"poison queue {RUNS_POISON} holds 1 message(s)"]


def test_tick_is_quiet_when_the_poison_queues_are_empty(services, caplog):
    caplog.set_level(logging.INFO)
    tick(TimerRequest(past_due=False))
    assert poison_lines(caplog) == []
    assert set(poison.POISON_QUEUES) == {RUNS_POISON, BATCHES_POISON}


def test_a_queue_that_cannot_be_read_does_not_stop_the_tick(services, caplog, monkeypatch):
    def broken(name):
        raise ConnectionError("storage unreachable")

    monkeypatch.setattr(services, "queue_length", broken)
    caplog.set_level(logging.INFO)
    tick(TimerRequest(past_due=False))
    assert any(r.getMessage().startswith("timer: ") for r in caplog.records)
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("could not read the length")] == [
        f"could not read the length of {q}" for q in poison.POISON_QUEUES]
