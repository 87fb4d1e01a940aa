//! {{name}}: answers each message with a greeting (the config's `greeting`, "hello" by default).

use agora_guest::{Agent, Config, HandleError, Message, log};

struct Greeter {
    greeting: String,
}

impl Agent for Greeter {
    fn init(config: Config) -> Result<Self, String> {
        Ok(Greeter { greeting: config.get("greeting").unwrap_or("hello").to_string() })
    }

    fn handle(&mut self, message: Message) -> Result<Option<Vec<u8>>, HandleError> {
        let who = String::from_utf8_lossy(&message.payload);
        log::info(&format!("greeting {who}"));
        // A returned value answers a `call`.
        Ok(Some(format!("{}, {who}!", self.greeting).into_bytes()))
    }
}

agora_guest::export_agent!(Greeter);
