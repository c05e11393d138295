//! `backend`: Corral's conversations service and the owner of the database migrations.
//!
//! Not built yet: this binary only explains its future commands, so the workspace layout and
//! the interface contract (`backend migrate`, `backend serve`) are in place.

use std::process::ExitCode;

const USAGE: &str = "usage: backend <migrate|serve|seed>\n\n\
  migrate   apply pending database migrations and exit\n\
  serve     migrate, then serve the conversations API\n\
  seed      create a default org and admin user (idempotent)\n\n\
The backend service is not implemented yet; these commands exit with status 2.";

fn main() -> ExitCode {
    let command = std::env::args().nth(1);
    match command.as_deref() {
        None | Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("backend {other}: not implemented yet\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
