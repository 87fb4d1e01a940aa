fn main() -> std::process::ExitCode {
    agora_host::cli::main()
}
