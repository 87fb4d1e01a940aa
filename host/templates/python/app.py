"""{{name}}: answers each message with a greeting (the config's `greeting`, "hello" by default)."""

import agora


class Greeter(agora.Agent):
    def init(self, config):
        self.greeting = config.get("greeting", "hello")

    def handle(self, message):
        who = message.payload.decode()
        agora.log(f"greeting {who}")
        # A returned value answers a `call`.
        return f"{self.greeting}, {who}!"


WitWorld = agora.export(Greeter)
