"""In-process command calls (the intercom's DTMF code, the CLI): the same schema check,
authorization and counting as a call from MQTT, the caller recorded as `via`, and commands
that go away with the run of the worker that registered them."""

from __future__ import annotations

import threading

import pytest

from edge.clock import FakeClock
from edge.commands import MAX_PAYLOAD, Command, CommandRegistry, CommandRejected, WorkerCommands
from edge.health import HealthRegistry
from edge.worker import SimulatorControls, Worker
from runtime_helpers import context_factory


def door_registry(opened: list, allowed: bool = True) -> CommandRegistry:
    registry = CommandRegistry()
    registry.register(Command("open_door", lambda payload, via: opened.append((payload, via)) or "opened",
                              fields={}, optional={"event_id": str}, dangerous=True,
                              authorized=lambda: allowed, refusal="set [doorbell] allow_remote_open = true"),
                      owner="doorbell")
    return registry


def test_in_process_call_hands_the_caller_to_the_handler_and_counts_it():
    opened = []
    registry = door_registry(opened)
    assert registry.call("open_door", {"event_id": "e1"}, via="sip", allow_dangerous=True) == "opened"
    assert opened == [({"event_id": "e1"}, "sip")]
    assert registry.accepted == {"open_door": 1}


def test_in_process_call_gets_the_same_schema_check_as_mqtt():
    opened = []
    registry = door_registry(opened)
    with pytest.raises(CommandRejected) as bad_type:
        registry.call("open_door", {"event_id": 5}, via="sip", allow_dangerous=True)
    with pytest.raises(CommandRejected) as claimed_caller:  # `via` is the transport's word, never the payload's
        registry.call("open_door", {"via": "sip"}, via="cli", allow_dangerous=True)
    with pytest.raises(CommandRejected) as oversized:
        registry.call("open_door", {"event_id": "x" * MAX_PAYLOAD}, via="sip", allow_dangerous=True)
    assert (bad_type.value.code, claimed_caller.value.code, oversized.value.code) == ("invalid", "invalid",
                                                                                        "oversized")
    assert opened == [] and registry.rejected == {"invalid": 2, "oversized": 1}


def test_in_process_call_is_refused_without_the_callers_and_the_owners_authorization():
    opened = []
    with pytest.raises(CommandRejected) as not_dangerous_allowed:
        door_registry(opened).call("open_door", via="sip")
    with pytest.raises(CommandRejected) as owner_switch_off:
        door_registry(opened, allowed=False).call("open_door", via="sip", allow_dangerous=True)
    assert not_dangerous_allowed.value.code == owner_switch_off.value.code == "unauthorized"
    assert "allow_remote_open" in str(owner_switch_off.value)
    assert opened == []


def test_a_command_whose_worker_is_restarting_is_unavailable_not_unknown():
    registry = CommandRegistry()
    run = WorkerCommands(registry, "doorbell")
    run.register(Command("open_door", lambda payload, via: "opened", {}))
    run.unregister_all()
    with pytest.raises(CommandRejected) as gone:
        registry.call("open_door", via="sip")
    with pytest.raises(CommandRejected) as never:
        registry.call("launch_rockets", via="sip")
    assert gone.value.code == "unavailable" and "doorbell worker is not running" in str(gone.value)
    assert never.value.code == "unknown"


def test_ending_a_run_leaves_a_newer_runs_registration_alone():
    registry = CommandRegistry()
    old, new = WorkerCommands(registry, "doorbell"), WorkerCommands(registry, "doorbell")
    old.register(Command("open_door", lambda payload, via: "old", {}))
    new.register(Command("open_door", lambda payload, via: "new", {}))
    old.unregister_all()  # the old run's close() comes after the new run registered
    assert registry.call("open_door", via="cli") == "new"


class Registers(Worker):
    name = "registers"

    def run(self, ctx):
        ctx.commands.register(Command("ping", lambda payload, via: "pong", {}))
        ctx.register_sim("poke", lambda args: "poked")


def test_the_context_removes_what_a_run_registered_when_it_ends():
    sim = SimulatorControls()
    make = context_factory(HealthRegistry(FakeClock()), FakeClock(), sim=sim)
    ctx = make(Registers({}), threading.Event(), lambda: None)
    Registers({}).run(ctx)
    assert (ctx.commands.names(), sim.names()) == (["ping"], ["poke"])
    ctx.close()
    assert (ctx.commands.names(), sim.names()) == ([], [])


def test_json_nested_too_deeply_is_malformed_not_a_failure():
    registry = CommandRegistry()
    registry.register(Command("ping", lambda payload, via: "pong", {}))
    with pytest.raises(CommandRejected) as deep:
        registry.execute("ping", b"[" * 2000 + b"]" * 2000)  # within the 4 KiB limit
    assert deep.value.code == "malformed" and registry.rejected == {"malformed": 1}
