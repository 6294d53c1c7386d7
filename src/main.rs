use std::process::ExitCode;

fn main() -> ExitCode {
    mirrord_up::commands::main()
}
