//! The `rootseal` binary. All logic lives in the library (`rootseal::cli`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    rootseal::cli::main()
}
