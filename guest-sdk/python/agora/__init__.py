"""Agora agents in Python (built with componentize-py).

An agent is a class with `init`, `handle` and, if it wants, `terminate`; `export` turns it into
the component's world:

    import agora

    class Echo(agora.Agent):
        def handle(self, message):
            return message.payload

    WitWorld = agora.export(Echo)

Host calls are the generated bindings, re-exported here by interface (`agora.messaging`,
`agora.registry`, `agora.ledger`, ...). A failing host call raises `agora.HostError`, whose
`code` names the error case (`"not-found"`, `"mailbox-full"`, `"denied"`, ...) and whose `detail`
carries its text or number, if any. `agora.send`, `agora.call` and `agora.lookup` take an agent
name or id. In `handle`, raise `agora.Reject` to refuse one message (a caller gets
`failed(text)`); any other exception ends the instance, and its supervisor decides what next.

An agent that carries its state across upgrades of its code (built with `-w stateful-agent`)
implements `snapshot` and the class method `restore`, and exports `State` too:

    class Counter(agora.Agent):
        def snapshot(self):
            return json.dumps({"value": self.value}).encode()

        @classmethod
        def restore(cls, config, state, from_version):
            counter = cls()
            counter.value = json.loads(state)["value"]
            return counter

    WitWorld = agora.export(Counter)
    State = agora.export_state(Counter)

Host notices arrive typed, in mailbox order, through `notify(self, notice)`: `notice` is one of
`agora.types.Notice_Down`, `Notice_Exit`, `Notice_ConfigChanged`, `Notice_Event`,
`Notice_LeaderChanged`, `Notice_VoteRequested`, `Notice_Auction`, `Notice_Market`, whose
`value` is the record (`types.Down(reference, agent, reason)`, ...):

    def notify(self, notice):
        if isinstance(notice, agora.types.Notice_Down):
            agora.log(f"agent {notice.value.agent} exited: {notice.value.reason}")
"""

from typing import Dict, Optional, Union

import wit_world
from componentize_py_types import Err, Ok
from wit_world.imports import (  # noqa: F401  (re-exported for agents)
    auctions,
    barriers,
    batch,
    config,
    consensus,
    election,
    events,
    ledger,
    lifecycle,
    locks,
    logging,
    market,
    messaging,
    outbound,
    pools,
    rate_limits,
    registry,
    supervision,
    telemetry,
    types,
)

__all__ = [
    "Agent", "Message", "HostError", "Reject", "export", "export_state", "host", "send", "call", "lookup", "log", "stop",
    "auctions", "barriers", "config", "consensus", "election", "events", "ledger", "lifecycle", "locks",
    "logging", "market", "messaging", "outbound", "pools", "rate_limits", "registry", "supervision", "telemetry", "types",
]

Message = types.Envelope
"""One inbound message: `sender` (an agent id, or None from the host), `correlation` (set when
the sender waits in `call`), `topic` (set when published) and `payload` (bytes)."""


class HostError(Exception):
    """A host call failed. `code` is the WIT error case in kebab-case; `detail` its payload."""

    def __init__(self, code: str, detail: object = None):
        super().__init__(code if detail is None else f"{code}: {detail}")
        self.code = code
        self.detail = detail


class Reject(Exception):
    """Raised from `handle`: refuse this message only; the agent keeps running."""


def _kebab(name: str) -> str:
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


def _host_error(err: Err) -> HostError:
    value = err.value
    # Generated cases are classes named `<Variant>_<Case>`, with a `value` when the case has one.
    case = type(value).__name__.split("_", 1)[-1]
    return HostError(_kebab(case), getattr(value, "value", None))


def _address(to: Union[str, int]) -> types.Address:
    return types.Address_Id(to) if isinstance(to, int) else types.Address_Name(to)


def send(to: Union[str, int], payload: Union[bytes, str]) -> None:
    """Enqueue a message for an agent, by name or id."""
    try:
        messaging.send(_address(to), _bytes(payload))
    except Err as err:
        raise _host_error(err) from None


def call(to: Union[str, int], payload: Union[bytes, str], timeout_ms: int = 5000) -> bytes:
    """Send and wait for the reply."""
    try:
        return messaging.call(_address(to), _bytes(payload), timeout_ms)
    except Err as err:
        raise _host_error(err) from None


def lookup(name: str) -> Optional[int]:
    """The id registered under `name`, or None."""
    try:
        return registry.lookup(name)
    except Err as err:
        error = _host_error(err)
        if error.code == "not-found":
            return None
        raise error from None


def host(function, *args):
    """Call any generated host function, turning its failure into `HostError`."""
    try:
        return function(*args)
    except Err as err:
        raise _host_error(err) from None


