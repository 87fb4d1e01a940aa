"""The polyglot agent in Python: the same text protocol as its Rust, JavaScript and C siblings.

- `ping` -> `pong from python`
- `ask:<agent>:<text>` -> calls the agent with the text; `python heard: <its reply>`
- `missing` -> calls an agent that does not exist; the host's typed error, `error not-found`
- `count` -> adds 1 to the telemetry counter `polyglot_calls`; the calls so far
- `config:<path>` -> the live config value at the path, or `none`
- `alloc:<bytes>` -> allocates that much (past the memory cap, the instance dies)
- `crash` -> raises: the instance ends and its supervisor restarts it
- `exit:<reason>` -> exits with that reason once the reply is sent (`normal`, `shutdown`, or custom)
- `monitor:<id>` -> monitors the agent; `monitoring <id>` (the host's `down` notice follows)
- `notices` -> the last host notice seen, typed: `python saw <agent> down: <reason>`, or `none`
"""

import agora
from agora import config, registry, supervision, telemetry, types


class Polyglot(agora.Agent):
    def init(self, settings):
        self.calls = 0
        self.last_notice = "none"
        agora.host(registry.add_capability, "polyglot")
        agora.log(f"python agent up ({settings.get('motto', 'no motto')})")

    def notify(self, notice):
        if isinstance(notice, types.Notice_Down):
            self.last_notice = f"python saw {notice.value.agent} down: {notice.value.reason}"

    def handle(self, message):
        words = message.payload.decode(errors="replace").split(":", 2)
        command = words[0]
        if command == "ping":
            return "pong from python"
        if command == "ask":
            try:
                reply = agora.call(words[1], words[2], 5000)
            except agora.HostError as error:
                return f"error {error.code}"
            return f"python heard: {reply.decode(errors='replace')}"
        if command == "missing":
            try:
                agora.call("nobody-by-this-name", "hello", 1000)
            except agora.HostError as error:
                return f"error {error.code}"
            return "unexpected answer"
        if command == "count":
            self.calls += 1
            agora.host(telemetry.counter_add, "polyglot_calls", 1)
            return str(self.calls)
        if command == "config":
            value = agora.host(config.get, words[1])
            return "none" if value is None else value
        if command == "alloc":
            block = bytearray(int(words[1]))
            return f"allocated {len(block)}"
        if command == "crash":
            raise RuntimeError("crashed on request")
        if command == "exit":
            try:
                agora.exit(words[1])
            except agora.HostError as error:
                return f"error {error.code}"
            return f"exiting {words[1]}"
        if command == "monitor":
            agora.host(supervision.monitor, int(words[1]))
            return f"monitoring {words[1]}"
        if command == "notices":
            return self.last_notice
        raise agora.Reject(f"unknown command {command!r}")


WitWorld = agora.export(Polyglot)
