//! The `turbovsr` command-line tool (DESIGN §7); the subcommands live in the library's `cli`.

fn main() -> std::process::ExitCode {
    gstturbovsr::cli::main()
}
