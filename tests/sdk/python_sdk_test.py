"""Unit tests of the Python SDK's own logic, on CPython with the bindings componentize-py
generates for the agent world (whose host functions only exist inside a component, so none is
called here)."""

import unittest

import agora
from agora import types
from componentize_py_types import Err


class HostErrors(unittest.TestCase):
    def test_each_error_case_becomes_its_wit_name_with_its_payload(self):
        cases = [
            (types.Error_NotFound(), "not-found", None),
            (types.Error_MailboxFull(), "mailbox-full", None),
            (types.Error_AlreadyExists(), "already-exists", None),
            (types.Error_Invalid("bad name"), "invalid", "bad name"),
            (types.Error_TooLarge(1024), "too-large", 1024),
        ]
        for value, code, detail in cases:
            error = agora._host_error(Err(value))
            self.assertEqual((error.code, error.detail), (code, detail))
        self.assertEqual(str(agora._host_error(Err(types.Error_Invalid("x")))), "invalid: x")
        self.assertEqual(str(agora._host_error(Err(types.Error_Denied()))), "denied")

    def test_host_turns_a_failed_call_into_a_host_error(self):
        def failing():
            raise Err(types.Error_Timeout())

        with self.assertRaises(agora.HostError) as raised:
            agora.host(failing)
        self.assertEqual(raised.exception.code, "timeout")
        self.assertEqual(agora.host(lambda a, b: a + b, 2, 3), 5)


class Addresses(unittest.TestCase):
    def test_an_int_is_an_id_and_a_str_a_name(self):
        self.assertEqual(agora._address(7), types.Address_Id(7))
        self.assertEqual(agora._address("counter"), types.Address_Name("counter"))
        self.assertEqual(agora._bytes("é"), b"\xc3\xa9")
        self.assertEqual(agora._bytes(bytearray(b"ab")), b"ab")


class Batches(unittest.TestCase):
    def test_each_item_goes_to_its_callback_in_order_and_each_outcome_is_reported_before_the_next(self):
        seen = []

        class Worker(agora.Agent):
            def handle(self, message):
                said = message.payload.decode()
                seen.append(said)
                if said == "no":
                    raise agora.Reject("not that")
                if said == "die":
                    raise RuntimeError("dead")
                return said.upper()

            def notify(self, notice):
                seen.append("notice")

        def message(said):
            return agora.batch.Item_Message(types.Envelope(sender=None, correlation=None, topic=None, payload=said.encode()))

        notice = agora.batch.Item_Notice(types.Notice_Down(types.Down(reference=1, agent=1, reason="normal")))
        queue = [message("no"), notice, message("b"), message("die"), message("c")]
        reported = []

        def next_item(done):
            if isinstance(done, Err):
                reported.append(f"err:{done.value.fatal}")
                # Like the host: nothing after a fatal error.
                if done.value.fatal:
                    return None
            else:
                reported.append("none" if done.value is None else done.value.decode())
            return queue.pop(0) if queue else None

        world = agora.export(Worker)()
        world.init([])
        original = agora.batch.next
        agora.batch.next = next_item
        try:
            world.handle_batch(message("a"))
        finally:
            agora.batch.next = original
        self.assertEqual(seen, ["a", "no", "notice", "b", "die"])
        self.assertEqual(reported, ["A", "err:False", "none", "B", "err:True"])
        self.assertEqual(len(queue), 1, "what follows a fatal error is not taken")


class Exports(unittest.TestCase):
    def world(self, agent_class):
        world = agora.export(agent_class)()
        world.init([("greeting", "hi")])
        return world

    def test_a_reply_is_bytes_and_config_arrives_as_a_dict(self):
        class Echo(agora.Agent):
            def init(self, config):
                self.greeting = config["greeting"]

            def handle(self, message):
                return f"{self.greeting} {message.payload.decode()}"

        world = self.world(Echo)
        message = types.Envelope(sender=None, correlation=None, topic=None, payload=b"there")
        self.assertEqual(world.handle(message), b"hi there")

    def test_reject_refuses_one_message_and_any_other_exception_is_fatal(self):
        class Picky(agora.Agent):
            def handle(self, message):
                if message.payload == b"no":
                    raise agora.Reject("not that")
                raise KeyError("boom")

        world = self.world(Picky)
        for payload, fatal, text in [(b"no", False, "not that"), (b"x", True, "KeyError: 'boom'")]:
            message = types.Envelope(sender=None, correlation=None, topic=None, payload=payload)
            with self.assertRaises(Err) as raised:
                world.handle(message)
            self.assertEqual(raised.exception.value, types.HandleError(fatal=fatal, message=text))

    def test_a_failing_init_names_the_exception(self):
        class Broken(agora.Agent):
            def init(self, config):
                raise ValueError("no peers")

        with self.assertRaises(Err) as raised:
            agora.export(Broken)().init([])
        self.assertEqual(raised.exception.value, "init: ValueError: no peers")


if __name__ == "__main__":
    unittest.main()
