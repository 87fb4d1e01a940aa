//! A WASI command component (it exports `wasi:cli/run`, not the agent world). Loading it as an
//! agent must fail with an error that names the missing export.
fn main() {
    println!("I am a command, not an agent");
}