def log(message: str, level: "logging.Level" = logging.Level.INFO) -> None:
    logging.log(level, message)


def stop() -> None:
    """End this agent normally once the current callback returns (in `init`: OTP's `ignore`)."""
    lifecycle.stop()


def exit(reason: Union[str, "lifecycle.ExitReason"] = "normal") -> None:
    """End this agent with `reason` once the current callback returns, as `erlang:exit/1`:
    "normal", "shutdown", or any other text, which is abnormal (a custom reason). Raises
    `HostError` ("invalid") for an empty, over-long or reserved reason."""
    if isinstance(reason, str):
        reason = {
            "normal": lifecycle.ExitReason_Normal(),
            "shutdown": lifecycle.ExitReason_Shutdown(),
        }.get(reason) or lifecycle.ExitReason_Custom(reason)
    host(lifecycle.exit, reason)


def _bytes(payload: Union[bytes, str]) -> bytes:
    return payload.encode() if isinstance(payload, str) else bytes(payload)


class Agent:
    """Subclass and override what the agent needs. One instance lives as long as the agent."""

    def init(self, config: Dict[str, str]) -> None:
        """Called once before any message, with the agent's manifest `config` table."""

    def handle(self, message: Message) -> Optional[Union[bytes, str]]:
        """Handle one message; a returned value answers a waiting `call`."""
        return None

    def notify(self, notice: "types.Notice") -> None:
        """Handle one host notice (typed); ignored by default."""

    def terminate(self, reason: str) -> None:
        """Called before a graceful exit ("normal", "shutdown")."""

    # A stateful agent (exported with `export_state`) also implements these two.

    def snapshot(self) -> bytes:
        """The whole state, between two messages, in a form the next version can read. Raise to
        refuse an upgrade (the agent carries on)."""
        raise NotImplementedError("this agent keeps no state across upgrades")

    @classmethod
    def restore(cls, config: Dict[str, str], state: bytes, from_version: str) -> "Agent":
        """Build the agent from an earlier instance's snapshot, instead of `init`. `from_version`
        is that instance's module version: convert older formats here. Raise to refuse the
        state (an upgrade then rolls back)."""
        raise NotImplementedError("this agent keeps no state across upgrades")


# The running agent, shared by the world's exports and the `state` interface's.
_running: Dict[str, Agent] = {}


def export_state(agent_class: type) -> type:
    """The `State` class componentize-py looks for in a `stateful-agent` component."""
    from wit_world import exports

    class State(exports.State):
        def snapshot(self):
            try:
                return _bytes(_running["agent"].snapshot())
            except Exception as error:  # noqa: BLE001  (a refusal, with its text)
                raise Err(f"snapshot: {type(error).__name__}: {error}") from None

        def restore(self, config, state, from_version):
            try:
                _running["agent"] = agent_class.restore(dict(config), bytes(state), from_version)
            except Exception as error:  # noqa: BLE001  (a refusal, with its text)
                raise Err(f"restore: {type(error).__name__}: {error}") from None

    return State


def export(agent_class: type) -> type:
    """The world class componentize-py looks for, driving one `agent_class` instance."""
    state = _running

    class WitWorld(wit_world.WitWorld):
        def init(self, config):
            agent = agent_class()
            state["agent"] = agent
            try:
                agent.init(dict(config))
            except HostError as error:
                raise Err(f"init: {error}") from None
            except Exception as error:  # noqa: BLE001  (any failure fails the start, with its text)
                raise Err(f"init: {type(error).__name__}: {error}") from None

        def handle(self, message):
            try:
                reply = state["agent"].handle(message)
            except Reject as error:
                raise Err(types.HandleError(fatal=False, message=str(error))) from None
            except Exception as error:  # noqa: BLE001  (the supervisor handles the rest)
                raise Err(types.HandleError(fatal=True, message=f"{type(error).__name__}: {error}")) from None
            return None if reply is None else _bytes(reply)

        def notify(self, notice):
            try:
                state["agent"].notify(notice)
            except Reject as error:
                raise Err(types.HandleError(fatal=False, message=str(error))) from None
            except Exception as error:  # noqa: BLE001  (the supervisor handles the rest)
                raise Err(types.HandleError(fatal=True, message=f"{type(error).__name__}: {error}")) from None

        def terminate(self, reason):
            state["agent"].terminate(reason)

        def handle_batch(self, first):
            """Several mailbox items in one entry (wit/batch.wit): each handled as `handle` or
            `notify` would handle it, its outcome reported before the host hands out the next."""
            item = first
            while item is not None:
                try:
                    if isinstance(item, batch.Item_Message):
                        done = Ok(self.handle(item.value))
                    else:
                        self.notify(item.value)
                        done = Ok(None)
                except Err as error:
                    done = error
                item = batch.next(done)

    return WitWorld
