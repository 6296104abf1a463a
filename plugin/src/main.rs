//! The `rootseal` binary. All logic lives in the library (`rootseal::main`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    rootseal::main()
}
