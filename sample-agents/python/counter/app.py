"""A counter in Python that carries its value across upgrades of its code: the Rust counter's
commands (`inc`, `add <n>`, `set <n>`, `get`) and its state format (`{"value": 3, "held": null}`),
so that either can take over from the other. Built for the `stateful-agent` world. `version`
replies `python`.
"""

import json

import agora


class Counter(agora.Agent):
    def init(self, config):
        self.value = int(config.get("start", "0"))
        self.held = None

    def handle(self, message):
        words = message.payload.decode(errors="replace").split()
        match words:
            case ["inc"]:
                self.value += 1
            case ["add", n]:
                self.value += self.number(n)
            case ["set", n]:
                self.value = self.number(n)
            case ["get"]:
                pass
            case ["version"]:
                return "python"
            case _:
                raise agora.Reject(f"unknown command {' '.join(words)!r}")
        return str(self.value)

    @staticmethod
    def number(text):
        try:
            return int(text)
        except ValueError:
            raise agora.Reject(f"not a number: {text!r}") from None

    def snapshot(self):
        return json.dumps({"value": self.value, "held": self.held}).encode()

    @classmethod
    def restore(cls, config, state, from_version):
        saved = json.loads(state)
        counter = cls()
        counter.value = int(saved["value"])
        counter.held = saved.get("held")
        agora.log(f"python counter restored at {counter.value} from {from_version}")
        return counter


WitWorld = agora.export(Counter)
State = agora.export_state(Counter)
